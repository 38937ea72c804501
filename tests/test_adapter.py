"""LoRA adapters: PEFT weights written as a GGUF adapter that llama.cpp applies with the same effect as
PEFT does on the dequantized model; the registry of promoted adapters; the server loading the promoted
one, and serving the base model (with one warning) when it is bad."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import WORKSPACE, rows
from hindsight.artefacts import CURRENT
from hindsight.refresh.gguf_adapter import adapter_tensors, gguf_name, write_adapter
from hindsight.engine.model import check_adapter
from hindsight.refresh.registry import new_name, promote, rollback, write_version
from hindsight.engine.adapters import RegistryError, current_adapter, current_name

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
PROMPTS = [
    "def add(a, b):\n    return",
    "import os\n\nfor name in os.",
    "class Point:\n    def __init__(self, x, y):\n        self.",
]


@pytest.fixture(scope="module")
def model_path() -> Path:
    from hindsight.engine.model import resolve_model

    return resolve_model(None)


def tiny_base(path: Path) -> Path:
    """A GGUF with one 'gemma3' weight, blk.0.attn_q.weight as torch [out=6, in=4] (ne = [4, 6])."""
    from gguf import GGUFWriter

    writer = GGUFWriter(path, "gemma3")
    writer.add_tensor("blk.0.attn_q.weight", np.zeros((6, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def random_lora(base_gguf: Path, blocks: dict[int, list[str]], r: int = 4, seed: int = 0) -> dict[str, np.ndarray]:
    """A PEFT-keyed LoRA state dict for the named modules of the base GGUF's blocks, small random values."""
    from gguf import GGUFReader

    from hindsight.refresh.gguf_adapter import MODULES

    shapes = {t.name: [int(d) for d in t.shape] for t in GGUFReader(base_gguf).tensors}
    rng = np.random.default_rng(seed)
    state = {}
    for block, modules in blocks.items():
        for module in modules:
            n_in, n_out = shapes[f"blk.{block}.{MODULES[module]}.weight"][:2]
            kind = "self_attn" if module in TARGETS[:4] else "mlp"
            prefix = f"base_model.model.model.layers.{block}.{kind}.{module}"
            state[f"{prefix}.lora_A.weight"] = rng.normal(0, 0.05, (r, n_in)).astype(np.float32)
            state[f"{prefix}.lora_B.weight"] = rng.normal(0, 0.05, (n_out, r)).astype(np.float32)
    return state


# -- writing the GGUF ----------------------------------------------------------------------------------
def test_peft_keys_map_to_llama_cpp_names():
    assert gguf_name("base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight") == "blk.3.attn_q.weight.lora_a"
    assert gguf_name("base_model.model.model.layers.12.mlp.down_proj.lora_B.default.weight") == "blk.12.ffn_down.weight.lora_b"
    assert gguf_name("model.layers.0.self_attn.o_proj.lora_B.weight") == "blk.0.attn_output.weight.lora_b"
    with pytest.raises(ValueError, match="qkv_proj"):
        gguf_name("base_model.model.model.layers.0.self_attn.qkv_proj.lora_A.weight")
    with pytest.raises(ValueError, match="embed_tokens"):
        adapter_tensors({"base_model.model.model.embed_tokens.lora_embedding_A": np.zeros((2, 2))}, {})


