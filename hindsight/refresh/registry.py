"""Versioned LoRA adapters and which one is promoted, in the versioned-artefact store (hindsight.artefacts)
that also keeps the acceptance gate's versions.

    data_dir()/adapters/
        adapter-20250101-120000-a1b2c3/{adapter.gguf, manifest.json}
        current.json        {"current": "adapter-…", "history": ["adapter-… promoted before it", …]}

A version is written whole or not at all and never changed afterwards; `current.json` is replaced
atomically. `rollback` makes the previously promoted one current again, or turns the adapter off when
there was none; only `hindsight learn` deletes versions, the oldest beyond a bound, never the current one or
the one before it (`Versions.prune`).

An adapter only fits the exact base model it was trained on, so its manifest records the base GGUF's
sha256 (`base_sha256`). Which adapter is served on which model is the engine's side of the same store
(`hindsight.engine.adapters`); this module writes, promotes and rolls back.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import secrets
from pathlib import Path

from hindsight.artefacts import MANIFEST
from hindsight.engine.adapters import ADAPTER, RegistryError, versions

MANIFEST_FORMAT = 1

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
