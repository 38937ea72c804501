"""The simulated developer: removes code from a real file and types it back through the real server.

At every pause point (a word boundary, the start of a line) it asks the server for an inline completion,
as an editor does after a short typing pause; while a suggestion is on screen and it keeps typing what the
suggestion says, the editor asks again on each keystroke (the server answers those from its typed-ahead
cache). It accepts a suggestion exactly when the suggestion is what it was about to type; when only the
first words match it accepts those (a partial accept, up to the first differing word) and types on;
otherwise it types over the suggestion. The log it leaves in the server's database is the same as a
real user's.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from typing import Callable

from .session import Document, Session

WORD = re.compile(r"\w+|\s+|.", re.S)


@dataclass
class Step:
    """One completion request and what the developer did with its answer."""

    offset: int
    suggestion: str
    latency_ms: float
    action: str  # 'accepted' | 'partial' | 'typed_over' | 'empty'
    accepted: str = ""
    id: str | None = None


@dataclass
class Replay:
    steps: list[Step] = field(default_factory=list)
    typed_chars: int = 0  # characters the developer typed by hand
    accepted_chars: int = 0  # characters that came from accepted suggestions


def matching_words(suggestion: str, intended: str) -> int:
    """Length of the longest run of whole words at the start of `suggestion` that `intended` begins with."""
    n = 0
    for match in WORD.finditer(suggestion):
        piece = match.group()
        if not intended.startswith(piece, n):
            break
        n += len(piece)
    return n


class SimulatedDeveloper:
    def __init__(
        self,
        session: Session,
        doc: Document,
        offset: int,
        target: str,
        *,
        pace_s: float = 0.0,
        on_step: Callable[[Step], None] | None = None,
        max_requests: int | None = None,
    ):
        self.session = session
        self.doc = doc
        self.offset = offset  # the cursor
        self.target = target  # the text to type at the cursor
        self.pace_s = pace_s
        self.on_step = on_step
        self.max_requests = max_requests
        self.replay = Replay()

    async def _ask(self, intended: str) -> str | None:
        """Request at the cursor and act on the answer. Returns the suggestion still on screen, if any."""
        item, ms = await self.session.complete(self.doc, self.offset)
        if item is None or not item.insert_text:
            self._log(Step(self.offset, "", ms, "empty"))
            return None
        text = item.insert_text
        rid = Session.item_id(item)
        self.session.did_show(item)
        if intended.startswith(text):
            self.session.insert(self.doc, self.offset, text)
            self.offset += len(text)
            await self.session.accept(item)
            self.replay.accepted_chars += len(text)
            self._log(Step(self.offset - len(text), text, ms, "accepted", text, rid))
            return None
        n = matching_words(text, intended)
        if n and text[:n].strip():
            self.session.insert(self.doc, self.offset, text[:n])
            self.session.did_partially_accept(item, n)
            self.offset += n
            self.replay.accepted_chars += n
            self._log(Step(self.offset - n, text, ms, "partial", text[:n], rid))
            return text[n:]
        self._log(Step(self.offset, text, ms, "typed_over", "", rid))
        return text

    def _log(self, step: Step) -> None:
        self.replay.steps.append(step)
        if self.on_step:
            self.on_step(step)

    async def run(self) -> Replay:
        start = self.offset
        end_offset = start + len(self.target)
        on_screen: str | None = await self._ask(self.target)
        while self.offset < end_offset:
            if self.max_requests is not None and len(self.replay.steps) >= self.max_requests:
                break
            done = self.offset - start
            intended = self.target[done:]
            ch = intended[0]
            if ch == "\n":
                # Enter, and the editor's auto-indent: the next line's indentation comes with it.
                indent = re.match(r"[ \t]*", intended[1:]).group()
                typed = "\n" + indent
            else:
                typed = ch
            self.session.insert(self.doc, self.offset, typed)
            self.offset += len(typed)
            self.replay.typed_chars += len(typed)
            if self.pace_s:
                await asyncio.sleep(self.pace_s)
            if on_screen is not None and on_screen.startswith(typed) and len(on_screen) > len(typed):
                on_screen = on_screen[len(typed) :]
                pause = True  # the editor re-asks while typed-ahead text still matches
            else:
                on_screen = None
                pause = ch == "\n" or not (ch.isalnum() or ch == "_")
            if pause and self.offset < end_offset:
                on_screen = await self._ask(self.target[self.offset - start :])
        return self.replay
