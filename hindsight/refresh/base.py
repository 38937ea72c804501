"""The base model in a trainable form: the served GGUF, dequantized once into a Hugging Face copy.

transformers reads a GGUF (dequantizing it to float32) but cannot train on what it read, and the read
takes about a minute; so the first call saves model and tokenizer as safetensors under
`data_dir()/models/hf/<first 16 hex of the GGUF's sha256>/` and every later call loads that. The
directory is named by the content of the GGUF, so a changed model file gets its own copy, and an
adapter trained on the copy can name the exact GGUF it belongs to (`gguf_sha256`).

    from hindsight.refresh.base import load_base
    model, tokenizer = load_base(resolve_model(None))   # float32, eval()

The GGUF's hash is `hindsight.engine.model.gguf_sha256` (remembered, so the server can ask at every start).

Any architecture transformers reads from a GGUF works (Gemma 3, Llama and CodeLlama, Qwen2.5-Coder,
StarCoder2, Mistral/Codestral, …). For one it cannot read, or to train on the unquantized weights, the
caller names the model's Hugging Face directory (`weights`): it is loaded as it is, and the adapter is still
written for, checked against and applied to the GGUF that is served.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from hindsight.engine.model import gguf_sha256
from hindsight.errors import HindsightError
from hindsight.paths import data_dir, ensure_private_dir


class BaseModelError(HindsightError):
    """The base model cannot be loaded for training: one line, with what to do."""

    usage = True



def hf_root() -> Path:
    """`data_dir()/models/hf`, created (0700) if missing."""
    return ensure_private_dir(data_dir() / "models" / "hf")


def _complete(directory: Path) -> bool:
    return (directory / "config.json").is_file() and any(directory.glob("*.safetensors"))


def _forget_gguf(model) -> None:
    """Mark a model read from a GGUF as the plain float32 model it now is. transformers refuses to save
    one ("quantized with gguf and is not serializable"), though its weights were dequantized on load."""
    model.hf_quantizer = None
    model.is_quantized = False
    model.quantization_method = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def hf_base_dir(model_path: Path) -> Path:
    """The dequantized safetensors copy of the GGUF at `model_path`, built on first use (about a minute).

    Built in a hidden directory beside the final one and renamed into place, so a crash or a second
    process never leaves (or sees) half a model."""
    model_path = Path(model_path)
    root = hf_root()
    final = root / gguf_sha256(model_path)[:16]
    if _complete(final):
        return final
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=root))
    try:
        try:
            tokenizer = AutoTokenizer.from_pretrained(model_path.parent, gguf_file=model_path.name)
            model = AutoModelForCausalLM.from_pretrained(model_path.parent, gguf_file=model_path.name,
                                                         dtype=torch.float32)
        except Exception as exc:  # an architecture or tokenizer transformers does not read from a GGUF
            why = " ".join(str(exc).split())[:200]
            raise BaseModelError(
                f"transformers cannot read {model_path.name} for training ({type(exc).__name__}: {why}); "
                "give the model's Hugging Face directory as well (--weights DIR)"
            ) from None
        _forget_gguf(model)
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / "source.json").write_text(
            json.dumps({"gguf": str(model_path.resolve()), "sha256": gguf_sha256(model_path)}, indent=1) + "\n"
        )
        del model
        if final.exists() and not _complete(final):  # a leftover from a crash between the checks: replace it
            shutil.rmtree(final, ignore_errors=True)
        try:
            os.replace(staging, final)
        except OSError:
            if not _complete(final):  # not another process winning the race: a real failure
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


def load_base(model_path: Path, weights: Path | None = None):
    """(model, tokenizer): the GGUF's weights in float32, in eval mode, from the cached HF copy; or the
    Hugging Face directory `weights` (the same model, in the form it was published)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    directory = Path(weights) if weights is not None else hf_base_dir(model_path)
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    return model.eval(), tokenizer
