"""`hindsight refresh`: pairs in, a DPO LoRA adapter out that llama.cpp loads and that moves the served
model towards what the user wrote; bad input gets one clear line; rollback restores the previous adapter."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hindsight.refresh.job import RefreshError, better_replay, held_out, read_pairs

# Pairs as the miner writes them: the prompt the model saw, the text the user wrote, the suggestion they
# turned down. The same prompt twice, so that a couple of steps are enough to move the model.
PROMPT = "def area(width, height):\n    \"\"\"The rectangle's area.\"\"\"\n    return"
PAIRS = [
    {"prompt": PROMPT, "chosen": " width * height", "rejected": " None", "uri": "file:///a.py"},
    {"prompt": "def add(a, b):\n    return", "chosen": " a + b", "rejected": " None", "uri": "file:///b.py"},
    {"prompt": "def is_empty(items):\n    return", "chosen": " not items", "rejected": " None", "uri": "file:///c.py"},
]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hindsight", *args], capture_output=True, text=True, timeout=600)


def test_read_pairs_accepts_jsonl_and_parquet(tmp_path):
    jsonl = tmp_path / "pairs.jsonl"
    jsonl.write_text("".join(json.dumps(p) + "\n" for p in PAIRS) + "\n")
    assert [p["chosen"] for p in read_pairs(jsonl)] == [p["chosen"] for p in PAIRS]
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(PAIRS), tmp_path / "pairs.parquet")
    assert len(read_pairs(tmp_path / "pairs.parquet")) == 3


@pytest.mark.parametrize(
    "content, message",
    [
        ("not json\n", "pairs.jsonl:1: not a JSON object"),
        ('{"prompt": "x", "chosen": "y"}\n', "pair 1: 'rejected' must be a non-empty string"),
        ('{"prompt": "x", "chosen": "", "rejected": "z"}\n', "pair 1: 'chosen' must be a non-empty string"),
        ("[1, 2]\n", "pair 1: not an object"),
        ("\n", "holds no pairs"),
    ],
)
def test_malformed_pairs_file_is_one_clear_line(tmp_path, content, message):
    path = tmp_path / "pairs.jsonl"
    path.write_text(content)
    with pytest.raises(RefreshError, match=message.replace("(", r"\(")):
        read_pairs(path)
    done = run_cli("refresh", "--pairs", str(path))
    assert done.returncode == 2
    assert done.stderr.startswith("hindsight: ") and message in done.stderr
    assert "Traceback" not in done.stderr


def test_no_pairs_file_and_empty_database(tmp_path):
    done = run_cli("refresh", "--pairs", str(tmp_path / "missing.jsonl"))
    assert done.returncode == 2 and "no pairs file at" in done.stderr
    from hindsight.collector.store import Store

    db = tmp_path / "empty.db"
    Store(db).close()
    done = run_cli("refresh", "--db", str(db), "--no-sample")
    assert done.returncode == 2
    assert "hindsight: " in done.stderr and "Traceback" not in done.stderr


def test_a_failed_refresh_leaves_no_work_directory_behind(tmp_path, monkeypatch):
    import tempfile

    from hindsight.refresh.job import refresh

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"not a model")
    from hindsight.refresh.base import BaseModelError

    with pytest.raises(BaseModelError, match="transformers cannot read model.gguf .*not a GGUF file"):
        refresh(pairs=PAIRS, model_path=bad, adapters=tmp_path / "adapters")
    assert not list(tmp_path.glob("hindsight-refresh-*"))


def test_promotion_asks_acceptance_to_rise_and_tolerates_a_little_shorter():
    before = {"acceptance": 0.300, "accepted_chars": 877}
    assert better_replay(before, {"acceptance": 0.335, "accepted_chars": 861})  # run 11: right more often, -1.8%
    assert not better_replay(before, {"acceptance": 0.300, "accepted_chars": 900})  # no rise
    assert not better_replay(before, {"acceptance": 0.5, "accepted_chars": 600})  # unsure: short and worth less


def test_held_out_split_is_stable_and_about_a_fifth():
    keys = [f"file:///repo/module_{i}.py" for i in range(2000)]
    share = sum(map(held_out, keys)) / len(keys)
    assert 0.17 < share < 0.23
    assert [held_out(k) for k in keys[:50]] == [held_out(k) for k in keys[:50]]


def test_a_file_falls_on_one_side_wherever_its_database_and_checkout_lie():
    from hindsight.refresh.job import _group

    pair = lambda db, root: {"database": db, "repo": root, "uri": f"file://{root}/pkg/util.py"}  # noqa: E731
    keys = {_group(pair(db, root)) for db in ("/tmp/a/train.db", "/home/b/hindsight.db")
            for root in ("/home/a/proj", "/srv/b/checkout")}
    assert keys == {"pkg/util.py"}
    # A logged row carries no repo: its root is read off the prompt's header line, as for the pairs.
    row = {"uri": "file:///home/a/proj/pkg/util.py", "prefix": "x = 1\n", "prompt": "# pkg/util.py\nx = 1\n"}
    assert _group(row) == "pkg/util.py"
    assert _group({"uri": "file:///elsewhere/util.py", "repo": "/home/a/proj"}) == "/elsewhere/util.py"


def _margin(model_path: Path, adapter: Path | None, prompt: str, chosen: str, rejected: str) -> float:
    """log p(chosen) - log p(rejected) after `prompt`, under llama.cpp (the served model)."""
    from hindsight.engine.llama_backend import LlamaBackend
    from hindsight.engine.engine import heal_split

    backend = LlamaBackend(model_path, n_ctx=512, lora_path=adapter)
    llm = backend.llm
    head, heal = heal_split(prompt)

    def logprob(text: str) -> float:
        prompt_ids = backend.tokenize(head)
        ids = llm.tokenize((heal + text).encode(), add_bos=False, special=False)
        llm.reset()
        llm.eval(prompt_ids)
        total = 0.0
        for token in ids:
            logits = np.array(backend._last_logits(), dtype=np.float64)
            top = logits.max()
            total += logits[token] - top - np.log(np.exp(logits - top).sum())
            llm.eval([token])
        return total

    return logprob(chosen) - logprob(rejected)


@pytest.mark.slow
def test_tiny_refresh_makes_an_adapter_llama_cpp_loads_that_moves_towards_chosen(tmp_path):
    from hindsight.engine.model import resolve_model
    from hindsight.refresh.dpo import DPOConfig
    from hindsight.refresh.gguf_adapter import scale_adapter
    from hindsight.engine.model import check_adapter
    from hindsight.refresh.job import train_adapter

    model_path = resolve_model(None)
    adapter = tmp_path / "adapter.gguf"
    config = DPOConfig(epochs=3, pairs_per_step=3, learning_rate=5e-3)
    stats = train_adapter(PAIRS, model_path, config, adapter)
    assert stats["pairs"] == 3 and stats["steps"] == 3
    assert check_adapter(adapter, model_path) is None
    pair = PAIRS[0]
    before = _margin(model_path, None, pair["prompt"], pair["chosen"], pair["rejected"])
    after = _margin(model_path, adapter, pair["prompt"], pair["chosen"], pair["rejected"])
    # The adapter was trained to prefer chosen: llama.cpp, over the quantized base, must agree.
    assert after > before + 1.0, (before, after)
    # Scaled by a half, it moves the model part of the way.
    half = scale_adapter(adapter, tmp_path / "half.gguf", 0.5)
    middle = _margin(model_path, half, pair["prompt"], pair["chosen"], pair["rejected"])
    assert before + 0.25 < middle < after - 0.25, (before, middle, after)
    with pytest.raises(ValueError):
        scale_adapter(adapter, tmp_path / "none.gguf", 0.0)  # llama.cpp reads alpha 0 as "no scaling": 1


def test_rollback_restores_the_previous_adapter(tmp_path, monkeypatch):
    from hindsight.refresh.registry import promote, write_version
    from hindsight.engine.adapters import adapters_dir, current_name

    monkeypatch.setenv("HINDSIGHT_DATA_DIR", str(tmp_path))
    directory = adapters_dir()
    directory.mkdir()
    source = tmp_path / "a.gguf"
    source.write_bytes(b"GGUF not really")
    first = write_version(directory, source, {"base_sha256": "0" * 64}, name="adapter-20260101-000000-aaaaaa")
    second = write_version(directory, source, {"base_sha256": "0" * 64}, name="adapter-20260102-000000-bbbbbb")
    promote(first)
    promote(second)
    done = subprocess.run([sys.executable, "-m", "hindsight", "refresh", "--rollback", "--json"],
                          capture_output=True, text=True, timeout=120, env={**__import__("os").environ,
                                                                             "HINDSIGHT_DATA_DIR": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["current"] == first.name
    assert current_name(directory) == first.name
    assert (directory / second.name / "adapter.gguf").is_file()  # kept


def test_anchor_texts_are_general_code_outside_the_users_repositories():
    import sysconfig

    from hindsight.refresh.anchors import anchor_texts, stdlib_files

    stdlib = Path(sysconfig.get_paths()["stdlib"])
    everything = stdlib_files()
    without = stdlib_files(exclude=[stdlib / "asyncio"])
    assert any("asyncio" in p.parts for p in everything)
    assert not any("asyncio" in p.parts for p in without) and len(without) < len(everything)
    texts = anchor_texts(20, exclude=[stdlib / "asyncio"], seed=3)
    assert texts == anchor_texts(20, exclude=[stdlib / "asyncio"], seed=3)  # the same every run
    assert len(texts) == 20
    for prefix, line in texts:
        assert prefix.endswith("\n") and "\n" not in line and len(line.strip()) >= 8


@pytest.mark.slow
def test_anchor_kl_is_zero_for_the_base_and_grows_as_the_model_moves():
    import torch

    from hindsight.engine.model import resolve_model
    from hindsight.refresh.anchors import anchor_texts
    from hindsight.refresh.base import load_base
    from hindsight.refresh.dpo import DPOConfig, _anchor_kl, add_lora, encode_anchor, reference

    model, tokenizer = load_base(resolve_model(None))
    config = DPOConfig()
    anchors = [encode_anchor(tokenizer, prefix, line, config) for prefix, line in anchor_texts(2)]
    peft_model = add_lora(model, config)
    reference(peft_model, [], anchors, config.anchor_top_k)
    assert all(abs(float(_anchor_kl(peft_model, a))) < 1e-5 for a in anchors)  # the adapter starts at zero
    torch.manual_seed(0)
    lora_b = [p for n, p in peft_model.named_parameters() if "lora_B" in n]
    with torch.no_grad():
        for p in lora_b:
            p.normal_(0, 0.02)
    kl = sum(_anchor_kl(peft_model, a) for a in anchors)
    assert float(kl) > 0.001
    kl.backward()  # the gradient reaches the adapter (through the line's tokens; the prompt's keys and
    # values are held fixed, as for the pairs: hindsight/refresh/dpo.py)
    assert sum(float(p.grad.abs().sum()) for p in lora_b if p.grad is not None) > 0


@pytest.mark.slow
def test_the_trainers_log_probs_are_those_of_a_plain_forward_pass():
    """The trainer's shortcuts (a prompt cache shared by consecutive pairs and by chosen and rejected; the
    layers below the adapter run once, in the reference pass) change no log-prob: with the adapter off
    and on, on prompts longer than Gemma 3's sliding window."""
    import textwrap

    import torch

    from hindsight.engine.model import resolve_model
    from hindsight.refresh.base import load_base
    from hindsight.refresh.dpo import DPOConfig, PromptCache, _logps, add_lora, encode, reference, trunk_depth

    model, tokenizer = load_base(resolve_model(None))
    config = DPOConfig()
    source = Path(textwrap.__file__).read_text()
    first = source[: source.index("\n", 2400) + 1]  # about 600 tokens: past the 512-token window
    second = first + "    chunks = text.split()\n"
    examples = [encode(tokenizer, first, "    chunks = text.split()", "    return None", config),
                encode(tokenizer, second, "    return chunks", "    return text", config)]
    assert 512 < len(examples[0].prompt) < 1000
    peft_model = add_lora(model, config)
    assert trunk_depth(peft_model) == model.config.num_hidden_layers - 4  # the adapter's top quarter: 4 of 18

    def plain(ex):
        """Summed log-probs of chosen and rejected by the model's own forward pass, whole sequences."""
        sums = []
        for completion in (ex.chosen, ex.rejected):
            ids = torch.tensor([ex.prompt + completion])
            with torch.no_grad():
                logits = peft_model(input_ids=ids, logits_to_keep=len(completion) + 1).logits[0, :-1].float()
            sums.append(float(torch.log_softmax(logits, -1).gather(1, torch.tensor(completion)[:, None]).sum()))
        return sums

    reference(peft_model, examples)
    with peft_model.disable_adapter():
        for ex in examples:
            assert np.allclose([ex.ref_chosen, ex.ref_rejected], plain(ex), atol=2e-3)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    prompts = PromptCache(first=trunk_depth(peft_model))  # as training runs: the adapted layers, from the trunk
    for ex in examples:
        with torch.no_grad():
            sums, _ = _logps(peft_model, ex, prompts)
        expected = plain(ex)
        assert np.allclose(sums.tolist(), expected, atol=2e-3), (sums.tolist(), expected)
        assert not np.allclose(expected, [ex.ref_chosen, ex.ref_rejected], atol=0.05)  # the adapter moved them
