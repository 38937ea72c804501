"""The learning loop on a model the user serves, not the embedded Gemma: a tiny Code Llama (llama
architecture, SentencePiece vocabulary; tests/tiny_models.py) refreshed by `hindsight refresh --model`
with the real trainer, its adapter written for that GGUF, loaded by llama.cpp, recorded against its base
and refused for any other; then applied to a running llama-server through its LoRA hot-swap API by
`hindsight serve-adapter`. Real parts only: the CLI in a child process, transformers, llama.cpp and
llama-server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

import tiny_models
from test_refresh import PAIRS, _margin
from test_server_llama import Server

# Pairs from eleven files, so that some fall on each side of the held-out split (a fifth of the files).
FILE_PAIRS = [{**pair, "uri": f"file:///w/m{i}.py", "repo": "/w"} for i in range(11) for pair in PAIRS[i % 3 : i % 3 + 1]]


def hindsight(data_dir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HINDSIGHT_DATA_DIR": str(data_dir)}
    return subprocess.run([sys.executable, "-m", "hindsight", *args], capture_output=True, text=True, env=env,
                          timeout=900)


@pytest.fixture(scope="module")
def refreshed(tmp_path_factory):
    """(model, data dir, its JSON result): `hindsight refresh --model` run on the tiny Code Llama, into a data
    dir of its own."""
    model = tiny_models.cached("codellama")
    data = tmp_path_factory.mktemp("data")
    pairs = data / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(p) + "\n" for p in FILE_PAIRS))
    done = hindsight(data, "refresh", "--model", str(model), "--pairs", str(pairs), "--infill-tasks", "0",
                     "--no-promote", "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    return model, data, json.loads(done.stdout)


def test_refresh_trains_an_adapter_for_the_served_model_and_records_its_base(refreshed):
    from hindsight.engine.adapters import current_adapter, versions
    from hindsight.engine.model import check_adapter, gguf_sha256

    model, data, result = refreshed
    assert result["pairs"] > 0 and result["held_out_items"] > 0 and result["promoted"] is False
    store = versions(data / "adapters")
    manifest = store.manifest(result["adapter"])
    assert manifest["base_model"] == model.name and manifest["base_sha256"] == gguf_sha256(model)
    adapter = store.path(result["adapter"]) / "adapter.gguf"
    assert check_adapter(adapter, model) is None  # llama.cpp applies it to the model it was trained for
    store.promote(result["adapter"])
    assert current_adapter(data / "adapters", gguf_sha256(model)) == (adapter, None)
    # ... and to no other model (another tiny one here).
    other = tiny_models.cached("plain")
    path, problem = current_adapter(data / "adapters", gguf_sha256(other))
    assert path is None and "trained on another model" in problem


def test_the_adapter_moves_the_served_model_towards_what_the_user_wrote(tmp_path):
    """The trainer on another architecture and tokenizer than Gemma's, from the model's Hugging Face
    directory (`--weights`): what it learnt shows in llama.cpp over the GGUF."""
    from hindsight.refresh.base import hf_base_dir
    from hindsight.refresh.dpo import DPOConfig
    from hindsight.refresh.job import train_adapter

    model = tiny_models.cached("codellama")
    adapter = tmp_path / "adapter.gguf"
    config = DPOConfig(epochs=4, pairs_per_step=3, learning_rate=2e-2, top_layers=1.0, anchor_weight=0)
    stats = train_adapter(PAIRS, model, config, adapter, weights=hf_base_dir(model))
    assert stats["pairs"] == 3
    pair = PAIRS[0]
    before = _margin(model, None, pair["prompt"], pair["chosen"], pair["rejected"])
    after = _margin(model, adapter, pair["prompt"], pair["chosen"], pair["rejected"])
    assert after > before + 1.0, (before, after)


def test_a_model_transformers_cannot_read_is_one_line_naming_weights(tmp_path, monkeypatch):
    from hindsight.refresh.base import BaseModelError, hf_base_dir

    monkeypatch.setenv("HINDSIGHT_DATA_DIR", str(tmp_path / "data"))
    model = tmp_path / "model.gguf"
    model.write_bytes(tiny_models.cached("codellama").read_bytes()[:4096])  # a GGUF header, cut short
    with pytest.raises(BaseModelError, match="transformers cannot read model.gguf .*--weights DIR"):
        hf_base_dir(model)
    assert not [p for p in (tmp_path / "data" / "models" / "hf").iterdir() if p.is_dir()]  # nothing half-built
    done = hindsight(tmp_path / "data", "refresh", "--model", str(tiny_models.cached("codellama")),
                     "--weights", str(tmp_path), "--pairs", str(tmp_path / "none.jsonl"))
    assert done.returncode == 2 and "not a Hugging Face model directory" in done.stderr


def adapters_on(server: Server) -> dict[str, float]:
    with urllib.request.urlopen(server.url + "/lora-adapters", timeout=10) as resp:
        return {Path(a["path"]).parent.name: a["scale"] for a in json.load(resp)}


def next_token(server: Server) -> list:
    """The server's candidates for the token after a prompt, with their probabilities."""
    body = json.dumps({"prompt": PAIRS[0]["prompt"], "n_predict": 1, "n_probs": 5, "temperature": 0,
                       "cache_prompt": False}).encode()
    request = urllib.request.Request(server.url + "/completion", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as resp:
        return json.load(resp)["completion_probabilities"]


def test_serve_adapter_applies_the_promoted_adapter_on_a_running_llama_server(refreshed, tmp_path):
    from hindsight.engine.adapters import versions
    from hindsight.refresh.gguf_adapter import scale_adapter
    from hindsight.refresh.registry import write_version

    model, data, result = refreshed
    store = versions(data / "adapters")
    first = result["adapter"]
    half = scale_adapter(store.path(first) / "adapter.gguf", tmp_path / "half.gguf", 0.5)
    second = write_version(data / "adapters", half, store.manifest(first), name=first[:-6] + "abcdef").name
    store.promote(first)
    store.promote(second)
    # Loaded at scale 0, as the README says (this llama-server applies every `--lora` at 1 from the start).
    loaded = ",".join(f"{store.path(name) / 'adapter.gguf'}:0" for name in (first, second))
    server = Server(model, tmp_path / "server.log", "--lora-scaled", loaded)
    try:
        assert adapters_on(server) == {first: 0.0, second: 0.0}
        base = next_token(server)
        done = hindsight(data, "serve-adapter", "--base-url", server.url, "--json")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["adapter"] == second
        assert adapters_on(server) == {first: 0.0, second: 1.0}
        assert next_token(server) != base  # the requests of every client now run with it
        # Rolled back: the earlier adapter again, without a restart.
        assert hindsight(data, "refresh", "--rollback").returncode == 0
        assert hindsight(data, "serve-adapter", "--base-url", server.url).returncode == 0
        assert adapters_on(server) == {first: 1.0, second: 0.0}
        assert hindsight(data, "serve-adapter", "--base-url", server.url, "--none").returncode == 0
        assert adapters_on(server) == {first: 0.0, second: 0.0}
        # One the server has not loaded: it says which --lora to add, and changes nothing.
        third = write_version(data / "adapters", half, store.manifest(first), name=first[:-6] + "fedcba").name
        store.promote(third)
        done = hindsight(data, "serve-adapter", "--base-url", server.url)
        assert done.returncode == 2 and f"--lora-scaled {store.path(third) / 'adapter.gguf'}:0" in done.stderr
        # One trained on another model: refused.
        manifest = {**store.manifest(first), "base_model": "qwen2.5-coder-7b-q8_0.gguf"}
        fourth = write_version(data / "adapters", half, manifest, name=first[:-6] + "0a0b0c").name
        store.promote(fourth)
        done = hindsight(data, "serve-adapter", "--base-url", server.url)
        assert done.returncode == 2 and "was trained on qwen2.5-coder-7b-q8_0.gguf" in done.stderr
        assert adapters_on(server) == {first: 0.0, second: 0.0}
    finally:
        server.stop()
