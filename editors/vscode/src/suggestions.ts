// What became of each suggestion VS Code showed, told to the server as hindsight/didShow,
// hindsight/didPartiallyAccept and hindsight/didReject. Pure: no `vscode` import.
//
// Two kinds of input feed it; the first outcome signal for the suggestion on screen wins, later ones are
// ignored:
// - VS Code's inline completion hooks (proposed API `inlineCompletionsAdditions`, only when VS Code runs
//   with it enabled for this extension): shown(), partiallyAccepted(), endOfLifetime(), listEnded().
// - Signals stable VS Code gives every extension, used always: served() (a result came back),
//   accepted() (the item's hindsight.accept command ran), documentChanged(), cursorMoved(),
//   editorChanged(), dismissed() (our Escape keybinding).
// Without the hooks (`hooks` false) a served list counts as shown at once, since VS Code shows the first
// item of a non-empty result (cycling to the server's alternatives is then invisible to us), and one edit
// that writes several characters of it at once (not only whitespace) and not all of it counts as a partial
// accept (VS Code's accept-word, or a paste of them), of all it has written so far. Only the item
// on screen is ever rejected. A suggestion superseded by a newer result is not reported: the server sees
// the new request and marks the old one superseded (or continued, when it served the typed-ahead rest).

export type RejectReason = 'dismissed' | 'typed_over' | 'cursor_moved';

export const DID_SHOW = 'hindsight/didShow';
export const DID_PARTIALLY_ACCEPT = 'hindsight/didPartiallyAccept';
export const DID_REJECT = 'hindsight/didReject';

export type Notify = (method: string, params: Record<string, unknown>) => void;

export interface Position {
  line: number;
  character: number;
}

export interface Change {
  range: { start: Position; end: Position };
  text: string;
}

export interface ServedItem {
  id: string;
  insertText: string;
}

/** Why VS Code ended an item's life (the proposed `InlineCompletionEndOfLifeReason`, flattened). */
export type EndOfLife =
  | { kind: 'accepted' }
  | { kind: 'rejected' }
  | { kind: 'ignored'; superseded: boolean; userTypingDisagreed: boolean };

/** The latest served list: its items share one document and one start position. */
interface Live {
  uri: string;
  start: Position;
  items: readonly ServedItem[];
  current: string | undefined; // the id on screen: the last one shown
  written: string; // what the user has typed (or accepted) of the suggestion so far
  partial: Map<string, number>; // id → the largest acceptedLength told to the server
}

export class SuggestionTracker {
  private live: Live | undefined;

  constructor(
    private readonly notify: Notify,
    private readonly hooks: () => boolean,
  ) {}

  /**
   * A completion result for `uri` drawn from `start`; it replaces whatever was live before. `written`: the
   * text from `start` to the cursor, when the items replace it (they continue the suggest widget's
   * selected item, which begins with or replaces the word typed so far).
   */
  served(uri: string, start: Position, items: readonly ServedItem[], written = ''): void {
    this.live = { uri, start, items, current: undefined, written, partial: new Map() };
    const first = items[0];
    if (first && !this.hooks()) this.shown(first.id);
  }

  /**
   * `id` is on screen. Told once per item, and again when the user cycles back to it: the server follows
   * the cycling by these (it rejects the items cycled past itself).
   */
  shown(id: string): void {
    const live = this.live;
    if (!live || live.current === id || !live.items.some((i) => i.id === id)) return;
    live.current = id;
    this.notify(DID_SHOW, { id });
  }

  partiallyAccepted(id: string, acceptedLength: number): void {
    const live = this.live;
    // VS Code calls the hook twice per partial accept (old and new signature); report growth only.
    if (!live || live.current !== id || acceptedLength <= (live.partial.get(id) ?? 0)) return;
    live.partial.set(id, acceptedLength);
    this.notify(DID_PARTIALLY_ACCEPT, { id, acceptedLength });
  }

  /** An item's own command ran: the server hears of the accept from that command, so no report here. */
  accepted(id: string): void {
    if (this.live?.items.some((i) => i.id === id)) this.live = undefined;
  }

