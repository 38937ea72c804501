"""The database under faults: writers in several processes, a killed writer, a corrupt, foreign or
unwritable file, a full disk. Real SQLite files, real processes (`Store`s in child processes, and real
`hindsight serve` processes without a model); root-only set-ups (an immutable file, a tmpfs) are skipped
with the reason elsewhere."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import inspect
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from lsprotocol import types

from hindsight.collector import migrations
from hindsight.collector.store import CORRUPT, FULL, Store, StoreError, move_aside, open_store
from conftest import ROOT, rows, serving

NO_MODEL = {"model": "/nonexistent/hindsight-test-model.gguf", "context": {"crossFile": False}}
PYTHON = [sys.executable, "-c"]

# A writer in its own process: opens the store at a given moment (so that several open a new database
# at once), then writes requests, an event for each and an outcome (a read-then-write), printing each
# request id and event id once its transaction has committed.
WRITER = """
import sys, time
from hindsight.collector.store import Store
path, tag, n, start = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
time.sleep(max(0.0, start - time.time()))
store = Store(path)
i = 0
while n < 0 or i < n:
    rid = store.insert_request({"id": f"{tag}-{i}", "prompt": f"def f_{tag}_{i}(): pass", "decision": "show"})
    eid = store.add_event("show", rid, {"id": rid})
    store.set_outcome(rid, "rejected", reason="dismissed")
    print(rid, eid, flush=True)
    i += 1
