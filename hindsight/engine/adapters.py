"""Which LoRA adapter the model is served with: the promoted version in the data directory's `adapters/`
(a `hindsight.artefacts` store), if it was trained on exactly this model file.

    data_dir()/adapters/
        adapter-20250101-120000-a1b2c3/{adapter.gguf, manifest.json}
        current.json        {"current": "adapter-…", "history": ["adapter-… promoted before it", …]}

An adapter only fits the exact base model it was trained on, so its manifest records the base GGUF's
sha256 (`base_sha256`), and `current_adapter` refuses it for any other model. `hindsight.refresh.registry`
writes, promotes and rolls back versions of the same store.
"""

from __future__ import annotations

import re
from pathlib import Path

from hindsight.artefacts import MANIFEST, ArtefactError, Versions
from hindsight.engine.model import check_adapter, file_sha256, gguf_sha256
from hindsight.paths import data_dir

ADAPTER = "adapter.gguf"
NAME_RE = re.compile(r"^adapter-\d{8}-\d{6}-[0-9a-f]{6}$")  # a plain directory name: no path tricks

# Why the store cannot do what was asked (a bad current.json, name or manifest); one line. The store's
# own error, so that callers catch one class whether the registry or the store refused.
RegistryError = ArtefactError


def adapters_dir() -> Path:
    """`data_dir()/adapters` (not created)."""
    return data_dir() / "adapters"


def versions(directory: Path) -> Versions:
    """The adapters in `directory`."""
    return Versions(directory, name_re=NAME_RE, files=(ADAPTER, MANIFEST))


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
