"""One continuation of a prompt, for everything that is not a live request: the refresh's fresh samples
(hindsight/refresh/pairs.py), its before-and-after replay (hindsight/refresh/evaluate.py) and HumanEval
infilling's raw model (hindsight/refresh/infill.py).

The engine's own loop (`Engine._generate`) does more per token (timings, log-prob spans, why it
stopped, cancellation); these callers want the text only, stopped by a line count, an unsure token or
their own rule. Token healing works as in the engine: the caller cuts the partial word at the end of the
prompt (`hindsight.engine.engine.heal_split`) and passes it as `heal`; the backend writes it again in
the tokens it prefers, and what is returned starts after it.
"""

from __future__ import annotations

import math
from typing import Callable

from hindsight.engine.backend import Backend, GenerationStats
from hindsight.engine.llama_backend import Sampling


def continuation(
    backend: Backend,
    prompt: str,
    heal: str = "",
    *,
    max_tokens: int,
    lines: int | None = None,
    min_token_prob: float = 0.0,
    stop: Callable[[str], bool] | None = None,
    sampling: Sampling | None = None,
) -> str | None:
    """The backend's continuation of `prompt`, which must begin with `heal` (a backend that supports
    `must_start` is needed for a non-empty one), without `heal`; None when the generation ended before
    it wrote `heal` out.

    It ends at end of text, after `max_tokens` tokens, before the first token past `heal` less likely
    than `min_token_prob` (0: never), once `lines` lines are complete (and is cut to that many lines),
    or at the first token after which `stop`, given the text past `heal` so far, says so. Greedy, or
    drawn as `sampling` says (a `LlamaBackend` only)."""
    min_logprob = math.log(min_token_prob) if min_token_prob > 0 else -math.inf
    extra: dict = {"must_start": heal} if heal else {}
    if sampling is not None:
        extra["sampling"] = sampling
    text = ""
    stream = backend.generate(prompt, max_tokens=max_tokens, stats=GenerationStats(), cancelled=lambda: False, **extra)
    try:
        for token in stream:
            if len(text) >= len(heal) and token.logprob < min_logprob:
                break
            text += token.text
            if not text.startswith(heal):
                continue
            written = text[len(heal) :]
            if lines is not None and written.count("\n") >= lines or stop is not None and stop(written):
                break
    finally:
        stream.close()
    if not text.startswith(heal):
        return None
    text = text[len(heal) :]
    return text if lines is None else "\n".join(text.split("\n")[:lines])
