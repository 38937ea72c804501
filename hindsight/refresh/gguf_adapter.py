"""A PEFT LoRA, written as the GGUF LoRA adapter llama.cpp applies on top of the quantized base model.

llama.cpp reads an adapter as a GGUF with `general.type = "adapter"`, `adapter.type = "lora"`,
`adapter.lora.alpha`, the base model's `general.architecture`, and for each adapted weight `W` of the
base two tensors `<W's name>.lora_a` / `.lora_b`. Its checks, in ggml's dimension order (`ne`, the
reverse of numpy's): `a.ne[0] == W.ne[0]`, `b.ne[1] == W.ne[1]`, `a.ne[1] == b.ne[0]` (the rank). A torch
Linear's weight is [out, in], stored in GGUF as ne = [in, out]; so PEFT's lora_A ([r, in]) and lora_B
([out, r]) are written as they are, no transposes: the writer reverses the dimensions for us. The
scale llama.cpp applies is alpha / rank, as PEFT's.

    write_adapter(get_peft_model_state_dict(model), alpha=16, out=Path("adapter.gguf"), base_gguf=base)

A malformed adapter can abort the whole process inside llama.cpp (GGML_ASSERT), so the server never
loads an adapter that `hindsight.engine.model.check_adapter` has not test-loaded in a child process first.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import numpy as np


# PEFT module name → llama.cpp tensor name (in block N: blk.N.<name>.weight)
MODULES = {
    "q_proj": "attn_q",
    "k_proj": "attn_k",
    "v_proj": "attn_v",
    "o_proj": "attn_output",
    "gate_proj": "ffn_gate",
    "up_proj": "ffn_up",
    "down_proj": "ffn_down",
}
# `...layers.3.self_attn.q_proj.lora_A.weight`, or `...lora_A.default.weight` (a model's own state_dict)
LORA_KEY = re.compile(r"(?:^|\.)layers\.(\d+)\.(?:self_attn|mlp)\.([A-Za-z0-9_]+)\.lora_([AB])(?:\.[A-Za-z0-9_]+)?\.weight$")


def gguf_name(key: str) -> str:
    """A PEFT state-dict key → the GGUF tensor name (`blk.3.attn_q.weight.lora_a`); ValueError if unknown."""
    m = LORA_KEY.search(key)
    if not m:
        raise ValueError(f"not a LoRA weight of an attention or MLP projection: {key}")
    layer, module, which = m.groups()
    if module not in MODULES:
        raise ValueError(f"no llama.cpp tensor for LoRA module {module!r} ({key})")
    return f"blk.{int(layer)}.{MODULES[module]}.weight.lora_{which.lower()}"


def _base_info(base_gguf: Path) -> tuple[str, dict[str, tuple[int, ...]]]:
    """The base GGUF's architecture and its tensors' shapes in ggml order (ne)."""
    from gguf import GGUFReader

    reader = GGUFReader(base_gguf)
    field = reader.get_field("general.architecture")
    if field is None:
        raise ValueError(f"{base_gguf} has no general.architecture")
    arch = field.contents()
    return arch, {t.name: tuple(int(d) for d in t.shape) for t in reader.tensors}


def _to_numpy(tensor) -> np.ndarray:
    if hasattr(tensor, "detach"):
        tensor = tensor.detach().to("cpu").float().numpy()
    return np.ascontiguousarray(tensor, dtype=np.float32)


def adapter_tensors(lora_state: dict, shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """GGUF name → float32 array, checked against the base's weight shapes as llama.cpp will check them.
    Keys without `lora_` (e.g. base weights in a full state dict) are skipped."""
    tensors: dict[str, np.ndarray] = {}
    for key, value in lora_state.items():
        if "lora_" not in key:
            continue
        tensors[gguf_name(key)] = _to_numpy(value)
    if not tensors:
        raise ValueError("the state dict holds no LoRA weights")
    for name in sorted(n for n in tensors if n.endswith(".lora_a")):
        weight = name[: -len(".lora_a")]
        a, b = tensors[name], tensors.get(weight + ".lora_b")
        if b is None:
            raise ValueError(f"{weight} has lora_a but no lora_b")
        if weight not in shapes:
            raise ValueError(f"the base model has no tensor {weight}")
        w_in, w_out = shapes[weight][:2]
        if a.ndim != 2 or b.ndim != 2 or a.shape[1] != w_in or b.shape[0] != w_out or a.shape[0] != b.shape[1]:
            fit = f"the base weight [out={w_out}, in={w_in}]"
            raise ValueError(f"{weight}: lora_a {a.shape} and lora_b {b.shape} do not fit {fit}")
    for name in tensors:
        if name.endswith(".lora_b") and name[: -len(".lora_b")] + ".lora_a" not in tensors:
            raise ValueError(f"{name[: -len('.lora_b')]} has lora_b but no lora_a")
    return tensors


def write_adapter(lora_state: dict, *, alpha: float, out: Path, base_gguf: Path) -> Path:
    """Write the LoRA in `lora_state` (PEFT keys, torch tensors or arrays) as a GGUF adapter for the model
    in `base_gguf`. Written to a temporary file beside `out` and renamed: `out` is never half written."""
    arch, shapes = _base_info(Path(base_gguf))
    return _write(arch, adapter_tensors(lora_state, shapes), alpha, Path(out))


def scale_adapter(src: Path, out: Path, factor: float) -> Path:
    """The adapter in `src` with its effect times `factor` (its alpha scaled; the weights as they are),
    written to `out`: a point on the line from the base model (0) to the trained adapter (1). The factor
    must be positive: llama.cpp reads an alpha of 0 as no scaling at all."""
    from gguf import GGUFReader, Keys

    if not factor > 0:
        raise ValueError(f"an adapter's scale must be positive, not {factor}")
    reader = GGUFReader(src)
    alpha = reader.get_field(Keys.Adapter.LORA_ALPHA)
    arch = reader.get_field("general.architecture")
    if alpha is None or arch is None:
        raise ValueError(f"{src} is not a GGUF LoRA adapter (no {Keys.Adapter.LORA_ALPHA})")
    tensors = {t.name: np.array(t.data, dtype=np.float32) for t in reader.tensors}
    return _write(arch.contents(), tensors, float(alpha.contents()) * factor, Path(out))


def _write(arch: str, tensors: dict[str, np.ndarray], alpha: float, out: Path) -> Path:
    from gguf import GGUFType, GGUFWriter, Keys

    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}-", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        writer = GGUFWriter(tmp, arch)
        writer.add_type(GGUFType.ADAPTER)
        writer.add_string(Keys.Adapter.TYPE, "lora")
        writer.add_float32(Keys.Adapter.LORA_ALPHA, float(alpha))
        for name in sorted(tensors, key=_tensor_order):
            writer.add_tensor(name, tensors[name])
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def _tensor_order(name: str) -> tuple:
    """Block by block, in numeric order (blk.2 before blk.10), as llama.cpp's own converter writes them."""
    parts = name.split(".")
    return (int(parts[1]), ".".join(parts[2:])) if len(parts) > 2 and parts[1].isdigit() else (-1, name)
