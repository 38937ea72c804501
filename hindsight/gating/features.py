"""The acceptance gate's features: stage 1 before generation (the context of the request and the user's
recent state), stage 2 after (stage 1's and the completion's).

Stage 1 follows Copilot's contextual filter (previous outcome, whitespace after the cursor, log time
since the last outcome, the cursor line's length raw and trimmed, document length, cursor offset and
relative position, language, last character) and adds the user's recent state (acceptance rate, typing
speed, time since the last keystroke, comment or string at the cursor per tree-sitter, the best
retrieval score). Stage 2 adds the completion's (mean and min token log-prob, length in tokens, lines
and characters, repetition of text already in the document, whether the document still parses with it,
overlap with the text after the cursor).

Times are measured in the user's own keystrokes (seconds divided by their median time between
keystrokes), so a gate trained on the simulated developer, who types faster than a person, reads a
person's pauses the same way. Every function here is pure: the same inputs give the same features.
"""

from __future__ import annotations

import bisect
import functools
import math
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from hindsight.syntax import LANGUAGES, parse

OUTCOME_KINDS = ("accepted", "partial", "rejected")

STAGE1: list[str] = [
    *(f"prev_{k}" for k in (*OUTCOME_KINDS, "none")),
    "ws_after_cursor",
    "log_since_outcome",
    "line_len",
    "line_len_trimmed",
    "line_indent",
    "at_line_start",
    "log_doc_len",
    "log_cursor_offset",
    "cursor_rel",
    *(f"lang_{lang}" for lang in LANGUAGES),
    "last_char",
    "last_char_alnum",
    "last_char_space",
    "last_char_open",
    "last_char_dot",
    "recent_accept_rate",
    "recent_n",
    "log_typing_pace",
    "log_since_keystroke",
    "in_comment",
    "in_string",
    "context_best_score",
    "context_n",
    "invoked",
]
STAGE2: list[str] = STAGE1 + [
    "lp_mean",
    "lp_min",
    "n_tokens",
    "n_lines",
    "log_n_chars",
    "multi",
    "repeats_document",
    "first_line_in_document",
    "parses",
    "suffix_overlap",
    "blank",
    "lp_first",
    "lp_next",
    "stop_rule",
    "stop_unsure",
    "stop_length",
]

RECENT_OUTCOMES = 20  # the acceptance rate is over the user's last this many outcomes
PACE_KEYSTROKES = 10  # the typing pace is over the last this many keystrokes
SYNTAX_LINES = 30  # the tree-sitter checks parse this many lines before the cursor (and a third after)
REPEAT_LINES = 100  # repetition is looked for within this many lines of the cursor


