'use strict';
// A CouchDB-compatible HTTP server (express-pouchdb over PouchDB's in-memory adapter) for
// tests: `node server.js <port>` listens on 127.0.0.1:<port> and prints `listening <port>`.
const express = require('express');
const PouchDB = require('pouchdb-core')
  .plugin(require('pouchdb-adapter-memory'))
  .plugin(require('pouchdb-adapter-http'))
  .plugin(require('pouchdb-mapreduce'))
  .plugin(require('pouchdb-replication'));
const InMemory = PouchDB.defaults({ adapter: 'memory' });
const port = Number(process.argv[2] || 5984);
const app = express();
app.use('/', require('express-pouchdb')(InMemory, { mode: 'minimumForPouchDB', inMemoryConfig: true, logPath: '/dev/null' }));
app.listen(port, '127.0.0.1', () => console.log(`listening ${port}`));
