"""What every model-server backend shares: the connection, the streamed events, the errors, and the
generation loop (hindsight/engine/servers.py has the three kinds: llama-server, Ollama, OpenAI-style).

Standard library only (`http.client`). Each `generate` call opens its own connection and streams: the
server-sent events of llama-server and `/v1/completions`, or Ollama's JSON lines. When the caller cancels
or closes the generator the socket is shut down at once; every server here notices the disconnect and
stops that request, and only that one (llama-server and Ollama run requests side by side; see the
README for `python -m llama_cpp.server`, which by default ends the request in flight when another comes).

Secrets in the user's code are redacted from every request before it is sent (hindsight/redact.py).

A kind says where and what to send (`_request`) and how to read one event (`_read`); the loop here turns
events into tokens, stops at `max_tokens` (a server that ignores it is stopped by closing the socket),
and turns every failure into one BackendError line that names the server: unreachable, timed out, an
HTTP error with the server's own message, a malformed stream, a stream that ends early.

Alternatives (`first_rank`): the server is asked for the first token's best candidates (its top
log-probs), the rank-th is taken and the server asked to go on after it; where the server sends no top
log-probs there are none. What a server cannot do (log-probs, a tokenizer endpoint) is found out once
and said once: `limits` collects the sentences, the pipeline tells the user.
"""

from __future__ import annotations

import http.client
import json
import math
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator
from urllib.parse import urlsplit

from hindsight.engine.backend import BackendError, GenerationStats, Token
from hindsight.engine.profiles import BY_NAME, Profile, guess
from hindsight.redact import redact

CHARS_PER_TOKEN = 3.2  # the estimate where a server has no tokenizer endpoint
_MAX_ERROR_BODY = 64 * 1024
_COUNT_CACHE = 50_000


def one_line(text: str, limit: int = 200) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


@dataclass
class Chunk:
    """One streamed event, read: its text, the log-prob of that text (None: the server sent none), the
    first position's best candidates (text, log-prob), whether the server says it is done, and whether
    the model ended the middle with a special token the server does not stop at (`end`)."""

    text: str = ""
    logprob: float | None = None
    top: list[tuple[str, float]] = field(default_factory=list)
    done: bool = False
    end: bool = False  # the model wrote a special token that renders as nothing: it has left the middle


SENT_TEXT = ("prompt", "input_prefix", "input_suffix", "suffix")  # the request fields that hold the user's code


def _redacted(body: dict) -> dict:
    """The request body with secrets taken out of the user's code (hindsight/redact.py): nothing secret
    leaves the machine, even for a server on another one."""
    body = {k: redact(v) if k in SENT_TEXT and isinstance(v, str) else v for k, v in body.items()}
    if isinstance(body.get("input_extra"), list):
        body["input_extra"] = [{**c, "text": redact(c.get("text", ""))} for c in body["input_extra"]]
    return body


class EmptyStream(Exception):
    """The server accepted the request and closed the stream without a single event."""


