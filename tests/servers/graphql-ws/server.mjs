// A GraphQL over WebSocket server for Tributary's graphql_subscription tests: the
// graphql-transport-ws protocol (graphql-ws's `useServer`), or with `--protocol legacy` the older
// subscriptions-transport-ws (its `SubscriptionServer`, subprotocol `graphql-ws`, `ka`
// keep-alives every 100 ms). Started by the test on 127.0.0.1:
//
//   node server.mjs --port 20123 --events 2000 --interval-ms 2 --token s3cret [--first-until 1000]
//                   [--protocol legacy] [--ping-ms 50] [--big-at 100 --big-bytes 100000]
//                   [--error-at 150]
//
// `subscription { events(after: Int) { seq id kind payload } }` yields the events numbered
// after+1 .. --events (1 .. when `after` is null), one every --interval-ms, then stays open.
// With --first-until N, the first subscription stops after event N and stays open (so that a
// test can kill its client mid-stream); later ones go on to --events.
// `connection_init` must carry `{"authorization": "Bearer <token>"}`: otherwise the server
// closes the socket with 4403 Forbidden (graphql-ws's rule for a refused `onConnect`).
// With --error-at N, event N fails to resolve (a `next` with GraphQL `errors` and no data).
// With --big-at N, event N's payload is --big-bytes long (to test the client's size cap).
// With --ping-ms N (graphql-transport-ws), the server sends `{"type":"ping"}` to each client
// every N ms. Prints `listening <port>` once it accepts connections, `subscribe after=<after>`
// for each subscription and `pong` for each pong a client sends, on stdout.
import { createServer } from 'node:http';
import { buildSchema, execute, subscribe } from 'graphql';
import legacy from 'subscriptions-transport-ws';
import { useServer } from 'graphql-ws/use/ws';
import { WebSocketServer } from 'ws';

const args = new Map();
for (let i = 2; i < process.argv.length; i += 2) {
  args.set(process.argv[i].replace(/^--/, ''), process.argv[i + 1]);
}
const port = Number(args.get('port') ?? 0);
const total = Number(args.get('events') ?? 100);
const intervalMs = Number(args.get('interval-ms') ?? 5);
const token = args.get('token') ?? 's3cret';
const firstUntil = Number(args.get('first-until') ?? total);
const protocol = args.get('protocol') ?? 'graphql-transport-ws';
const pingMs = Number(args.get('ping-ms') ?? 0);
const bigAt = Number(args.get('big-at') ?? 0);
const bigBytes = Number(args.get('big-bytes') ?? 0);
const errorAt = Number(args.get('error-at') ?? 0);
let subscriptions = 0;

const schema = buildSchema(`
  type Event { seq: Int!, id: ID!, kind: String!, payload: String! }
  type Query { total: Int! }
  type Subscription { events(after: Int): Event! }
`);

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const roots = {
  query: { total: () => total },
  subscription: {
    events: async function* ({ after }) {
      console.log(`subscribe after=${after ?? 'null'}`);
      const last = subscriptions++ === 0 ? firstUntil : total;
      for (let seq = (after ?? 0) + 1; seq <= last; seq++) {
        if (intervalMs > 0) await sleep(intervalMs);
        if (seq === errorAt) {
          // `Event!` cannot be null: the result carries an error and no data.
          yield { events: null };
          continue;
        }
        yield {
          events: {
            seq,
            id: `evt-${String(seq).padStart(6, '0')}`,
            kind: seq % 3 === 0 ? 'order.updated' : 'order.created',
            payload:
              seq === bigAt
                ? 'x'.repeat(bigBytes)
                : JSON.stringify({ order: 1000 + seq, amount_cents: seq * 7 }),
          },
        };
      }
      // The stream stays open, as a live feed does, until the client goes away.
      await new Promise(() => {});
    },
  },
};

const http = createServer((_, response) => response.writeHead(404).end());
const authorized = (params) => params?.authorization === `Bearer ${token}`;
if (protocol === 'legacy') {
  legacy.SubscriptionServer.create(
    {
      schema,
      execute,
      subscribe,
      rootValue: roots.subscription,
      keepAlive: 100,
      onConnect: (params) => authorized(params),
    },
    { server: http, path: '/graphql' },
  );
} else {
  const wss = new WebSocketServer({ server: http, path: '/graphql' });
  useServer({ schema, roots, onConnect: (ctx) => authorized(ctx.connectionParams) }, wss);
  wss.on('connection', (socket) => {
    socket.on('message', (data) => {
      if (String(data).includes('"pong"')) console.log('pong');
    });
    if (pingMs > 0) {
      const timer = setInterval(() => socket.send('{"type":"ping"}'), pingMs);
      socket.on('close', () => clearInterval(timer));
    }
  });
}
http.listen(port, '127.0.0.1', () => {
  console.log(`listening ${http.address().port}`);
});
