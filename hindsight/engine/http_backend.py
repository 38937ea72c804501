"""The HTTP backend: greedy tokens from an OpenAI-compatible `/v1/completions` server.

This is how a team points hindsight at a serving engine it already runs (llama.cpp's `llama-server`,
vLLM, llama-cpp-python's `python -m llama_cpp.server`, ...). Standard library only (`http.client`).

Each `generate` call opens its own connection and POSTs a streaming request
(`stream: true, temperature: 0, logprobs: 1, echo: false`), reads the server-sent events and yields one
`Token` per chunk with non-empty text. When the caller cancels or closes the generator the socket is shut
down at once: servers notice the disconnect and stop generating (llama-cpp-python's server checks after
every chunk it sends).

What the stats mean here:

* `prompt_tokens`: from the server's `usage` (asked for with `stream_options.include_usage`, which vLLM and
  llama.cpp honour) or llama.cpp's `timings`; otherwise the local estimate `count_tokens(prompt)`.
* `reused_tokens`: `usage.prompt_tokens_details.cached_tokens` or llama.cpp's `timings.cache_n` when the
  server reports them, else 0.
* `prefill_ms`: wall time from sending the request to the first streamed event (network included).

`count_tokens` never asks the server: it estimates `ceil(len(text) / 3.2)`, the hot path budgets prompts
with it and a tokenizer round trip per request would cost more than it saves.

Quirks of llama-cpp-python's server (0.3.x), found while testing against it:

* Log-probs need the model loaded with `logits_all`. The server's `--logits_all` defaults to true, so a
  plain `python -m llama_cpp.server --model M.gguf` works. Started with `--logits_all false`, a request with
  `logprobs` fails inside the stream: the server answers `200 OK` and then sends nothing, not even
  `[DONE]` (the ValueError only reaches its log). The same empty stream is what a prompt longer than its
  `--n_ctx` gets. We treat an empty stream as "maybe no log-prob support": retry once without `logprobs`,
  and if that works, keep asking without them (tokens then carry logprob 0.0). If the retry is empty too,
  it is a BackendError naming the likely causes.
* It does not send `usage` in streams (it ignores `stream_options`), so `prompt_tokens` is the estimate.
* It serialises requests with a lock and, by default (`--interrupt_requests true`), a new request ends
  the one in flight with an early `[DONE]`. `GET /v1/models` takes that lock too, so `check()` while a
  completion streams ends that completion early: probe at startup, not per request.
* An unknown `model` name silently falls back to the loaded model.
* Errors outside the stream come back as JSON `{"error": {"message": ...}}` (500 for a bad body) or
  FastAPI's `{"detail": ...}` (401 for a wrong API key).
"""

from __future__ import annotations

import http.client
import json
import math
import socket
import time
from typing import Any, Callable, Iterator
from urllib.parse import urlsplit

from hindsight.engine.backend import BackendError, GenerationStats, Token
from hindsight.engine.profiles import BY_NAME, Profile, guess

CHARS_PER_TOKEN = 3.2
_MAX_ERROR_BODY = 64 * 1024


def _one_line(text: str, limit: int = 200) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _chunk_logprob(choice: dict) -> float | None:
    """The log-prob of a chunk's text: the sum over its tokens (one token per chunk on most servers).
    Understands the completions format (`token_logprobs`) and llama.cpp's chat-style `content` list."""
    logprobs = choice.get("logprobs")
    if not isinstance(logprobs, dict):
        return None
    values = logprobs.get("token_logprobs")
    if not isinstance(values, list):
        content = logprobs.get("content")
        values = [c.get("logprob") for c in content if isinstance(c, dict)] if isinstance(content, list) else []
    numbers = [v for v in map(_float, values) if v is not None]
    return sum(numbers) if numbers else None


class _EmptyStream(Exception):
    """The server accepted the request and closed the stream without a single event."""


