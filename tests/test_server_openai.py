"""OpenAIBackend against a real llama-cpp-python server (`python -m llama_cpp.server`) running the embedded
model on a loopback port. No mocks: the server, the model and the sockets are real."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import free_port

from hindsight.engine.backend import BackendError, GenerationStats
from hindsight.engine.servers import OpenAIBackend

pytestmark = pytest.mark.slow

API_KEY = "test-key-not-secret"
PROMPT = "def add(a, b):\n    return"
STORY = "# A long comment that goes on and on about nothing in particular\n#"



def _start_server(model: Path, log_path: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = log_path.open("wb")
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1",
           "--port", str(port), "--n_ctx", "2048", *extra]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    log.close()
    headers = {"Authorization": f"Bearer {API_KEY}"} if "--api_key" in extra else {}
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            break
        try:
            req = urllib.request.Request(url + "/v1/models", headers=headers)
            with urllib.request.urlopen(req, timeout=2) as resp:
                if resp.status == 200:
                    return proc, url
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            break
        time.sleep(0.25)
    _stop(proc)
    tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-30:])
    pytest.fail(f"llama_cpp.server did not answer /v1/models within 60 s (exit {proc.returncode}):\n{tail}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    data = tmp_path_factory.mktemp("hindsight-data")
    saved = os.environ.get("HINDSIGHT_DATA_DIR")
    os.environ["HINDSIGHT_DATA_DIR"] = str(data)
    try:
        from hindsight.engine.model import resolve_model

        yield resolve_model(None)
    finally:
        if saved is None:
            os.environ.pop("HINDSIGHT_DATA_DIR", None)
        else:
            os.environ["HINDSIGHT_DATA_DIR"] = saved


@pytest.fixture(scope="module")
def server(model_path, tmp_path_factory) -> str:
    logs = tmp_path_factory.mktemp("server-log")
    proc, url = _start_server(model_path, logs / "llama_server.log", "--api_key", API_KEY)
    try:
        yield url
    finally:
        _stop(proc)


@pytest.fixture
def backend(server) -> OpenAIBackend:
    return OpenAIBackend(server, api_key=API_KEY, timeout_s=30)


def _closed_port_url() -> str:
    return f"http://127.0.0.1:{free_port()}"  # bound then released: nothing listens there


def _never() -> bool:
    return False


def test_name_and_estimate():
    b = OpenAIBackend("http://127.0.0.1:8080/")
    assert b.name == "openai:http://127.0.0.1:8080"
    assert b.count_tokens("") == 0
    assert b.count_tokens("abc") == 1
    assert b.count_tokens("x" * 32) == 10
    assert b.count_tokens("x" * 33) == 11


def test_generate_streams_tokens_with_logprobs(backend):
    stats = GenerationStats()
    tokens = list(backend.generate(PROMPT, max_tokens=12, stats=stats, cancelled=_never))
    text = "".join(t.text for t in tokens)
    assert text.strip(), tokens
    assert all(t.text for t in tokens)
    assert all(math.isfinite(t.logprob) and t.logprob <= 0.0 for t in tokens)
    assert any(t.logprob < 0.0 for t in tokens)  # real log-probs came back, not the 0.0 fallback
    assert stats.prompt_tokens > 0
    assert stats.reused_tokens == 0
    assert stats.prefill_ms > 0.0


def test_greedy_is_deterministic(backend):
    def run():
        return [t.text for t in backend.generate(PROMPT, max_tokens=6, stats=GenerationStats(), cancelled=_never)]

    assert run() == run()


def test_max_tokens_is_respected(backend):
    for n in (1, 3):
        tokens = list(backend.generate(STORY, max_tokens=n, stats=GenerationStats(), cancelled=_never))
        assert 1 <= len(tokens) <= n


def test_cancel_after_second_token_stops_promptly(backend):
    seen = []
    start = time.perf_counter()
    for token in backend.generate(STORY, max_tokens=400, stats=GenerationStats(), cancelled=lambda: len(seen) >= 2):
        seen.append(token)
    elapsed = time.perf_counter() - start
    assert 1 <= len(seen) <= 3
    assert elapsed < 10, elapsed  # 400 tokens would take far longer on CPU
    # The server is free again: a fresh request completes.
    assert list(backend.generate(PROMPT, max_tokens=3, stats=GenerationStats(), cancelled=_never))


def test_closing_the_generator_early_then_next_request_succeeds(backend):
    gen = backend.generate(STORY, max_tokens=400, stats=GenerationStats(), cancelled=_never)
    first = next(gen)
    assert first.text
    start = time.perf_counter()
    gen.close()
    assert time.perf_counter() - start < 1.0
    start = time.perf_counter()
    tokens = list(backend.generate(PROMPT, max_tokens=4, stats=GenerationStats(), cancelled=_never))
    assert tokens and "".join(t.text for t in tokens).strip()
    assert time.perf_counter() - start < 20


def test_check_lists_the_model(backend, model_path):
    assert model_path.name in backend.check()


def test_named_model_is_accepted(server, backend):
    named = OpenAIBackend(server, model=backend.check().split(", ")[0], api_key=API_KEY)
    assert list(named.generate(PROMPT, max_tokens=2, stats=GenerationStats(), cancelled=_never))


def test_base_url_with_v1_suffix(server):
    b = OpenAIBackend(server + "/v1/", api_key=API_KEY)
    assert b.check()


def test_wrong_api_key_is_a_clear_error(server):
    b = OpenAIBackend(server, api_key="wrong")
    for call in (b.check, lambda: list(b.generate(PROMPT, max_tokens=2, stats=GenerationStats(), cancelled=_never))):
        with pytest.raises(BackendError) as info:
            call()
        message = str(info.value)
        assert "\n" not in message and server in message and "401" in message


def test_prompt_beyond_the_server_context_is_a_clear_error(backend, server):
    # llama_cpp.server answers 200 and then streams nothing at all for this.
    with pytest.raises(BackendError) as info:
        list(backend.generate("hello " * 3000, max_tokens=4, stats=GenerationStats(), cancelled=_never))
    assert "\n" not in str(info.value) and server in str(info.value)
    # ... and that did not make the backend give up on log-probs.
    tokens = list(backend.generate(PROMPT, max_tokens=3, stats=GenerationStats(), cancelled=_never))
    assert any(t.logprob < 0.0 for t in tokens)


@pytest.mark.parametrize("call", ["generate", "check"])
def test_unreachable_server_fails_fast_with_one_line(call):
    url = _closed_port_url()
    b = OpenAIBackend(url, timeout_s=2)
    start = time.perf_counter()
    with pytest.raises(BackendError) as info:
        if call == "generate":
            list(b.generate(PROMPT, max_tokens=4, stats=GenerationStats(), cancelled=_never))
        else:
            b.check()
    assert time.perf_counter() - start < 5
    message = str(info.value)
    assert "\n" not in message
    assert url in message and "unreachable" in message


def test_server_without_logits_all_falls_back_to_zero_logprobs(model_path, tmp_path):
    """With `--logits_all false` llama_cpp.server cannot give log-probs (and streams nothing when asked):
    the backend retries without them and keeps going with logprob 0.0."""
    proc, url = _start_server(model_path, tmp_path / "llama_server.log", "--logits_all", "false")
    try:
        b = OpenAIBackend(url)
        for _ in range(2):
            tokens = list(b.generate(PROMPT, max_tokens=4, stats=GenerationStats(), cancelled=_never))
            assert tokens and "".join(t.text for t in tokens).strip()
            assert all(t.logprob == 0.0 for t in tokens)
    finally:
        _stop(proc)


def _two_users(url: str) -> tuple[list[str], list[str]]:
    """User A asks for a long completion; user B asks for a short one once A's first token has come."""
    import threading

    a: list[str] = []
    b: list[str] = []
    started = threading.Event()

    def user_a():
        for token in OpenAIBackend(url).generate(STORY, max_tokens=40, stats=GenerationStats(), cancelled=_never):
            a.append(token.text)
            started.set()

    thread = threading.Thread(target=user_a)
    thread.start()
    assert started.wait(60)
    b += [t.text for t in OpenAIBackend(url).generate(PROMPT, max_tokens=4, stats=GenerationStats(), cancelled=_never)]
    thread.join(120)
    return a, b


@pytest.mark.parametrize("interrupt", ["false", "true"])
def test_a_shared_llama_cpp_python_server_needs_interrupt_requests_off(model_path, tmp_path, interrupt):
    """What the README says of `python -m llama_cpp.server`: by default a second user's request ends the
    first user's in flight; with `--interrupt_requests false` each gets the whole of its completion."""
    proc, url = _start_server(model_path, tmp_path / "llama_server.log", "--interrupt_requests", interrupt)
    try:
        alone = [t.text for t in OpenAIBackend(url).generate(STORY, max_tokens=40, stats=GenerationStats(),
                                                             cancelled=_never)]
        a, b = _two_users(url)
        assert b
        if interrupt == "false":
            assert a == alone
        else:
            assert len(a) < len(alone) and alone[: len(a)] == a
    finally:
        _stop(proc)