  /** Only the item on screen matters: the others were cycled past (or never shown). */
  endOfLifetime(id: string, reason: EndOfLife): void {
    if (this.live?.current !== id) return;
    if (reason.kind === 'rejected') this.reject('dismissed');
    else if (reason.kind === 'ignored' && !reason.superseded) this.reject(reason.userTypingDisagreed ? 'typed_over' : 'cursor_moved');
    else this.live = undefined;
  }

  /** VS Code dropped a whole list: nothing in it can be shown or accepted any more. */
  listEnded(ids: readonly string[]): void {
    if (this.live?.items.some((i) => ids.includes(i.id))) this.live = undefined;
  }

  /** Escape while a suggestion was visible. */
  dismissed(): void {
    this.reject('dismissed');
  }

  /** Edits to `uri`: typing (or accepting) the suggestion's next characters keeps it alive, anything else types over it. */
  documentChanged(uri: string, changes: readonly Change[]): void {
    const live = this.live;
    if (!live || live.uri !== uri || changes.length === 0) return;
    const written = changes.length === 1 ? writtenAfter(live, changes[0]!) : undefined;
    if (written === undefined) {
      this.reject('typed_over');
      return;
    }
    live.written = written;
    // Typed or inserted in full: accepted (its command follows) or written by hand; either way not rejected.
    if (live.items.some((i) => i.insertText === written)) this.live = undefined;
    else if (!this.hooks() && live.current !== undefined && changes[0]!.text.trim().length > 1) {
      this.partiallyAccepted(live.current, written.length);
    }
  }

  /** The cursor of the active editor on `uri`; `empty` is false when text is selected. */
  cursorMoved(uri: string, cursor: Position, empty: boolean): void {
    const live = this.live;
    if (!live || live.uri !== uri) return;
    const expected = advance(live.start, live.written);
    if (!empty || cursor.line !== expected.line || cursor.character !== expected.character) this.reject('cursor_moved');
  }

  /** Another document (or none) became the active editor. */
  editorChanged(uri: string | undefined): void {
    if (this.live && this.live.uri !== uri) this.reject('cursor_moved');
  }

  /** The suggestion on screen, if one is, is rejected; the list is done either way. */
  private reject(reason: RejectReason): void {
    const id = this.live?.current;
    this.live = undefined;
    if (id !== undefined) this.notify(DID_REJECT, { id, reason });
  }
}

/**
 * What the user has written along the suggestion after `change`, or undefined when the change leaves it.
 * The change must end at the cursor and start inside the written text, and the result must begin some
 * item's insert text. That covers typing, deleting what was typed, and VS Code's own accept (which replaces
 * the written text by the whole insert text).
 */
function writtenAfter(live: Live, change: Change): string | undefined {
  if (!samePosition(change.range.end, advance(live.start, live.written))) return undefined;
  const from = offsetIn(live.start, live.written, change.range.start);
  if (from === undefined) return undefined;
  // Positions count a line break as one; CRLF documents send '\r\n' for Enter.
  const written = live.written.slice(0, from) + change.text.replace(/\r\n/g, '\n');
  return live.items.some((i) => i.insertText.startsWith(written)) ? written : undefined;
}

/** Where the cursor ends up after typing `text` at `start`. */
export function advance(start: Position, text: string): Position {
  const lines = text.split('\n');
  if (lines.length === 1) return { line: start.line, character: start.character + text.length };
  return { line: start.line + lines.length - 1, character: lines[lines.length - 1]!.length };
}

/** The offset in `text` (typed at `start`) of `pos`, or undefined when `pos` is outside it. */
function offsetIn(start: Position, text: string, pos: Position): number | undefined {
  for (let offset = 0; offset <= text.length; offset++) {
    if (samePosition(advance(start, text.slice(0, offset)), pos)) return offset;
  }
  return undefined;
}

function samePosition(a: Position, b: Position): boolean {
  return a.line === b.line && a.character === b.character;
}
