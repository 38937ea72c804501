"""Where the user's data lives: one private directory, one SQLite file.

`HINDSIGHT_DATA_DIR` and `HINDSIGHT_DB` override the defaults (tests point them at a temporary
directory). Directories this module creates are mode 0700: the database holds the user's code.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote, urlparse

import platformdirs

APP_NAME = "hindsight"


def ensure_private_dir(path: Path) -> Path:
    """Create `path` and any missing parents with mode 0700; existing directories are left as they are."""
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=0o700)
        except FileExistsError:
            continue  # created meanwhile by another process; leave it alone
        os.chmod(d, 0o700)  # mkdir's mode is filtered by the umask
    return path


def data_dir() -> Path:
    """`$HINDSIGHT_DATA_DIR` if set, else the platform's user data dir; created (0700) if missing."""
    env = os.environ.get("HINDSIGHT_DATA_DIR")
    path = Path(env).expanduser() if env else Path(platformdirs.user_data_dir(APP_NAME))
    return ensure_private_dir(path)


def db_path() -> Path:
    """`$HINDSIGHT_DB` if set, else `data_dir() / "hindsight.db"`. Creates no file."""
    env = os.environ.get("HINDSIGHT_DB")
    if env:
        return Path(env).expanduser()
    return data_dir() / "hindsight.db"


def uri_to_path(uri: str) -> str | None:
    """The file-system path of a `file://` URI (percent-decoded), or None for another scheme."""
    parsed = urlparse(uri)
    if parsed.scheme != "file":
        return None
    return unquote(parsed.path)
