// A stand-in for `python -m hindsight serve`: speaks the same protocol over stdio and appends every
// message it gets, as one JSON line, to the log file named by its first argument.
import * as fs from 'node:fs';
import { createMessageConnection, StreamMessageReader, StreamMessageWriter } from 'vscode-jsonrpc/node';

const logFile = process.argv[2]!;
const log = (method: string, params: unknown) => fs.appendFileSync(logFile, JSON.stringify({ method, params }) + '\n');
const connection = createMessageConnection(new StreamMessageReader(process.stdin), new StreamMessageWriter(process.stdout));

let suggestions = 0;
let accepted = 0;

const status = () => ({
  version: '0.0.0-test',
  backend: 'embedded',
  model: 'gemma-3-270m',
  modelLoaded: true,
  modelError: null,
  database: '/tmp/hindsight.db',
  served: suggestions,
  stats: {
    requests: 10,
    shown: 10,
    accepted: 4 + accepted,
    partial: 1,
    rejected: 5,
    expired: 0,
    continued: 0,
    acceptance_rate: (4 + accepted) / 10,
    latency_p50_ms: 80,
    latency_p95_ms: 200,
    rejected_by_reason: { typed_over: 3, dismissed: 2 },
  },
});

const EXIT_DELAY_MS = 200;

connection.onRequest('initialize', (params) => {
  log('initialize', params);
  fs.appendFileSync(logFile, JSON.stringify({ method: 'pid', params: process.pid }) + '\n');
  return {
    capabilities: {
      textDocumentSync: 2,
      inlineCompletionProvider: {},
      executeCommandProvider: { commands: ['hindsight.accept', 'hindsight.status', 'hindsight.reload'] },
    },
    serverInfo: { name: 'fake-hindsight' },
  };
});

connection.onRequest('textDocument/inlineCompletion', (params: { position: { line: number; character: number } }) => {
  log('textDocument/inlineCompletion', params);
  const id = `s${++suggestions}`;
  const at = params.position;
  return {
    items: [
      {
        insertText: 'return a + b',
        range: { start: at, end: at },
        command: { title: 'Accept', command: 'hindsight.accept', arguments: [{ id }] },
      },
    ],
  };
});

connection.onRequest('workspace/executeCommand', (params: { command: string }) => {
  log('workspace/executeCommand', params);
  if (params.command === 'hindsight.accept') {
    accepted++;
    return null;
  }
  return status();
});

connection.onRequest('shutdown', () => {
  log('shutdown', null);
  return null;
});

connection.onNotification((method, params) => {
  log(method, params);
  // Like the real server, it exits a moment after `exit` (its last writes come first).
  if (method === 'exit') setTimeout(() => process.exit(0), EXIT_DELAY_MS);
});

connection.listen();
