"""The simulated developer: removes code from a real file and types it back through the real server.

At every pause point (a word boundary, the start of a line) it asks the server for an inline completion,
as an editor does after a short typing pause; while a suggestion is on screen and it keeps typing what the
suggestion says, the editor asks again on each keystroke (the server answers those from its typed-ahead
cache). It accepts a suggestion exactly when the suggestion is what it was about to type; when only the
first words match it accepts those (a partial accept, up to the first differing word) and types on;
otherwise it types over the suggestion. The log it leaves in the server's database is the same as a
real user's.

By default it types as fast as the server answers (or `pace_s` apart) and always types over a wrong
suggestion: what `bench latency` and the demo need. Given a seeded `rng` it types like a person instead
(`hindsight simulate`): a log-normal time per keystroke around `pace_ms` with longer pauses after line
ends and now and then between words, and a wrong suggestion is dismissed explicitly (Escape) with
probability `dismiss_rate`, else typed over; the same seed gives the same pauses and choices.
"""

from __future__ import annotations

import asyncio
import math
import random
import re
from dataclasses import dataclass, field
from typing import Callable

from lsprotocol import types

from hindsight.simulate.session import Document, Session

WORD = re.compile(r"\w+|\s+|.", re.S)
DISMISS_RATE = 0.3  # share of wrong suggestions a person dismisses with Escape rather than typing over


@dataclass
class Step:
    """One completion request and what the developer did with its answer."""

    offset: int
    suggestion: str
    latency_ms: float
    action: str  # 'accepted' | 'partial' | 'typed_over' | 'dismissed' | 'empty'
    accepted: str = ""
    id: str | None = None
    similarity: float | None = None  # edit similarity of the suggestion to what was about to be typed


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


def decide(suggestion: str, intended: str) -> str | tuple[str, int]:
    """What a developer about to type `intended` does with a (non-empty) `suggestion`.

    'accepted' when it is exactly what they were going to type; ('partial', n) when its first words are
    (a word-accept up to the first differing word; whitespace alone is not worth a keystroke); else
    'rejected'. Kept pure so that the behaviour the training data depends on is unit-tested.
    """
    if not suggestion:
        return "rejected"
    if intended.startswith(suggestion):
        return "accepted"
    n = matching_words(suggestion, intended)
    if n and suggestion[:n].strip():
        return ("partial", n)
    return "rejected"


def edit_similarity(a: str, b: str) -> float:
    """1 − Levenshtein distance / the longer length, in [0, 1] (1 = identical): the ES of code-completion
    benchmarks (CrossCodeEval's, `bench repo`'s), here a suggestion's against what was about to be typed.
    Not the tracker's persistence similarity (hindsight.collector.tracker.similarity, difflib's ratio), which
    the stored persist_* columns hold."""
    if not a and not b:
        return 1.0
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return 1 - previous[-1] / max(len(a), len(b))


def next_keystroke(intended: str) -> str:
    """What one keystroke types of `intended`: a character, or Enter with the editor's auto-indent."""
    if intended.startswith("\n"):
        return "\n" + re.match(r"[ \t]*", intended[1:]).group()
    return intended[:1]


@dataclass
class Pace:
    """How long a person takes after each keystroke, in seconds, drawn from a seeded rng.

    The time per keystroke is log-normal (typing intervals are skewed: mostly quick, some slow) with
    its median at `ms`; after a line end comes a longer pause (reading, thinking: 0.3–1.5 s at the
    default 120 ms), and now and then one between words. The long pauses scale with `ms`, so a fast
    pace (tests) keeps the same rhythm without the wait.
    """

    rng: random.Random
    ms: float = 120.0
    sigma: float = 0.4
    line_pause: tuple[float, float] = (2.5, 12.5)  # × ms
    word_pause_rate: float = 0.15
    word_pause: tuple[float, float] = (2.0, 6.0)  # × ms

    def delay(self, typed: str) -> float:
        if self.ms <= 0:
            return 0.0
        seconds = self.rng.lognormvariate(math.log(self.ms), self.sigma) / 1000
        if typed.startswith("\n"):
            seconds += self.rng.uniform(*self.line_pause) * self.ms / 1000
        elif typed == " " and self.rng.random() < self.word_pause_rate:
            seconds += self.rng.uniform(*self.word_pause) * self.ms / 1000
        return seconds


