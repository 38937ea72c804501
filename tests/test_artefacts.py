"""Bad artefacts: a model, a LoRA adapter or a gate that is missing, truncated, not what it claims to be, or
that aborts llama.cpp. Each is told in one line, and the server keeps serving with the last good one (or
with none: empty answers), answering every request; it never exits.

The server test is one session that goes through every case by replacing files and asking for
`hindsight.reload`, as a user would; the files are real: pieces of the embedded model, GGUFs written with
the `gguf` package, ONNX graphs written with `onnx`.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import WORKSPACE
from hindsight.gating.features import STAGE1, STAGE2

GEOMETRY = WORKSPACE / "shapes" / "geometry.py"
TEXT = "import math\n\n\ndef circle_area(radius):\n    return "
Q_PROJ = "base_model.model.model.layers.0.self_attn.q_proj"


@pytest.fixture(scope="module")
def model_path() -> Path:
    from hindsight.engine.model import resolve_model

    return resolve_model(None)


# -- making bad (and good) files -----------------------------------------------------------------------
def write_gguf(path: Path, arch: str, kv: dict | None = None, tensors: dict | None = None, type_: str | None = None) -> Path:
    from gguf import GGUFWriter

    writer = GGUFWriter(path, arch)
    if type_:
        writer.add_type(type_)
    for key, value in (kv or {}).items():
        writer.add_uint32(key, value)
    for name, array in (tensors or {}).items():
        writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def bad_models(model_path: Path, directory: Path) -> list[tuple[str, Path, str]]:
    """(case, file, the reason the user must be told), for each kind of bad model file."""
    directory.mkdir(exist_ok=True)
    text = directory / "notes.gguf"
    text.write_text("these are my notes, not a model\n")
    noise = directory / "noise.gguf"
    noise.write_bytes(np.random.default_rng(0).bytes(1 << 20))
    truncated = directory / "truncated.gguf"
    with model_path.open("rb") as f:
        truncated.write_bytes(f.read(10 << 20))  # the first 10 MB of the real model
    no_metadata = directory / "no-metadata.gguf"
    no_metadata.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\x00" * 100)  # a GGUF v3 header: no tensors, no keys
    header_only = directory / "header-only.gguf"
    with model_path.open("rb") as f:
        header_only.write_bytes(f.read(4096))  # cut inside the metadata
    # A GGUF of an architecture llama.cpp does not know, one that is an adapter rather than a model, one
    # with no layers (llama.cpp asserts on it and aborts the process that loads it).
    unknown = write_gguf(directory / "unknown-arch.gguf", "qwerty", {"qwerty.context_length": 2048})
    adapter = write_gguf(directory / "adapter.gguf", "gemma3", type_="adapter")
    no_layers = write_gguf(
        directory / "no-layers.gguf",
        "gemma3",
        {"gemma3.context_length": 2048, "gemma3.embedding_length": 64, "gemma3.block_count": 0},
    )
    return [
        ("text", text, "not a GGUF model file (bad magic b'thes')"),
        ("random bytes", noise, "not a GGUF model file (bad magic"),
        ("truncated", truncated, "tensor 'token_embd.weight' data is not within the file bounds, model is corrupted or incomplete"),
        ("truncated header", header_only, "not a valid GGUF file (failed to read key-value pairs)"),
        ("no metadata", no_metadata, "its metadata names no architecture (general.architecture)"),
        ("wrong architecture", unknown, "unknown model architecture: 'qwerty'"),
        ("an adapter", adapter, "a LoRA adapter, not a model"),
        ("aborts llama.cpp", no_layers, "llama.cpp aborted: GGML_ASSERT(hparams.n_layer_all > 0"),
    ]


def lora_adapter(out: Path, n_in: int, n_out: int, seed: int = 0) -> Path:
    """A LoRA on block 0's q projection of a model whose q weight is [out=n_out, in=n_in], written as
    `write_adapter` writes the trained ones (the base it is given holds just that weight's shape)."""
    from hindsight.refresh.gguf_adapter import write_adapter

    shapes = write_gguf(out.with_suffix(".shapes.gguf"), "gemma3", tensors={"blk.0.attn_q.weight": np.zeros((n_out, n_in), np.float32)})
    rng = np.random.default_rng(seed)
    state = {
        f"{Q_PROJ}.lora_A.weight": rng.normal(0, 0.05, (4, n_in)).astype(np.float32),
        f"{Q_PROJ}.lora_B.weight": rng.normal(0, 0.05, (n_out, 4)).astype(np.float32),
    }
    return write_adapter(state, alpha=8, out=out, base_gguf=shapes)


def embedded_adapter(out: Path) -> Path:
    return lora_adapter(out, 640, 1024)  # the embedded Gemma 3 270M: q projection 640 → 4 heads × 256


def onnx_model(n_features: int, dtype: int | None = None) -> bytes:
    """A gate stage as onnxruntime reads it: rows [n, n_features] (float unless `dtype`) → probabilities
    [n, 2], all 0.5 whatever the features (NaN included)."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("input", dtype or TensorProto.FLOAT, [None, n_features])
    y = helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 2])
    consts = [
        helper.make_tensor("start", TensorProto.INT64, [1], [0]),
        helper.make_tensor("end", TensorProto.INT64, [1], [1]),
        helper.make_tensor("two", TensorProto.INT64, [1], [2]),
    ]
    nodes = [
        helper.make_node("Shape", ["input"], ["shape"]),
        helper.make_node("Slice", ["shape", "start", "end"], ["rows"]),
        helper.make_node("Concat", ["rows", "two"], ["dims"], axis=0),
        helper.make_node("ConstantOfShape", ["dims"], ["probabilities"], value=helper.make_tensor("half", TensorProto.FLOAT, [1], [0.5])),
    ]
    model = helper.make_model(helper.make_graph(nodes, "gate", [x], [y], consts), opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model.SerializeToString()


def write_gate(gates: Path, version: str, stage1: bytes, stage2: bytes) -> str:
    """A gate version as `hindsight train-gate` writes one (manifest with each file's sha256), promoted."""
    from hindsight.gating.gate import versions

    files = {"stage1.onnx": stage1, "stage2.onnx": stage2}
    identity = {"x": [0.0, 1.0], "y": [0.0, 1.0]}
    manifest = {
        "format": 1,
        "version": version,
        "features": {"stage1": list(STAGE1), "stage2": list(STAGE2)},
        "calibration": {"stage1": identity, "stage2": identity},
        "thresholds": {"t1": 0.0, "t2": 0.0},  # shows everything: the test is about loading, not gating
        "sha256": {name: hashlib.sha256(data).hexdigest() for name, data in files.items()},
    }
    versions(gates).write(version, {**files, "manifest.json": json.dumps(manifest).encode()})
    versions(gates).promote(version)
    return version


# -- the checks, as plain functions ---------------------------------------------------------------------
@pytest.mark.slow  # loads the real model
def test_a_model_that_passes_its_test_load_is_remembered(tmp_path, model_path, monkeypatch):
    from hindsight.engine.model import check_model, is_verified

    monkeypatch.setenv("HINDSIGHT_DATA_DIR", str(tmp_path / "home"))
    copy = tmp_path / "model.gguf"
    shutil.copy2(model_path, copy)
    assert not is_verified(copy)
    assert check_model(copy) is None
    assert is_verified(copy)  # the next start does not test-load it again
    record = json.loads((tmp_path / "home" / "models" / "verified.json").read_text())
    assert [key.split(":")[0] for key in record["passed"]] == [str(copy.resolve())]
    with copy.open("r+b") as f:  # the same file, rewritten: no longer the version that passed
        f.seek(1 << 20)
        f.write(b"\0" * 16)
    assert not is_verified(copy)


@pytest.mark.slow  # loads the real model
def test_an_adapter_for_another_model_fails_its_test_load(tmp_path, model_path):
    from hindsight.engine.model import check_adapter

    other = lora_adapter(tmp_path / "other.gguf", 4, 6)  # trained on a model whose q weight is 6 × 4
    problem = check_adapter(other, model_path)
    assert problem and "\n" not in problem
    assert "tensor 'blk.0.attn_q.weight' has incorrect shape (hint: maybe wrong base model?)" in problem


def test_a_bad_gate_is_refused_with_its_reason(tmp_path):
    from onnx import TensorProto

    from hindsight.gating.gate import load_gate

    gates = tmp_path / "gates"
    good1, good2 = onnx_model(len(STAGE1)), onnx_model(len(STAGE2))
    write_gate(gates, "gate-good", good1, good2)
    gate, problem = load_gate(gates)
    assert problem is None and gate.version == "gate-good" and gate.p1(np.full(len(STAGE1), np.nan)) == 0.5

    write_gate(gates, "gate-garbage", good1, b"\x08\x01garbage, not a protobuf" * 8)
    gate, problem = load_gate(gates)
    assert gate is None and problem.startswith("gate gate-garbage: onnxruntime cannot load stage2.onnx: ")
    assert "INVALID_PROTOBUF" in problem and "\n" not in problem

    write_gate(gates, "gate-narrow", onnx_model(3), good2)
    assert load_gate(gates) == (None, f"gate gate-narrow: stage1.onnx: model takes 3 features, manifest names {len(STAGE1)}")

    write_gate(gates, "gate-ints", good1, onnx_model(len(STAGE2), TensorProto.INT64))
    problem = load_gate(gates)[1]
    assert problem == f"gate gate-ints: stage2.onnx: model input input is tensor(int64) [None, {len(STAGE2)}], the gate gives it float rows"


# -- the server ------------------------------------------------------------------------------------------
@pytest.mark.slow  # loads the real model
async def test_the_server_keeps_serving_the_last_good_artefact(tmp_path, model_path):
    """One server: each bad model at start-up or reload (no model yet: completions off, one message
    each); then a good model; then a bad gate, a bad model and a bad adapter each promoted over a good one
    on reload: the good one goes on serving, and the user is told once."""
    from lsprotocol import types

    from hindsight.simulate.session import Session
    from hindsight.engine.model import gguf_sha256
    from hindsight.refresh.registry import promote, write_version

    home = tmp_path / "home"
    home.mkdir()
    model = tmp_path / "model.gguf"  # the file the server is told to serve: replaced under it, in place
    pristine = tmp_path / "pristine.gguf"
    shutil.copy2(model_path, pristine)
    cases = bad_models(model_path, tmp_path / "bad")
    gate = write_gate(home / "gates", "gate-good", onnx_model(len(STAGE1)), onnx_model(len(STAGE2)))

    short = {"maxTokensSingle": 8, "maxTokensMulti": 8}  # what is asked of the model is that it answers
    options = {"model": str(model), "databasePath": str(home / "server.db"), "context": {"crossFile": False}, "completion": short}
    session = await Session.start(WORKSPACE, options=options, env={"HINDSIGHT_DATA_DIR": str(home)})
    told: list[str] = []

    def new_messages() -> list[str]:
        fresh = session.messages[len(told) :]
        told.extend(fresh)
        assert all("\n" not in m for m in fresh)
        return fresh

    async def command(name: str) -> dict:
        return await session.client.workspace_execute_command_async(types.ExecuteCommandParams(command=name, arguments=[]))

    async def ask(n: int):
        doc = await session.open(GEOMETRY.with_name(f"_artefacts_{n}.py"), TEXT)  # a new document: no cache
        return (await session.complete(doc, len(TEXT)))[0]

    try:
        # No model file at all: completions off, the server answers.
        assert await ask(0) is None
        status = await command("hindsight.status")
        assert status["modelLoaded"] is False and status["gate"] == gate
        assert new_messages() == [f"hindsight: model file not found: {model}; completions are off"]

        # Each bad model in turn (no good one to keep): one message each, still no completions.
        for i, (case, bad, reason) in enumerate(cases, 1):
            shutil.copyfile(bad, model)
            status = await command("hindsight.reload")
            assert status["modelLoaded"] is False, case
            fresh = new_messages()
            assert len(fresh) == 1 and fresh[0].endswith("; completions are off") and reason in fresh[0], (case, fresh)
            assert str(model) in fresh[0], case
            assert await ask(i) is None, case

        # The real model: served.
        shutil.copy2(pristine, model)
        status = await command("hindsight.reload")
        assert status["modelLoaded"] and status["model"] == "llama.cpp:model.gguf" and status["adapter"] is None
        assert status["reloadProblems"] == []
        assert (await ask(10)).insert_text
        assert new_messages() == []

        # A bad gate promoted over the good one: the good one stays.
        write_gate(home / "gates", "gate-broken", onnx_model(len(STAGE1)), b"not an onnx model")
        for _ in range(2):  # told once; each reload's answer says what it kept
            status = await command("hindsight.reload")
            assert status["gate"] == gate and status["modelLoaded"]
            assert [p.endswith(f"; keeping gate {gate}") for p in status["reloadProblems"]] == [True]
        fresh = new_messages()
        assert len(fresh) == 1 and fresh[0].startswith("hindsight: gate gate-broken: onnxruntime cannot load stage2.onnx: ")
        assert fresh[0].endswith(f"; keeping gate {gate}")

        # The model file overwritten in place with a bad one: the model read from it goes on serving.
        shutil.copyfile(next(bad for case, bad, _ in cases if case == "wrong architecture"), model)
        for _ in range(2):
            status = await command("hindsight.reload")
            assert status["modelLoaded"] and status["model"] == "llama.cpp:model.gguf"
            assert [p.endswith("; still serving llama.cpp:model.gguf") for p in status["reloadProblems"]][-1:] == [True]
        assert new_messages() == [
            f"hindsight: could not load model {model}: unknown model architecture: 'qwerty'; still serving llama.cpp:model.gguf"
        ]
        assert (await ask(11)).insert_text

        # The good file back; then a good adapter; then a truncated one promoted over it.
        shutil.copy2(pristine, model)
        await command("hindsight.reload")
        adapters = home / "adapters"
        base = {"base_sha256": gguf_sha256(model)}
        good = write_version(adapters, embedded_adapter(tmp_path / "good-adapter.gguf"), base)
        promote(good)
        status = await command("hindsight.reload")
        assert status["adapter"] == good.name and status["model"] == f"llama.cpp:model.gguf+{good.name}"
        data = (good / "adapter.gguf").read_bytes()
        (tmp_path / "cut.gguf").write_bytes(data[: len(data) // 2])
        cut = write_version(adapters, tmp_path / "cut.gguf", base)
        promote(cut)
        for _ in range(2):
            status = await command("hindsight.reload")
            assert status["adapter"] == good.name and status["modelLoaded"]
            assert status["reloadProblems"][-1].endswith(f"; still serving llama.cpp:model.gguf+{good.name}")
        assert (await ask(12)).insert_text
        fresh = new_messages()
        assert len(fresh) == 1 and fresh[0].startswith(f"hindsight: adapter {cut.name}: llama.cpp did not load the adapter: ")
        assert "data is not within the file bounds" in fresh[0]
        assert fresh[0].endswith(f"; still serving llama.cpp:model.gguf+{good.name}")
    finally:
        await session.close()
    assert new_messages() == []