store.close()
"""


def writer(path: Path, tag: str, n: int, start: float) -> subprocess.Popen:
    return subprocess.Popen(
        [*PYTHON, WRITER, str(path), tag, str(n), str(start)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )


def integrity(path: Path) -> str:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()


def tell_messages(client, needle: str) -> list[types.ShowMessageParams]:
    return [m for m in client.messages if needle in m.message]


async def until(predicate, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


# -- concurrency and crashes --------------------------------------------------------------------------


def test_four_writer_processes_on_a_new_database_lose_nothing(tmp_path):
    path, n = tmp_path / "shared.db", 150
    start = time.time() + 1.5  # all four open the new database (and migrate it) at the same moment
    procs = [writer(path, f"w{k}", n, start) for k in range(4)]
    outs = [p.communicate(timeout=60)[0].split("\n") for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0]
    reported = {line.split()[0] for out in outs for line in out if line}
    assert len(reported) == 4 * n
    requests = rows(path, "SELECT id, outcome FROM requests")
    assert {r["id"] for r in requests} == reported
    assert {r["outcome"] for r in requests} == {"rejected"}
    events = rows(path, "SELECT request_id FROM events")
    assert sorted(e["request_id"] for e in events) == sorted(reported)
    applied = [r["name"] for r in rows(path, f"SELECT name FROM {migrations.MIGRATIONS_TABLE}")]
    assert sorted(applied) == sorted(name for name, _ in migrations.MIGRATIONS)  # each once
    assert integrity(path) == "ok"


async def test_four_servers_on_one_database_lose_nothing(tmp_path):
    path, n = tmp_path / "servers.db", 150
    options = {**NO_MODEL, "databasePath": str(path)}
    async with contextlib.AsyncExitStack() as stack:
        clients = {name: await stack.enter_async_context(serving(options)) for name in "abcd"}
        for i in range(n):  # interleaved: all four write at once
            for name, client in clients.items():
                client.protocol.notify("hindsight/didShow", {"id": f"{name}-{i}"})
        for client in clients.values():  # answered after every notification before it was handled
            await client.workspace_execute_command_async(types.ExecuteCommandParams(command="hindsight.status"))
    shown = [r["request_id"] for r in rows(path, "SELECT request_id FROM events WHERE kind = 'show'")]
    assert sorted(shown) == sorted(f"{name}-{i}" for name in "abcd" for i in range(n))
    assert integrity(path) == "ok"


@pytest.mark.parametrize("after", [1, 120, 400])
def test_sigkill_mid_session_loses_no_committed_write(tmp_path, after):
    path = tmp_path / "killed.db"
    proc = writer(path, "k", -1, 0.0)
    committed = []
    for line in proc.stdout:
        committed.append(line.split())
        if len(committed) >= after:
            break
    os.kill(proc.pid, signal.SIGKILL)  # while it is writing the next one
    proc.wait(timeout=10)
    proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    assert integrity(path) == "ok"
    request_ids = {r["id"] for r in rows(path, "SELECT id FROM requests WHERE outcome = 'rejected'")}
    event_ids = {str(r["id"]) for r in rows(path, "SELECT id FROM events")}
    assert {rid for rid, _ in committed} <= request_ids
    assert {eid for _, eid in committed} <= event_ids
    with Store(path) as store:  # and it opens, quick_check and all, and takes writes again
        store.add_event("after", None, {})


async def test_the_server_killed_mid_session_loses_no_committed_event(tmp_path):
    """A real server: what it had recorded when it answered a request is there after a SIGKILL that
    lands while it records more."""
    from pytest_lsp import ClientServerConfig

    path = tmp_path / "server-killed.db"
    client = await ClientServerConfig(server_command=[sys.executable, "-m", "hindsight", "serve"]).start()
    try:
        options = {**NO_MODEL, "databasePath": str(path)}
        params = types.InitializeParams(capabilities=types.ClientCapabilities(), initialization_options=options)
        await client.initialize_session(params)
        for i in range(200):
            client.protocol.notify("hindsight/didShow", {"id": f"before-{i}"})
        # Answered after every notification before it was handled (and recorded).
        await client.workspace_execute_command_async(types.ExecuteCommandParams(command="hindsight.status"))
        for i in range(200):
            client.protocol.notify("hindsight/didShow", {"id": f"during-{i}"})
        client._server.kill()  # SIGKILL, while it records these
        assert await client._server.wait() == -signal.SIGKILL
    finally:
        if client._server.returncode is None:
            client._server.kill()
        await client.stop()
    assert integrity(path) == "ok"
    shown = {r["request_id"] for r in rows(path, "SELECT request_id FROM events WHERE kind = 'show'")}
    assert {f"before-{i}" for i in range(200)} <= shown


def test_every_write_is_one_immediate_transaction():
    """Each Store method that writes does so in `_write()` (BEGIN IMMEDIATE) and is listed in
    Store.WRITES (what the server guards against a full disk); none calls a sqlite-utils helper that
    commits on its own."""
    writes = set()
    for name, fn in inspect.getmembers(Store, inspect.isfunction):
        source = inspect.getsource(fn)
        if "self._write()" in source:
            writes.add(name)
        for helper in (".insert(", ".upsert(", ".insert_all(", ".upsert_all(", ".delete_where(", ".update("):
            assert helper not in source, f"Store.{name} calls sqlite-utils' {helper}"
    assert writes == Store.WRITES


# -- corrupt, foreign, unwritable -------------------------------------------------------------------


def corrupt_copies(path: Path) -> list[Path]:
    return sorted(p for p in path.parent.iterdir() if p.name.startswith(f"{path.name}.corrupt-"))


def test_random_bytes_are_moved_aside_and_a_fresh_database_started(tmp_path):
    path = tmp_path / "h.db"
    junk = random.Random(0).randbytes(8192)
    path.write_bytes(junk)
    store, notice = open_store(path)
    assert store is not None
    (moved,) = corrupt_copies(path)
    assert moved.read_bytes() == junk
    assert notice == (
        f"database {path} is not a hindsight database (file is not a database); "
        f"moved it to {moved} and started a fresh one"
    )
    store.add_event("x", None, {})
    store.close()
    assert [r["kind"] for r in rows(path, "SELECT kind FROM events")] == ["x"]


def test_a_database_corrupt_inside_is_caught_by_quick_check_and_moved_aside(tmp_path):
    path = tmp_path / "h.db"
    with Store(path) as s:
        for i in range(400):
            s.insert_request({"id": f"r{i}", "prompt": "x" * 400})
    data = bytearray(path.read_bytes())
    middle = len(data) // 2 // 4096 * 4096
    data[middle : middle + 4096] = random.Random(2).randbytes(4096)  # one table page, not the schema
    path.write_bytes(bytes(data))
    conn = sqlite3.connect(path)  # opens and reads its schema fine: only a full check sees the damage
    assert conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] > 0
    conn.close()
    with pytest.raises(StoreError) as info:
        Store(path)
    assert info.value.kind == CORRUPT and str(info.value).startswith(f"database {path} is corrupt: ")
    store, notice = open_store(path)
    (moved,) = corrupt_copies(path)
    assert notice.endswith(f"moved it to {moved} and started a fresh one") and "\n" not in notice
    assert moved.read_bytes() == bytes(data)  # as it was: checked before anything was written
    assert store.get_request("r1") is None
    store.close()


def test_move_aside_takes_the_wal_and_shm_along(tmp_path):
    path = tmp_path / "h.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").write_text(suffix or "main")
    moved = move_aside(path)
    assert moved.name.startswith("h.db.corrupt-") and moved.name.endswith("Z")
    assert [Path(f"{moved}{s}").read_text() for s in ("", "-wal", "-shm")] == ["main", "-wal", "-shm"]
    assert not any(Path(f"{path}{s}").exists() for s in ("", "-wal", "-shm"))
    path.write_text("again")  # a second one in the same second gets a name of its own
    assert move_aside(path) != moved


def test_another_applications_database_is_left_alone(tmp_path):
    path = tmp_path / "notes.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (body TEXT)")
    conn.execute("INSERT INTO notes VALUES ('mine')")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    store, notice = open_store(path)
    assert store is None
    assert notice.startswith(f"not recording: database {path} is not a hindsight database (it has tables notes")
    assert path.read_bytes() == before and not corrupt_copies(path)


@pytest.fixture
def default_db(tmp_path, monkeypatch):
    """Where the store falls back to: `$HINDSIGHT_DB`, here a file of this test's own."""
    path = tmp_path / "default" / "hindsight.db"
    monkeypatch.setenv("HINDSIGHT_DB", str(path))
    return path


