"""The model servers hindsight speaks: llama.cpp's `llama-server`, Ollama, and any OpenAI-style
`/v1/completions` server (vLLM, TGI, LM Studio, llama-cpp-python's `python -m llama_cpp.server`).

What each is asked, and how (the transport, the loop and the errors are hindsight/engine/remote.py):

* `llama-server`: `POST /infill` with the code before and after the cursor and the cross-file snippets as
  `input_extra` chunks: the server lays out the model's own FIM prompt (and its repository format, where
  the vocabulary has one). A model without FIM tokens, or a `model.template` the user named, gets
  `POST /completion` with hindsight's prompt instead. `cache_prompt` keeps the slot's KV cache across
  requests; `n_probs` gives each token's log-prob and the first one's candidates; `/tokenize` counts.
* `ollama`: `POST /api/generate`, JSON lines. With a known FIM profile, `raw` with hindsight's prompt
  (repository context included); otherwise `prompt` and `suffix`, and Ollama's template for the model
  lays out the FIM prompt. `keep_alive` keeps the model loaded; `logprobs` / `top_logprobs` where the
  Ollama is new enough to send them. Ollama has no tokenizer endpoint: budgets are estimated.
* `openai`: `POST /v1/completions` with hindsight's prompt, the profile's `stop`, `logprobs`. Token counts
  from `/tokenize` (vLLM, llama.cpp) or `/extras/tokenize` (llama-cpp-python) when there is one.

Quirks of llama-cpp-python's server (0.3.x), found while testing against it: log-probs need the model
loaded with `logits_all` (its default); started with `--logits_all false`, a request with `logprobs`
answers `200 OK` and sends nothing, not even `[DONE]` (as a prompt longer than `--n_ctx` does): an empty
stream is retried once without log-probs, and if that works, they are not asked for again. It sends no
`usage` in streams. By default (`--interrupt_requests true`) a new request ends the one in flight: a
shared one must run with `--interrupt_requests false`.
"""

from __future__ import annotations

from hindsight.engine.backend import BackendError, GenerationStats
from hindsight.engine.profiles import Profile, instruct_reason
from hindsight.engine.remote import Chunk, EmptyStream, RemoteBackend, number

SUFFIX_CHARS = 2000  # the code after the cursor sent to a server that lays out the prompt itself
KINDS = ("llama-server", "ollama", "openai")


def _logprob_list(entries) -> tuple[float | None, list[tuple[str, float]]]:
    """(the sum of the entries' log-probs, the first entry's candidates) from a list of
    `{token, logprob, top_logprobs: [{token, logprob}]}` (llama-server's and Ollama's shape)."""
    if not isinstance(entries, list) or not entries:
        return None, []
    values = [number(e.get("logprob")) for e in entries if isinstance(e, dict)]
    values = [v for v in values if v is not None]
    first = entries[0] if isinstance(entries[0], dict) else {}
    top = [(str(t.get("token", "")), number(t.get("logprob")) or 0.0)
           for t in first.get("top_logprobs") or [] if isinstance(t, dict)]
    return (sum(values) if values else None), top


