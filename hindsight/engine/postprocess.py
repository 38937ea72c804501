"""Post-processing of a finished completion: what the prompt could not know about the suffix.

The model sees only the prefix (no fill-in-the-middle tokens), so it often writes again what already
follows the cursor: the `)` the editor auto-closed, the `}` below an opened block. These functions take
that back out. Both are pure and cheap.
"""

from __future__ import annotations

import re

from hindsight.engine.stops import is_closer_line, suffix_has_closer

_CLOSERS = ")]}"
_OPENERS = "([{"
_QUOTES = "\"'`"
_PAIR = {")": "(", "]": "[", "}": "{"}
# A rest of line worth cutting at: closing brackets and quotes, with an optional `;`, `:` or `,` after.
_CLOSING_REST = re.compile(r"""^[)\]}"'`]+[;:,]?$""")


def clean(completion: str, mode: str) -> str:
    """Trailing whitespace off every line and off the end; a single-line completion stops at its first
    newline."""
    if mode == "single":
        completion = completion.split("\n", 1)[0]
    return "\n".join(row.rstrip() for row in completion.split("\n")).rstrip()


def trim_suffix_overlap(completion: str, suffix: str, mode: str) -> str:
    """`completion` without what it repeats of `suffix` (the document text after the cursor)."""
    if mode == "single":
        return _trim_single(completion, suffix)
    return _trim_multi(completion, suffix)


def _trim_single(completion: str, suffix: str) -> str:
    rest = suffix.split("\n", 1)[0].strip()
    if not rest or not completion:
        return completion
    if _CLOSING_REST.match(rest):
        cut = _cut_at_close(completion, rest[0])
        if cut is not None:
            return cut
    k = _end_overlap(completion, rest)
    if k:
        return completion[:-k].rstrip()
    return completion


def _cut_at_close(completion: str, closer: str) -> str | None:
    """The completion up to where it closes what `closer` (the suffix's first character) closes, when
    that leaves something; None when it never does or when the text around it is not plain."""
    if closer in _QUOTES:
        i = 0
        while i < len(completion):
            ch = completion[i]
            if ch == "\\":
                i += 2
                continue
            if ch == closer:
                return _nonempty(completion[:i])
            i += 1
        return None
    depth = 0
    i = 0
    while i < len(completion):
        ch = completion[i]
        if ch in _QUOTES:  # step over a string literal; give up on one left open
            end = _string_end(completion, i)
            if end is None:
                return None
            i = end + 1
            continue
        if ch in _OPENERS:
            depth += 1
        elif ch in _CLOSERS:
            if depth == 0:
                # The completion closes a bracket it did not open: the one the suffix closes, or not.
                return _nonempty(completion[:i]) if ch == closer else None
            depth -= 1
        i += 1
    return None


def _string_end(text: str, start: int) -> int | None:
    quote = text[start]
    i = start + 1
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == quote:
            return i
        if ch == "\n":
            return None
        i += 1
    return None


def _nonempty(text: str) -> str | None:
    text = text.rstrip()
    return text if text else None


def _end_overlap(completion: str, rest: str) -> int:
    """The largest k with completion ending in rest[:k], where neither side is cut mid-word."""
    for k in range(min(len(completion), len(rest)), 0, -1):
        if not completion.endswith(rest[:k]):
            continue
        if k < len(rest) and _is_word(rest[k - 1]) and _is_word(rest[k]):
            continue  # `x` against a suffix `xyz`: a coincidence, not a repeat
        if k < len(completion) and _is_word(rest[0]) and _is_word(completion[-k - 1]):
            continue  # `foo` against a suffix `o + 1`: the overlap starts mid-word
        return k
    return 0


def _is_word(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


def _trim_multi(completion: str, suffix: str) -> str:
    head = [row.rstrip() for row in suffix.split("\n") if row.strip()]
    if not head:
        return completion
    rows = completion.rstrip().split("\n")
    # The completion's last non-blank lines that equal the suffix's first non-blank lines, indentation
    # included (a `return x` inside the block is not the `return x` after it). The completion's first
    # row continues the cursor line, so its indentation is not all there: compare it stripped.
    content = [i for i, row in enumerate(rows) if row.strip()]

    def same(i: int, want: str) -> bool:
        return rows[i].strip() == want.strip() if i == 0 else rows[i].rstrip() == want

    best = 0
    for m in range(min(len(content), len(head)), 0, -1):
        if all(same(i, want) for i, want in zip(content[-m:], head[:m])):
            best = m
            break
    if best:
        rows = rows[: content[-best]]
    while rows and not rows[-1].strip():
        rows.pop()
    if rows and not best:  # the suffix's first line was not already matched above
        last = rows[-1].strip()
        if is_closer_line(last) and suffix_has_closer(last, head[0].strip()):
            rows.pop()
    return "\n".join(rows).rstrip()