def assert_fell_back(path: Path, default: Path, why: str):
    store, notice = open_store(path)
    assert store is not None and store.path == default, notice
    assert notice.startswith(f"cannot open database {path}: {why}") or why in notice
    assert notice.endswith(f"; recording to {default} instead") and "\n" not in notice
    store.add_event("fallback", None, {})
    store.close()
    assert [r["kind"] for r in rows(default, "SELECT kind FROM events")] == ["fallback"]


def test_a_directory_in_the_way_falls_back_to_the_default_database(tmp_path, default_db):
    path = tmp_path / "h.db"
    path.mkdir()
    (path / "keep").write_text("someone's")
    assert_fell_back(path, default_db, "Is a directory")
    assert (path / "keep").read_text() == "someone's"


def test_a_path_that_cannot_be_created_falls_back_to_the_default_database(default_db):
    assert_fell_back(Path("/proc/hindsight-test/h.db"), default_db, "No such file or directory")


def test_when_the_default_database_is_the_unwritable_one_nothing_is_recorded(tmp_path, monkeypatch):
    path = tmp_path / "h.db"
    path.mkdir()
    monkeypatch.setenv("HINDSIGHT_DB", str(path))
    store, notice = open_store(None)
    assert store is None
    assert notice == f"not recording: cannot open database {path}: Is a directory"


