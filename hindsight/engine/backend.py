"""The backend contract: something that turns a prompt into a greedy stream of tokens.

`hindsight.engine.llama_backend.LlamaBackend` implements it for the embedded model, in process, and
hindsight/engine/servers.py for model servers (llama-server, Ollama, OpenAI-style). The engine owns
prompt assembly, stop rules and post-processing; a backend only streams tokens and says how much of the
prompt it could reuse from its cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Protocol

from hindsight.engine.profiles import Profile
from hindsight.errors import HindsightError


class BackendError(HindsightError):
    """A backend cannot serve: bad model file, unreachable server. The message is one clear line."""


@dataclass(frozen=True)
class Token:
    text: str
    logprob: float  # natural log of the probability of the chosen token


@dataclass
class GenerationStats:
    """Filled in by the backend while a `generate` call runs."""

    prompt_tokens: int = 0
    reused_tokens: int = 0  # prompt tokens served from the KV cache, not re-evaluated
    prefill_ms: float = 0.0  # time to evaluate the prompt (before the first token)


class Backend(Protocol):
    name: str  # e.g. "llama.cpp:gemma-3-270m-q4_k_m.gguf" or "llama-server:http://127.0.0.1:8080"
    profile: Profile  # how to prompt the model it serves (hindsight/engine/profiles.py)

    def count_tokens(self, text: str) -> int:
        """Tokens `text` takes in the prompt (an estimate where the backend has no tokenizer)."""
        ...

    def generate(
        self,
        prompt: str,
        *,
        max_tokens: int,
        stats: GenerationStats,
        cancelled: Callable[[], bool],
    ) -> Iterator[Token]:
        """Greedy tokens continuing `prompt`, one at a time. Stops early when `cancelled()` turns true
        (checked between tokens) or when the caller closes the iterator."""
        ...
