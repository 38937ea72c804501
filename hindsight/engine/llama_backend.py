"""The embedded backend: llama.cpp in process, greedy decoding with KV-cache reuse across requests.

The sampling loop is our own (argmax over the last logits) so that we can check for cancellation between
tokens, read each token's log-prob and keep the KV cache for the longest common token prefix of the new
prompt and whatever the context evaluated last. The same loop draws temperature samples (`Sampling`)
for the refresh's preference pairs, so that the samples are healed and cached as the suggestions are.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from hindsight.engine.backend import BackendError, GenerationStats, Token
from hindsight.engine.fim import FORMAT, declared_format
from hindsight.engine.model import check_gguf
from hindsight.engine.profiles import KNOWN_SPECIALS, Profile, Vocabulary, detect, instruct_reason, with_stop


@contextlib.contextmanager
def _quiet_stderr():
    """llama.cpp prints some load messages straight to fd 2, past llama-cpp-python's verbose=False;
    keep them out of the user's terminal."""
    try:
        fd = os.dup(2)
    except OSError:  # pragma: no cover
        yield
        return
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(fd, 2)
            os.close(fd)


@dataclass
class Sampling:
    """Temperature sampling instead of the greedy choice: among the `candidates` best tokens (those that
    agree with the text the generation must begin with, while it is not yet written), the best `top_k`,
    within nucleus `top_p`. One random generator, seeded once, serves every generation it is passed to:
    a run of samples is reproducible from `seed`."""

    temperature: float = 0.7
    top_p: float = 0.95
    top_k: int = 40
    seed: int = 0
    candidates: int = 64  # best tokens looked at per step (an argpartition over the vocabulary)
    rng: np.random.Generator = field(init=False, repr=False)

    def __post_init__(self):
        if self.temperature <= 0:
            raise ValueError("temperature must be > 0 (greedy decoding is the default)")
        self.rng = np.random.default_rng(self.seed)


def adapter_name(lora_path: Path) -> str:
    """How an adapter shows in the backend's name: its version directory for a registry adapter
    (`adapter-…/adapter.gguf`), else the file's name."""
    registry = lora_path.name == "adapter.gguf" and lora_path.parent.name.startswith("adapter-")
    return lora_path.parent.name if registry else lora_path.name