class UserState:
    """What the server knows of the user's recent behaviour: keystrokes and outcomes, with their times.

    The server feeds it as document edits and outcomes arrive; `snapshot()` reads it for a decision.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic, history: int = 2000):
        self.clock = clock
        self.keystrokes: deque[float] = deque(maxlen=history)
        self.gaps: list[float] = []  # the sorted times between keystrokes (for the median), bounded
        self._gap_order: deque[float] = deque()
        self.history = history
        self.outcomes: deque[str] = deque(maxlen=RECENT_OUTCOMES)
        self.last_outcome_at: float | None = None

    def keystroke(self, at: float | None = None) -> None:
        """A character typed (an edit of at most a couple of characters; pastes and accepts are not)."""
        at = self.clock() if at is None else at
        if self.keystrokes:
            gap = at - self.keystrokes[-1]
            if 0 < gap < 5.0:  # a longer gap is a pause, not the typing pace
                bisect.insort(self.gaps, gap)
                self._gap_order.append(gap)
                if len(self._gap_order) > self.history:
                    old = self._gap_order.popleft()
                    del self.gaps[bisect.bisect_left(self.gaps, old)]
        self.keystrokes.append(at)

    def outcome(self, kind: str, at: float | None = None) -> None:
        """'accepted', 'partial' or 'rejected'."""
        self.outcomes.append(kind)
        self.last_outcome_at = self.clock() if at is None else at

    def snapshot(self, at: float | None = None) -> dict[str, float]:
        at = self.clock() if at is None else at
        unit = self.gaps[len(self.gaps) // 2] if self.gaps else 0.2  # the user's median keystroke gap
        previous = self.outcomes[-1] if self.outcomes else "none"
        features = {f"prev_{k}": float(previous == k) for k in (*OUTCOME_KINDS, "none")}
        accepted = sum(k != "rejected" for k in self.outcomes)
        features["recent_accept_rate"] = (accepted + 1) / (len(self.outcomes) + 2)
        features["recent_n"] = float(len(self.outcomes))
        since = at - self.last_outcome_at if self.last_outcome_at is not None else math.nan
        features["log_since_outcome"] = math.log1p(max(since, 0.0) / unit) if since == since else math.nan
        recent = list(self.keystrokes)[-PACE_KEYSTROKES:]
        if len(recent) >= 2:
            pace = (recent[-1] - recent[0]) / (len(recent) - 1)
            features["log_typing_pace"] = math.log(max(pace, 1e-3) / unit)
        else:
            features["log_typing_pace"] = math.nan
        last = self.keystrokes[-1] if self.keystrokes else None
        features["log_since_keystroke"] = math.log1p(max(at - last, 0.0) / unit) if last is not None else math.nan
        return features


@dataclass
class Cursor:
    """The document and the cursor, as the gate sees them."""

    lines: Sequence[str]
    line: int
    character: int
    language: str | None

    @property
    def prefix(self) -> str:
        return self.lines[self.line][: self.character]

    @property
    def rest(self) -> str:
        return self.lines[self.line][self.character :]


def _syntax_window(cursor: Cursor) -> tuple[list[str], int]:
    """The lines around the cursor the tree-sitter checks parse, and the cursor's line within them."""
    start = max(0, cursor.line - SYNTAX_LINES)
    return list(cursor.lines[start : cursor.line + SYNTAX_LINES // 3 + 1]), cursor.line - start


@functools.lru_cache(maxsize=4)
def _tree(text: str, language: str | None):
    """Parsed once for both stages: stage 2's "before" is stage 1's window."""
    return parse(text, language)


def _inside(cursor: Cursor) -> tuple[bool, bool]:
    """(in a comment, in a string) at the cursor, by tree-sitter over the lines around it."""
    window, row = _syntax_window(cursor)
    tree = _tree("\n".join(window), cursor.language)
    if tree is None:
        return False, False
    point = (row, len(cursor.prefix.encode("utf-8", "surrogatepass")))
    node = tree.root_node.descendant_for_point_range((row, max(point[1] - 1, 0)), point)
    while node is not None:
        kind = node.type
        if "comment" in kind:
            return True, False
        if kind.endswith(("string", "string_literal")) or kind in ("char_literal", "character_literal"):
            # Inside it, not just after its closing quote (an unclosed one has an error).
            return False, node.start_point < point and (point < node.end_point or node.has_error)
        node = node.parent
    return False, False


def stage1(
    cursor: Cursor, user: dict[str, float], *, context_scores: Sequence[float] = (), invoked: bool = False
) -> dict[str, float]:
    """Stage 1's features: `user` is `UserState.snapshot()`, `context_scores` the retrieved snippets'."""
    prefix, rest = cursor.prefix, cursor.rest
    offset = sum(map(len, cursor.lines[: cursor.line])) + cursor.line + cursor.character  # (map: C speed)
    length = sum(map(len, cursor.lines)) + len(cursor.lines) - 1
    last = prefix[-1] if prefix else "\n"
    comment, string = _inside(cursor)
    features = dict(user)
    features.update(
        ws_after_cursor=float(not rest.strip()),
        line_len=float(len(prefix)),
        line_len_trimmed=float(len(prefix.strip())),
        line_indent=float(len(prefix) - len(prefix.lstrip())),
        at_line_start=float(not prefix.strip()),
        log_doc_len=math.log1p(length),
        log_cursor_offset=math.log1p(offset),
        cursor_rel=offset / length if length else 1.0,
        last_char=float(min(ord(last), 255)),
        last_char_alnum=float(last.isalnum() or last == "_"),
        last_char_space=float(last.isspace()),
        last_char_open=float(last in "([{"),
        last_char_dot=float(last == "."),
        in_comment=float(comment),
        in_string=float(string),
        context_best_score=max(context_scores, default=0.0),
        context_n=float(len(context_scores)),
        invoked=float(invoked),
    )
    for lang in LANGUAGES:
        features[f"lang_{lang}"] = float(cursor.language == lang)
    return features


def parses(cursor: Cursor, completion: str) -> bool:
    """True when the lines around the cursor have no more syntax errors with the completion than without."""
    window, row = _syntax_window(cursor)
    current = window[row]
    before = "\n".join(window)
    window[row] = current[: cursor.character] + completion + current[cursor.character :]
    after = "\n".join(window)
    old, new = _tree(before, cursor.language), parse(after, cursor.language)
    if old is None or new is None:
        return True
    return _errors(new.root_node) <= _errors(old.root_node)


def _errors(node) -> int:
    if not node.has_error:
        return 0
    if node.type == "ERROR" or node.is_missing:
        return 1
    return sum(_errors(child) for child in node.children)


def _suffix_overlap(completion: str, suffix: str) -> float:
    """How much of the completion's end the text after the cursor already begins with (0 to 1)."""
    tail, head = completion.rstrip(), suffix.lstrip()
    if not tail or not head:
        return 0.0
    for n in range(min(len(tail), len(head)), 0, -1):
        if tail.endswith(head[:n]):
            return n / len(tail)
    return 0.0


def stage2(
    first: dict[str, float],
    cursor: Cursor,
    completion: str,
    *,
    mode: str,
    n_tokens: int,
    logprob_mean: float | None,
    logprob_min: float | None,
    logprob_first: float | None = None,
    logprob_next: float | None = None,
    stop: str = "",
) -> dict[str, float]:
    """Stage 2's features: stage 1's (`first`) and the completion's. `stop`: why generation ended
    (engine.Completion.stop), `logprob_next` the log-prob of the token it ended at."""
    near = cursor.lines[max(0, cursor.line - REPEAT_LINES) : cursor.line + REPEAT_LINES]
    document = {s for l in near if (s := l.strip())}
    lines = [l.strip() for l in completion.split("\n") if l.strip()]
    suffix = "\n".join([cursor.rest, *cursor.lines[cursor.line + 1 : cursor.line + 6]])
    features = dict(first)
    first_line = (cursor.prefix + completion.split("\n", 1)[0]).strip()
    features.update(
        lp_mean=logprob_mean if logprob_mean is not None else math.nan,
        lp_min=logprob_min if logprob_min is not None else math.nan,
        n_tokens=float(n_tokens),
        n_lines=float(completion.count("\n") + 1),
        log_n_chars=math.log1p(len(completion)),
        multi=float(mode == "multi"),
        repeats_document=sum(l in document for l in lines) / len(lines) if lines else 0.0,
        first_line_in_document=float(bool(first_line) and first_line in document),
        parses=float(parses(cursor, completion)),
        suffix_overlap=_suffix_overlap(completion, suffix),
        blank=float(not completion.strip()),
        lp_first=logprob_first if logprob_first is not None else math.nan,
        lp_next=logprob_next if logprob_next is not None else math.nan,
        stop_rule=float(stop == "rule"),
        stop_unsure=float(stop == "unsure"),
        stop_length=float(stop == "length"),
    )
    return features


DECIMALS = 3


def vector(features: dict[str, float], names: Sequence[str]) -> np.ndarray:
    """The features in `names`' order as one float32 row (missing or None → NaN, which LightGBM handles).

    Rounded to DECIMALS places, for training and serving alike: LightGBM splits at the midpoint of two
    values in double precision and ONNX compares in float32, so where two values seen in training are
    neighbouring float32 numbers the two runtimes send a row down different branches (measured: a
    cold-start export failed its parity check). Values at least 0.001 apart keep every split clear."""
    row = [features.get(n) for n in names]
    return np.round(np.array([[math.nan if v is None else v for v in row]], dtype=np.float64), DECIMALS).astype(np.float32)
