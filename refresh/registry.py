"""Versioned LoRA adapters and which one is promoted, as the acceptance gate's versions (gating/train.py).

    data_dir()/adapters/
        adapter-20250101-120000-a1b2c3/{adapter.gguf, manifest.json}
        current.json        {"current": "adapter-…", "history": ["adapter-… promoted before it", …]}

A version directory is written beside itself and renamed into place (`write_version`), so it is never
seen half written, and nothing in it is changed afterwards. `current.json` is replaced atomically
(temp file, fsync, os.replace). Earlier adapters are never deleted: `rollback` makes the previously
promoted one current again, or turns the adapter off when there was none.

An adapter only fits the exact base model it was trained on, so its manifest records the base GGUF's
sha256 (`base_sha256`), and `current_adapter` refuses it for any other model.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import secrets
from pathlib import Path

from .base import file_sha256

CURRENT = "current.json"
ADAPTER = "adapter.gguf"
MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
NAME_RE = re.compile(r"^adapter-\d{8}-\d{6}-[0-9a-f]{6}$")  # a plain directory name: no path tricks


class RegistryError(Exception):
    """Why the registry cannot do what was asked; one line."""


def adapters_dir() -> Path:
    """`data_dir()/adapters` (not created)."""
    from collector.paths import data_dir

    return data_dir() / "adapters"


def new_name(now: dt.datetime | None = None) -> str:
    """`adapter-YYYYmmdd-HHMMSS-<6 hex>`: sorts by time, and two made in the same second still differ."""
    now = now or dt.datetime.now()
    return f"adapter-{now:%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def write_version(directory: Path, adapter: Path, manifest: dict, name: str | None = None) -> Path:
    """A new version `directory/<name>/` holding a copy of `adapter` and `manifest` (which must name the
    base model's `base_sha256`; the adapter's own sha256 and the name are added). Not promoted."""
    from gating.train import write_version as write_files

    if not manifest.get("base_sha256"):
        raise RegistryError("the adapter's manifest must record the base model's sha256 (base_sha256)")
    name = name or new_name()
    if not NAME_RE.match(name):
        raise RegistryError(f"not an adapter version name: {name!r}")
    data = Path(adapter).read_bytes()
    manifest = {
        **manifest,
        "format": MANIFEST_FORMAT,
        "name": name,
        "sha256": {ADAPTER: hashlib.sha256(data).hexdigest()},
    }
    files = {ADAPTER: data, MANIFEST: (json.dumps(manifest, indent=2) + "\n").encode()}
    return write_files(Path(directory), name, files)


def read_current(directory: Path) -> dict:
    """current.json as {"current": name | None, "history": [names]}; empty when nothing was ever promoted.
    RegistryError when it is unreadable."""
    path = Path(directory) / CURRENT
    if not path.exists():
        return {"current": None, "history": []}
    try:
        state = json.loads(path.read_text())
        current, history = state.get("current"), list(state.get("history", []))
    except (OSError, ValueError, AttributeError, TypeError) as e:
        raise RegistryError(f"{path} is unreadable ({type(e).__name__})") from None
    for name in [current, *history]:
        if name is not None and not (isinstance(name, str) and NAME_RE.match(name)):
            raise RegistryError(f"{path} names no valid adapter ({name!r})")
    return {"current": current, "history": history}


def _write_current(directory: Path, state: dict) -> None:
    """Replace current.json whole (readers see the old or the new)."""
    from gating.train import replace_file

    replace_file(Path(directory) / CURRENT, (json.dumps(state, indent=2) + "\n").encode())


def promote(version_dir: Path) -> str:
    """Make the adapter in `version_dir` (inside the adapters directory) current; the one it replaces goes
    on the history. Returns its name. Promoting the current adapter again changes nothing."""
    version_dir = Path(version_dir)
    name = version_dir.name
    if not NAME_RE.match(name):
        raise RegistryError(f"not an adapter version directory: {version_dir}")
    if not (version_dir / ADAPTER).is_file() or not (version_dir / MANIFEST).is_file():
        raise RegistryError(f"{version_dir} has no {ADAPTER} and {MANIFEST}")
    state = read_current(version_dir.parent)
    if state["current"] == name:
        return name
    history = state["history"] + ([state["current"]] if state["current"] else [])
    _write_current(version_dir.parent, {"current": name, "history": history})
    return name


def rollback(directory: Path) -> str | None:
    """Make the adapter promoted before the current one current again, and return its name; with none
    before it, turn the adapter off (current null) and return None. Nothing is deleted."""
    state = read_current(directory)
    history = state["history"]
    previous = history.pop() if history else None
    if state["current"] is None and previous is None:
        return None
    _write_current(Path(directory), {"current": previous, "history": history})
    return previous


def current_name(directory: Path) -> str | None:
    """The promoted adapter's name, None when none is (RegistryError when current.json is bad)."""
    return read_current(directory)["current"]


def current_adapter(directory: Path, base_sha256: str) -> tuple[Path | None, str | None]:
    """(the promoted adapter.gguf, None); (None, None) when none is promoted; (None, why) when it cannot
    be used with the model whose sha256 is `base_sha256`. Never raises."""
    try:
        name = current_name(directory)
    except RegistryError as e:
        return None, f"adapter: {e}"
    try:
        if name is None:
            return None, None
        version = Path(directory) / name
        try:
            manifest = json.loads((version / MANIFEST).read_text())
        except FileNotFoundError:
            return None, f"adapter {name}: {MANIFEST} is missing"
        except (OSError, ValueError) as e:
            return None, f"adapter {name}: {MANIFEST} is unreadable ({type(e).__name__})"
        if not isinstance(manifest, dict):
            return None, f"adapter {name}: {MANIFEST} is not an object"
        base = manifest.get("base_sha256")
        if base != base_sha256:
            shas = f"base sha256 {str(base)[:12]}…, serving {base_sha256[:12]}…"
            return None, f"adapter {name} was trained on another model ({shas})"
        path = version / ADAPTER
        if not path.is_file():
            return None, f"adapter {name}: {ADAPTER} is missing"
        expected = (manifest.get("sha256") or {}).get(ADAPTER)
        if expected and file_sha256(path) != expected:
            return None, f"adapter {name}: {ADAPTER} does not match its sha256 in the manifest"
        return path, None
    except Exception as e:  # never let an adapter take the server down
        return None, f"adapter {name}: {type(e).__name__}: {' '.join(str(e).split())[:200]}"


def promoted_for(model_path: Path, directory: Path | None = None) -> Path | None:
    """The promoted adapter for the model file at `model_path`, if there is one, it was trained on that
    file and llama.cpp loads it (test-loaded in a child process); else None. For the offline commands:
    sampling from "the current model", and measuring the model a new adapter would replace."""
    from .base import gguf_sha256
    from .gguf_adapter import check_adapter

    directory = Path(directory) if directory else adapters_dir()
    try:
        if current_name(directory) is None:
            return None
    except RegistryError:
        return None
    path, problem = current_adapter(directory, gguf_sha256(model_path))
    if path is None or problem or check_adapter(path, model_path):
        return None
    return path