def chattr(flag: str, path: Path) -> None:
    done = subprocess.run(["chattr", flag, str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"chattr {flag} is not possible here (needs root and ext4/xfs): {done.stderr.strip()}")


def test_an_immutable_database_is_left_alone_and_the_default_used(tmp_path, default_db):
    path = tmp_path / "h.db"
    with Store(path) as s:
        s.add_event("before", None, {})
    before = path.read_bytes()
    chattr("+i", path)  # even root cannot write it
    try:
        assert_fell_back(path, default_db, "Operation not permitted")
        assert path.read_bytes() == before and not corrupt_copies(path)
    finally:
        chattr("-i", path)


def test_a_database_in_a_directory_that_cannot_be_written_is_left_alone(tmp_path, default_db):
    """The file itself is writable, but its WAL cannot be created beside it (a read-only directory)."""
    folder = tmp_path / "frozen"
    folder.mkdir()
    path = folder / "h.db"
    with Store(path) as s:
        s.add_event("before", None, {})
    before = path.read_bytes()
    chattr("+i", folder)
    try:
        assert_fell_back(path, default_db, "unable to open database file")
    finally:
        chattr("-i", folder)
    assert path.read_bytes() == before and sorted(p.name for p in folder.iterdir()) == ["h.db"]


def test_a_corrupt_database_that_cannot_be_moved_falls_back_to_the_default(tmp_path, default_db):
    folder = tmp_path / "frozen"
    folder.mkdir()
    path = folder / "h.db"
    path.write_bytes(b"not sqlite at all " * 100)
    chattr("+i", folder)  # no rename, no new file in it
    try:
        store, notice = open_store(path)
        assert store is not None and store.path == default_db
        assert "cannot be moved aside (Operation not permitted)" in notice
        assert notice.endswith(f"recording to {default_db} instead")
        store.close()
    finally:
        chattr("-i", folder)
    assert path.read_bytes() == b"not sqlite at all " * 100


@pytest.fixture
def tmpfs(tmp_path):
    """A small tmpfs of our own (root only): a file system that can really fill up or be read-only."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    command = ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


def test_a_read_only_file_system_falls_back_to_the_default_database(tmpfs, default_db):
    path = tmpfs / "h.db"
    with Store(path) as s:
        s.add_event("before", None, {})
    before = path.read_bytes()
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    assert_fell_back(path, default_db, "Read-only file system")
    assert path.read_bytes() == before and not corrupt_copies(path)


# -- a full disk --------------------------------------------------------------------------------------


def test_a_full_database_raises_full_and_takes_writes_again_when_there_is_room(tmp_path):
    """SQLite's own limit (`max_page_count`) raises the same SQLITE_FULL a full disk does: runs anywhere."""
    with Store(tmp_path / "h.db") as store:
        pages = store.db.execute("PRAGMA page_count").fetchone()[0]
        store.db.execute(f"PRAGMA max_page_count = {pages}")
        with pytest.raises(StoreError) as info:
            for i in range(200):
                store.insert_request({"id": f"r{i}", "prompt": "x" * 2000})
        assert info.value.kind == FULL and "disk full" in str(info.value)
        failed_at = i
        store.db.execute(f"PRAGMA max_page_count = {pages * 100}")
        store.insert_request({"id": "after", "prompt": "x"})
        assert store.get_request("after") is not None and store.get_request(f"r{failed_at}") is None
    assert integrity(tmp_path / "h.db") == "ok"


def fill(folder: Path) -> Path:
    """Write a file until the file system is full."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as e:
            assert e.errno == errno.ENOSPC
    return filler


async def test_a_full_disk_is_reported_once_and_recording_resumes(tmpfs):
    path = tmpfs / "h.db"
    async with serving({**NO_MODEL, "databasePath": str(path)}) as client:
        client.protocol.notify("hindsight/didShow", {"id": "before"})
        await client.workspace_execute_command_async(types.ExecuteCommandParams(command="hindsight.status"))
        filler = fill(tmpfs)
        for i in range(20):
            client.protocol.notify("hindsight/didShow", {"id": f"full-{i}"})
        status = await client.workspace_execute_command_async(types.ExecuteCommandParams(command="hindsight.status"))
        assert status["database"] == str(path)  # still serving
        await until(lambda: tell_messages(client, "disk full"))
        filler.unlink()
        client.protocol.notify("hindsight/didShow", {"id": "after"})
        await until(lambda: tell_messages(client, "recording again"))
        full = tell_messages(client, "disk full")
        assert len(full) == 1 and full[0].type == types.MessageType.Error
        assert full[0].message == f"hindsight: disk full: not recording until there is space ({path})"
    shown = {r["request_id"] for r in rows(path, "SELECT request_id FROM events")}
    assert "before" in shown and "after" in shown and not any(s.startswith("full-") for s in shown)
    assert integrity(path) == "ok"


# -- the server opening a bad database -----------------------------------------------------------------


async def test_the_server_moves_a_corrupt_database_aside_and_records_in_a_fresh_one(tmp_path):
    path = tmp_path / "corrupt.db"
    junk = b"definitely not an SQLite database " * 200
    path.write_bytes(junk)
    async with serving({**NO_MODEL, "databasePath": str(path)}) as client:
        client.protocol.notify("hindsight/didShow", {"id": "fresh"})
        status = await client.workspace_execute_command_async(types.ExecuteCommandParams(command="hindsight.status"))
    (moved,) = corrupt_copies(path)
    told = tell_messages(client, "corrupt.db")
    assert len(told) == 1 and told[0].type == types.MessageType.Warning and "\n" not in told[0].message
    assert f"moved it to {moved} and started a fresh one" in told[0].message
    assert moved.read_bytes() == junk
    assert status["database"] == str(path)
    assert [r["request_id"] for r in rows(path, "SELECT request_id FROM events")] == ["fresh"]


async def test_the_server_records_to_the_default_database_when_its_own_is_unwritable(tmp_path):
    path, default = tmp_path / "in-the-way.db", tmp_path / "default.db"
    path.mkdir()
    env = {**os.environ, "HINDSIGHT_DB": str(default)}
    async with serving({**NO_MODEL, "databasePath": str(path)}, env=env) as client:
        client.protocol.notify("hindsight/didShow", {"id": "elsewhere"})
        status = await client.workspace_execute_command_async(types.ExecuteCommandParams(command="hindsight.status"))
    told = tell_messages(client, "in-the-way.db")
    assert len(told) == 1 and told[0].message.endswith(f"recording to {default} instead")
    assert status["database"] == str(default)
    assert [r["request_id"] for r in rows(default, "SELECT request_id FROM events")] == ["elsewhere"]