class LlamaServerBackend(RemoteBackend):
    kind = "llama-server"
    wants_parts = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # /infill unless the user named a template (then theirs) or the server says the model cannot fill in.
        self.infill = not self.explicit_profile
        self.last_prompt: str | None = None  # the prompt the server laid out for the last request (its text)

    def _request(self, prompt, parts, max_tokens, top, after):
        body = {"n_predict": max_tokens, "temperature": 0, "stream": True, "cache_prompt": True,
                "n_probs": max(top, 1), "stop": list(self.profile.stop)}
        if self.infill and parts is not None:
            extra = [{"filename": s.source.rsplit(":", 1)[0], "text": s.text} for s in reversed(parts.context)]
            return "/infill", {**body, "input_prefix": parts.prefix, "input_suffix": parts.suffix[:SUFFIX_CHARS],
                               "input_extra": extra, "prompt": after}
        return "/completion", {**body, "prompt": prompt + after}

    def _read(self, event: dict, stats: GenerationStats) -> Chunk:
        entries = event.get("completion_probabilities")
        logprob, top = _logprob_list(entries)
        # A token with no text and no bytes is a control token (a split UTF-8 character has bytes): llama-server
        # does not stop at one that is not end-of-generation (<|fim_middle|> again, say), but the middle is over.
        special = (not event.get("content") and isinstance(entries, list) and bool(entries)
                   and all(isinstance(e, dict) and not e.get("token") and not e.get("bytes") for e in entries))
        if event.get("stop"):
            if isinstance(event.get("prompt"), str):
                self.last_prompt = event["prompt"]
            if isinstance(event.get("tokens_evaluated"), int):
                stats.prompt_tokens = event["tokens_evaluated"]
            timings = event.get("timings")  # cache_n: prompt tokens reused from the slot's cache
            if isinstance(timings, dict) and isinstance(timings.get("cache_n"), int):
                stats.reused_tokens = timings["cache_n"]
        return Chunk(str(event.get("content") or ""), logprob, top, bool(event.get("stop")), end=special)

    def generate(self, prompt, *, max_tokens, stats, cancelled, parts=None, first_rank=0):
        try:
            yield from super().generate(prompt, max_tokens=max_tokens, stats=stats, cancelled=cancelled,
                                        parts=parts, first_rank=first_rank)
        except BackendError as exc:
            if not (self.infill and "infill" in str(exc).lower() and ("support" in str(exc).lower())):
                raise
            self.infill = False  # the model has no FIM tokens: hindsight's own prompt on /completion
            self.limit(f"{self.base_url}: the model cannot fill in the middle (/infill); prompting it with "
                       f"the '{self.profile.name}' profile on /completion")
            yield from super().generate(prompt, max_tokens=max_tokens, stats=stats, cancelled=cancelled,
                                        parts=parts, first_rank=first_rank)

    def _tokenize(self, text: str) -> int | None:
        body = self._call("POST", "/tokenize", {"content": text, "add_special": False, "parse_special": False})
        tokens = body.get("tokens") if isinstance(body, dict) else None
        return len(tokens) if isinstance(tokens, list) else None

    def adapters(self) -> list[dict]:
        """The LoRA adapters the server loaded at its start (`--lora FILE`, one id each in order), as it
        lists them: `{"id", "path", "scale"}`."""
        body = self._call("GET", "/lora-adapters")
        if not isinstance(body, list):
            raise BackendError(f"model server {self.base_url} sent no adapter list from /lora-adapters: {body!r:.80}")
        return [a for a in body if isinstance(a, dict) and isinstance(a.get("id"), int)]

    def use_adapter(self, name: str | None) -> list[dict]:
        """From now on, for every request the server answers: the loaded adapter whose path lies in the
        version directory `name` at scale 1 and every other at 0 (`name` None: the base model alone),
        through its hot-swap API (`POST /lora-adapters`). The adapters as the server then lists them;
        BackendError when it has not loaded `name`."""
        loaded = self.adapters()
        chosen = [a["id"] for a in loaded if name and name in str(a.get("path", "")).replace("\\", "/").split("/")]
        if name and not chosen:
            paths = ", ".join(str(a.get("path")) for a in loaded) or "none"
            raise BackendError(f"model server {self.base_url} has not loaded adapter {name} (it holds: {paths})")
        self._call("POST", "/lora-adapters", [{"id": a["id"], "scale": 1.0 if a["id"] in chosen[:1] else 0.0}
                                              for a in loaded])
        return self.adapters()

    def check(self) -> str:
        body = self._call("GET", "/health")
        if not isinstance(body, dict) or body.get("status") != "ok":
            raise BackendError(f"model server {self.base_url} is not ready: {body!r:.80}")
        props = self._call("GET", "/props")
        return str(props.get("model_path") or props.get("model_alias") or "llama-server") if isinstance(props, dict) else "llama-server"


class OllamaBackend(RemoteBackend):
    kind = "ollama"
    stream_format = "ndjson"
    wants_parts = True
    KEEP_ALIVE = "30m"

    def __init__(self, base_url: str = "http://127.0.0.1:11434", *, model: str | None = None, **kwargs):
        if not model:
            raise BackendError("backend 'ollama' needs model.name: the model's Ollama tag (e.g. qwen2.5-coder:1.5b-base)")
        super().__init__(base_url, model=model, **kwargs)
        reason = None if self.explicit_profile else instruct_reason(model, ollama=True)
        if reason:
            raise BackendError(f"{reason}: completion needs a base model (set model.template to use it anyway)")
        # hindsight's own prompt (raw) for a model whose FIM format it knows; else Ollama's template with `suffix`.
        self.raw = self.profile.fim or self.explicit_profile

    def _request(self, prompt, parts, max_tokens, top, after):
        body: dict = {"model": self.model, "stream": True, "keep_alive": self.KEEP_ALIVE,
                      "options": {"temperature": 0, "num_predict": max_tokens, "stop": list(self.profile.stop)},
                      "logprobs": True}
        if top:
            body["top_logprobs"] = top
        if self.raw or parts is None:
            return "/api/generate", {**body, "raw": True, "prompt": prompt + after}
        # Ollama's template puts `prompt` where the code before the cursor goes: the snippets lead it, as
        # comments with their paths (the prefix-only profile's format), then the file's header.
        lead = "".join(self.profile.snippet(s.source, s.text, parts.language) for s in reversed(parts.context))
        lead = lead + parts.header if lead else ""
        return "/api/generate", {**body, "prompt": lead + parts.prefix + after, "suffix": parts.suffix[:SUFFIX_CHARS]}

    def _read(self, event: dict, stats: GenerationStats) -> Chunk:
        logprob, top = _logprob_list(event.get("logprobs"))
        done = bool(event.get("done"))
        if done and isinstance(event.get("prompt_eval_count"), int):
            stats.prompt_tokens = event["prompt_eval_count"]
        return Chunk(str(event.get("response") or ""), logprob, top, done)

    def check(self) -> str:
        body = self._call("POST", "/api/show", {"model": self.model})
        if not isinstance(body, dict):
            raise BackendError(f"model server {self.base_url} sent a malformed answer from /api/show")
        return self.model or ""


