"""Ollama's wire format, and how every server kind fails.

Ollama cannot be installed here (its binary comes from its own site, not a package registry), so the
Ollama backend is tested against its documented API (docs.ollama.com/api/generate): a loopback server in
this file answers `/api/generate` with the documented JSON lines and records what it was sent. The same
server also misbehaves on purpose (hangs, answers garbage, ends a stream early, answers 4xx/5xx) for each
server kind: the backend must give one clear line, never hang, and leave the next request working.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from hindsight.engine.backend import BackendError, GenerationStats
from hindsight.engine.engine import Engine, EngineConfig
from hindsight.engine.servers import OllamaBackend, connect
from hindsight.request import CompletionRequest, Snippet

DOC = "import util\n\ndef main():\n    x = \n    return x\n"


class Stub:
    """A loopback HTTP server; `behaviour` decides each answer; `seen` keeps (path, body) of each request."""

    def __init__(self):
        self.seen: list[tuple[str, dict]] = []
        self.behaviour = "ollama"
        self.tokens = ["a", " +", " b"]
        self.logprobs = True
        self.disconnected = threading.Event()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                self._answer(None)

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                self._answer(body)

            def _answer(self, body):
                stub.seen.append((self.path, body))
                getattr(stub, "answer_" + stub.behaviour.replace("-", "_"))(self, body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads, self.server.block_on_close = True, False  # a hanging answer never blocks close
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    @staticmethod
    def send(handler, status: int, content_type: str, lines: list[bytes], delay: float = 0.0):
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.end_headers()
        for line in lines:
            handler.wfile.write(line)
            handler.wfile.flush()
            time.sleep(delay)

    # -- Ollama, as documented -------------------------------------------------------------------------

    def answer_ollama(self, handler, body, delay: float = 0.0):
        if handler.path == "/api/show":
            return self.send(handler, 200, "application/json", [json.dumps({"details": {"family": "qwen2"}}).encode()])
        top = body.get("top_logprobs") or 0
        lines = []
        for i, token in enumerate(self.tokens[: body["options"]["num_predict"]]):
            event = {"model": body["model"], "created_at": "2026-12-07T00:00:00Z", "response": token, "done": False}
            if self.logprobs and body.get("logprobs"):
                entry = {"token": token, "logprob": -0.1 * (i + 1)}
                if top:
                    entry["top_logprobs"] = [{"token": t, "logprob": -0.1 * (k + 1)} for k, t in
                                             enumerate([token, "c", "d", "e", "f"][:top])]
                event["logprobs"] = [entry]
            lines.append(json.dumps(event).encode() + b"\n")
        lines.append(json.dumps({"model": body["model"], "response": "", "done": True, "done_reason": "stop",
                                 "prompt_eval_count": 42, "eval_count": len(lines)}).encode() + b"\n")
        try:
            self.send(handler, 200, "application/x-ndjson", lines, delay)
        except (BrokenPipeError, ConnectionResetError):
            self.disconnected.set()

    def answer_ollama_slow(self, handler, body):
        self.tokens = [f" t{i}" for i in range(200)]
        self.answer_ollama(handler, {**body, "options": {**body["options"], "num_predict": 200}}, delay=0.05)

    def answer_not_found(self, handler, body):
        self.send(handler, 404, "application/json", [b'{"error":"model \\"nope:1b\\" not found, try pulling it first"}'])

    # -- failures, for any kind ------------------------------------------------------------------------

    def answer_hang(self, handler, body):
        time.sleep(5)

    def answer_garbage(self, handler, body):
        content_type = "text/event-stream" if handler.path != "/api/generate" else "application/x-ndjson"
        self.send(handler, 200, content_type, [b"data: <html>not json</html>\n\n", b"<html>not json</html>\n"])

    def answer_early_end(self, handler, body):
        if handler.path == "/api/generate":
            line = json.dumps({"response": "a", "done": False}).encode() + b"\n"
            return self.send(handler, 200, "application/x-ndjson", [line])
        event = {"content": "a", "stop": False} if handler.path in ("/infill", "/completion") else {
            "choices": [{"text": "a", "finish_reason": None}]}
        self.send(handler, 200, "text/event-stream", [b"data: " + json.dumps(event).encode() + b"\n\n"])

    def answer_server_error(self, handler, body):
        self.send(handler, 500, "application/json", [b'{"error": {"message": "CUDA out of memory\\nat line 3"}}'])


@pytest.fixture
def stub():
    s = Stub()
    yield s
    s.close()


def never() -> bool:
    return False


def request(**kw) -> CompletionRequest:
    return CompletionRequest(uri="file:///w/app.py", text=DOC, line=3, character=8, language="python",
                             path="app.py", repo="shop", **kw)


def test_a_known_fim_model_gets_hindsights_prompt_raw(stub):
    backend = OllamaBackend(stub.url, model="qwen2.5-coder:1.5b-base")
    completion = Engine(backend, EngineConfig(min_token_prob=0)).complete(
        request(context=[Snippet("lib/util.py:1-2", "def helper():\n    return 1")]))
    assert completion.text == "a + b" and completion.prompt_tokens == 42
    path, body = stub.seen[-1]
    assert path == "/api/generate" and body["raw"] is True and "suffix" not in body
    assert body["prompt"] == completion.prompt.text and body["prompt"].startswith("<|repo_name|>shop\n<|file_sep|>")
    assert body["model"] == "qwen2.5-coder:1.5b-base" and body["stream"] is True and body["keep_alive"] == "30m"
    assert body["options"]["temperature"] == 0 and body["options"]["num_predict"] == 48
    assert "<|file_sep|>" in body["options"]["stop"] and body["logprobs"] is True
    assert completion.logprobs.n_tokens == 3 and completion.logprobs.min == pytest.approx(-0.3)


def test_an_unknown_model_gets_prompt_and_suffix_for_ollamas_own_template(stub):
    backend = OllamaBackend(stub.url, model="mycoder:latest")
    Engine(backend, EngineConfig(min_token_prob=0)).complete(request(context=[Snippet("lib/u.py:1", "X = 1")]))
    body = stub.seen[-1][1]
    assert "raw" not in body and body["suffix"] == "\n    return x\n"
    assert body["prompt"] == "# lib/u.py:1\nX = 1\n\n# app.py\nimport util\n\ndef main():\n    x = "


def test_alternatives_from_the_first_tokens_top_logprobs(stub):
    backend = OllamaBackend(stub.url, model="qwen2.5-coder:1.5b-base")
    engine = Engine(backend, EngineConfig(min_token_prob=0))
    first = engine.complete(request())
    alternatives = engine.alternatives(request(), first, 2)
    assert [a.text for a in alternatives] == ["ca + b", "da + b"]  # the stub goes on the same way after any token
    asked = [body for path, body in stub.seen if body and body.get("top_logprobs")]
    assert asked and asked[0]["options"]["num_predict"] == 1
    assert stub.seen[-1][1]["prompt"].endswith("<|fim_middle|>d")  # the continuation starts after the candidate


def test_an_ollama_without_logprobs_is_said_once(stub):
    stub.logprobs = False
    backend = OllamaBackend(stub.url, model="qwen2.5-coder:1.5b-base")
    completion = Engine(backend, EngineConfig(min_token_prob=0.3)).complete(request())
    assert completion.text == "a + b"  # nothing is unsure without log-probs: the stop is off
    assert backend.limits == [
        f"{stub.url} has no tokenizer endpoint: prompt budgets are estimated (3.2 characters a token)",
        f"{stub.url} sends no log-probs: completion.minTokenProb and the gate's confidence features are off for it",
    ]


def test_instruct_tags_are_refused_and_a_missing_model_is_one_line(stub):
    with pytest.raises(BackendError, match="instruct models unless they end in -base"):
        OllamaBackend(stub.url, model="qwen2.5-coder:7b")
    with pytest.raises(BackendError, match="needs model.name"):
        OllamaBackend(stub.url)
    stub.behaviour = "not-found"
    with pytest.raises(BackendError) as info:
        list(OllamaBackend(stub.url, model="nope:1b-base", profile=None).generate(
            "x", max_tokens=2, stats=GenerationStats(), cancelled=never))
    assert str(info.value) == (f'model server {stub.url} returned HTTP 404 Not Found: model "nope:1b" not found, '
                               "try pulling it first")


def test_closing_the_stream_disconnects(stub):
    stub.behaviour = "ollama-slow"
    backend = OllamaBackend(stub.url, model="starcoder2:3b")
    tokens = backend.generate("x", max_tokens=200, stats=GenerationStats(), cancelled=never)
    assert next(tokens).text and next(tokens).text
    tokens.close()
    assert stub.disconnected.wait(5)  # the server saw the socket go: it stops generating for this request


KINDS = [("llama-server", None), ("ollama", "starcoder2:3b"), ("openai", None)]


@pytest.mark.parametrize("kind, model", KINDS)
@pytest.mark.parametrize("behaviour, message", [
    ("hang", "timed out after 1 s"),
    ("garbage", "malformed stream"),
    ("early-end", "ended the stream early"),
    ("server-error", "returned HTTP 500 Internal Server Error: CUDA out of memory"),
])
def test_failures_are_one_line_and_never_hang(stub, kind, model, behaviour, message):
    stub.behaviour = behaviour
    backend = connect(kind, stub.url, model=model, timeout_s=1)
    start = time.perf_counter()
    with pytest.raises(BackendError) as info:
        list(backend.generate("x", max_tokens=4, stats=GenerationStats(), cancelled=never))
    assert time.perf_counter() - start < 4
    assert message in str(info.value) and "\n" not in str(info.value) and stub.url in str(info.value)


def test_secrets_are_redacted_before_anything_is_sent(stub):
    doc = 'API_KEY = "sk-proj-8fJ3kLm2Qx9ZtR4vWn7YbC1dE6gH0iKaBcDeFgHiJkLmNoPqRsTu"\n\ndef main():\n    x = \n'
    snippet = Snippet("lib/conf.py:1", 'password = "hunter2-Kx8#mQ2$vL9"')
    for backend in (OllamaBackend(stub.url, model="qwen2.5-coder:1.5b-base"), OllamaBackend(stub.url, model="mycoder")):
        Engine(backend, EngineConfig(min_token_prob=0)).complete(CompletionRequest(
            uri="file:///w/app.py", text=doc, line=3, character=8, language="python", path="app.py", context=[snippet]))
        sent = json.dumps(stub.seen[-1][1])
        assert "sk-proj-8fJ3" not in sent and "hunter2" not in sent and "redacted" in sent
