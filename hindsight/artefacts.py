"""Versioned artefacts on disk and which version is current: one store for the acceptance gate's versions
(the data dir's `gates/`) and the LoRA adapters (`adapters/`).

    <directory>/
        <name>/             one version: its files, manifest.json among them; never changed once written
        current.json        which version is promoted

Writing a version puts its files into a hidden directory beside the others (`.<name>-…`), fsyncs each file
and the directory, and renames it into place: a reader (the server, on reload) never sees a version half
written, and a crash mid-write leaves only the hidden directory, which is not a version (`names` skips it)
and leaves current.json as it was. Promoting replaces current.json the same way (a temp file beside it,
fsync, `os.replace`, fsync the directory): readers see the old pointer or the new one, whole. Nothing is
overwritten; only `prune` deletes, the oldest versions beyond a bound, never the current one or the one
before it.

current.json is `{"current": name or null, "history": [names promoted before it, oldest first]}`:
`rollback` makes the last of the history current again, or turns the artefact off (current null) when the
history is empty. A gate directory written before the gates had a history holds `{"version": name}`; it
reads as that version with an empty history, and the next promotion writes the new format. A current.json
that cannot be read is replaced by the next promotion (with an empty history), never a reason to stop
promoting; the server, meanwhile, is told why nothing is current.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from hindsight.errors import HindsightError
from hindsight.paths import ensure_private_dir

CURRENT = "current.json"
MANIFEST = "manifest.json"
# A plain directory name: no path tricks, and never a hidden staging directory.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class ArtefactError(HindsightError):
    """Why the store cannot do what was asked: a bad current.json or manifest, a bad version name. One line."""


def _one_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return " ".join(text.split())[:300]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _replace_file(path: Path, data: bytes) -> None:
    """Replace `path` with `data`: a temp file beside it, fsync, os.replace, fsync the directory. Readers see
    the old file or the new one, whole, and a crash leaves one of them."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)  # mode 0600
    os.close(fd)
    try:
        _write_synced(Path(tmp), data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


class Versions:
    """The versions of one kind of artefact in `directory`, and which one is current.

    `name_re`: what a version's name must match (a plain directory name at least). `files`: what a
    version must hold to be promoted."""

    def __init__(self, directory: Path, *, name_re: re.Pattern = NAME_RE, files: tuple[str, ...] = ()):
        self.directory = Path(directory)
        self.name_re = name_re
        self.files = tuple(files)

    def _valid(self, name: object) -> bool:
        return isinstance(name, str) and bool(NAME_RE.match(name)) and bool(self.name_re.match(name))

    def path(self, name: str) -> Path:
        """The directory of version `name`; ArtefactError when `name` is not a valid version name."""
        if not self._valid(name):
            raise ArtefactError(f"not a valid version name in {self.directory}: {name!r}")
        return self.directory / name

    def names(self) -> list[str]:
        """The versions written, sorted by name (the gate's and the adapters' names start with their time:
        oldest first). A hidden staging directory, left by a crash mid-write, is not one."""
        if not self.directory.is_dir():
            return []
        return sorted(p.name for p in self.directory.iterdir() if self._valid(p.name) and p.is_dir())

    def write(self, name: str, files: dict[str, bytes]) -> Path:
        """A new version `name` holding `files` (file name → bytes), written whole or not at all; not
        promoted. ArtefactError when the name is invalid or taken."""
        final = self.path(name)
        ensure_private_dir(self.directory)
        if final.exists():
            raise ArtefactError(f"version {name} already exists in {self.directory}")
        staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=self.directory))  # mode 0700
        try:
            for file, data in files.items():
                _write_synced(staging / file, data)
            _fsync_dir(staging)
            os.rename(staging, final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        _fsync_dir(self.directory)
        return final

    def manifest(self, name: str) -> dict:
        """Version `name`'s manifest.json; ArtefactError ("manifest.json is missing", "… is unreadable")."""
        try:
            manifest = json.loads((self.path(name) / MANIFEST).read_text())
        except FileNotFoundError:
            raise ArtefactError(f"{MANIFEST} is missing") from None
        except (OSError, ValueError) as e:
            raise ArtefactError(f"{MANIFEST} is unreadable ({_one_line(e)})") from None
        if not isinstance(manifest, dict):
            raise ArtefactError(f"{MANIFEST} is not an object")
        return manifest

    def state(self) -> tuple[str | None, list[str]]:
        """(the current version or None, the versions promoted before it, oldest first), from current.json
        (or the gates' older `{"version": name}`); (None, []) when nothing was ever promoted. ArtefactError when current.json is
        unreadable or names an invalid version."""
        path = self.directory / CURRENT
        if not path.exists():
            return None, []
        try:
            state = json.loads(path.read_text())
            if "current" in state:  # null is "none promoted"
                current, history, off = state["current"], list(state.get("history", [])), True
            else:  # the gates' older format: it always names one
                current, history, off = state["version"], [], False
        except (OSError, ValueError, KeyError, AttributeError, TypeError) as e:
            raise ArtefactError(f"{path} is unreadable ({_one_line(e)})") from None
        named = history if off and current is None else [current, *history]
        for name in named:
            if not self._valid(name):
                raise ArtefactError(f"{path} names no valid version ({name!r})")
        return current, history

    def current(self) -> str | None:
        """The current version's name, None when none is (ArtefactError when current.json is bad)."""
        return self.state()[0]

    def promote(self, name: str) -> None:
        """Make version `name` current, atomically. The one it replaces goes on the history, and promoting
        the current version again changes nothing. ArtefactError when `name` is not a complete version here."""
        version = self.path(name)
        if not version.is_dir():
            raise ArtefactError(f"no version {name} in {self.directory}")
        missing = [f for f in self.files if not (version / f).is_file()]
        if missing:
            raise ArtefactError(f"{version} has no {' and '.join(missing)}")
        try:
            current, history = self.state()
        except ArtefactError:  # a broken pointer is replaced, never a reason to stop promoting
            current, history = None, []
        if current != name:
            self._point({"current": name, "history": history + ([current] if current else [])})

    def rollback(self) -> str | None:
        """Make the version promoted before the current one current again, and return its name; with none
        before it, turn the artefact off (current null) and return None. Nothing is deleted."""
        current, history = self.state()
        previous = history.pop() if history else None
        if current is not None or previous is not None:
            self._point({"current": previous, "history": history})
        return previous

    def prune(self, keep: int) -> list[str]:
        """Delete the oldest versions beyond `keep`, never the current one or the one promoted before it
        (what a rollback goes back to); the history forgets the deleted ones first, so no pointer names a
        missing version. Each goes by a rename to a hidden name, then removal: a crash midway leaves a hidden
        directory, never a half version. Returns the names deleted, oldest first."""
        try:
            current, history = self.state()
        except ArtefactError:
            return []  # whatever current.json meant to keep cannot be known: delete nothing
        kept = {current, history[-1] if history else None}
        names = self.names()
        doomed = [n for n in names if n not in kept][: max(0, len(names) - keep)]
        if not doomed:
            return []
        if current is not None or history:
            self._point({"current": current, "history": [n for n in history if n not in doomed]})
        for name in doomed:
            hidden = Path(tempfile.mkdtemp(prefix=f".{name}-deleted-", dir=self.directory))
            os.rename(self.directory / name, hidden / name)
            shutil.rmtree(hidden, ignore_errors=True)
        return doomed

    def _point(self, state: dict) -> None:
        _replace_file(self.directory / CURRENT, (json.dumps(state, indent=2) + "\n").encode())


class RunLock:
    """One learning run at a time per data directory, whatever the number of servers and commands: an
    exclusive `flock` on `<data dir>/learn.lock`, held for the run and dropped by the kernel when the
    process ends, however it ends (killed, or the machine asleep and restarted), so a stale lock cannot
    stay behind. `held` says whether this process got it."""

    def __init__(self, directory: Path):
        self.path = Path(directory) / "learn.lock"
        self.held = False
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        ensure_private_dir(self.path.parent)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self.held = True
        except BlockingIOError:
            os.close(self._fd)
            self._fd = None
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the lock
            self._fd = None
        self.held = False
