"""`initializationOptions`, parsed once into a typed dataclass tree. Every field has a default; the wire
uses camelCase. Anything invalid is reported back (one line per problem) and that field keeps its default.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, get_args, get_origin, get_type_hints

from hindsight.syntax import LANGUAGES


@dataclass
class ContextOptions:
    prefix_tokens: int = 1024  # budget for the document text before the cursor
    context_tokens: int = 512  # budget for cross-file snippets
    anchor_lines: int = 32  # the prompt window's first line moves in steps of this many lines
    cross_file: bool = True  # index the workspace and put definitions and similar code from other files in the prompt


@dataclass
class CompletionOptions:
    max_tokens_single: int = 48
    max_tokens_multi: int = 160
    max_lines: int = 12
    min_token_prob: float = 0.3  # stop before the first token the model is less sure of (0 = never)
    typed_ahead: bool = True  # serve typed-ahead continuations from the cache
    kv_reuse: bool = True  # keep the model's KV cache across requests
    alternatives: int = 2  # more suggestions to cycle through when the user asks (not while typing)


@dataclass
class GateOptions:
    enabled: bool = True  # use the promoted acceptance gate (`hindsight train-gate`), if there is one
    # Show a suggestion when the acceptance gate's P(accept) is at least this; None = the threshold the
    # trained gate chose by utility. Without a trained gate every suggestion is shown.
    threshold: float | None = None
    stage1_threshold: float | None = None  # call the model only when P(accept) before generation is at least this
    exploration: float = 0.05  # show this share of withheld suggestions anyway (unbiased training data)
    shadow: bool = False  # log the gate's probabilities but show every suggestion (to evaluate a gate)


@dataclass
class LearningOptions:
    """The learning loop run by the server itself (`hindsight learn` in a low-priority child process)."""

    auto: bool = True  # start a run when the user has been idle for `idle_minutes` and there is enough new signal
    idle_minutes: float = 10.0  # no typing and no request for this long counts as idle
    min_outcomes: int = 200  # suggestions judged since the gate was last trained, before it is trained again
    min_pairs: int = 50  # dissatisfied suggestions since the last refresh, before the adapter is refreshed again
    threads: int = 1  # CPU threads the run may use (training and measuring)
    memory_mb: int = 8192  # a run whose processes hold more resident memory than this is stopped


@dataclass
class ModelOptions:
    """Which model, and how to prompt it. `"model": "path.gguf"` is short for `{"path": "path.gguf"}`."""

    path: str | None = None  # a GGUF file for the embedded backend; None = the embedded Gemma 3 270M
    name: str | None = None  # the model's name on a server (an Ollama tag, an OpenAI-style model id)
    # How to prompt it: a profile's name (qwen2.5-coder, starcoder2, …, none) or a template with {prefix}
    # (and {suffix}, {context}, {file}); None = what a GGUF's vocabulary says, or a served model's name.
    template: str | None = None
    stop: list[str] = field(default_factory=list)  # more strings that end a completion


@dataclass
class Options:
    model: ModelOptions = field(default_factory=ModelOptions)
    backend: str = "embedded"  # 'embedded' | 'llama-server' | 'ollama' | 'openai'
    base_url: str = "http://127.0.0.1:8080"  # the model server, for any backend but 'embedded'
    api_key: str | None = None
    api_key_env: str | None = None  # the name of an environment variable that holds the API key
    timeout_s: float = 30.0  # a model server that sends nothing for this long has failed
    n_ctx: int = 4096
    n_threads: int | None = None
    database_path: str | None = None  # default: $HINDSIGHT_DB or the platform data dir
    languages: list[str] = field(default_factory=lambda: list(LANGUAGES))
    context: ContextOptions = field(default_factory=ContextOptions)
    completion: CompletionOptions = field(default_factory=CompletionOptions)
    gate: GateOptions = field(default_factory=GateOptions)
    learning: LearningOptions = field(default_factory=LearningOptions)
    # Apply the promoted LoRA adapter (data dir `adapters/`) to the embedded model, when there is one,
    # it was trained on the model being served, and llama.cpp loads it.
    adapter: bool = True
    # A LoRA adapter file (GGUF) to use instead of the promoted one: to try an adapter before promoting it.
    adapter_path: str | None = None
    # When accepted text is checked for persistence, seconds after the accept (stored as +30 s, +120 s).
    persistence_delays_s: list[float] = field(default_factory=lambda: [30.0, 120.0])


CHOICES = {"backend": ("embedded", "llama-server", "ollama", "openai")}
RENAMED = {("backend", "http"): "openai"}  # an older value → its name now


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _check(value: Any, hint: Any) -> bool:
    origin = get_origin(hint)
    if origin is list:
        (item,) = get_args(hint)
        return isinstance(value, list) and all(_check(v, item) for v in value)
    if get_args(hint) and type(None) in get_args(hint):  # Optional[X]
        return value is None or any(_check(value, a) for a in get_args(hint) if a is not type(None))
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _parse(cls: type, raw: Any, path: str, problems: list[str]):
    obj = cls()
    if raw is None:
        return obj
    if not isinstance(raw, dict):
        problems.append(f"{path or 'initializationOptions'} should be an object")
        return obj
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key, value in raw.items():
        name = snake(key)
        where = f"{path}.{key}" if path else key
        if name not in fields:
            problems.append(f"unknown option {where}")
            continue
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            setattr(obj, name, _parse(hint, value, where, problems))
        elif not _check(value, hint):
            problems.append(f"option {where} has the wrong type ({type(value).__name__}); using the default")
        elif isinstance(value, str) and (name, value) in RENAMED:
            problems.append(f"option {where}: {value!r} is now called {RENAMED[name, value]!r}")
            setattr(obj, name, RENAMED[name, value])
        elif name in CHOICES and value not in CHOICES[name]:
            problems.append(f"option {where} must be one of {', '.join(CHOICES[name])}; using the default")
        else:
            setattr(obj, name, float(value) if hint is float else value)
    return obj


def parse_options(raw: Any) -> tuple[Options, list[str]]:
    """Options from the client's initializationOptions, and the problems found (empty when all is well)."""
    problems: list[str] = []
    if isinstance(raw, dict) and isinstance(raw.get("model"), str):
        raw = {**raw, "model": {"path": raw["model"]}}
    options = _parse(Options, raw, "", problems)
    unknown = [lang for lang in options.languages if lang not in LANGUAGES]
    if unknown:
        problems.append(f"unsupported languages ignored: {', '.join(unknown)}")
        options.languages = [lang for lang in options.languages if lang in LANGUAGES]
    return options, problems
