// The bundled extension against the real server, when HINDSIGHT_PYTHON names a Python that has hindsight
// installed (e.g. HINDSIGHT_PYTHON=../../.venv/bin/python npm test). Skipped otherwise: it loads the model.
import { Disposable, events, Position, setSetting, state, Uri, vscode } from './fakeVscode';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';

const python = process.env['HINDSIGHT_PYTHON'];

test('completion, accept, reject, statistics and reload with the real server', { skip: !python && 'HINDSIGHT_PYTHON not set', timeout: 120_000 }, async () => {
  const extension: { activate(context: unknown): Promise<void>; deactivate(): Promise<void> } = require('../../out/extension.js');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hindsight-real-'));
  // A data dir of its own (no acceptance gate the user trained: every suggestion is shown), with the
  // embedded model file the Python already has; the server inherits the environment.
  const model = execFileSync(python!, ['-c', 'from hindsight.engine.model import resolve_model; print(resolve_model(None))'], { encoding: 'utf8' }).trim();
  const saved = { data: process.env['HINDSIGHT_DATA_DIR'], db: process.env['HINDSIGHT_DB'] };
  process.env['HINDSIGHT_DATA_DIR'] = dir;
  process.env['HINDSIGHT_DB'] = path.join(dir, 'hindsight.db');
  setSetting('hindsight.model', model);
  const file = path.join(dir, 'add.py');
  fs.writeFileSync(file, 'def add(a, b):\n    """Return the sum of a and b."""\n    \n');
  setSetting('hindsight.pythonPath', path.resolve(python!));
  const context = { subscriptions: [] as { dispose(): unknown }[] };
  // Open in the editor before the extension starts: the client sends didOpen for it (the server answers
  // requests for open documents only).
  const document = { uri: Uri.parse(`file://${file}`), languageId: 'python', version: 1, getText: () => fs.readFileSync(file, 'utf8') };
  const open = vscode.workspace.textDocuments as unknown[];
  open.push(document);
  try {
    await extension.activate(context);
    const token = { isCancellationRequested: false, onCancellationRequested: () => new Disposable() };
    const provider = state.providers[0]!.provider;
    const complete = async () => (await provider['provideInlineCompletionItems']!(document, new Position(2, 4), { triggerKind: 1 }, token)) as any;

    const first = await complete();
    assert.ok(first.items.length > 0, 'no suggestion');
    const [item] = first.items;
    assert.equal(item.command.command, 'hindsight.accept');
    await vscode.commands.executeCommand(item.command.command, ...item.command.arguments);

    const second = await complete();
    assert.ok(second.items.length > 0, 'no second suggestion');
    events.onDidChangeActiveTextEditor.fire(undefined); // the user left: rejected as cursor_moved

    await vscode.commands.executeCommand('hindsight.showStats');
    const report = state.output.get('Hindsight Statistics')!.join('\n');
    const status = JSON.parse(report.slice(report.indexOf('{')));
    assert.equal(status.modelLoaded, true);
    assert.ok(status.stats.accepted >= 1, report);
    assert.ok(status.stats.shown >= 2, report);
    assert.deepEqual(status.stats.rejected_by_reason, { cursor_moved: 1 }, report);
    assert.match(state.statusBarItems[0]!.text, /^\$\(sparkle\) hindsight \d+%$/);

    await vscode.commands.executeCommand('hindsight.reload');
    assert.match(state.messages.join('\n'), /^Hindsight reloaded: /);
  } finally {
    open.splice(open.indexOf(document), 1);
    await extension.deactivate();
    for (const d of context.subscriptions) d.dispose();
    for (const [name, value] of [['HINDSIGHT_DATA_DIR', saved.data], ['HINDSIGHT_DB', saved.db]] as const) {
      if (value === undefined) delete process.env[name];
      else process.env[name] = value;
    }
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
