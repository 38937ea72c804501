// The bundled extension (out/extension.js, as packaged) with the real vscode-languageclient, against the
// fake `vscode` module and a fake server process that logs what it receives.
import { Disposable, events, Range, reset, Selection, Position, setSetting, state, Uri, vscode } from './fakeVscode';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterEach, beforeEach, test } from 'node:test';

const extension: { activate(context: unknown): Promise<void>; deactivate(): Promise<void> } = require('../../out/extension.js');

interface Logged {
  method: string;
  params: any;
}

let dir: string;
let logFile: string;
let context: { subscriptions: { dispose(): unknown }[] };

const serverCommand = () => [process.execPath, path.join(__dirname, 'fakeServer.js'), logFile];
const logged = (): Logged[] =>
  fs.existsSync(logFile) ? fs.readFileSync(logFile, 'utf8').trim().split('\n').map((l) => JSON.parse(l)) : [];
const received = (method: string) => logged().filter((m) => m.method === method);
const bar = () => state.statusBarItems[0]!;
const provider = () => state.providers[0]!.provider;
const command = (name: string, ...args: unknown[]) => vscode.commands.executeCommand(name, ...args);

async function waitFor(what: string, ready: () => boolean): Promise<void> {
  for (let waited = 0; !ready(); waited += 20) {
    if (waited > 10_000) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const document = { uri: Uri.parse('file:///work/a.py'), languageId: 'python', version: 1 };
const token = { isCancellationRequested: false, onCancellationRequested: () => new Disposable() };
const at = new Position(3, 4);

async function complete(): Promise<any> {
  return provider()['provideInlineCompletionItems']!(document, at, { triggerKind: 1, selectedCompletionInfo: undefined }, token);
}

async function activate(): Promise<void> {
  await extension.activate(context);
  await waitFor('the acceptance rate in the status bar', () => bar().text === '$(sparkle) hindsight 40%');
}

beforeEach(() => {
  reset();
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hindsight-vscode-'));
  logFile = path.join(dir, 'server.log');
  context = { subscriptions: [] };
  setSetting('hindsight.serverCommand', serverCommand());
});

afterEach(async () => {
  await extension.deactivate();
  for (const d of context.subscriptions) d.dispose();
  fs.rmSync(dir, { recursive: true, force: true });
});

test('activation starts the server with only the options the user set and shows the acceptance rate', async () => {
  setSetting('hindsight.context.prefixTokens', 2048);
  setSetting('hindsight.languages', ['python', 'tsx']);
  await activate();
  const [init] = received('initialize');
  assert.deepEqual(init!.params.initializationOptions, { context: { prefixTokens: 2048 }, languages: ['python', 'tsx'] });
  assert.ok(bar().visible);
  assert.equal(bar().command, 'hindsight.showStats');
  assert.match(bar().tooltip!, /Accepted 4 of 10 shown \(40%\)/);
  assert.deepEqual(state.providers[0]!.selector, [
    { scheme: 'file', language: 'python' },
    { scheme: 'untitled', language: 'python' },
    { scheme: 'file', language: 'typescriptreact' },
    { scheme: 'untitled', language: 'typescriptreact' },
  ]);
  // The server's commands are ours alone: the client did not register them a second time.
  assert.deepEqual(state.messages, []);
});

test('stable VS Code: a served item is reported shown; accepting it runs hindsight.accept on the server', async () => {
  await activate();
  const result = await complete();
  const [item] = result.items;
  assert.equal(item.insertText, 'return a + b');
  assert.deepEqual(item.command, { title: 'Accept', command: 'hindsight.accept', arguments: [{ id: 's1' }] });
  assert.equal(provider()['handleDidShowCompletionItem'], undefined);
  await waitFor('didShow', () => received('hindsight/didShow').length === 1);
  assert.deepEqual(received('hindsight/didShow')[0]!.params, { id: 's1' });

  // What VS Code does on Tab: insert the text, move the cursor, run the item's command.
  events.onDidChangeTextDocument.fire({ document, contentChanges: [{ range: new Range(at, at), text: 'return a + b' }] });
  events.onDidChangeTextEditorSelection.fire({ textEditor: { document }, selections: [new Selection(new Position(3, 16), new Position(3, 16))] });
  await command(item.command.command, ...item.command.arguments);
  await waitFor('the accept', () => received('workspace/executeCommand').some((m) => m.params.command === 'hindsight.accept'));
  const accept = received('workspace/executeCommand').find((m) => m.params.command === 'hindsight.accept');
  assert.deepEqual(accept!.params.arguments, [{ id: 's1' }]);
  await waitFor('the new rate', () => bar().text === '$(sparkle) hindsight 50%');
  assert.deepEqual(received('hindsight/didReject'), []);
});

test('stable VS Code: typing over a suggestion, moving away, or Escape sends didReject with the reason', async () => {
  await activate();
  await complete();
  events.onDidChangeTextDocument.fire({ document, contentChanges: [{ range: new Range(at, at), text: 'x' }] });
  await complete();
  events.onDidChangeTextEditorSelection.fire({ textEditor: { document }, selections: [new Selection(new Position(9, 0), new Position(9, 0))] });
  await complete();
  await command('hindsight.dismiss');
  assert.ok(state.executed.some((c) => c.command === 'editor.action.inlineSuggest.hide'));
  await waitFor('three rejects', () => received('hindsight/didReject').length === 3);
  assert.deepEqual(
    received('hindsight/didReject').map((m) => m.params),
    [
      { id: 's1', reason: 'typed_over' },
      { id: 's2', reason: 'cursor_moved' },
      { id: 's3', reason: 'dismissed' },
    ],
  );
});

test('with the proposed API enabled, the hooks are registered and report show and partial accepts', async () => {
  state.proposedApi = true;
  await activate();
  const [item] = (await complete()).items;
  assert.deepEqual(received('hindsight/didShow'), []);
  provider()['handleDidShowCompletionItem']!(item, item.insertText);
  provider()['handleDidPartiallyAcceptCompletionItem']!(item, 7);
  provider()['handleDidPartiallyAcceptCompletionItem']!(item, { kind: 1, acceptedLength: 7 });
  provider()['handleEndOfLifetime']!(item, { kind: 1 });
  await waitFor('the reject', () => received('hindsight/didReject').length === 1);
  assert.deepEqual(
    logged().filter((m) => m.method.startsWith('hindsight/')),
    [
      { method: 'hindsight/didShow', params: { id: 's1' } },
      { method: 'hindsight/didPartiallyAccept', params: { id: 's1', acceptedLength: 7 } },
      { method: 'hindsight/didReject', params: { id: 's1', reason: 'dismissed' } },
    ],
  );
});

test('toggle turns completions off and on without stopping the server, in the hindsight.enable setting', async () => {
  await activate();
  await command('hindsight.toggle');
  assert.equal(state.global['hindsight.enable'], false);
  assert.equal(bar().text, '$(circle-slash) hindsight');
  assert.equal(await complete(), undefined);
  assert.deepEqual(received('textDocument/inlineCompletion'), []);

  await command('hindsight.toggle');
  assert.equal(state.global['hindsight.enable'], true);
  assert.equal(bar().text, '$(sparkle) hindsight 40%');
  assert.equal((await complete()).items.length, 1);
  assert.deepEqual(received('shutdown'), []);
  assert.equal(received('initialize').length, 1);
});

test('toggle writes to the workspace when the workspace set it', async () => {
  setSetting('hindsight.enable', true, 'workspace');
  await activate();
  await command('hindsight.toggle');
  assert.equal(state.workspace['hindsight.enable'], false);
  assert.equal(state.global['hindsight.enable'], undefined);
});

test('Show Statistics writes the summary and the raw status to an output channel', async () => {
  await activate();
  await command('hindsight.showStats');
  const text = state.output.get('Hindsight Statistics')!.join('\n');
  assert.match(text, /^Hindsight 0\.0\.0-test: embedded backend, model gemma-3-270m/);
  assert.match(text, /"acceptance_rate": 0\.4/);
});

test('Reload asks a running server to reload and says which model it has', async () => {
  await activate();
  await command('hindsight.reload');
  assert.ok(received('workspace/executeCommand').some((m) => m.params.command === 'hindsight.reload'));
  assert.deepEqual(state.messages, ['Hindsight reloaded: gemma-3-270m']);
});

test('a server that cannot start is one message, in its own words, and the error state; Reload starts it once it can', async () => {
  const script = path.join(dir, 'hindsight-server');
  fs.writeFileSync(script, '#!/bin/sh\necho "loading the model" >&2\necho "hindsight: no model at /nowhere.gguf" >&2\nexit 1\n', { mode: 0o755 });
  setSetting('hindsight.serverCommand', [script]);
  await extension.activate(context);
  assert.equal(bar().text, '$(error) hindsight');
  assert.match(bar().tooltip!, /not running: hindsight: no model at \/nowhere.gguf/);
  assert.deepEqual(state.messages, ['Hindsight: the server could not start: hindsight: no model at /nowhere.gguf']);

  fs.rmSync(script);
  state.messages.length = 0;
  await command('hindsight.reload');
  assert.equal(state.messages.length, 1);
  assert.match(state.messages[0]!, /^Hindsight: the server could not start: .*ENOENT/);

  fs.writeFileSync(script, `#!/bin/sh\nexec ${serverCommand().map((a) => `'${a}'`).join(' ')}\n`, { mode: 0o755 });
  await command('hindsight.reload');
  await waitFor('the server', () => bar().text === '$(sparkle) hindsight 40%');
  assert.equal(received('initialize').length, 1);
});

test('changing a server setting restarts the server with the new options', async () => {
  await activate();
  setSetting('hindsight.model', '/models/coder.gguf');
  await waitFor('a second initialize', () => received('initialize').length === 2);
  assert.equal(received('shutdown').length, 1);
  assert.deepEqual(received('initialize')[1]!.params.initializationOptions, { model: { path: '/models/coder.gguf' } });
  assert.equal(state.providers.length, 1);
});

test('a burst of setting changes restarts one step at a time and leaves one server and one provider', async () => {
  await activate();
  setSetting('hindsight.model', '/models/coder.gguf');
  setSetting('hindsight.backend', 'openai');
  await waitFor('three starts and two stops', () => received('initialize').length === 3 && received('shutdown').length === 2);
  assert.deepEqual(received('initialize')[2]!.params.initializationOptions, { model: { path: '/models/coder.gguf' }, backend: 'openai' });
  await waitFor('the status bar', () => bar().text === '$(sparkle) hindsight 40%');
  assert.equal(state.providers.length, 1);
});

test('deactivation waits for the server process to exit', async () => {
  await activate();
  const [pid] = received('pid').map((m) => m.params as number);
  await extension.deactivate();
  assert.equal(received('exit').length, 1);
  assert.throws(() => process.kill(pid!, 0), { code: 'ESRCH' }); // gone, not just told to go
});
