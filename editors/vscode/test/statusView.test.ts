import assert from 'node:assert/strict';
import { test } from 'node:test';
import { barState, reloadMessage, type ServerStatus, type Stats, statsReport } from '../src/statusView';

const stats = (over: Partial<Stats> = {}): Stats => ({
  requests: 40,
  shown: 30,
  accepted: 12,
  partial: 2,
  rejected: 15,
  expired: 1,
  continued: 3,
  acceptance_rate: 0.4166,
  latency_p50_ms: 81.4,
  latency_p95_ms: 240.6,
  rejected_by_reason: { typed_over: 10, dismissed: 5 },
  ...over,
});

const status = (over: Partial<ServerStatus> = {}): ServerStatus => ({
  version: '0.3.0',
  backend: 'embedded',
  model: 'gemma-3-270m',
  modelLoaded: true,
  modelError: null,
  database: '/home/u/.local/share/hindsight/hindsight.db',
  served: 30,
  stats: stats(),
  ...over,
});

test('server still starting: plain label, tooltip says so', () => {
  assert.deepEqual(barState({ enabled: true, status: undefined, serverError: undefined }), {
    text: '$(sparkle) hindsight',
    tooltip: 'Hindsight: starting the server…',
    kind: 'normal',
  });
});

test('no suggestion shown yet: no rate in the label', () => {
  const state = barState({ enabled: true, status: status({ stats: stats({ shown: 0, accepted: 0, acceptance_rate: 0 }) }), serverError: undefined });
  assert.equal(state.text, '$(sparkle) hindsight');
  assert.match(state.tooltip, /No suggestions shown yet/);
});

test('some acceptance: the rounded rate in the label, the counts, reasons and latency in the tooltip', () => {
  const state = barState({ enabled: true, status: status(), serverError: undefined });
  assert.equal(state.text, '$(sparkle) hindsight 42%');
  assert.equal(state.kind, 'normal');
  assert.equal(
    state.tooltip,
    [
      'Hindsight 0.3.0: embedded backend, model gemma-3-270m',
      'Accepted 12 of 30 shown (42%), 2 partly',
      'Rejected 15 (typed_over 10, dismissed 5), expired 1',
      'Latency p50 81 ms, p95 241 ms',
      'Database: /home/u/.local/share/hindsight/hindsight.db',
    ].join('\n'),
  );
});

test('model still loading: a spinner', () => {
  assert.match(barState({ enabled: true, status: status({ modelLoaded: false }), serverError: undefined }).text, /^\$\(loading~spin\) hindsight/);
});

test('disabled: its own icon and kind, the details stay in the tooltip', () => {
  const state = barState({ enabled: false, status: status(), serverError: undefined });
  assert.equal(state.text, '$(circle-slash) hindsight');
  assert.equal(state.kind, 'disabled');
  assert.match(state.tooltip, /^Inline completions off/);
  assert.match(state.tooltip, /Accepted 12 of 30/);
});

test('server not running, or the model failed: error state with the reason, even when disabled', () => {
  const down = barState({ enabled: false, status: status(), serverError: 'spawn python3 ENOENT' });
  assert.deepEqual(down, { text: '$(error) hindsight', tooltip: 'Hindsight server not running: spawn python3 ENOENT', kind: 'error' });
  const broken = barState({ enabled: true, status: status({ modelLoaded: false, modelError: 'no such file: m.gguf' }), serverError: undefined });
  assert.equal(broken.kind, 'error');
  assert.match(broken.tooltip, /no such file: m\.gguf/);
});

test('statistics the server could not read, or no database', () => {
  assert.match(barState({ enabled: true, status: status({ stats: { error: 'database is locked' } }), serverError: undefined }).tooltip, /Statistics unavailable: database is locked/);
  assert.match(barState({ enabled: true, status: status({ stats: null, database: null }), serverError: undefined }).tooltip, /No statistics/);
});

test('the stats report: the summary, then the raw status as JSON', () => {
  const report = statsReport(status());
  assert.ok(report.startsWith('Hindsight 0.3.0: embedded backend'));
  assert.deepEqual(JSON.parse(report.slice(report.indexOf('{'))), status());
});

test('reload: says reloaded, or what it kept and why', () => {
  assert.deepEqual(reloadMessage(status({ reloadProblems: [] })), { level: 'info', text: 'Hindsight reloaded: gemma-3-270m' });
  const kept = 'hindsight: adapter v3: llama.cpp did not load the adapter; still serving llama.cpp:model.gguf+v2';
  assert.deepEqual(reloadMessage(status({ reloadProblems: [kept] })), { level: 'warning', text: kept });
  assert.equal(reloadMessage(status({ modelLoaded: false, modelError: 'model file not found' })).level, 'error');
});

test("the learning loop's last run: what it promoted, else why nothing", () => {
  const promoted = { endedAt: 1796694000, status: 'done', promoted: [{ step: 'gate', version: 'gate-7' }], reason: 'x' };
  assert.match(barState({ enabled: true, status: status({ lastLearning: promoted }), serverError: undefined }).tooltip,
    /\nLast learning run 2026-12-0\d \d\d:\d\d UTC, done: promoted gate gate-7\n/);
  const skipped = { endedAt: 1796694000, status: 'skipped', promoted: [], reason: 'gate: 3 suggestions judged since the last run, fewer than 200' };
  assert.match(barState({ enabled: true, status: status({ lastLearning: skipped }), serverError: undefined }).tooltip,
    /Last learning run .* UTC, skipped: gate: 3 suggestions judged/);
  const told = { ...promoted, summary: 'acceptance on your held-out files 0.25 → 0.29, adapter 7 promoted' };
  const next = { auto: true, running: false, stage: null, when: 'after 10 idle minutes, once 40 more suggestions are judged' };
  const tooltip = barState({ enabled: true, status: status({ lastLearning: told, nextLearning: next }), serverError: undefined }).tooltip;
  assert.match(tooltip, /done: acceptance on your held-out files 0.25 → 0.29, adapter 7 promoted\n/);
  assert.match(tooltip, /\nNext learning run: after 10 idle minutes, once 40 more suggestions are judged/);
});