@dataclass
class _Ignored:
    """A wrong suggestion the developer types over while what they type still agrees with it."""

    rest: str  # the part of it not typed yet
    item: types.InlineCompletionItem
    step: Step


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
        rng: random.Random | None = None,
        pace_ms: float = 0.0,
        dismiss_rate: float = DISMISS_RATE,
    ):
        """`rng` makes it a person (see the module doc); without one it behaves as it always has.

        `pace_ms` (with `rng`): the median time per keystroke, with pauses; 0 types at `pace_s`.
        """
        self.session = session
        self.doc = doc
        self.offset = offset  # the cursor
        self.target = target  # the text to type at the cursor
        self.pace_s = pace_s
        self.on_step = on_step
        self.max_requests = max_requests
        self.replay = Replay()
        self.human = rng is not None
        # Two streams from the one seed: the pace must not depend on what the model answered.
        self.pace = Pace(random.Random(rng.random()), pace_ms) if rng is not None and pace_ms > 0 else None
        self.style = random.Random(rng.random()) if rng is not None else None
        self.dismiss_rate = dismiss_rate
        self._ignored: _Ignored | None = None
        self._intended: str | None = None  # at the last request

    async def _ask(self, intended: str) -> str | None:
        """Request at the cursor and act on the answer. Returns the suggestion still on screen, if any."""
        item, ms = await self.session.complete(self.doc, self.offset)
        self._intended = intended
        if item is None or not item.insert_text:
            self._log(Step(self.offset, "", ms, "empty"))
            return None
        text = item.insert_text
        rid = Session.item_id(item)
        self.session.did_show(item)
        decision = decide(text, intended)
        if decision == "accepted":
            self.session.insert(self.doc, self.offset, text)
            self.offset += len(text)
            await self.session.accept(item)
            self.replay.accepted_chars += len(text)
            self._log(Step(self.offset - len(text), text, ms, "accepted", text, rid))
            return None
        if isinstance(decision, tuple):
            _, n = decision
            self.session.insert(self.doc, self.offset, text[:n])
            self.session.did_partially_accept(item, n)
            self.offset += n
            self.replay.accepted_chars += n
            self._log(Step(self.offset - n, text, ms, "partial", text[:n], rid))
            return text[n:]
        if self.style is not None and self.style.random() < self.dismiss_rate:
            self.session.did_reject(item, "dismissed")
            self._log(Step(self.offset, text, ms, "dismissed", "", rid))
            return None
        step = Step(self.offset, text, ms, "typed_over", "", rid)
        self._log(step)
        if self.human:
            # A person who has judged it wrong types on without asking again; the server records it
            # typed over at the first keystroke that leaves it (re-asking while the typing still agreed
            # would continue it from the typed-ahead cache instead).
            self._ignored = _Ignored(text, item, step)
            return None
        return text

    def _log(self, step: Step) -> None:
        if step.suggestion and self._intended is not None:
            step.similarity = edit_similarity(step.suggestion, self._intended[: len(step.suggestion)])
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
            # Enter comes with the editor's auto-indent: the next line's indentation.
            typed = next_keystroke(intended)
            self.session.insert(self.doc, self.offset, typed)
            self.offset += len(typed)
            self.replay.typed_chars += len(typed)
            if self.pace is not None:
                await asyncio.sleep(self.pace.delay(typed))
            elif self.pace_s:
                await asyncio.sleep(self.pace_s)
            if self._ignored is not None:
                ignored = self._ignored
                if ignored.rest.startswith(typed) and len(ignored.rest) > len(typed):
                    ignored.rest = ignored.rest[len(typed) :]
                    continue  # still on screen and still agreeing: nothing new to ask for
                self._ignored = None  # typed over: the server has rejected it
            if on_screen is not None and on_screen.startswith(typed) and len(on_screen) > len(typed):
                on_screen = on_screen[len(typed) :]
                pause = True  # the editor re-asks while typed-ahead text still matches
            else:
                on_screen = None
                pause = ch == "\n" or not (ch.isalnum() or ch == "_")
            if pause and self.offset < end_offset:
                on_screen = await self._ask(self.target[self.offset - start :])
        if self._ignored is not None:
            # The code is written and the wrong suggestion still agrees with its end: Escape before
            # moving on (leaving it would be recorded as cursor_moved).
            self.session.did_reject(self._ignored.item, "dismissed")
            self._ignored.step.action = "dismissed"
            self._ignored = None
        return self.replay
