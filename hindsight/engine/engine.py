"""The engine: document + cursor → one suggestion, with per-stage timings and a log-prob summary.

Plain Python; the server calls it from its single model worker (llama.cpp is not thread-safe).
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from typing import Callable

from hindsight.engine.backend import Backend, GenerationStats
from hindsight.engine.cache import CacheEntry, TypedAheadCache
from hindsight.engine.postprocess import clean, trim_suffix_overlap
from hindsight.engine.profiles import BY_NAME
from hindsight.engine.prompt import Prompt, PromptBudget, PromptBuilder
from hindsight.request import CompletionRequest, Snippet
from hindsight.engine.stops import StopRule, completion_mode


@dataclass
class EngineConfig:
    max_tokens_single: int = 48
    max_tokens_multi: int = 160
    max_lines: int = 12
    typed_ahead: bool = True  # serve typed-ahead continuations from the cache
    heal: bool = True  # token healing at the cursor, where the backend supports it
    # Stop before the first token the model gives less than this probability (0 = never): show what
    # the model is sure of. 0.3 against 0 (docs/BENCHMARKS.md): typing replay p50 98 → 57 ms, as many
    # characters from suggestions, fewer wrong ones shown; costs HumanEval infill pass@1 points.
    min_token_prob: float = 0.3
    budget: PromptBudget = field(default_factory=PromptBudget)


@dataclass
class LogprobSummary:
    n_tokens: int = 0
    sum: float = 0.0
    mean: float | None = None
    min: float | None = None

    @classmethod
    def of(cls, logprobs: list[float]) -> "LogprobSummary":
        if not logprobs:
            return cls()
        total = math.fsum(logprobs)
        return cls(len(logprobs), total, total / len(logprobs), min(logprobs))


@dataclass
class Completion:
    text: str
    mode: str  # 'single' | 'multi'
    source: str  # 'model' | 'typed_ahead'
    prompt: Prompt | None
    logprobs: LogprobSummary
    timings_ms: dict[str, float]
    cancelled: bool = False
    parent_id: str | None = None  # for a typed-ahead hit: the request that generated the suggestion
    prompt_tokens: int = 0
    reused_tokens: int = 0
    withheld: bool = False  # `admit` said no: nothing was generated
    # Why generation ended: 'rule' (a stop rule: the line or block is done), 'unsure' (the next token was
    # below minTokenProb), 'eos' or 'length'; that token's log-prob; the first kept token's.
    stop: str = ""
    next_logprob: float | None = None
    first_logprob: float | None = None


_HEAL = re.compile(r"[ \t]*[A-Za-z0-9_]*$")


def heal_text(cursor_line_prefix: str, limit: int = 40) -> str:
    """The partial word at the cursor with the whitespace before it (or the bare indentation)."""
    match = _HEAL.search(cursor_line_prefix[-limit:])
    return match.group() if match else ""


def heal_split(prompt: str) -> tuple[str, str]:
    """(`prompt` without the partial word at its end, that partial word): what the engine gives the model,
    and the text its generation must begin with (token healing)."""
    heal = heal_text(prompt[prompt.rfind("\n") + 1 :])
    return prompt[: len(prompt) - len(heal)], heal


def split_at_cursor(text: str, line: int, character: int, lines: list[str] | None = None) -> tuple[str, str, str]:
    """(document text before the cursor, rest of the cursor line, document text after the cursor)."""
    lines = text.split("\n") if lines is None else lines
    line = min(max(line, 0), len(lines) - 1)
    character = min(max(character, 0), len(lines[line]))
    offset = sum(len(l) + 1 for l in lines[:line]) + character
    rest = lines[line][character:]
    return text[:offset], rest, text[offset:]


# The cross-file context for a request, best first, given the line its prompt window starts at
# (hindsight.retrieval.live.LiveIndex.retrieve: it keeps the context while that start stays put).
Retriever = Callable[[CompletionRequest, int], list[Snippet]]


class Engine:
    def __init__(self, backend: Backend, config: EngineConfig | None = None, retriever: Retriever | None = None):
        self.backend = backend
        self.config = config or EngineConfig()
        self.retriever = retriever
        self.profile = getattr(backend, "profile", None) or BY_NAME["none"]
        self.prompts = PromptBuilder(backend.count_tokens, self.config.budget, self.profile)
        self.cache = TypedAheadCache()
        # Healing cuts the partial word from the end of the prompt: only where the prompt ends at the cursor.
        self._heals = self.config.heal and getattr(backend, "supports_must_start", False) and self.profile.cursor_last
        # A local model stops at the stop tokens themselves (LlamaBackend); a server's text is searched.
        self._text_stops = () if getattr(backend, "stops_at_tokens", False) else self.profile.stop

    def complete(self, req: CompletionRequest) -> Completion:
        t0 = time.perf_counter()
        split = split_at_cursor(req.text, req.line, req.character, req.doc_lines())
        before, line_rest, _ = split
        if self.config.typed_ahead:
            hit = self.cache.get(req.uri, before, line_rest)
            if hit is not None:
                parent_id = hit.entry.request_id
                hit.entry.request_id = req.request_id  # the next hit continues this request
                ms = (time.perf_counter() - t0) * 1000
                return Completion(
                    text=hit.text,
                    mode=hit.entry.mode,
                    source="typed_ahead",
                    prompt=None,
                    logprobs=LogprobSummary(),
                    timings_ms={"cache_ms": ms, "total_ms": ms},
                    parent_id=parent_id,
                )
        self.cache.drop(req.uri)
        completion = self._generate(req, t0, split=split)
        if completion.text and not completion.cancelled:
            self.cache.put(req.uri, CacheEntry(before, line_rest, completion.text, req.request_id, completion.mode))
        return completion

    def alternatives(self, req: CompletionRequest, first: Completion, n: int) -> list[Completion]:
        """Up to `n` other suggestions for the same place, for the user to cycle through: the model's
        next-best tokens where it starts writing, each continued greedily (the prompt is in the KV
        cache, so each costs only its own tokens). Empty ones and repeats are dropped."""
        if not getattr(self.backend, "supports_first_rank", False):
            return []
        seen, found = {first.text}, []
        for rank in range(1, n + 3):  # spare tries: different tokens often end up spelling the same text
            if len(found) == n or req.cancelled():
                break
            alt = self._generate(req, time.perf_counter(), first_rank=rank)
            if alt.text and alt.text not in seen and not alt.cancelled:
                seen.add(alt.text)
                found.append(alt)
        return found

    def _stop_at(self, raw: str, start: int) -> int | None:
        """Where the first of the profile's stop spellings begins in `raw[start:]`, or None."""
        found = [i for i in (raw.find(s, start) for s in self._text_stops) if i >= 0]
        return min(found) if found else None

    def context_for(self, req: CompletionRequest) -> list[Snippet]:
        """The request's own context, else the retriever's."""
        if req.context or self.retriever is None:
            return req.context
        lines = req.doc_lines()
        line = min(max(req.line, 0), len(lines) - 1)
        return self.retriever(req, self.prompts.window_start(lines, line, lines[line][: req.character]))

    def _generate(self, req: CompletionRequest, t0: float, first_rank: int = 0, split=None) -> Completion:
        before, line_rest, after = split or split_at_cursor(req.text, req.line, req.character, req.doc_lines())
        mode = completion_mode(req.text, req.line, req.character, req.language)
        t1 = time.perf_counter()
        context = self.context_for(req)
        tc = time.perf_counter()
        if req.admit is not None and not first_rank and not req.admit(context):
            timings = {"mode_ms": (t1 - t0) * 1000, "context_ms": (tc - t1) * 1000}
            timings["total_ms"] = (time.perf_counter() - t0) * 1000
            return Completion("", mode, "model", None, LogprobSummary(), timings, withheld=True)
        prompt = self.prompts.build(
            req.text, req.line, req.character, path=req.path, language=req.language, context=context,
            lines=req.doc_lines(), repo=req.repo,
        )
        t2 = time.perf_counter()
        cursor_line_prefix = before[before.rfind("\n") + 1 :]
        rule = StopRule(mode, cursor_line_prefix=cursor_line_prefix, suffix=after, max_lines=self.config.max_lines)
        max_tokens = self.config.max_tokens_multi if mode == "multi" else self.config.max_tokens_single
        if req.cancelled():  # superseded while it waited for the worker
            return Completion("", mode, "model", prompt, LogprobSummary(), {"total_ms": (t2 - t0) * 1000}, True)
        stats = GenerationStats()
        # Token healing: the partial word (or indentation) at the cursor is cut from the prompt and the
        # model must write it again; a prompt that ends mid-token is text the model never saw in training.
        heal = heal_text(cursor_line_prefix) if self._heals else ""
        extra: dict = {"must_start": heal} if heal else {}
        if first_rank:
            extra["first_rank"] = first_rank
        if getattr(self.backend, "wants_parts", False):  # a server that lays out the prompt itself
            extra["parts"] = prompt
        min_logprob = math.log(self.config.min_token_prob) if self.config.min_token_prob > 0 else -math.inf
        raw = ""
        spans: list[tuple[int, int, float]] = []  # (start, end) in the text after `heal`, and log-prob
        kept: str | None = None
        stream = self.backend.generate(
            prompt.text[: len(prompt.text) - len(heal)],
            max_tokens=max_tokens,
            stats=stats,
            cancelled=req.cancelled,
            **extra,
        )
        stop, next_logprob = "eos", None  # why generation ended, and the log-prob of the token it ended at
        try:
            for token in stream:
                spans.append((len(raw) - len(heal), len(raw) + len(token.text) - len(heal), token.logprob))
                # (An alternative's first token is chosen not to be the likeliest: no test for it.)
                unsure = len(raw) > len(heal) or (len(raw) == len(heal) and not first_rank)
                if unsure and token.logprob < min_logprob:
                    # The model is unsure how to go on: show what it was sure of, not a guess.
                    spans.pop()
                    kept = rule.finish(raw[len(heal) :])
                    stop, next_logprob = "unsure", token.logprob
                    break
                raw += token.text
                if len(raw) <= len(heal):
                    continue
                end = self._stop_at(raw, len(heal))
                if end is not None:  # the model ended the middle in text (a server that sends special tokens)
                    kept, stop = rule.finish(raw[len(heal) : end]), "eos"
                    break
                kept = rule.feed(raw[len(heal) :])
                if kept is not None:
                    stop, next_logprob = "rule", token.logprob
                    break
            else:
                if len(spans) >= max_tokens:
                    stop = "length"
        finally:
            stream.close()
        t3 = time.perf_counter()
        cancelled = req.cancelled()
        if kept is None:
            kept = rule.finish(raw[len(heal) :] if raw.startswith(heal) else "")
        # Log-probs of the tokens that made it into the kept text (a prefix of the generated text).
        end = len(kept.rstrip())
        logprobs = [lp for start, stop, lp in spans if stop > 0 and start < end]
        final = clean(trim_suffix_overlap(kept, after, mode), mode)
        t4 = time.perf_counter()
        timings = {
            "mode_ms": (t1 - t0) * 1000,
            "context_ms": (tc - t1) * 1000,
            "prompt_ms": (t2 - tc) * 1000,
            "prefill_ms": stats.prefill_ms,
            "generate_ms": (t3 - t2) * 1000 - stats.prefill_ms,
            "postprocess_ms": (t4 - t3) * 1000,
            "total_ms": (t4 - t0) * 1000,
        }
        return Completion(
            text="" if cancelled else final,
            mode=mode,
            source="model",
            prompt=prompt,
            logprobs=LogprobSummary.of(logprobs),
            timings_ms=timings,
            cancelled=cancelled,
            prompt_tokens=stats.prompt_tokens,
            reused_tokens=stats.reused_tokens,
            stop=stop,
            next_logprob=next_logprob,
            first_logprob=logprobs[0] if logprobs else None,
        )

