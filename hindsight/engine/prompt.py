"""Prompt assembly under a token budget, laid out so that typing at the cursor keeps the cached prefix.

The parts are the cross-file context, the file's header (its path), the window of the document before
the cursor and, for a model that fills in the middle, a window of the document after it; the model's
profile (hindsight/engine/profiles.py) says in which order and between which tokens. Prefix-only
(the embedded Gemma 3): ``[context snippets][header][prefix window]``; Qwen2.5-Coder:
``[repo line][context files][<|file_sep|>path]<|fim_prefix|>[prefix window]<|fim_suffix|>[suffix
window]<|fim_middle|>``.

KV reuse is what makes completion fast: llama.cpp keeps the evaluated tokens and only the part of the new
prompt after the longest common prefix is evaluated again. Anything that moves the start of the prompt
throws that away. So the prefix window does not slide line by line: its first line is snapped to a
multiple of `anchor_lines`, and moves only when the text above the cursor no longer fits the budget
(then it jumps forward by a whole step). The header and context are rendered in a fixed order and only
change when the file or the context does. Where the profile puts the suffix after the prefix, the
suffix window (at most `suffix_tokens`, cut at a line end) is evaluated again at each keystroke.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from hindsight.engine.fim import SUFFIX_TOKENS, suffix_window
from hindsight.engine.profiles import BY_NAME, Profile
from hindsight.request import Snippet


@dataclass
class Prompt:
    text: str  # exactly what the model sees (without BOS)
    header: str
    context: list[Snippet]
    prefix: str  # the window of the document before the cursor that is in the prompt
    suffix: str  # the document after the cursor (not in the prompt; used in post-processing)
    window_start_line: int
    tokens: int  # estimated prompt tokens
    profile: str = "none"  # the model profile that laid it out
    suffix_window: str = ""  # the part of `suffix` in the prompt (a FIM profile's)
    language: str | None = None


@dataclass
class PromptBudget:
    prefix_tokens: int = 1024
    context_tokens: int = 512
    suffix_chars: int = 4000  # kept for post-processing and storage
    anchor_lines: int = 32
    suffix_tokens: int = SUFFIX_TOKENS  # the suffix window in a FIM prompt


@dataclass
class _LineTokens:
    """Token counts per line text, cached: the window search re-counts the same lines on every keystroke."""

    count: Callable[[str], int]
    cache: dict[str, int] = field(default_factory=dict)

    def __call__(self, line: str) -> int:
        n = self.cache.get(line)
        if n is None:
            if len(self.cache) > 50_000:
                self.cache.clear()
            n = self.count(line) + 1  # + the newline
            self.cache[line] = n
        return n


class PromptBuilder:
    def __init__(self, count_tokens: Callable[[str], int], budget: PromptBudget | None = None,
                 profile: Profile | None = None):
        self.count_tokens = count_tokens
        self.budget = budget or PromptBudget()
        self.profile = profile or BY_NAME["none"]
        self._line_tokens = _LineTokens(count_tokens)
        self._block_tokens = _LineTokens(count_tokens)  # the context is kept while typing: so are its blocks

    def window_start(self, lines: list[str], line: int, cursor_prefix: str) -> int:
        """First line of the prefix window: the earliest line that fits, snapped forward to a step."""
        budget = self.budget.prefix_tokens - self._line_tokens(cursor_prefix)
        start = line
        while start > 0:
            cost = self._line_tokens(lines[start - 1])
            if cost > budget:
                break
            budget -= cost
            start -= 1
        if start == 0:
            return 0
        step = max(1, self.budget.anchor_lines)
        return min(line, -(-start // step) * step)

    def build(
        self,
        text: str,
        line: int,
        character: int,
        *,
        path: str = "",
        language: str | None = None,
        context: list[Snippet] | None = None,
        lines: list[str] | None = None,
        repo: str = "",
    ) -> Prompt:
        lines = text.split("\n") if lines is None else lines
        line = min(max(line, 0), len(lines) - 1)
        current = lines[line]
        character = min(max(character, 0), len(current))
        cursor_prefix = current[:character]
        start = self.window_start(lines, line, cursor_prefix)
        prefix = "\n".join(lines[start:line] + [cursor_prefix])
        # The suffix is kept only up to suffix_chars: join no more lines than that needs.
        suffix_parts, size = [current[character:]], len(current) - character
        for rest in lines[line + 1 :]:
            if size >= self.budget.suffix_chars:
                break
            suffix_parts.append(rest)
            size += len(rest) + 1
        suffix = "\n".join(suffix_parts)[: self.budget.suffix_chars]

        profile = self.profile
        head = profile.file_header(path, language)
        snippets: list[Snippet] = []
        blocks: list[str] = []
        used = 0
        for snip in context or []:  # best first: the best that fit the budget
            piece = profile.snippet(snip.source, snip.text, language)
            cost = self._block_tokens(piece) - 1
            if used + cost > self.budget.context_tokens:
                continue
            used += cost
            snippets.append(snip)
            blocks.append(piece)
        rendered = "".join(reversed(blocks))  # the best nearest the code, where a small model looks most
        tokens = used + self.count_tokens(head) + sum(self._line_tokens(l) for l in lines[start:line])
        tokens += self._line_tokens(cursor_prefix)
        window = ""
        if profile.fim:
            window = suffix_window(suffix, lambda l: self._line_tokens(l) - 1, self.budget.suffix_tokens)
            tokens += self.count_tokens(window) + 3
        full = profile.render(context=rendered, file=head, prefix=prefix, suffix=window, repo=repo)
        return Prompt(
            text=full,
            header=head,
            context=snippets,
            prefix=prefix,
            suffix=suffix,
            window_start_line=start,
            tokens=tokens,
            profile=profile.name,
            suffix_window=window,
            language=language,
        )