def test_written_adapter_has_llama_cpp_layout(tmp_path):
    from gguf import GGUFReader

    base = tiny_base(tmp_path / "base.gguf")
    a = np.arange(8, dtype=np.float32).reshape(2, 4)  # [r, in]
    b = np.arange(12, dtype=np.float32).reshape(6, 2)  # [out, r]
    state = {  # as a PEFT model's own state_dict names them, base weight included
        "base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight": np.zeros((6, 4)),
        "base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight": a,
        "base_model.model.model.layers.0.self_attn.q_proj.lora_B.default.weight": b,
    }
    out = write_adapter(state, alpha=4, out=tmp_path / "adapter.gguf", base_gguf=base)
    reader = GGUFReader(out)
    keys = ("general.type", "adapter.type", "adapter.lora.alpha", "general.architecture")
    kv = {name: reader.get_field(name).contents() for name in keys}
    assert kv == {"general.type": "adapter", "adapter.type": "lora", "adapter.lora.alpha": 4.0, "general.architecture": "gemma3"}
    tensors = {t.name: t for t in reader.tensors}
    assert set(tensors) == {"blk.0.attn_q.weight.lora_a", "blk.0.attn_q.weight.lora_b"}
    # llama.cpp's checks, in ggml order (ne): a.ne[0] == W.ne[0] = in, b.ne[1] == W.ne[1] = out, a.ne[1] == b.ne[0] = r
    assert [int(d) for d in tensors["blk.0.attn_q.weight.lora_a"].shape] == [4, 2]
    assert [int(d) for d in tensors["blk.0.attn_q.weight.lora_b"].shape] == [2, 6]
    assert np.array_equal(np.asarray(tensors["blk.0.attn_q.weight.lora_a"].data).reshape(2, 4), a)
    assert np.array_equal(np.asarray(tensors["blk.0.attn_q.weight.lora_b"].data).reshape(6, 2), b)
    assert [p.name for p in tmp_path.iterdir()] and not list(tmp_path.glob(".*"))  # no temp file left behind


def test_shapes_that_do_not_fit_the_base_are_refused(tmp_path):
    base = tiny_base(tmp_path / "base.gguf")
    prefix = "base_model.model.model.layers.0.self_attn.q_proj"
    transposed = {f"{prefix}.lora_A.weight": np.zeros((4, 2)), f"{prefix}.lora_B.weight": np.zeros((6, 2))}
    with pytest.raises(ValueError, match="do not fit"):
        write_adapter(transposed, alpha=4, out=tmp_path / "adapter.gguf", base_gguf=base)
    with pytest.raises(ValueError, match="no lora_b"):
        write_adapter({f"{prefix}.lora_A.weight": np.zeros((2, 4))}, alpha=4, out=tmp_path / "adapter.gguf", base_gguf=base)
    other = {k.replace("layers.0", "layers.1"): v for k, v in transposed.items()}
    with pytest.raises(ValueError, match="no tensor blk.1.attn_q.weight"):
        write_adapter(other, alpha=4, out=tmp_path / "adapter.gguf", base_gguf=base)
    assert not (tmp_path / "adapter.gguf").exists()


# -- the registry --------------------------------------------------------------------------------------
def make_version(directory: Path, base_sha: str, data: bytes = b"GGUF adapter bytes") -> Path:
    source = directory.parent / f"{new_name()}.gguf"
    source.write_bytes(data)
    return write_version(directory, source, {"base_sha256": base_sha, "metrics": {"pairs": 3}})


def test_promote_current_and_rollback(tmp_path):
    adapters = tmp_path / "adapters"
    assert current_name(adapters) is None and current_adapter(adapters, "a" * 64) == (None, None)
    first, second = make_version(adapters, "a" * 64), make_version(adapters, "a" * 64)
    assert first.name != second.name and first.name.startswith("adapter-")
    manifest = json.loads((first / "manifest.json").read_text())
    assert manifest["name"] == first.name and manifest["base_sha256"] == "a" * 64 and manifest["metrics"] == {"pairs": 3}

    assert promote(first) == first.name
    assert current_adapter(adapters, "a" * 64) == (first / "adapter.gguf", None)
    promote(second)
    state = json.loads((adapters / CURRENT).read_text())
    assert state == {"current": second.name, "history": [first.name]}
    assert current_adapter(adapters, "a" * 64) == (second / "adapter.gguf", None)

    assert rollback(adapters) == first.name
    assert current_adapter(adapters, "a" * 64) == (first / "adapter.gguf", None)
    assert rollback(adapters) is None  # nothing before it: the adapter is off
    assert json.loads((adapters / CURRENT).read_text()) == {"current": None, "history": []}
    assert current_adapter(adapters, "a" * 64) == (None, None)
    assert rollback(adapters) is None
    assert (first / "adapter.gguf").is_file() and (second / "adapter.gguf").is_file()  # nothing deleted
    assert not list(adapters.glob(".*"))  # no staging directories or temp files left


