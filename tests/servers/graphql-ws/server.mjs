// A GraphQL over WebSocket server (the graphql-transport-ws protocol, graphql-ws's `useServer`)
// for Tributary's graphql_subscription tests. Started by the test on 127.0.0.1:
//
//   node server.mjs --port 20123 --events 2000 --interval-ms 2 --token s3cret [--first-until 1000]
//
// `subscription { events(after: Int) { seq id kind payload } }` yields the events numbered
// after+1 .. --events (1 .. when `after` is null), one every --interval-ms, then stays open.
// With --first-until N, the first subscription stops after event N and stays open (so that a
// test can kill its client mid-stream); later ones go on to --events.
// `connection_init` must carry `{"authorization": "Bearer <token>"}`: otherwise the server
// closes the socket with 4403 Forbidden (graphql-ws's rule for a refused `onConnect`).
// Prints `listening <port>` once it accepts connections and `subscribe after=<after>` for each
// subscription, on stdout.
import { createServer } from 'node:http';
import { buildSchema } from 'graphql';
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
        yield {
          events: {
            seq,
            id: `evt-${String(seq).padStart(6, '0')}`,
            kind: seq % 3 === 0 ? 'order.updated' : 'order.created',
            payload: JSON.stringify({ order: 1000 + seq, amount_cents: seq * 7 }),
          },
        };
      }
      // The stream stays open, as a live feed does, until the client goes away.
      await new Promise(() => {});
    },
  },
};

const http = createServer((_, response) => response.writeHead(404).end());
const wss = new WebSocketServer({ server: http, path: '/graphql' });
useServer(
  {
    schema,
    roots,
    onConnect: (ctx) => ctx.connectionParams?.authorization === `Bearer ${token}`,
  },
  wss,
);
http.listen(port, '127.0.0.1', () => {
  console.log(`listening ${http.address().port}`);
});
