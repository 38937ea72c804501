import assert from 'node:assert/strict';
import { beforeEach, describe, test } from 'node:test';
import { type Change, type Position, SuggestionTracker } from '../src/suggestions';

const URI = 'file:///work/a.py';
const AT: Position = { line: 3, character: 4 };

let sent: [string, Record<string, unknown>][];
let hooks: boolean;
let tracker: SuggestionTracker;

beforeEach(() => {
  sent = [];
  hooks = false;
  tracker = new SuggestionTracker(
    (method, params) => sent.push([method, params]),
    () => hooks,
  );
});

const insert = (at: Position, text: string): Change => ({ range: { start: at, end: at }, text });
const pos = (line: number, character: number): Position => ({ line, character });
/** Typing `text` at `at` on one line, a key (one change) at a time. */
const typeAt = (at: Position, text: string) =>
  [...text].forEach((c, i) => tracker.documentChanged(URI, [insert(pos(at.line, at.character + i), c)]));

describe('stable VS Code (no proposed hooks)', () => {
  test('a served item counts as shown once', () => {
    tracker.served(URI, AT, [{ id: 'a', insertText: 'return x' }]);
    tracker.shown('a'); // only the hooks call this; harmless twice
    assert.deepEqual(sent, [['hindsight/didShow', { id: 'a' }]]);
  });

  test('an empty result shows nothing', () => {
    tracker.served(URI, AT, []);
    assert.deepEqual(sent, []);
  });

  test('accepted through its command: no reject, not even after the inserted text and a cursor move', () => {
    tracker.served(URI, AT, [{ id: 'a', insertText: 'return x' }]);
    tracker.accepted('a');
    tracker.documentChanged(URI, [insert(AT, 'return x')]);
    tracker.cursorMoved(URI, pos(3, 12), true);
    tracker.cursorMoved(URI, pos(9, 0), true);
    assert.deepEqual(sent.map(([m]) => m), ['hindsight/didShow']);
  });

  test("VS Code's accept edit (typed text replaced by the whole insert text) is not typing over", () => {
    tracker.served(URI, AT, [{ id: 'a', insertText: 'return x' }]);
    typeAt(AT, 're');
    tracker.documentChanged(URI, [{ range: { start: AT, end: pos(3, 6) }, text: 'return x' }]);
    tracker.accepted('a');
    assert.deepEqual(sent.map(([m]) => m), ['hindsight/didShow']);
  });

  test('an item that continues the selected suggest item starts at the typed word: accepting it is no typing over', () => {
    // "ret" typed at AT, the suggest widget's "return" selected: the item replaces "ret" from AT.
    tracker.served(URI, AT, [{ id: 'a', insertText: 'return x' }], 'ret');
    tracker.cursorMoved(URI, pos(3, 7), true);
    tracker.documentChanged(URI, [insert(pos(3, 7), 'u')]);
    tracker.documentChanged(URI, [{ range: { start: AT, end: pos(3, 8) }, text: 'return x' }]);
    tracker.accepted('a');
    assert.deepEqual(sent.map(([m]) => m), ['hindsight/didShow']);
    tracker.served(URI, AT, [{ id: 'b', insertText: 'return y' }], 'ret');
    tracker.documentChanged(URI, [insert(pos(3, 7), 'i')]);
    assert.deepEqual(sent.slice(2), [['hindsight/didReject', { id: 'b', reason: 'typed_over' }]]);
  });

  test('a word of it written at once (accept-word) is a partial accept of all written so far; typing is not', () => {
    tracker.served(URI, AT, [{ id: 'a', insertText: 'return self.x' }]);
    tracker.documentChanged(URI, [insert(AT, 'r')]);
    tracker.documentChanged(URI, [insert(pos(3, 5), 'eturn')]);
    tracker.documentChanged(URI, [insert(pos(3, 10), ' ')]);
    tracker.documentChanged(URI, [insert(pos(3, 11), 'self')]);
    tracker.documentChanged(URI, [insert(pos(3, 15), '.x')]); // the rest: done, no partial
    assert.deepEqual(sent, [
      ['hindsight/didShow', { id: 'a' }],
      ['hindsight/didPartiallyAccept', { id: 'a', acceptedLength: 6 }],
      ['hindsight/didPartiallyAccept', { id: 'a', acceptedLength: 11 }],
    ]);
  });

  test('typing along keeps it alive; typing something else rejects it as typed_over, once', () => {
    tracker.served(URI, AT, [{ id: 'a', insertText: 'return x' }]);
    tracker.documentChanged(URI, [insert(AT, 'r')]);
    tracker.cursorMoved(URI, pos(3, 5), true);
    tracker.documentChanged(URI, [insert(pos(3, 5), 'e')]);
    tracker.documentChanged(URI, [{ range: { start: pos(3, 5), end: pos(3, 6) }, text: '' }]); // backspace
    tracker.documentChanged(URI, [insert(pos(3, 5), 'a')]); // "ra": leaves the suggestion
    tracker.documentChanged(URI, [insert(pos(3, 6), 'b')]);
    assert.deepEqual(sent, [
      ['hindsight/didShow', { id: 'a' }],
      ['hindsight/didReject', { id: 'a', reason: 'typed_over' }],
    ]);
  });

  test('typing along over a line break, in a CRLF document', () => {
    tracker.served(URI, AT, [{ id: 'a', insertText: 'if x:\n    y' }]);
    typeAt(AT, 'if x:');
    tracker.documentChanged(URI, [insert(pos(3, 9), '\r\n')]);
    tracker.cursorMoved(URI, pos(4, 0), true);
    tracker.documentChanged(URI, [insert(pos(4, 0), '    ')]);
    tracker.cursorMoved(URI, pos(4, 4), true);
    assert.deepEqual(sent.map(([m]) => m), ['hindsight/didShow']);
  });

  test('an edit elsewhere, or several at once, is typing over', () => {
    tracker.served(URI, AT, [{ id: 'a', insertText: 'return x' }]);
    tracker.documentChanged(URI, [insert(pos(0, 0), 'r')]);
    tracker.served(URI, AT, [{ id: 'b', insertText: 'return x' }]);
    tracker.documentChanged(URI, [insert(AT, 'r'), insert(pos(5, 4), 'r')]);
    assert.deepEqual(sent.slice(-1), [['hindsight/didReject', { id: 'b', reason: 'typed_over' }]]);
    assert.equal(sent.filter(([m]) => m === 'hindsight/didReject').length, 2);
  });

  test('edits to another document are ignored', () => {
    tracker.served(URI, AT, [{ id: 'a', insertText: 'return x' }]);
    tracker.documentChanged('file:///work/b.py', [insert(pos(0, 0), 'zzz')]);
    assert.deepEqual(sent.map(([m]) => m), ['hindsight/didShow']);
  });

  test('moving the cursor away, selecting text, or switching editors rejects it as cursor_moved', () => {
    for (const leave of [
      () => tracker.cursorMoved(URI, pos(7, 0), true),
      () => tracker.cursorMoved(URI, AT, false),
      () => tracker.editorChanged('file:///work/b.py'),
      () => tracker.editorChanged(undefined),
    ]) {
      sent = [];
      tracker.served(URI, AT, [{ id: 'a', insertText: 'return x' }]);
      tracker.cursorMoved(URI, AT, true); // where it was asked for: still alive
      tracker.editorChanged(URI);
      leave();
      leave();
      assert.deepEqual(sent, [
        ['hindsight/didShow', { id: 'a' }],
        ['hindsight/didReject', { id: 'a', reason: 'cursor_moved' }],
      ]);
    }
  });

  test('Escape rejects it as dismissed', () => {
    tracker.served(URI, AT, [{ id: 'a', insertText: 'return x' }]);
    tracker.dismissed();
    tracker.dismissed();
    tracker.cursorMoved(URI, pos(0, 0), true);
    assert.deepEqual(sent.slice(1), [['hindsight/didReject', { id: 'a', reason: 'dismissed' }]]);
  });

  test('a newer result supersedes the old one without a report; the old one is then never rejected', () => {
    tracker.served(URI, AT, [{ id: 'a', insertText: 'return x' }]);
    tracker.documentChanged(URI, [insert(AT, 'r')]);
    tracker.served(URI, pos(3, 5), [{ id: 'b', insertText: 'eturn x' }]);
    tracker.dismissed();
    tracker.shown('a');
    tracker.endOfLifetime('a', { kind: 'rejected' });
    assert.deepEqual(sent, [
      ['hindsight/didShow', { id: 'a' }],
      ['hindsight/didShow', { id: 'b' }],
      ['hindsight/didReject', { id: 'b', reason: 'dismissed' }],
    ]);
  });

  test('a suggestion typed out in full by hand is not rejected', () => {
    tracker.served(URI, AT, [{ id: 'a', insertText: 'ab' }]);
    tracker.documentChanged(URI, [insert(AT, 'a')]);
    tracker.documentChanged(URI, [insert(pos(3, 5), 'b')]);
    tracker.cursorMoved(URI, pos(8, 0), true);
    assert.deepEqual(sent.map(([m]) => m), ['hindsight/didShow']);
  });
});