def test_an_adapter_for_another_model_or_missing_is_refused(tmp_path):
    adapters = tmp_path / "adapters"
    version = make_version(adapters, "a" * 64)
    promote(version)
    path, problem = current_adapter(adapters, "b" * 64)
    assert path is None and version.name in problem and "another model" in problem and "\n" not in problem
    (version / "adapter.gguf").write_bytes(b"changed")
    path, problem = current_adapter(adapters, "a" * 64)
    assert path is None and "sha256" in problem
    (version / "adapter.gguf").unlink()
    path, problem = current_adapter(adapters, "a" * 64)
    assert path is None and "missing" in problem
    (adapters / CURRENT).write_text("{not json")
    path, problem = current_adapter(adapters, "a" * 64)
    assert path is None and "unreadable" in problem
    with pytest.raises(RegistryError):
        promote(tmp_path / "not-an-adapter")
    with pytest.raises(RegistryError, match="base_sha256"):
        write_version(adapters, version / "manifest.json", {})


# -- llama.cpp -----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_check_adapter_reports_a_garbage_file(tmp_path, model_path):
    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(bytes(range(256)) * 4)
    problem = check_adapter(garbage, model_path)
    assert problem and "\n" not in problem and "magic" in problem
    problem = check_adapter(model_path, model_path)  # a model, not an adapter
    assert problem and "adapter" in problem
    assert "not found" in check_adapter(tmp_path / "none.gguf", model_path)


def _llama_logprobs(model_path: Path, lora: Path | None, token_lists: list[list[int]]) -> list[np.ndarray]:
    from hindsight.engine.llama_backend import LlamaBackend

    backend = LlamaBackend(model_path, n_ctx=512, lora_path=lora)
    assert (lora is not None) == ("+" in backend.name)
    out = []
    for tokens in token_lists:
        backend.llm.reset()
        backend.llm.eval(tokens)
        logits = backend._last_logits().astype(np.float64)
        out.append(logits - logits.max() - np.log(np.exp(logits - logits.max()).sum()))
    return out


@pytest.mark.slow
def test_llama_cpp_applies_the_adapter_as_peft_does(tmp_path, model_path):
    """PEFT on the dequantized model and llama.cpp on the quantized one move the next-token log-probs
    of the base's top-20 tokens the same way (their absolute values differ by the quantization). A wrong
    tensor name, a transpose or a wrong alpha/rank scale breaks the correlation or the effect."""
    import torch
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict

    from hindsight.engine.llama_backend import LlamaBackend
    from hindsight.refresh.base import hf_base_dir, load_base

    model, _ = load_base(model_path)
    assert hf_base_dir(model_path) == hf_base_dir(model_path)  # cached: the same directory, no rebuild
    vocab = LlamaBackend(model_path, n_ctx=512)
    token_lists = [vocab.tokenize(p) for p in PROMPTS]  # the same tokens into both models
    del vocab

    def hf_logprobs(m) -> list[np.ndarray]:
        with torch.no_grad():
            return [torch.log_softmax(m(torch.tensor([t])).logits[0, -1].double(), -1).numpy() for t in token_lists]

    hf_base = hf_logprobs(model)
    torch.manual_seed(0)  # PEFT draws lora_A from the global generator
    peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=TARGETS, lora_dropout=0.0))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:  # PEFT starts B at zero (no effect); give it one
                param.copy_(torch.randn(param.shape, generator=generator) * 0.02)
    hf_adapted = hf_logprobs(peft_model.eval())
    adapter = write_adapter(get_peft_model_state_dict(peft_model), alpha=16, out=tmp_path / "adapter.gguf", base_gguf=model_path)
    assert check_adapter(adapter, model_path) is None

    ll_base = _llama_logprobs(model_path, None, token_lists)
    ll_adapted = _llama_logprobs(model_path, adapter, token_lists)
    hf_delta, ll_delta = [], []
    for i in range(len(PROMPTS)):
        top = np.argsort(-ll_base[i])[:20]
        hf_delta.append(hf_adapted[i][top] - hf_base[i][top])
        ll_delta.append(ll_adapted[i][top] - ll_base[i][top])
    hf_delta, ll_delta = np.concatenate(hf_delta), np.concatenate(ll_delta)
    correlation = float(np.corrcoef(hf_delta, ll_delta)[0, 1])
    slope = float(hf_delta @ ll_delta / (hf_delta @ hf_delta))  # llama.cpp's effect per unit of PEFT's
    largest = f"llama.cpp {np.abs(ll_delta).max():.3f}, HF {np.abs(hf_delta).max():.3f}"
    print(f"parity: pearson {correlation:.4f}, slope {slope:.3f}, max |delta| {largest}")
    # Any non-zero adapter, however small (even lora_scale 1e-6), moves llama.cpp's tail log-probs by up
    # to ~1 nat: its quantized activations round differently. So the effect must be well above that,
    # and the correlation is the real check (B at std 0.01 gave 0.86-0.97 over seeds, 0.02 gave 0.98).
    assert np.abs(ll_delta).max() > 2.0
    assert correlation > 0.9
    assert 0.7 < slope < 1.4  # the same scale (alpha / rank); the correlation alone would not see it


