"""The versioned-artefact store (hindsight.artefacts): versions written whole, promoted atomically, rolled
back; the gates' older current.json read as it is; a crash mid-write leaves the current version intact."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from hindsight.artefacts import CURRENT, ArtefactError, Versions

FILES = {"model.bin": b"weights", "manifest.json": b'{"format": 1}'}


def test_versions_are_written_whole_and_listed_by_name(tmp_path):
    store = Versions(tmp_path / "things", files=("model.bin", "manifest.json"))
    assert store.names() == [] and store.current() is None
    second = store.write("v-0002", FILES)
    first = store.write("v-0001", FILES)
    assert store.names() == ["v-0001", "v-0002"]
    assert (first / "model.bin").read_bytes() == b"weights" and store.manifest("v-0002") == {"format": 1}
    assert first.stat().st_mode & 0o777 == 0o700
    with pytest.raises(ArtefactError, match="already exists"):
        store.write("v-0001", {"other.bin": b"x"})
    for bad in ("../escape", ".hidden", "", "a/b"):
        with pytest.raises(ArtefactError, match="not a valid version name"):
            store.write(bad, FILES)
    assert (first / "model.bin").read_bytes() == b"weights"  # nothing overwritten
    assert not list(store.directory.glob(".*"))  # no staging directory left behind


def test_promote_refuses_an_incomplete_version_and_replaces_a_broken_pointer(tmp_path):
    store = Versions(tmp_path, files=("model.bin",))
    store.write("v1", FILES)
    store.write("v2", FILES)
    store.write("v3", {"manifest.json": b"{}"})
    store.promote("v1")
    store.promote("v2")
    assert json.loads((tmp_path / CURRENT).read_text()) == {"current": "v2", "history": ["v1"]}
    with pytest.raises(ArtefactError, match="has no model.bin"):
        store.promote("v3")
    with pytest.raises(ArtefactError, match="no version v9"):
        store.promote("v9")
    assert store.current() == "v2"
    (tmp_path / CURRENT).write_text("{not json")
    with pytest.raises(ArtefactError, match="unreadable"):
        store.current()
    store.promote("v1")  # a broken pointer is replaced, not a reason to stop
    assert store.state() == ("v1", [])


def test_promote_and_rollback(tmp_path):
    store = Versions(tmp_path, name_re=re.compile(r"^a-\d$"))
    for name in ("a-1", "a-2", "a-3"):
        store.write(name, FILES)
    store.promote("a-1")
    store.promote("a-2")
    store.promote("a-2")  # already current: nothing changes
    store.promote("a-3")
    assert json.loads((tmp_path / CURRENT).read_text()) == {"current": "a-3", "history": ["a-1", "a-2"]}
    assert store.state() == ("a-3", ["a-1", "a-2"])
    assert store.rollback() == "a-2" and store.rollback() == "a-1"
    assert store.rollback() is None and store.current() is None  # nothing before the first: off
    assert json.loads((tmp_path / CURRENT).read_text()) == {"current": None, "history": []}
    assert store.rollback() is None
    assert store.names() == ["a-1", "a-2", "a-3"]  # nothing deleted


def test_the_gates_older_format_is_read_and_bad_names_refused(tmp_path):
    store = Versions(tmp_path)
    store.write("gate-2", FILES)
    (tmp_path / CURRENT).write_text('{"version": "gate-1"}')
    assert store.state() == ("gate-1", [])
    store.promote("gate-2")  # the next promotion writes the one format, and keeps what was current
    assert json.loads((tmp_path / CURRENT).read_text()) == {"current": "gate-2", "history": ["gate-1"]}
    (tmp_path / CURRENT).write_text('{"current": "adapter-2", "history": ["adapter-1"]}')
    assert store.state() == ("adapter-2", ["adapter-1"])
    for text in ('{"version": "../../etc"}', '{"version": null}', '{"current": "x", "history": [null]}'):
        (tmp_path / CURRENT).write_text(text)
        with pytest.raises(ArtefactError, match="names no valid version"):
            store.current()


def test_a_crash_mid_write_leaves_the_current_version_intact(tmp_path):
    store = Versions(tmp_path / "things")
    store.write("v1", FILES)
    store.promote("v1")
    # A process killed after the first file of a version, before the rename: the hidden staging directory
    # stays, and nothing else changes.
    crash = (
        "import os, sys\n"
        "import hindsight.artefacts as a\n"
        "a._fsync_dir = lambda path: os._exit(9)\n"
        "a.Versions(sys.argv[1]).write('v2', {'model.bin': b'half'})\n"
    )
    done = subprocess.run([sys.executable, "-c", crash, str(store.directory)], timeout=60)
    assert done.returncode == 9
    staging = [p for p in store.directory.iterdir() if p.name.startswith(".v2-")]
    assert len(staging) == 1 and (staging[0] / "model.bin").read_bytes() == b"half"
    assert store.names() == ["v1"] and store.current() == "v1"
    assert store.manifest("v1") == {"format": 1}
    # The name is still free: the version is written again, whole, and promoted.
    store.write("v2", FILES)
    store.promote("v2")
    assert store.state() == ("v2", ["v1"])


def test_prune_deletes_the_oldest_beyond_the_bound_but_never_the_current_one_or_the_one_before(tmp_path):
    store = Versions(tmp_path)
    names = [f"v{i}" for i in range(1, 9)]
    for name in names:
        store.write(name, {"manifest.json": b"{}"})
    for name in ("v1", "v2", "v6"):  # v6 current, v2 before it, v1 before that
        store.promote(name)
    assert store.prune(5) == ["v1", "v3", "v4"]
    assert store.names() == ["v2", "v5", "v6", "v7", "v8"]
    assert store.state() == ("v6", ["v2"])  # the history forgot the deleted v1
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no hidden leftovers
    assert store.prune(5) == []
    assert store.rollback() == "v2" and store.rollback() is None
    assert store.prune(1) == ["v2", "v5", "v6", "v7"]  # nothing current now: only the bound counts
    assert store.names() == ["v8"]