class HttpBackend:
    def __init__(
        self,
        base_url: str,
        *,
        model: str | None = None,
        timeout_s: float = 30.0,
        api_key: str | None = None,
        profile: Profile | None = None,
    ):
        """`profile`: how to prompt the served model (hindsight/engine/profiles.py); by default the one
        its name points to, else prefix-only."""
        self.profile = profile or guess(model or "") or BY_NAME["none"]
        base_url = base_url.strip().rstrip("/")
        self.base_url = base_url
        self.name = f"http:{base_url}"
        self.model = model
        self.timeout_s = timeout_s
        self.api_key = api_key
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise BackendError(f"completion server URL must look like http://host:port, got {base_url!r}")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        try:
            self._port = parts.port
        except ValueError:
            raise BackendError(f"completion server URL has a bad port: {base_url!r}") from None
        # Accept an OpenAI-style base URL ending in /v1 as well as the bare server address.
        path = parts.path.rstrip("/")
        if path.endswith("/v1"):
            path = path[:-3]
        self._prefix = path
        self._logprobs = True  # cleared when the server turns out to have no log-prob support

    # -- the Backend contract ------------------------------------------------------------------------

    def count_tokens(self, text: str) -> int:
        return math.ceil(len(text) / CHARS_PER_TOKEN)

    def generate(
        self,
        prompt: str,
        *,
        max_tokens: int,
        stats: GenerationStats,
        cancelled: Callable[[], bool],
    ) -> Iterator[Token]:
        stats.prompt_tokens = self.count_tokens(prompt)
        stats.reused_tokens = 0
        stats.prefill_ms = 0.0
        if max_tokens <= 0 or cancelled():
            return
        start = time.perf_counter()
        try:
            yield from self._stream(prompt, max_tokens, stats, cancelled, start, self._logprobs)
        except _EmptyStream:
            if not self._logprobs:
                raise BackendError(self._empty_stream_message()) from None
            # Maybe the server cannot give log-probs (llama-cpp-python without logits_all): once more without.
            try:
                yield from self._stream(prompt, max_tokens, stats, cancelled, start, False)
            except _EmptyStream:
                raise BackendError(self._empty_stream_message()) from None
            self._logprobs = False

    def check(self) -> list[str]:
        """A cheap liveness probe: `GET /v1/models`. Returns the model ids the server lists."""
        conn = self._connection()
        try:
            try:
                conn.request("GET", self._prefix + "/v1/models", headers=self._headers())
                resp = conn.getresponse()
            except (OSError, http.client.HTTPException) as exc:
                raise BackendError(self._transport_message(exc)) from None
            if resp.status != 200:
                raise BackendError(self._status_message(resp))
            try:
                body = json.loads(resp.read())
                return [str(m["id"]) for m in body["data"]]
            except (OSError, http.client.HTTPException) as exc:
                raise BackendError(self._transport_message(exc)) from None
            except (ValueError, KeyError, TypeError):
                raise BackendError(
                    f"completion server {self.base_url} sent a malformed model list from /v1/models"
                ) from None
        finally:
            conn.close()

    # -- internals -----------------------------------------------------------------------------------

    def _connection(self) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        return cls(self._host, self._port, timeout=self.timeout_s)

    def _headers(self, body: bool = False) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if body:
            headers["Content-Type"] = "application/json"
            headers["Accept"] = "text/event-stream"
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def _payload(self, prompt: str, max_tokens: int, logprobs: bool) -> bytes:
        payload: dict[str, Any] = {
            "prompt": prompt,
            "max_tokens": max_tokens,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
            "echo": False,
        }
        if self.profile.stop:
            payload["stop"] = list(self.profile.stop)
        if logprobs:
            payload["logprobs"] = 1
        if self.model:
            payload["model"] = self.model
        return json.dumps(payload).encode("utf-8")

    def _stream(
        self,
        prompt: str,
        max_tokens: int,
        stats: GenerationStats,
        cancelled: Callable[[], bool],
        start: float,
        logprobs: bool,
    ) -> Iterator[Token]:
        conn = self._connection()
        resp: http.client.HTTPResponse | None = None
        try:
            try:
                conn.request(
                    "POST",
                    self._prefix + "/v1/completions",
                    body=self._payload(prompt, max_tokens, logprobs),
                    headers=self._headers(body=True),
                )
                resp = conn.getresponse()
            except (OSError, http.client.HTTPException) as exc:
                raise BackendError(self._transport_message(exc)) from None
            if resp.status != 200:
                raise BackendError(self._status_message(resp))
            if "json" in (resp.getheader("Content-Type") or "").lower():
                # A server that ignored `stream`: one whole completion as one token.
                yield from self._whole(resp, stats, start)
                return
            yielded = 0
            seen_event = False
            finished = False
            carry = 0.0  # log-prob of chunks without text (a split UTF-8 character), added to the next token
            for data in self._events(resp):
                if not seen_event:
                    seen_event = True
                    stats.prefill_ms = (time.perf_counter() - start) * 1000
                if data == "[DONE]":
                    return
                try:
                    event = json.loads(data)
                except ValueError:
                    raise BackendError(
                        f"completion server {self.base_url} sent a malformed stream: {_one_line(data, 80)}"
                    ) from None
                if not isinstance(event, dict):
                    raise BackendError(f"completion server {self.base_url} sent a malformed stream event")
                if "error" in event:
                    raise BackendError(
                        f"completion server {self.base_url} failed: {self._error_text(event['error'])}"
                    )
                self._read_usage(event, stats)
                choices = event.get("choices")
                if not choices:  # e.g. the trailing usage-only chunk
                    continue
                choice = choices[0] if isinstance(choices, list) and isinstance(choices[0], dict) else None
                if choice is None:
                    raise BackendError(f"completion server {self.base_url} sent a malformed stream event")
                if choice.get("finish_reason"):
                    finished = True
                text = choice.get("text")
                logprob = _chunk_logprob(choice)
                if not isinstance(text, str) or not text:
                    carry += logprob or 0.0
                    continue
                if yielded >= max_tokens:
                    return  # the server ignores max_tokens: stop listening (and so stop it)
                yield Token(text, min(0.0, carry + (logprob or 0.0)))
                carry = 0.0
                yielded += 1
                if cancelled():
                    return
            if not seen_event:
                raise _EmptyStream()
            if not finished:
                raise BackendError(
                    f"completion server {self.base_url} ended the stream early (no [DONE], no finish_reason)"
                )
        finally:
            self._close(conn, resp)

    def _events(self, resp: http.client.HTTPResponse) -> Iterator[str]:
        """The `data` payloads of a server-sent-event stream. Comments (`: ping`) and other fields are
        skipped; llama.cpp's non-standard `error: {...}` lines become BackendError."""
        data: list[str] = []
        while True:
            try:
                raw = resp.readline()
            except (OSError, http.client.HTTPException) as exc:
                raise BackendError(self._transport_message(exc, streaming=True)) from None
            if not raw:
                if data:
                    yield "\n".join(data)
                return
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            if not line:
                if data:
                    yield "\n".join(data)
                    data = []
                continue
            if line.startswith(":"):
                continue
            field, _, value = line.partition(":")
            if value.startswith(" "):
                value = value[1:]
            if field == "data":
                data.append(value)
            elif field == "error":
                try:
                    message = self._error_text(json.loads(value))
                except ValueError:
                    message = _one_line(value)
                raise BackendError(f"completion server {self.base_url} failed: {message}")

    def _whole(self, resp: http.client.HTTPResponse, stats: GenerationStats, start: float) -> Iterator[Token]:
        try:
            body = json.loads(resp.read())
            stats.prefill_ms = (time.perf_counter() - start) * 1000
            self._read_usage(body, stats)
            choice = body["choices"][0]
            text = choice.get("text") or ""
        except (OSError, http.client.HTTPException) as exc:
            raise BackendError(self._transport_message(exc, streaming=True)) from None
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            raise BackendError(f"completion server {self.base_url} sent a malformed completion") from None
        if text:
            yield Token(text, min(0.0, _chunk_logprob(choice) or 0.0))

    @staticmethod
    def _read_usage(event: dict, stats: GenerationStats) -> None:
        usage = event.get("usage")
        if isinstance(usage, dict):
            prompt_tokens = usage.get("prompt_tokens")
            if isinstance(prompt_tokens, int) and prompt_tokens > 0:
                stats.prompt_tokens = prompt_tokens
            details = usage.get("prompt_tokens_details")
            if isinstance(details, dict) and isinstance(details.get("cached_tokens"), int):
                stats.reused_tokens = details["cached_tokens"]
        timings = event.get("timings")  # llama.cpp's llama-server
        if isinstance(timings, dict):
            cache_n, prompt_n = timings.get("cache_n"), timings.get("prompt_n")
            if isinstance(cache_n, int):
                stats.reused_tokens = cache_n
                if isinstance(prompt_n, int):
                    stats.prompt_tokens = cache_n + prompt_n

    @staticmethod
    def _close(conn: http.client.HTTPConnection, resp: http.client.HTTPResponse | None) -> None:
        """Drop the connection now, mid-stream or not, so the server sees the disconnect and stops."""
        sock = conn.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if resp is not None:
            resp.close()
        conn.close()

    def _error_text(self, error: Any) -> str:
        if isinstance(error, dict):
            error = error.get("message") or error.get("detail") or error
        text = str(error).strip()
        return _one_line(text.splitlines()[0] if text else "unknown error")

    def _status_message(self, resp: http.client.HTTPResponse) -> str:
        try:
            raw = resp.read(_MAX_ERROR_BODY)
        except (OSError, http.client.HTTPException):
            raw = b""
        detail = ""
        try:
            body = json.loads(raw)
            if isinstance(body, dict):
                detail = self._error_text(body.get("error") or body.get("detail") or body.get("message") or "")
        except ValueError:
            text = raw.decode("utf-8", errors="replace").strip()
            detail = _one_line(text.splitlines()[0]) if text else ""
        head = f"completion server {self.base_url} returned HTTP {resp.status} {resp.reason}".rstrip()
        return f"{head}: {detail}" if detail and detail != "unknown error" else head

    def _transport_message(self, exc: BaseException, *, streaming: bool = False) -> str:
        where = f"completion server {self.base_url}"
        if isinstance(exc, TimeoutError):  # socket.timeout is TimeoutError since 3.10
            if streaming:
                return f"{where} timed out after {self.timeout_s:g} s waiting for the next token"
            return f"{where} is unreachable: timed out after {self.timeout_s:g} s"
        if isinstance(exc, ConnectionRefusedError):
            return f"{where} is unreachable: connection refused"
        if isinstance(exc, socket.gaierror):
            return f"{where} is unreachable: cannot resolve host {self._host!r}"
        if isinstance(exc, (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected)):
            return f"{where} dropped the connection"
        if isinstance(exc, http.client.HTTPException):
            return f"{where} sent a malformed response: {_one_line(type(exc).__name__ + ' ' + str(exc))}"
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        state = "failed mid-stream" if streaming else "is unreachable"
        return f"{where} {state}: {_one_line(reason)}"

    def _empty_stream_message(self) -> str:
        return (
            f"completion server {self.base_url} accepted the request but streamed nothing "
            "(prompt longer than its context? llama_cpp.server also does this for logprobs without --logits_all)"
        )