# -- the server ----------------------------------------------------------------------------------------
GEOMETRY = WORKSPACE / "shapes" / "geometry.py"
TEXT = "import math\n\n\ndef circle_area(radius):\n    return "


async def command(session, name: str):
    from lsprotocol import types

    return await session.client.workspace_execute_command_async(types.ExecuteCommandParams(command=name, arguments=[]))


async def _serve(home: Path, model_path: Path, then=None):
    """Start the server on data dir `home`, ask twice for a completion; (answers, status, rows, messages).
    `then(session)`: more to do before closing."""
    from hindsight.simulate.session import Session

    db = home / "server.db"
    options = {"model": str(model_path), "databasePath": str(db), "context": {"crossFile": False}}
    session = await Session.start(WORKSPACE, options=options, env={"HINDSIGHT_DATA_DIR": str(home)})
    try:
        doc = await session.open(GEOMETRY.with_name("_adapter_test.py"), TEXT)
        answers = [(await session.complete(doc, len(TEXT)))[0] for _ in range(2)]
        status = await command(session, "hindsight.status")
        extra = await then(session) if then else None
    finally:
        await session.close()
    return answers, status, rows(db, "SELECT * FROM requests ORDER BY created_at"), session.messages, extra


@pytest.mark.slow
async def test_server_serves_the_base_model_when_the_adapter_is_bad(tmp_path, model_path):
    from hindsight.engine.model import gguf_sha256

    version = make_version(tmp_path / "adapters", gguf_sha256(model_path), data=b"GGUF\x03\x00\x00\x00" + b"\x00" * 64)
    promote(version)
    answers, status, logged, messages, _ = await _serve(tmp_path, model_path)
    assert answers[0] is not None and answers[0].insert_text
    assert status["modelLoaded"] and status["adapter"] is None
    assert all("+" not in row["model"] for row in logged)
    told = [m for m in messages if "adapter" in m]
    assert len(told) == 1 and version.name in told[0] and "serving the base model" in told[0] and "\n" not in told[0]


@pytest.mark.slow
async def test_server_loads_the_promoted_adapter_and_reload_follows_rollback(tmp_path, model_path):
    from hindsight.engine.model import gguf_sha256

    adapters = tmp_path / "adapters"
    adapter = write_adapter(
        random_lora(model_path, {0: ["q_proj", "down_proj"], 5: ["v_proj"]}),
        alpha=8,
        out=tmp_path / "a.gguf",
        base_gguf=model_path,
    )
    version = write_version(adapters, adapter, {"base_sha256": gguf_sha256(model_path)})
    promote(version)

    async def roll_back_and_reload(session):
        assert rollback(adapters) is None
        return await command(session, "hindsight.reload")

    answers, status, logged, messages, reloaded = await _serve(tmp_path, model_path, roll_back_and_reload)
    assert answers[0] is not None
    assert status["adapter"] == version.name and status["model"].endswith(f"+{version.name}")
    assert logged[0]["model"].endswith(f"+{version.name}")
    assert not [m for m in messages if "adapter" in m]
    assert reloaded["modelLoaded"] and reloaded["adapter"] is None and "+" not in reloaded["model"]