class RemoteBackend:
    kind = ""
    stream_format = "sse"  # 'sse' (data: lines) or 'ndjson' (one JSON object a line)
    supports_must_start = False  # no token healing: the server picks its own tokens
    supports_first_rank = True  # alternatives through the first token's top log-probs
    wants_parts = False  # True: `generate` also takes the Prompt (its parts), for a server that lays it out
    TOP = 5  # candidates asked for at the first position, for alternatives

    def __init__(self, base_url: str, *, model: str | None = None, timeout_s: float = 30.0,
                 api_key: str | None = None, profile: Profile | None = None):
        """`profile`: how to prompt the served model (hindsight/engine/profiles.py); by default the one its
        name points to, else prefix-only."""
        base_url = base_url.strip().rstrip("/")
        self.base_url = base_url
        self.name = f"{self.kind}:{base_url}" + (f" {model}" if model else "")
        self.model = model
        self.timeout_s = timeout_s
        self.api_key = api_key
        self.profile = profile or guess(model or "") or BY_NAME["none"]
        self.explicit_profile = profile is not None
        self.limits: list[str] = []  # what this server cannot do, found out while serving (said once each)
        self.last_request: tuple[str, dict] | None = None  # (path, body) of the last request, as sent
        self.logprobs: bool | None = None  # whether the server sends log-probs (None: not known yet)
        self._counts: dict[str, int] = {}
        self._tokenizer: bool | None = None  # whether the server's tokenizer endpoint works
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise BackendError(f"model server URL must look like http://host:port, got {base_url!r}")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        try:
            self._port = parts.port
        except ValueError:
            raise BackendError(f"model server URL has a bad port: {base_url!r}") from None
        path = parts.path.rstrip("/")  # an OpenAI-style base URL ending in /v1 works too
        self._prefix = path[:-3] if path.endswith("/v1") else path

    # -- what a kind provides ------------------------------------------------------------------------

    def _request(self, prompt: str, parts, max_tokens: int, top: int, after: str) -> tuple[str, dict]:
        """(path, JSON body) of a streamed completion of `prompt` (the Prompt's `parts` for a kind that
        lays the prompt out itself), `after` written after it already, with `top` candidates a position."""
        raise NotImplementedError

    def _read(self, event: dict, stats: GenerationStats) -> Chunk:
        raise NotImplementedError

    def _tokenize(self, text: str) -> int | None:
        """Tokens in `text` by the server's tokenizer; None where it has no tokenizer endpoint."""
        return None

    def check(self) -> str:
        """A cheap liveness probe; returns what the server says it serves. BackendError when it cannot."""
        raise NotImplementedError

    # -- the Backend contract ------------------------------------------------------------------------

    def count_tokens(self, text: str) -> int:
        """By the server's tokenizer where it has an endpoint for it (cached by text: the prompt builder
        asks for the same lines at every keystroke), else estimated from the length."""
        n = self._counts.get(text)
        if n is not None:
            return n
        n = None
        if self._tokenizer is not False and text:
            try:
                n = self._tokenize(text)
            except BackendError:
                n = None
            if self._tokenizer is None:
                self._tokenizer = n is not None
                if n is None:
                    self.limit(f"{self.base_url} has no tokenizer endpoint: prompt budgets are estimated "
                               f"({CHARS_PER_TOKEN:g} characters a token)")
        if n is None:
            n = math.ceil(len(text) / CHARS_PER_TOKEN)
        if len(self._counts) > _COUNT_CACHE:
            self._counts.clear()
        self._counts[text] = n
        return n

    def generate(self, prompt: str, *, max_tokens: int, stats: GenerationStats, cancelled: Callable[[], bool],
                 parts=None, first_rank: int = 0) -> Iterator[Token]:
        # An estimate (no tokenizer round trip on the hot path), replaced by the server's count when it sends one.
        stats.prompt_tokens = math.ceil(len(prompt) / CHARS_PER_TOKEN)
        stats.reused_tokens = 0
        stats.prefill_ms = 0.0
        if max_tokens <= 0 or cancelled():
            return
        start = time.perf_counter()
        after = ""
        if first_rank:
            first = self._first_choices(prompt, parts, stats, cancelled, start)
            if len(first) <= first_rank:
                return
            after, logprob = first[first_rank]
            yield Token(after, logprob)
            max_tokens -= 1
            if max_tokens <= 0 or cancelled():
                return
        yield from self._stream(prompt, parts, max_tokens, stats, cancelled, start, after=after)

    def limit(self, sentence: str) -> None:
        if sentence not in self.limits:
            self.limits.append(sentence)

    # -- the loop ------------------------------------------------------------------------------------

    def _first_choices(self, prompt, parts, stats, cancelled, start) -> list[tuple[str, float]]:
        """The best candidates for the first token, best first (empty when the server sends none)."""
        top: list[tuple[str, float]] = []
        for chunk in self._chunks(prompt, parts, 1, stats, cancelled, start, top=self.TOP, after=""):
            top = top or chunk.top
        if not top:
            self.limit(f"{self.base_url} sends no top log-probs: no alternatives to cycle through")
        return [(text, logprob) for text, logprob in top if text]

    def _stream(self, prompt, parts, max_tokens, stats, cancelled, start, *, after: str) -> Iterator[Token]:
        yielded = 0
        carry = 0.0  # log-prob of chunks without text (a split UTF-8 character), added to the next token
        for chunk in self._chunks(prompt, parts, max_tokens, stats, cancelled, start, top=0, after=after):
            if chunk.end:
                return
            if chunk.logprob is not None:
                self.logprobs = True
            elif chunk.text and self.logprobs is None:
                self.logprobs = False
                self.limit(f"{self.base_url} sends no log-probs: completion.minTokenProb and the gate's "
                           "confidence features are off for it")
            if not chunk.text:
                carry += chunk.logprob or 0.0
                continue
            if yielded >= max_tokens:
                return  # the server ignores the limit: stop listening (and so stop it)
            yield Token(chunk.text, min(0.0, carry + (chunk.logprob or 0.0)))
            carry = 0.0
            yielded += 1
            if cancelled():
                return

    def _chunks(self, prompt, parts, max_tokens, stats, cancelled, start, *, top: int, after: str) -> Iterator[Chunk]:
        path, body = self._request(prompt, parts, max_tokens, top, after)
        body = _redacted(body)
        self.last_request = (path, body)
        conn = self._connection()
        resp: http.client.HTTPResponse | None = None
        try:
            try:
                conn.request("POST", self._prefix + path, body=json.dumps(body).encode("utf-8"),
                             headers=self._headers(body=True))
                resp = conn.getresponse()
            except (OSError, http.client.HTTPException) as exc:
                raise BackendError(self._transport_message(exc)) from None
            if resp.status != 200:
                raise BackendError(self._status_message(resp))
            seen = done = False
            events = self._events(resp) if self.stream_format == "sse" else self._lines(resp)
            for data in events:
                if not seen:
                    seen = True
                    stats.prefill_ms = (time.perf_counter() - start) * 1000
                if data == "[DONE]":
                    return
                try:
                    event = json.loads(data)
                except ValueError:
                    raise BackendError(f"model server {self.base_url} sent a malformed stream: {one_line(data, 80)}") from None
                if not isinstance(event, dict):
                    raise BackendError(f"model server {self.base_url} sent a malformed stream event")
                if "error" in event:
                    raise BackendError(f"model server {self.base_url} failed: {self._error_text(event['error'])}")
                try:
                    chunk = self._read(event, stats)
                except (KeyError, IndexError, TypeError, AttributeError, ValueError):
                    raise BackendError(f"model server {self.base_url} sent a malformed stream event") from None
                yield chunk
                if chunk.done:
                    done = True
                    if self.stream_format == "ndjson":
                        return
                if cancelled():
                    return
            if not seen:
                raise EmptyStream()
            if not done:
                raise BackendError(f"model server {self.base_url} ended the stream early (it never said it was done)")
        finally:
            self._close(conn, resp)

    # -- transport -----------------------------------------------------------------------------------

    def _connection(self) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        return cls(self._host, self._port, timeout=self.timeout_s)

    def _headers(self, body: bool = False) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if body:
            headers["Content-Type"] = "application/json"
            if self.stream_format == "sse":
                headers["Accept"] = "text/event-stream"
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def _call(self, method: str, path: str, body: dict | list | None = None) -> Any:
        """One whole JSON request and answer (a probe, a tokenization). BackendError when it fails."""
        conn = self._connection()
        try:
            try:
                data = json.dumps(body).encode("utf-8") if body is not None else None
                conn.request(method, self._prefix + path, body=data, headers=self._headers(body=body is not None))
                resp = conn.getresponse()
                if resp.status != 200:
                    raise BackendError(self._status_message(resp))
                raw = resp.read()
            except (OSError, http.client.HTTPException) as exc:
                raise BackendError(self._transport_message(exc)) from None
            try:
                return json.loads(raw)
            except ValueError:
                raise BackendError(f"model server {self.base_url} sent malformed JSON from {path}") from None
        finally:
            conn.close()

    def _events(self, resp: http.client.HTTPResponse) -> Iterator[str]:
        """The `data` payloads of a server-sent-event stream. Comments (`: ping`) and other fields are
        skipped; llama.cpp's non-standard `error: {...}` lines become BackendError."""
        data: list[str] = []
        while True:
            raw = self._readline(resp)
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
            name, _, value = line.partition(":")
            if value.startswith(" "):
                value = value[1:]
            if name == "data":
                data.append(value)
            elif name == "error":
                try:
                    message = self._error_text(json.loads(value))
                except ValueError:
                    message = one_line(value)
                raise BackendError(f"model server {self.base_url} failed: {message}")

    def _lines(self, resp: http.client.HTTPResponse) -> Iterator[str]:
        """The non-empty lines of a JSON-lines stream."""
        while True:
            raw = self._readline(resp)
            if not raw:
                return
            line = raw.decode("utf-8", errors="replace").strip()
            if line:
                yield line

    def _readline(self, resp: http.client.HTTPResponse) -> bytes:
        try:
            return resp.readline()
        except (OSError, http.client.HTTPException) as exc:
            raise BackendError(self._transport_message(exc, streaming=True)) from None

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
        return one_line(text.splitlines()[0] if text else "unknown error")

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
            detail = one_line(text.splitlines()[0]) if text else ""
        head = f"model server {self.base_url} returned HTTP {resp.status} {resp.reason}".rstrip()
        return f"{head}: {detail}" if detail and detail != "unknown error" else head

    def _transport_message(self, exc: BaseException, *, streaming: bool = False) -> str:
        where = f"model server {self.base_url}"
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
            return f"{where} sent a malformed response: {one_line(type(exc).__name__ + ' ' + str(exc))}"
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        state = "failed mid-stream" if streaming else "is unreachable"
        return f"{where} {state}: {one_line(reason)}"
