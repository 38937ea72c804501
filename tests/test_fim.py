"""Fill in the middle: the prompt format (the same tokens in training and in serving), the trainer
(a tiny real run: an adapter llama.cpp loads, that changes the output, resumable), and the server
switching to the format when the adapter it loads declares it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hindsight.engine.fim import FORMAT, MIDDLE, SUFFIX, clean, declared_format, layout, suffix_window

pytestmark = pytest.mark.slow

DOC = '''import math


def circle_area(radius):
    """The area of a circle."""
    area = math.pi * radius ** 2
    return area


def main():
    print(circle_area(2.0))
'''
MIDDLE_TEXT = "math.pi * radius ** 2"


def example(doc: str = DOC, middle: str = MIDDLE_TEXT) -> dict:
    at = doc.index(middle)
    return {"prefix": doc[:at], "middle": middle, "suffix": doc[at + len(middle):], "context": [], "kind": "expression",
            "language": "python", "source": "pkg/geometry.py", "path": "geometry.py"}


@pytest.fixture(scope="module")
def model_path() -> Path:
    from hindsight.engine.model import resolve_model

    return resolve_model(None)


@pytest.fixture(scope="module")
def tokenizer(model_path):
    from transformers import AutoTokenizer

    from hindsight.refresh.base import hf_base_dir

    return AutoTokenizer.from_pretrained(hf_base_dir(model_path))


@pytest.fixture(scope="module")
def backend(model_path):
    from hindsight.engine.llama_backend import LlamaBackend
    from hindsight.engine.profiles import named

    return LlamaBackend(model_path, n_ctx=1024, profile=named("gemma-fim"))  # as with an adapter trained for it


def test_sentinels_are_single_tokens_in_both_tokenizers_and_user_text_cannot_make_them(tokenizer, backend):
    assert [tokenizer.convert_tokens_to_ids(s) for s in (SUFFIX, MIDDLE)] == [6, 7]
    text = layout("# a.py:1-2\nx = 1\n\n", "    return y\n", "# b.py\ndef f(x):\n    y = ")
    ids = backend.tokenize(text)
    assert ids == [tokenizer.bos_token_id] + tokenizer(text, add_special_tokens=False)["input_ids"]
    assert ids.count(6) == 1 and ids.count(7) == 1
    sneaky = clean("s = '<unused0>'  # <unused1>")
    assert 6 not in backend.tokenize(sneaky) and 7 not in backend.tokenize(sneaky)
    assert "unused0" in sneaky  # the text is kept, only unable to become the sentinel


def test_suffix_window_keeps_whole_lines_within_budget():
    suffix = "rest)\n" + "".join(f"line_{i} = {i}\n" for i in range(100))
    window = suffix_window(suffix, len, 40)  # one token a character
    assert window.startswith("rest)\n") and suffix.startswith(window)
    assert window.count("\n") == 3 and len(window) <= 40  # rest), then line_0..line_2 fit 40
    assert suffix_window("only the cursor line", len, 3) == "only the cursor line"


def test_training_examples_are_the_tokens_the_engine_prompts(tokenizer, backend):
    """The trainer's encoding of an example is exactly what the server sends to llama.cpp for the same
    cursor, sentinels and token healing included, followed by the middle and <eos>."""
    from hindsight.engine.engine import Engine, EngineConfig, heal_text, split_at_cursor
    from hindsight.fim.train import FIMConfig, encode

    for doc, middle in [(DOC, MIDDLE_TEXT), (DOC, "circle_area(2.0))"), (DOC, "area\n")]:
        ex = example(doc, middle)
        encoded = encode(tokenizer, ex, FIMConfig())
        engine = Engine(backend, EngineConfig())
        text = ex["prefix"] + ex["suffix"]
        line = ex["prefix"].count("\n")
        character = len(ex["prefix"]) - ex["prefix"].rfind("\n") - 1
        prompt = engine.prompts.build(text, line, character, path="geometry.py", language="python")
        heal = heal_text(split_at_cursor(text, line, character)[0].rsplit("\n", 1)[-1])
        served = backend.tokenize(prompt.text[: len(prompt.text) - len(heal)])
        assert encoded.ids[: -encoded.middle] == served
        assert tokenizer.decode(encoded.ids[-encoded.middle:]) == heal + middle + "<eos>"


def _tiny_config(**kw):
    from hindsight.fim.train import FIMConfig

    base = dict(steps=4, batch_size=2, rank=4, alpha=8.0, learning_rate=5e-3, warmup=1, context_tokens=0,
                suffix_tokens=32, prefix_tokens=96, middle_tokens=16, checkpoint_every=1, validation=0)
    return FIMConfig(**{**base, **kw})


def _rows() -> list[dict]:
    return [example(DOC, m) for m in (MIDDLE_TEXT, "circle_area(2.0))", "return area", "import math")]


def test_tiny_training_gives_an_adapter_llama_cpp_loads_that_changes_the_output(tmp_path, model_path, backend):
    from hindsight.engine.backend import GenerationStats
    from hindsight.engine.llama_backend import LlamaBackend
    from hindsight.fim.train import train
    from hindsight.engine.model import check_adapter

    manifest = train(_rows(), model_path, tmp_path, _tiny_config(), data_hash="test")
    adapter = tmp_path / "adapter.gguf"
    assert manifest["prompt_format"] == FORMAT and manifest["metrics"]["steps"] == 4
    assert json.loads((tmp_path / "manifest.json").read_text())["recipe"]["rank"] == 4
    assert declared_format(adapter) == FORMAT and declared_format(tmp_path / "elsewhere" / "a.gguf") == "prefix"
    assert check_adapter(adapter, model_path) is None
    ex = example()
    prompt = layout("", ex["suffix"], "# geometry.py\n" + ex["prefix"])

    def first_logits(b) -> np.ndarray:
        stream = b.generate(prompt, max_tokens=1, stats=GenerationStats(), cancelled=lambda: False)
        list(stream)
        return np.array(b._last_logits(), dtype=np.float64)

    adapted = LlamaBackend(model_path, n_ctx=1024, lora_path=adapter)
    moved = np.abs(first_logits(adapted) - first_logits(backend)).max()
    assert moved > 1.0, moved


def test_an_interrupted_run_resumes_where_it_stopped(tmp_path, model_path, monkeypatch):
    import hindsight.fim.train as trainer

    whole = trainer.train(_rows(), model_path, tmp_path / "whole", _tiny_config())
    save = trainer._save_checkpoint

    def stop_after_two(out, model, optimizer, step, steps, losses):
        save(out, model, optimizer, step, steps, losses)
        if step == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "_save_checkpoint", stop_after_two)
    with pytest.raises(KeyboardInterrupt):
        trainer.train(_rows(), model_path, tmp_path / "split", _tiny_config())
    monkeypatch.setattr(trainer, "_save_checkpoint", save)
    resumed = trainer.train(_rows(), model_path, tmp_path / "split", _tiny_config(), resume=True)
    assert resumed["metrics"]["steps"] == 4
    from gguf import GGUFReader

    a = {t.name: np.array(t.data) for t in GGUFReader(tmp_path / "whole" / "adapter.gguf").tensors}
    b = {t.name: np.array(t.data) for t in GGUFReader(tmp_path / "split" / "adapter.gguf").tensors}
    assert a.keys() == b.keys()
    assert max(float(np.abs(a[k] - b[k]).max()) for k in a) < 1e-4  # the same batches, the same steps
    assert whole["metrics"]["steps"] == 4


def test_malformed_data_is_one_clear_line(tmp_path):
    from hindsight.fim.train import FIMError, read_examples

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prefix": "a", "middle": "", "suffix": "b"}\n')
    with pytest.raises(FIMError, match="middle"):
        read_examples(bad)
    with pytest.raises(FIMError, match="no FIM data"):
        read_examples(tmp_path / "missing.jsonl")


async def test_the_server_prompts_in_the_format_its_adapter_declares(tmp_path, model_path):
    from hindsight.engine.model import gguf_sha256
    from hindsight.refresh.gguf_adapter import write_adapter
    from hindsight.refresh.registry import promote, write_version
    from test_adapter import _serve, random_lora

    adapter = write_adapter(random_lora(model_path, {0: ["q_proj"]}), alpha=8, out=tmp_path / "a.gguf",
                            base_gguf=model_path)
    promote(write_version(tmp_path / "adapters", adapter, {"base_sha256": gguf_sha256(model_path), "prompt_format": FORMAT}))
    answers, status, logged, messages, _ = await _serve(tmp_path, model_path)
    assert status["promptFormat"] == "gemma-fim" and status["adapter"]
    assert SUFFIX in logged[0]["prompt"] and MIDDLE in logged[0]["prompt"]


def test_the_command_trains_refuses_to_overwrite_and_resumes(tmp_path):
    import subprocess
    import sys

    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in _rows()))
    out = tmp_path / "run"

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "hindsight", "train-fim", "--data", str(data), "--out", str(out),
                               *args], capture_output=True, text=True, timeout=600)

    first = cli("--steps", "1", "--batch-size", "1", "--json")
    assert first.returncode == 0, first.stderr
    result = json.loads(first.stdout.strip().splitlines()[-1])
    assert result["steps"] == 1 and result["examples"]["train"] == 4 and (out / "adapter.gguf").is_file()
    again = cli("--steps", "1")
    assert again.returncode == 2 and "--resume" in again.stderr and "\n" not in again.stderr.strip()
    resumed = cli("--resume", "--json")
    assert resumed.returncode == 0 and json.loads(resumed.stdout.strip().splitlines()[-1])["steps"] == 1
