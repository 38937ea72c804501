"""The fill-in-the-middle prompt format: suffix first, then the prefix, then the middle (SPM).

    [context][SUFFIX][code after the cursor][MIDDLE][header][code before the cursor] → middle, <eos>

Gemma 3 has no FIM tokens; two of its unused tokens serve as sentinels: `<unused0>` (id 6) and
`<unused1>` (id 7), each one token in llama.cpp and in Hugging Face's tokenizer when special tokens are
parsed, and never produced from text that is not parsed for them (the user's code cannot contain them:
`clean` takes them out). The middle ends with Gemma's `<eos>`, where the engine stops already.

Why suffix-prefix-middle (the FIM paper's SPM mode): the code before the cursor comes last, so typing at
the cursor only appends to the prompt and llama.cpp keeps its cache of everything before, as in the
prefix-only layout (hindsight/engine/prompt.py). The suffix window starts at the cursor and is cut at a line end,
so it stays the same while the user types on the line or opens new lines above it. The cursor's partial
word is cut from the prompt and begins the middle (token healing), in training as in generation.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

SUFFIX = "<unused0>"
MIDDLE = "<unused1>"
SENTINELS = (SUFFIX, MIDDLE)
FORMAT = "fim-spm-v1"  # what an adapter's manifest declares (`prompt_format`) to be served in this format
SUFFIX_TOKENS = 256  # the suffix window's budget, in training and in the engine


def break_specials(text: str, specials: tuple[str, ...]) -> str:
    """`text` with the special tokens' spellings broken (`<|fim_prefix|>` → `< |fim_prefix|>`), so that only
    a prompt's format places them: code that mentions a special token must not become one."""
    for s in specials:
        if s in text:
            text = text.replace(s, s[0] + " " + s[1:])
    return text


def clean(text: str) -> str:
    """The text with the sentinels' spellings taken out, so that only the format places them."""
    return break_specials(text, SENTINELS)


def suffix_window(suffix: str, count_tokens: Callable[[str], int], budget: int = SUFFIX_TOKENS) -> str:
    """The beginning of `suffix` (the text after the cursor): the rest of the cursor's line, then whole
    lines while they fit `budget` tokens."""
    lines = suffix.split("\n")
    kept = [lines[0]]
    used = count_tokens(lines[0])
    for line in lines[1:]:
        used += count_tokens(line) + 1
        if used > budget:
            break
        kept.append(line)
    return "\n".join(kept)


def layout(context: str, suffix: str, prefix: str) -> str:
    """The prompt text (BOS not included). `prefix` is everything after the middle sentinel: the file's
    header and the code before the cursor."""
    return f"{context}{SUFFIX}{suffix}{MIDDLE}{prefix}"


def declared_format(adapter: str | Path | None) -> str:
    """The prompt format an adapter was trained for: `prompt_format` in the manifest.json beside it
    (the registry's version directories and `hindsight train-fim`'s output have one); "prefix" when
    there is none or it says nothing."""
    if not adapter:
        return "prefix"
    try:
        manifest = json.loads((Path(adapter).parent / "manifest.json").read_text())
    except (OSError, ValueError):
        return "prefix"
    value = manifest.get("prompt_format") if isinstance(manifest, dict) else None
    return value if isinstance(value, str) else "prefix"