class OpenAIBackend(RemoteBackend):
    kind = "openai"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._ask_logprobs = True  # cleared when the server turns out to fail with them (see the module doc)

    def _request(self, prompt, parts, max_tokens, top, after):
        body = {"prompt": prompt + after, "max_tokens": max_tokens, "temperature": 0, "stream": True,
                "stream_options": {"include_usage": True}, "echo": False}
        if self.profile.stop:
            body["stop"] = list(self.profile.stop)
        if self._ask_logprobs:
            body["logprobs"] = max(top, 1)
        if self.model:
            body["model"] = self.model
        return "/v1/completions", body

    def _read(self, event: dict, stats: GenerationStats) -> Chunk:
        usage = event.get("usage")
        if isinstance(usage, dict):
            if isinstance(usage.get("prompt_tokens"), int) and usage["prompt_tokens"] > 0:
                stats.prompt_tokens = usage["prompt_tokens"]
            details = usage.get("prompt_tokens_details")
            if isinstance(details, dict) and isinstance(details.get("cached_tokens"), int):
                stats.reused_tokens = details["cached_tokens"]
        timings = event.get("timings")  # llama.cpp's server
        if isinstance(timings, dict) and isinstance(timings.get("cache_n"), int):
            stats.reused_tokens = timings["cache_n"]
            if isinstance(timings.get("prompt_n"), int):
                stats.prompt_tokens = timings["cache_n"] + timings["prompt_n"]
        choices = event.get("choices")
        if not choices:  # e.g. the trailing usage-only chunk
            return Chunk()
        choice = choices[0]
        if not isinstance(choice, dict):
            raise TypeError("choice")
        text = choice.get("text")
        logprob, top = None, []
        logprobs = choice.get("logprobs")
        if isinstance(logprobs, dict):
            values = logprobs.get("token_logprobs")
            if not isinstance(values, list):  # llama.cpp's chat-style `content` list
                content = logprobs.get("content")
                values = [c.get("logprob") for c in content if isinstance(c, dict)] if isinstance(content, list) else []
            numbers = [v for v in map(number, values) if v is not None]
            logprob = sum(numbers) if numbers else None
            tops = logprobs.get("top_logprobs")
            if isinstance(tops, list) and tops and isinstance(tops[0], dict):
                top = sorted(((str(t), number(v) or 0.0) for t, v in tops[0].items()), key=lambda x: -x[1])
        return Chunk(text if isinstance(text, str) else "", logprob, top, bool(choice.get("finish_reason")))

    def generate(self, prompt, *, max_tokens, stats, cancelled, parts=None, first_rank=0):
        try:
            yield from super().generate(prompt, max_tokens=max_tokens, stats=stats, cancelled=cancelled,
                                        parts=parts, first_rank=first_rank)
        except EmptyStream:
            if not self._ask_logprobs:
                raise BackendError(self._empty_stream_message()) from None
            self._ask_logprobs = False  # maybe it cannot give log-probs: once more without
            try:
                yield from super().generate(prompt, max_tokens=max_tokens, stats=stats, cancelled=cancelled,
                                            parts=parts, first_rank=first_rank)
            except EmptyStream:
                self._ask_logprobs = True  # it was not the log-probs
                raise BackendError(self._empty_stream_message()) from None

    def _tokenize(self, text: str) -> int | None:
        for path, body, key in (("/tokenize", {"prompt": text, **({"model": self.model} if self.model else {})}, "count"),
                                ("/extras/tokenize/count", {"input": text}, "count")):
            try:
                answer = self._call("POST", path, body)
            except BackendError:
                continue
            if isinstance(answer, dict) and isinstance(answer.get(key), int):
                return answer[key]
        return None

    def check(self) -> str:
        body = self._call("GET", "/v1/models")
        try:
            return ", ".join(str(m["id"]) for m in body["data"])
        except (KeyError, TypeError):
            raise BackendError(f"model server {self.base_url} sent a malformed model list from /v1/models") from None

    def _empty_stream_message(self) -> str:
        return (f"model server {self.base_url} accepted the request but streamed nothing (prompt longer than its "
                "context? llama_cpp.server also does this for logprobs without --logits_all)")


def connect(kind: str, base_url: str, *, model: str | None = None, api_key: str | None = None,
            timeout_s: float = 30.0, profile: Profile | None = None) -> RemoteBackend:
    """The backend for a model server of `kind` (one of KINDS)."""
    cls = {"llama-server": LlamaServerBackend, "ollama": OllamaBackend, "openai": OpenAIBackend}.get(kind)
    if cls is None:
        raise BackendError(f"unknown model server kind {kind!r}; known: {', '.join(KINDS)}")
    return cls(base_url, model=model, api_key=api_key, timeout_s=timeout_s, profile=profile)