class LlamaBackend:
    PREFILL_CHUNK = 128
    HEAL_CANDIDATES = 64  # tokens considered, best first, for the text the generation must begin with
    supports_must_start = True
    supports_first_rank = True
    stops_at_tokens = True  # the profile's stop tokens end generation by id (`_end_tokens`)

    def __init__(
        self,
        model_path: str | Path,
        *,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        kv_reuse: bool = True,
        lora_path: str | Path | None = None,
        profile: Profile | None = None,
        stop: tuple[str, ...] | list[str] = (),
    ):
        """`lora_path`: a GGUF LoRA adapter applied on top of the model. `profile`: how to prompt the
        model (hindsight/engine/profiles.py); by default the one its vocabulary points to, or the FIM
        format its adapter declares, and a model whose name says it is an instruct model is refused
        (BackendError); `stop`: more spellings that end a completion. Only pass a model that
        `hindsight.engine.model.check_model`, and an adapter that `hindsight.refresh.gguf_adapter.check_adapter`, has
        test-loaded: a malformed file can abort the process."""
        import llama_cpp

        path = Path(model_path)
        check_gguf(path)
        self.model_path = path
        self.lora_path = Path(lora_path) if lora_path else None
        self.kv_reuse = kv_reuse
        self.name = f"llama.cpp:{path.name}" + (f"+{adapter_name(self.lora_path)}" if self.lora_path else "")
        kwargs = dict(
            model_path=str(path),
            n_ctx=n_ctx,
            n_batch=512,
            n_threads=n_threads or len(os.sched_getaffinity(0)),
            logits_all=False,
            # Gemma 3 uses sliding-window attention; with a full-size SWA cache llama.cpp can drop the
            # tail of the cache and keep the prefix, which is what KV reuse needs.
            swa_full=True,
            # Read into memory, not mapped: a mapped file that is overwritten in place (`cp new.gguf
            # model.gguf`) kills the process with SIGBUS at its next token; a read copy keeps serving.
            use_mmap=False,
            verbose=False,
        )
        if self.lora_path:
            kwargs["lora_path"] = str(self.lora_path)
        try:
            with _quiet_stderr():
                self.llm = llama_cpp.Llama(**kwargs)
        except Exception as exc:  # llama.cpp gives ValueError / RuntimeError for bad files
            what = f"model {path}" + (f" with adapter {self.lora_path}" if self.lora_path else "")
            raise BackendError(f"could not load {what}: {str(exc).splitlines()[0]}") from exc
        if self.lora_path and not self.llm._lora_adapter:  # llama-cpp-python takes NULL for an adapter
            self.llm._lora_adapter = None  # freeing the NULL adapter would crash the process
            self.llm.close()
            raise BackendError(f"llama.cpp could not load the adapter {self.lora_path}")
        self.n_ctx = self.llm.n_ctx()
        self.n_vocab = self.llm.n_vocab()
        self._pieces: dict[int, bytes] = {}
        if profile is None:
            vocabulary = self.vocabulary()
            reason = instruct_reason(vocabulary.name) or instruct_reason(path.stem)
            if reason:
                self.llm.close()
                raise BackendError(f"{reason}: completion needs a base model, which continues code instead of "
                                   "answering it (set model.template to use this one anyway)")
            profile = detect(vocabulary, fim_adapter=declared_format(self.lora_path) == FORMAT)
        self.profile = with_stop(profile, stop)
        # The profile's special tokens, each placed by the prompt's template as its one token (None where
        # the vocabulary lacks it: then it is plain text), and the tokens that end a completion.
        self._specials = {s: self._special_id(s) for s in self.profile.specials}
        split = sorted(self._specials, key=len, reverse=True)
        self._special_split = re.compile("(" + "|".join(map(re.escape, split)) + ")") if split else None
        self._eos = self._end_tokens()

    def vocabulary(self) -> Vocabulary:
        """What llama.cpp says of the model's FIM tokens (by their text), which of the special tokens the
        profiles know it holds, and its name."""
        import llama_cpp

        vocab = llama_cpp.llama_model_get_vocab(self.llm.model)
        ids = [f(vocab) for f in (llama_cpp.llama_vocab_fim_pre, llama_cpp.llama_vocab_fim_suf, llama_cpp.llama_vocab_fim_mid)]
        texts = tuple(self._text(vocab, i) for i in ids) if all(0 <= i < self.n_vocab for i in ids) else None
        has = frozenset(s for s in KNOWN_SPECIALS if self._special_id(s) is not None)
        return Vocabulary(texts, has, str(self.llm.metadata.get("general.name", "")))

    @staticmethod
    def _text(vocab, token: int) -> str:
        import llama_cpp

        return (llama_cpp.llama_vocab_get_text(vocab, token) or b"").decode("utf-8", errors="replace")

    def _end_tokens(self) -> set[int]:
        """End of generation: what llama.cpp counts as such (`llama_vocab_is_eog`: end of text, end of
        turn, and FIM's pad, repository and file-separator tokens) and the profile's stop tokens."""
        import llama_cpp

        vocab = llama_cpp.llama_model_get_vocab(self.llm.model)
        candidates = {self.llm.token_eos()}
        for f in (llama_cpp.llama_vocab_eot, llama_cpp.llama_vocab_fim_pad, llama_cpp.llama_vocab_fim_rep,
                  llama_cpp.llama_vocab_fim_sep):
            candidates.add(f(vocab))
        ends = {t for t in candidates if 0 <= t < self.n_vocab and llama_cpp.llama_vocab_is_eog(vocab, t)}
        ends.add(self.llm.token_eos())
        ends.update(t for t in map(self._special_id, self.profile.stop) if t is not None)
        return ends

    def _special_id(self, text: str) -> int | None:
        """The one control or user-defined token spelled `text` (or `▁text`, as SentencePiece vocabularies
        store some), else None: a spelling the tokenizer splits, or reads as ordinary text, is not a
        special token of this model."""
        import llama_cpp

        vocab = llama_cpp.llama_model_get_vocab(self.llm.model)
        special = llama_cpp.LLAMA_TOKEN_ATTR_CONTROL | llama_cpp.LLAMA_TOKEN_ATTR_USER_DEFINED
        for spelling in (text, "▁" + text):
            ids = self.llm.tokenize(spelling.encode(), add_bos=False, special=True)
            if len(ids) == 1 and llama_cpp.llama_vocab_get_attr(vocab, ids[0]) & special:
                return ids[0]
        return None

    def tokenize(self, text: str) -> list[int]:
        """BOS and the text's tokens; the profile's special tokens (which only the prompt's template writes,
        hindsight/engine/profiles.py) as their special tokens."""
        parts = self._special_split.split(text) if self._special_split else [text]
        ids = self.llm.tokenize(parts[0].encode("utf-8"), add_bos=True, special=False)
        for i in range(1, len(parts), 2):
            special = self._specials.get(parts[i])
            rest = parts[i + 1] if special is not None else parts[i] + parts[i + 1]
            ids += [special] if special is not None else []
            ids += self.llm.tokenize(rest.encode("utf-8"), add_bos=False, special=False) if rest else []
        return ids

    def count_tokens(self, text: str) -> int:
        return len(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def _piece(self, token: int) -> bytes:
        piece = self._pieces.get(token)
        if piece is None:
            piece = self.llm.detokenize([token])
            self._pieces[token] = piece
        return piece

    def _last_logits(self) -> np.ndarray:
        return np.ctypeslib.as_array(self.llm._ctx.get_logits(), shape=(self.n_vocab,))

    def _prefill(self, tokens: list[int], cancelled: Callable[[], bool]) -> int:
        """Evaluate `tokens`, reusing the cached prefix. Returns how many tokens were reused."""
        llm = self.llm
        keep = 0
        if self.kv_reuse and llm.n_tokens > 0:
            cached = llm.input_ids[: llm.n_tokens]
            limit = min(len(cached), len(tokens) - 1)  # evaluate at least one token to get fresh logits
            if limit > 0:
                diff = np.nonzero(cached[:limit] != np.asarray(tokens[:limit]))[0]
                keep = int(diff[0]) if len(diff) else limit
        if keep and not llm._ctx.kv_cache_seq_rm(-1, keep, -1):
            keep = 0
        llm.n_tokens = keep  # eval() drops the cache from here on
        # In chunks, so a superseded request stops early; what was evaluated stays cached for the next.
        for i in range(keep, len(tokens), self.PREFILL_CHUNK):
            if i > keep and cancelled():
                break
            llm.eval(tokens[i : i + self.PREFILL_CHUNK])
        return keep

    def _choose(self, logits: np.ndarray, must_start: str, rank: int = 0, sampling: Sampling | None = None) -> int | None:
        """Greedy choice (a draw, with `sampling`); while `must_start` is not yet generated, the best token
        consistent with it. `rank` > 0: the rank-th best instead (0 = best), among the tokens that go past
        `must_start`."""
        if sampling is not None:
            return self._draw(logits, must_start, sampling)
        if not must_start:
            if not rank:
                return int(np.argmax(logits))
            top = np.argpartition(logits, -(rank + 1))[-(rank + 1) :]
            return int(top[np.argsort(-logits[top])][rank])
        # The HEAL_CANDIDATES best, found among the tokens near the best logit: argpartition over all
        # 262k logits costs 2 ms a token, a comparison 0.1 ms. Past 20 below the best (e^-20 as likely)
        # fewer may be taken.
        best = logits.max()
        for below in (8.0, 12.0, 20.0):
            top = np.flatnonzero(logits >= best - below)
            if len(top) >= self.HEAL_CANDIDATES:
                break
        if len(top) > self.HEAL_CANDIDATES:
            top = top[np.argpartition(logits[top], -self.HEAL_CANDIDATES)[-self.HEAL_CANDIDATES :]]
        fitting = self._fitting(top[np.argsort(-logits[top])], must_start)
        if rank:
            past = [token for token, piece in fitting if piece.startswith(must_start) and piece != must_start]
            if len(past) > rank:
                return past[rank]
        if fitting:
            return fitting[0][0]
        return self._spelled(must_start)

    def _draw(self, logits: np.ndarray, must_start: str, sampling: Sampling) -> int | None:
        """A token drawn as `sampling` says, among the best ones consistent with `must_start`."""
        k = min(sampling.candidates, len(logits))
        top = np.argpartition(logits, -k)[-k:]
        top = top[np.argsort(-logits[top])]
        if must_start:
            fitting = self._fitting(top, must_start)
            if not fitting:
                return self._spelled(must_start)
            top = np.array([token for token, _ in fitting])
        top = top[: sampling.top_k]
        z = logits[top].astype(np.float64) / sampling.temperature
        p = np.exp(z - z.max())
        p /= p.sum()
        keep = np.cumsum(p) - p < sampling.top_p  # the nucleus: up to and including the token that crosses top_p
        p = p[keep] / p[keep].sum()
        return int(sampling.rng.choice(top[keep], p=p))

    def _fitting(self, tokens: np.ndarray, must_start: str) -> list[tuple[int, str]]:
        """(token, its text) for each of `tokens`, in order, whose text agrees with `must_start`: begins
        with it, or is its beginning."""
        fitting = []
        for token in tokens:
            piece = self._piece(int(token)).decode("utf-8", errors="ignore")
            if piece and (piece.startswith(must_start) or must_start.startswith(piece)):
                fitting.append((int(token), piece))
        return fitting

    def _spelled(self, must_start: str) -> int | None:
        """None of the likely tokens fits: `must_start`'s first token, spelled out as the tokenizer would."""
        forced = self.llm.tokenize(must_start.encode("utf-8"), add_bos=False, special=False)
        return forced[0] if forced else None

    def generate(
        self,
        prompt: str,
        *,
        max_tokens: int,
        stats: GenerationStats,
        cancelled: Callable[[], bool],
        must_start: str = "",
        first_rank: int = 0,
        sampling: Sampling | None = None,
    ) -> Iterator[Token]:
        """`must_start`: text the generation has to begin with (token healing: the engine cuts the
        partial word or indentation at the cursor from the prompt, and the model writes it again in
        whatever tokens it prefers). `first_rank` > 0: where the generation first goes past
        `must_start`, take the model's rank-th best token instead of its best (an alternative).
        `sampling`: draw each token (see `Sampling`) instead of taking the best."""
        tokens = self.tokenize(prompt)
        room = self.n_ctx - max_tokens - 1
        if len(tokens) > room:  # the engine budgets below this; a safety net, keep the end
            tokens = tokens[:1] + tokens[len(tokens) - room + 1 :]
        stats.prompt_tokens = len(tokens)
        start = time.perf_counter()
        stats.reused_tokens = self._prefill(tokens, cancelled)
        stats.prefill_ms = (time.perf_counter() - start) * 1000
        pending = b""
        for _ in range(max_tokens):
            if cancelled():
                return
            logits = self._last_logits()
            token = self._choose(logits, must_start, first_rank, sampling)
            if token is None or token in self._eos:
                return
            top = float(logits.max())
            logprob = float(logits[token]) - top - float(np.log(np.exp(logits - top).sum(dtype=np.float64)))
            pending += self._piece(token)
            try:
                text = pending.decode("utf-8")
                pending = b""
            except UnicodeDecodeError:
                text = ""  # a multi-byte character split across tokens: wait for the rest
            if not must_start.startswith(text):
                first_rank = 0  # this token went past `must_start`: greedy from here on
            must_start = must_start[len(text) :] if must_start.startswith(text) else ""
            # Yield before evaluating: the caller often stops at this token (a newline, an unsure
            # token), and then evaluating it would be wasted. The cache holds what was evaluated.
            if text:
                yield Token(text, logprob)
            self.llm.eval([token])
