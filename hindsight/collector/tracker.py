"""What happened to each suggestion, inferred from the document alone.

The client tells us about accepts, partial accepts and explicit rejections. Everything else the server
infers from the edits it sees (no client help):

- a shown suggestion that the user types over (types something it did not suggest, or edits elsewhere)
  is rejected with reason ``typed_over``; one superseded by a newer request is rejected ``superseded``,
  unless the newer request was served from the typed-ahead cache (then it is ``continued``); the
  alternatives the user cycled past are rejected ``cycled`` once the one they stopped at is settled;
- after a rejection, the text the user actually wrote at that spot, read once they leave the line(s);
- for accepted text, how much of it is still there after the persistence delays (edit similarity).

Positions are (line, character) in Python string units, in document coordinates after every change seen
so far; each change shifts the positions we track.
"""

from __future__ import annotations

import difflib
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

Pos = tuple[int, int]


def end_of(start: Pos, text: str) -> Pos:
    """Where `text` ends when inserted at `start`."""
    parts = text.split("\n")
    if len(parts) == 1:
        return (start[0], start[1] + len(text))
    return (start[0] + len(parts) - 1, len(parts[-1]))


def shift(pos: Pos, start: Pos, old_end: Pos, new_end: Pos, *, inside: str = "start") -> Pos:
    """`pos` after the range [start, old_end) was replaced by text ending at new_end."""
    if pos < start or (pos == start and inside == "start"):
        return pos
    if pos < old_end:
        return start if inside == "start" else new_end
    if pos[0] == old_end[0]:
        return (new_end[0], new_end[1] + pos[1] - old_end[1])
    return (pos[0] + new_end[0] - old_end[0], pos[1])


def text_between(lines: Sequence[str], start: Pos, end: Pos) -> str:
    if start >= end or start[0] >= len(lines):
        return ""
    if start[0] == end[0]:
        return lines[start[0]][start[1] : end[1]]
    parts = [lines[start[0]][start[1] :]]
    parts += lines[start[0] + 1 : min(end[0], len(lines))]
    if end[0] < len(lines):
        parts.append(lines[end[0]][: end[1]])
    return "\n".join(parts)


def similarity(a: str, b: str) -> float:
    """How much of the accepted text `a` is still there as `b`, in [0, 1] (1 = identical): difflib's ratio,
    twice the characters of the matching blocks over both lengths. The persist_* columns hold it, and the
    refresh's PERSISTED threshold is in it. It is not the benchmarks' Levenshtein edit similarity
    (hindsight.simulate.simulator.edit_similarity): a moved block keeps its characters here ("ab" against
    "ba" is 0.5, there 0.0)."""
    if not a and not b:
        return 1.0
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()


@dataclass
class Live:
    id: str
    pos: Pos
    text: str  # as drawn from `pos`: the lead, then the model's completion
    passed: list[str] = field(default_factory=list)  # alternatives shown before it, cycled past
    lead: str = ""  # the client's selected completion item the suggestion continues (drawn first)


@dataclass
class Rejected:
    id: str
    pos: Pos
    n_lines: int
    since: float
    lead: str = ""


@dataclass
class Accepted:
    id: str
    start: Pos
    end: Pos
    text: str


