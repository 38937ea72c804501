"""Versioned LoRA adapters and which one is promoted, in the versioned-artefact store (hindsight.artefacts)
that also keeps the acceptance gate's versions.

    data_dir()/adapters/
        adapter-20250101-120000-a1b2c3/{adapter.gguf, manifest.json}
        current.json        {"current": "adapter-…", "history": ["adapter-… promoted before it", …]}

A version is written whole or not at all and never changed afterwards; `current.json` is replaced
atomically. Earlier adapters are never deleted: `rollback` makes the previously promoted one current
again, or turns the adapter off when there was none.

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

from hindsight.artefacts import MANIFEST, ArtefactError, Versions
from hindsight.engine.model import check_adapter, file_sha256, gguf_sha256
from hindsight.paths import data_dir

ADAPTER = "adapter.gguf"
MANIFEST_FORMAT = 1
NAME_RE = re.compile(r"^adapter-\d{8}-\d{6}-[0-9a-f]{6}$")  # `new_name`'s: a plain directory name

# Why the registry cannot do what was asked (a bad current.json, name or manifest); one line. The store's
# own error, so that callers catch one class whether the registry or the store refused.
RegistryError = ArtefactError


def adapters_dir() -> Path:
    """`data_dir()/adapters` (not created)."""
    return data_dir() / "adapters"


def versions(directory: Path) -> Versions:
    """The adapters in `directory`: current.json keeps a history, for `rollback`."""
    return Versions(directory, name_re=NAME_RE, files=(ADAPTER, MANIFEST), history=True)


def new_name(now: dt.datetime | None = None) -> str:
    """`adapter-YYYYmmdd-HHMMSS-<6 hex>`: sorts by time, and two made in the same second still differ."""
    now = now or dt.datetime.now()
    return f"adapter-{now:%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def write_version(directory: Path, adapter: Path, manifest: dict, name: str | None = None) -> Path:
    """A new version `directory/<name>/` holding a copy of `adapter` and `manifest` (which must name the
    base model's `base_sha256`; the adapter's own sha256 and the name are added). Not promoted."""
    if not manifest.get("base_sha256"):
        raise RegistryError("the adapter's manifest must record the base model's sha256 (base_sha256)")
    name = name or new_name()
    data = Path(adapter).read_bytes()
    manifest = {
        **manifest,
        "format": MANIFEST_FORMAT,
        "name": name,
        "sha256": {ADAPTER: hashlib.sha256(data).hexdigest()},
    }
    return versions(directory).write(name, {ADAPTER: data, MANIFEST: (json.dumps(manifest, indent=2) + "\n").encode()})


def promote(version_dir: Path) -> str:
    """Make the adapter in `version_dir` (inside the adapters directory) current; the one it replaces goes
    on the history. Returns its name. Promoting the current adapter again changes nothing."""
    version_dir = Path(version_dir)
    versions(version_dir.parent).promote(version_dir.name)
    return version_dir.name


def rollback(directory: Path) -> str | None:
    """Make the adapter promoted before the current one current again, and return its name; with none
    before it, turn the adapter off (current null) and return None. Nothing is deleted."""
    return versions(directory).rollback()


def current_name(directory: Path) -> str | None:
    """The promoted adapter's name, None when none is (RegistryError when current.json is bad)."""
    return versions(directory).current()


def current_adapter(directory: Path, base_sha256: str) -> tuple[Path | None, str | None]:
    """(the promoted adapter.gguf, None); (None, None) when none is promoted; (None, why) when it cannot
    be used with the model whose sha256 is `base_sha256`. Never raises."""
    store = versions(directory)
    try:
        name = store.current()
    except RegistryError as e:
        return None, f"adapter: {e}"
    try:
        if name is None:
            return None, None
        try:
            manifest = store.manifest(name)
        except RegistryError as e:
            return None, f"adapter {name}: {e}"
        base = manifest.get("base_sha256")
        if base != base_sha256:
            shas = f"base sha256 {str(base)[:12]}…, serving {base_sha256[:12]}…"
            return None, f"adapter {name} was trained on another model ({shas})"
        path = store.path(name) / ADAPTER
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
