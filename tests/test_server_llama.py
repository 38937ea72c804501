"""The llama-server backend against llama.cpp's real `llama-server` (built once from the llama-cpp-python
sdist's source: `make llama-server`), serving tiny models around real tokenizers (tests/tiny_models.py)
and the embedded Gemma. No mocks: the server, the models and the sockets are real."""

from __future__ import annotations

import os
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

import tiny_models
from conftest import free_port
from hindsight.engine.backend import BackendError, GenerationStats
from hindsight.engine.engine import Engine, EngineConfig
from hindsight.engine.profiles import named
from hindsight.engine.servers import LlamaServerBackend
from hindsight.request import CompletionRequest, Snippet

DOC = "import util\n\ndef main():\n    x = \n    return x\n"


def binary() -> Path:
    default = tiny_models.llama_src().parent / f"llama-server-{tiny_models.LLAMA_VERSION}" / "llama-server"
    path = Path(os.environ.get("HINDSIGHT_LLAMA_SERVER") or default)
    if not path.is_file():
        pytest.skip(f"no llama-server at {path} (`make llama-server` builds it)")
    return path



class Server:
    def __init__(self, model: Path, log: Path, *extra: str):
        self.url = f"http://127.0.0.1:{free_port()}"
        port = self.url.rsplit(":", 1)[1]
        self.log = log
        # Two slots of 4,096 tokens; a batch of 1,024 leaves /infill room for the cross-file chunks (it
        # takes them only from what the slot's context has beyond one batch and twice n_predict).
        cmd = [str(binary()), "-m", str(model), "--host", "127.0.0.1", "--port", port, "-c", "8192", "-np", "2",
               "-b", "1024", "-t", "1", "--no-webui", *extra]
        with log.open("wb") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                time.sleep(0.2)
        self.stop()
        pytest.fail(f"llama-server did not come up:\n{log.read_text(errors='replace')[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@pytest.fixture(scope="module")
def qwen(tmp_path_factory):
    server = Server(tiny_models.cached("qwen2.5-coder"), tmp_path_factory.mktemp("llama-server") / "qwen.log")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def says_x(tmp_path_factory):
    """A model that writes "x" after anything: its requests run to the end, and the server's last event
    tells how it laid out the prompt."""
    model = tiny_models.cached("qwen2.5-coder", says="x")
    server = Server(model, tmp_path_factory.mktemp("llama-server") / "says-x.log")
    yield server
    server.stop()


def request(**kw) -> CompletionRequest:
    return CompletionRequest(uri="file:///w/app.py", text=DOC, line=3, character=8, language="python",
                             path="app.py", repo="shop", **kw)


def never() -> bool:
    return False


def test_infill_sends_the_context_as_input_extra_and_the_server_lays_out_the_fim_prompt(says_x):
    backend = LlamaServerBackend(says_x.url)
    engine = Engine(backend, EngineConfig(max_tokens_single=4))
    completion = engine.complete(request(context=[Snippet("lib/util.py:1-2", "def helper():\n    return 1")]))
    assert completion.text == "xxxx" and completion.prompt_tokens > 0
    laid_out = backend.last_prompt  # llama-server's own layout, Qwen2.5-Coder's repository format
    assert "<|file_sep|>lib/util.py\ndef helper():\n    return 1" in laid_out
    assert "<|fim_prefix|>" in laid_out and "<|fim_suffix|>" in laid_out and laid_out.endswith("<|fim_middle|>")


def test_tokens_are_counted_by_the_servers_tokenizer(qwen):
    from hindsight.engine.llama_backend import LlamaBackend

    local = LlamaBackend(tiny_models.cached("qwen2.5-coder"), n_ctx=512, n_threads=1)
    backend = LlamaServerBackend(qwen.url)
    for text in ("def main():", "    return [x ** 2 for x in range(10)]", "<|fim_prefix|>"):
        assert backend.count_tokens(text) == local.count_tokens(text)
    assert not backend.limits


def test_log_probs_and_the_unsure_token_stop(qwen):
    """Random weights: every token is a guess, so the unsure-token stop ends the suggestion at once; with
    the stop off, tokens come back with their real (low) log-probs. (A prefix-only prompt: after a FIM
    prompt this model says <|fim_middle|> again, a control token, which ends the middle.)"""
    backend = LlamaServerBackend(qwen.url, profile=named("none"))
    unsure = Engine(backend, EngineConfig(min_token_prob=0.3)).complete(request())
    assert (unsure.text, unsure.stop) == ("", "unsure") and unsure.next_logprob < -1
    tokens = list(backend.generate("x = ", max_tokens=4, stats=GenerationStats(), cancelled=never, parts=None))
    assert tokens and all(t.logprob < 0 for t in tokens) and backend.logprobs


def test_alternatives(qwen):
    backend = LlamaServerBackend(qwen.url)
    engine = Engine(backend, EngineConfig(min_token_prob=0, max_tokens_single=4))
    first = engine.complete(request())
    alternatives = engine.alternatives(request(), first, 2)
    texts = [a.text for a in alternatives]
    assert texts and first.text not in texts and len(set(texts)) == len(texts)


def test_a_control_token_ends_the_middle(qwen):
    """This random model repeats the last token of its prompt: after /infill's <|fim_middle|>, that one
    again, which llama-server does not stop at and sends as no text. The middle is over at once."""
    completion = Engine(LlamaServerBackend(qwen.url), EngineConfig(min_token_prob=0)).complete(request())
    assert (completion.text, completion.stop) == ("", "eos") and completion.prompt_tokens > 0
    events: list[int] = []  # the stream is left at the first such token, not read to n_predict
    backend = LlamaServerBackend(qwen.url, profile=named("qwen2.5-coder"))
    tokens = list(backend.generate("<|fim_prefix|>x = <|fim_suffix|>\n<|fim_middle|>", max_tokens=40,
                                   stats=GenerationStats(), cancelled=lambda: bool(events.append(1))))
    assert tokens == [] and len(events) <= 3


def test_a_stop_token_ends_the_middle(tmp_path):
    server = Server(tiny_models.cached("qwen2.5-coder", says="<|file_sep|>"), tmp_path / "says.log")
    try:
        completion = Engine(LlamaServerBackend(server.url), EngineConfig(min_token_prob=0)).complete(request())
        assert completion.text == "" and completion.stop == "eos"
    finally:
        server.stop()


def test_cancelling_one_client_leaves_the_others_request_alone(qwen):
    """Two users on one server: the first gives up after two tokens, the second gets all it asked for."""
    got: dict[str, list] = {"a": [], "b": []}

    def run(name: str, max_tokens: int, give_up_after: int | None) -> None:
        seen = got[name]
        cancelled = (lambda: len(seen) >= give_up_after) if give_up_after else never
        for token in LlamaServerBackend(qwen.url).generate("# a story\n", max_tokens=max_tokens,
                                                           stats=GenerationStats(), cancelled=cancelled):
            seen.append(token)

    a = threading.Thread(target=run, args=("a", 200, 2))
    b = threading.Thread(target=run, args=("b", 40, None))
    a.start(), b.start()
    a.join(60), b.join(60)
    assert len(got["a"]) == 2 and len(got["b"]) == 40


def test_a_model_without_fim_tokens_is_prompted_on_completion(tmp_path):
    """The embedded Gemma has no FIM tokens: /infill refuses, and the backend goes on with hindsight's own
    prefix-only prompt on /completion, saying so once."""
    from hindsight.engine.model import resolve_model

    server = Server(resolve_model(None), tmp_path / "gemma.log")
    try:
        backend = LlamaServerBackend(server.url)
        completion = Engine(backend).complete(CompletionRequest(
            uri="file:///w/a.py", text="def add(a, b):\n    return ", line=1, character=11, language="python", path="a.py"))
        assert completion.text.strip() and not backend.infill
        assert any("cannot fill in the middle" in limit for limit in backend.limits)
    finally:
        server.stop()


def test_a_named_template_is_sent_on_completion(says_x):
    backend = LlamaServerBackend(says_x.url, profile=named("qwen2.5-coder"))
    Engine(backend, EngineConfig(max_tokens_single=4)).complete(request(context=[Snippet("lib/u.py:1", "X = 1")]))
    assert "<|repo_name|>shop\n<|file_sep|>lib/u.py\nX = 1\n<|file_sep|>app.py\n<|fim_prefix|>" in backend.last_prompt


def test_unreachable_and_stopped_servers_are_one_line(tmp_path):
    backend = LlamaServerBackend(f"http://127.0.0.1:{free_port()}", timeout_s=2)
    with pytest.raises(BackendError, match="unreachable: connection refused"):
        list(backend.generate("x", max_tokens=2, stats=GenerationStats(), cancelled=never))
    with pytest.raises(BackendError, match="unreachable"):
        backend.check()