describe('with the proposed hooks', () => {
  beforeEach(() => {
    hooks = true;
  });

  test('shown only when VS Code says so, once', () => {
    tracker.served(URI, AT, [{ id: 'a', insertText: 'return x' }]);
    assert.deepEqual(sent, []);
    tracker.shown('a');
    tracker.shown('a');
    assert.deepEqual(sent, [['hindsight/didShow', { id: 'a' }]]);
  });

  test('a suggestion never shown is never rejected', () => {
    tracker.served(URI, AT, [{ id: 'a', insertText: 'return x' }]);
    tracker.cursorMoved(URI, pos(0, 0), true);
    tracker.endOfLifetime('a', { kind: 'rejected' });
    assert.deepEqual(sent, []);
  });

  test('partial accepts report the accepted length once each, despite the double call', () => {
    tracker.served(URI, AT, [{ id: 'a', insertText: 'return x + y' }]);
    tracker.shown('a');
    tracker.partiallyAccepted('a', 7); // old signature (a number)
    tracker.partiallyAccepted('a', 7); // new signature (PartialAcceptInfo)
    tracker.documentChanged(URI, [insert(AT, 'return ')]);
    tracker.partiallyAccepted('a', 9);
    tracker.partiallyAccepted('a', 9);
    assert.deepEqual(sent, [
      ['hindsight/didShow', { id: 'a' }],
      ['hindsight/didPartiallyAccept', { id: 'a', acceptedLength: 7 }],
      ['hindsight/didPartiallyAccept', { id: 'a', acceptedLength: 9 }],
    ]);
  });

  test('end of lifetime: rejected → dismissed, typing disagreed → typed_over, ignored → cursor_moved', () => {
    const cases = [
      [{ kind: 'rejected' }, 'dismissed'],
      [{ kind: 'ignored', superseded: false, userTypingDisagreed: true }, 'typed_over'],
      [{ kind: 'ignored', superseded: false, userTypingDisagreed: false }, 'cursor_moved'],
    ] as const;
    for (const [reason, expected] of cases) {
      sent = [];
      tracker.served(URI, AT, [{ id: 'a', insertText: 'return x' }]);
      tracker.shown('a');
      tracker.endOfLifetime('a', reason);
      tracker.dismissed(); // a later signal for the same item is not reported again
      assert.deepEqual(sent.slice(1), [['hindsight/didReject', { id: 'a', reason: expected }]]);
    }
  });

  test('end of lifetime: accepted or superseded → no report', () => {
    for (const reason of [{ kind: 'accepted' }, { kind: 'ignored', superseded: true, userTypingDisagreed: false }] as const) {
      sent = [];
      tracker.served(URI, AT, [{ id: 'a', insertText: 'return x' }]);
      tracker.shown('a');
      tracker.endOfLifetime('a', reason);
      tracker.cursorMoved(URI, pos(0, 0), true);
      assert.deepEqual(sent.map(([m]) => m), ['hindsight/didShow']);
    }
  });

  test('the stable signals still report when a hook did not', () => {
    tracker.served(URI, AT, [{ id: 'a', insertText: 'return x' }]);
    tracker.shown('a');
    tracker.documentChanged(URI, [insert(AT, 'x')]);
    tracker.endOfLifetime('a', { kind: 'ignored', superseded: false, userTypingDisagreed: true });
    assert.deepEqual(sent.slice(1), [['hindsight/didReject', { id: 'a', reason: 'typed_over' }]]);
  });

  test("cycling through the server's alternatives: didShow on each switch, only the one on screen is rejected", () => {
    tracker.served(URI, AT, [
      { id: 'a', insertText: 'return x' },
      { id: 'b', insertText: 'return y' },
      { id: 'c', insertText: 'pass' },
    ]);
    tracker.shown('a');
    tracker.shown('b');
    tracker.shown('a');
    tracker.endOfLifetime('b', { kind: 'rejected' }); // cycled past: the server settles it
    tracker.partiallyAccepted('b', 3);
    tracker.documentChanged(URI, [insert(AT, 'return ')]); // along both a and b
    tracker.dismissed();
    assert.deepEqual(sent, [
      ['hindsight/didShow', { id: 'a' }],
      ['hindsight/didShow', { id: 'b' }],
      ['hindsight/didShow', { id: 'a' }],
      ['hindsight/didReject', { id: 'a', reason: 'dismissed' }],
    ]);
  });

  test('typing along an alternative keeps the list alive; its accept settles the list', () => {
    tracker.served(URI, AT, [
      { id: 'a', insertText: 'return x' },
      { id: 'c', insertText: 'pass' },
    ]);
    tracker.shown('c');
    tracker.documentChanged(URI, [insert(AT, 'pa')]);
    tracker.accepted('c');
    tracker.cursorMoved(URI, pos(0, 0), true);
    assert.deepEqual(sent, [['hindsight/didShow', { id: 'c' }]]);
  });

  test('a list VS Code dropped is not reported afterwards', () => {
    tracker.served(URI, AT, [{ id: 'a', insertText: 'return x' }]);
    tracker.shown('a');
    tracker.listEnded(['a']);
    tracker.dismissed();
    assert.deepEqual(sent.map(([m]) => m), ['hindsight/didShow']);
  });
});