class OutcomeTracker:
    """Per-document bookkeeping; `store` is a hindsight.collector.store.Store (or anything with its methods)."""

    def __init__(self, store, *, clock: Callable[[], float] = time.time, rejected_ttl_s: float = 900.0):
        self.store = store
        self.clock = clock
        self.rejected_ttl_s = rejected_ttl_s
        self.live: dict[str, Live] = {}  # uri → the suggestion on screen
        self.rejected: dict[str, list[Rejected]] = {}  # uri → rejections awaiting the text written instead
        self.accepted: dict[str, dict[str, Accepted]] = {}  # uri → id → accepted text being watched

    # -- what the server saw ------------------------------------------------------------------------
    def new_request(self, uri: str, parent_id: str | None) -> None:
        """A new completion request for `uri`: the suggestion on screen is continued or superseded."""
        live = self.live.pop(uri, None)
        if live is None:
            return
        if parent_id is not None and parent_id == live.id:
            self._outcome(live.id, "continued")
            self._reject_passed(live)
        else:
            self._reject(uri, live, "superseded")

    def shown(self, uri: str, id: str, pos: Pos, text: str, lead: str = "") -> None:
        """`text` is drawn at `pos`; it begins with `lead` when the suggestion continues the item selected
        in the client's suggest widget (the log's completion is the rest)."""
        self.live[uri] = Live(id, pos, text, lead=lead)

    def switched(self, uri: str, id: str, text: str) -> None:
        """The user cycled to another suggestion for the same place. The ones cycled past are rejected
        ('cycled') when the one they end on is settled, so cycling back to one is no rejection of it."""
        live = self.live.get(uri)
        if live is None or live.id == id:
            return
        passed = [other for other in [*live.passed, live.id] if other != id]
        self.live[uri] = Live(id, live.pos, text, passed, live.lead)

    # -- what the client told us ----------------------------------------------------------------------
    def accepted_by_client(self, id: str) -> str | None:
        """The accept command. Returns the uri the suggestion was in, when we know it."""
        for uri, live in list(self.live.items()):
            if live.id == id:
                del self.live[uri]
                self._accept(uri, live, "command")
                return uri
        self._outcome(id, "accepted", reason="command")
        return None

    def partially_accepted(self, id: str, length: int) -> None:
        self.store.set_outcome(id, "partial", accepted_length=int(length))

    def rejected_by_client(self, id: str, reason: str) -> None:
        for uri, live in list(self.live.items()):
            if live.id == id:
                del self.live[uri]
                self._reject(uri, live, reason)
                return
        self._outcome(id, "rejected", reason=reason)

    # -- what the document did ------------------------------------------------------------------------
    def tracks(self, uri: str) -> bool:
        """Whether anything in `uri` is being followed (else edits there need no work)."""
        return uri in self.live or bool(self.rejected.get(uri)) or bool(self.accepted.get(uri))

    def changed(self, uri: str, start: Pos, old_end: Pos, text: str, lines: Sequence[str]) -> None:
        """One incremental change (range in the coordinates before it), with the document after it."""
        new_end = end_of(start, text)
        live = self.live.get(uri)
        if live is not None:
            if start >= live.pos and start[0] <= live.pos[0] + live.text.count("\n"):
                typed = text_between(lines, live.pos, new_end)
                if live.text.startswith(typed):
                    pass  # typing along the suggestion (or accepting it): still on screen
                elif typed.startswith(live.text):
                    del self.live[uri]
                    self._accept(uri, live, "typed")
                else:
                    del self.live[uri]
                    self._reject(uri, live, "typed_over")
            else:
                del self.live[uri]
                self._reject(uri, live, "typed_over")
            if uri in self.live:
                self.live[uri].pos = shift(live.pos, start, old_end, new_end)

        pending = self.rejected.get(uri)
        if pending:
            keep = []
            for r in pending:
                last = r.pos[0] + r.n_lines - 1
                if old_end[0] < r.pos[0] or start[0] > last:
                    # An edit off the suggestion's line(s): the user has left them; read what they wrote.
                    r.pos = shift(r.pos, start, old_end, new_end)
                    self._actual_text(r, lines)
                else:
                    r.pos = shift(r.pos, start, old_end, new_end)
                    keep.append(r)
            self.rejected[uri] = keep

        for acc in self.accepted.get(uri, {}).values():
            acc.start = shift(acc.start, start, old_end, new_end, inside="start")
            acc.end = shift(acc.end, start, old_end, new_end, inside="end")

    def replaced(self, uri: str, lines: Sequence[str]) -> None:
        """A whole-document change: positions can't be followed; settle what we can now."""
        live = self.live.pop(uri, None)
        if live is not None:
            self._reject(uri, live, "typed_over")
        self.closed(uri, lines)

    def closed(self, uri: str, lines: Sequence[str]) -> None:
        """The document closed: leaving it counts as leaving the line."""
        live = self.live.pop(uri, None)
        if live is not None:
            self._reject(uri, live, "cursor_moved")
        for r in self.rejected.pop(uri, []):
            self._actual_text(r, lines)
        self.accepted.pop(uri, None)  # persistence in a closed document stays unknown

    def check_persistence(self, uri: str, id: str, slot: str, lines: Sequence[str] | None, last: bool) -> float | None:
        """Edit similarity between the accepted text and what stands there now."""
        acc = self.accepted.get(uri, {}).get(id)
        if acc is None or lines is None:
            return None
        now = text_between(lines, acc.start, acc.end)
        score = similarity(acc.text, now)
        self.store.record_persistence(id, slot, score)
        if last:
            self.accepted[uri].pop(id, None)
        return score

    # -- internals ------------------------------------------------------------------------------------
    def _outcome(self, id: str, outcome: str, reason: str | None = None) -> bool:
        return self.store.set_outcome(id, outcome, reason=reason)

    def _reject_passed(self, live: Live) -> None:
        for other in live.passed:
            self._outcome(other, "rejected", "cycled")

    def _reject(self, uri: str, live: Live, reason: str) -> None:
        self._reject_passed(live)
        if self._outcome(live.id, "rejected", reason):
            self.rejected.setdefault(uri, []).append(
                Rejected(live.id, live.pos, live.text.count("\n") + 1, self.clock(), live.lead)
            )

    def _accept(self, uri: str, live: Live, reason: str) -> None:
        self._reject_passed(live)
        self._outcome(live.id, "accepted", reason)
        self.accepted.setdefault(uri, {})[live.id] = Accepted(
            live.id, live.pos, end_of(live.pos, live.text), live.text
        )

    def _actual_text(self, r: Rejected, lines: Sequence[str]) -> None:
        if self.clock() - r.since > self.rejected_ttl_s or r.pos[0] >= len(lines):
            return
        end = min(len(lines) - 1, r.pos[0] + r.n_lines - 1)
        written = text_between(lines, r.pos, (end, len(lines[end])))
        if not written.startswith(r.lead):
            return  # the selected item was not written either: the text does not follow the logged prompt
        self.store.record_actual_text(r.id, written[len(r.lead) :])
