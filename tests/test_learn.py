"""`hindsight learn`, one run of the learning loop, on a synthetic log written by the real Store
(tests/test_gate_train.py's), with a data directory of its own: it trains the gate when enough is new,
declines what is not, records every run, and holds one lock per data directory."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hindsight.artefacts import RunLock
from hindsight.collector.store import Store
from hindsight.gating.gate import versions
from hindsight.loop import job
from test_gate_train import make_db


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A data directory of its own, with a log that has 8 sessions of judged suggestions."""
    monkeypatch.setenv("HINDSIGHT_DATA_DIR", str(tmp_path / "data"))
    make_db(tmp_path / "hindsight.db")
    return tmp_path


def test_a_run_trains_the_gate_on_new_signal_declines_the_rest_and_records_itself(home):
    db = home / "hindsight.db"
    first = job.run(db, min_outcomes=100, min_pairs=10**6)
    assert first["status"] == "done", first
    assert first["gate"]["promoted"] and versions(home / "data" / "gates").current() == first["gate"]["version"]
    assert first["refresh"]["skipped"] and "fewer than 1000000" in first["refresh"]["reason"]
    assert first["read"]["judged_new"] >= 100 and first["read"]["since"] is None
    assert first["promoted"] == [{"step": "gate", "version": first["gate"]["version"]}]
    assert first["duration_s"] > 0 and first["peak_rss_mb"] > 10

    # Nothing judged since: nothing to do, and the gate stays as it was.
    second = job.run(db, min_outcomes=100, min_pairs=10**6)
    assert second["status"] == "skipped" and second["read"]["judged_new"] == 0, second
    assert "0 suggestions judged since the gate was last trained" in second["gate"]["reason"]
    assert versions(home / "data" / "gates").current() == first["gate"]["version"]

    with Store(db) as store:
        runs = store.learning_runs()
    assert [r["status"] for r in runs] == ["done", "skipped"]
    assert runs[0]["gate"]["version"] == first["gate"]["version"] and runs[1]["read"]["since"] == runs[0]["started_at"]


def test_one_run_at_a_time_per_data_directory(home):
    with RunLock(home / "data") as lock:
        assert lock.held
        busy = job.run(home / "hindsight.db", min_outcomes=0)
        with RunLock(home / "data") as other:
            assert not other.held
    assert busy["status"] == "busy" and "learn.lock" in busy["reason"]
    with Store(home / "hindsight.db") as store:
        assert store.learning_runs() == []  # a run that did not start is not one
    with RunLock(home / "data") as lock:
        assert lock.held  # released when its holder ended


def test_a_killed_run_leaves_the_served_gate_as_it_was_and_the_lock_free(home):
    """The command in a child process, killed while it trains: the promoted gate is the one before, or
    the new one whole; the next run gets the lock."""
    db = home / "hindsight.db"
    before = job.run(db, min_outcomes=0, min_pairs=10**6, force=True)["gate"]["version"]
    env = {**os.environ, "HINDSIGHT_DATA_DIR": str(home / "data")}
    child = subprocess.Popen([sys.executable, "-m", "hindsight", "learn", "--db", str(db), "--force", "--no-refresh"],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(3)  # the command's imports, then the training
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    gates = versions(home / "data" / "gates")
    assert gates.current() == before or (home / "data" / "gates" / gates.current() / "stage2.onnx").is_file()
    after = job.run(db, min_outcomes=0, min_pairs=10**6)
    assert after["status"] in ("done", "skipped"), after


def test_the_command_prints_the_record(home):
    env = {**os.environ, "HINDSIGHT_DATA_DIR": str(home / "data")}
    done = subprocess.run([sys.executable, "-m", "hindsight", "learn", "--db", str(home / "hindsight.db"),
                           "--min-outcomes", "50", "--no-refresh", "--json"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert record["status"] == "done" and record["refresh"] == {"skipped": True, "reason": "not asked for"}
    assert record["gate"]["promoted"] and record["id"] == 1


def test_schedule_writes_a_valid_timer_and_removes_it(tmp_path):
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "config"), "HINDSIGHT_DB": str(tmp_path / "h.db")}
    hindsight = [sys.executable, "-m", "hindsight", "schedule"]
    done = subprocess.run([*hindsight, "install", "--at", "04:30", "--json"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    units = tmp_path / "config" / "systemd" / "user"
    service, timer = (units / "hindsight-learn.service").read_text(), (units / "hindsight-learn.timer").read_text()
    assert "-m hindsight learn" in service and f"HINDSIGHT_DB={tmp_path / 'h.db'}" in service
    assert "OnCalendar=*-*-* 04:30:00" in timer and "Persistent=true" in timer
    if shutil.which("systemd-analyze"):  # systemd's own check of the files
        verified = subprocess.run(["systemd-analyze", "verify", str(units / "hindsight-learn.timer"),
                                   str(units / "hindsight-learn.service")], capture_output=True, text=True, timeout=60)
        assert verified.returncode == 0, verified.stderr
    refused = subprocess.run([*hindsight, "install", "--at", "25:00"], env=env, capture_output=True, text=True,
                             timeout=60)
    assert refused.returncode == 2 and "HH:MM" in refused.stderr
    done = subprocess.run([*hindsight, "remove", "--json"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and len(json.loads(done.stdout)["removed"]) == 2
    assert not any(units.iterdir())


def test_no_database_is_refused_and_none_is_created(tmp_path, monkeypatch):
    monkeypatch.setenv("HINDSIGHT_DATA_DIR", str(tmp_path / "data"))
    done = subprocess.run([sys.executable, "-m", "hindsight", "learn", "--db", str(tmp_path / "none.db")],
                          capture_output=True, text=True, timeout=120, env={**os.environ})
    assert done.returncode == 2 and "no database at" in done.stderr, done.stderr
    assert not (tmp_path / "none.db").exists()


# -- the server runs the loop by itself ------------------------------------------------------------------

@pytest.fixture(scope="module")
def model_path() -> str:
    from hindsight.engine.model import resolve_model

    return str(resolve_model(None))


AUTO = {"auto": True, "idleMinutes": 0.02, "minOutcomes": 100, "minPairs": 10**6, "threads": 1}
TEXT = "def area(width, height):\n    return "


async def _serve(home: Path, model_path: str, db: Path, progress: bool = False, **learning):
    from hindsight.simulate.session import Session
    from conftest import WORKSPACE

    options = {"model": model_path, "databasePath": str(db), "context": {"crossFile": False},
               "learning": {**AUTO, **learning}}
    session = await Session.start(WORKSPACE, options=options, env={"HINDSIGHT_DATA_DIR": str(home / "data")},
                                  progress=progress)
    return session


async def _status(session) -> dict:
    from lsprotocol import types

    return await session.client.workspace_execute_command_async(
        types.ExecuteCommandParams(command="hindsight.status", arguments=[]))


async def _until(check, timeout: float):
    import asyncio

    deadline = time.monotonic() + timeout
    while not (value := await check()):
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.25)
    return value


@pytest.mark.slow
async def test_an_idle_server_runs_the_loop_by_itself_and_serves_what_it_promoted_without_a_restart(home, model_path):
    import asyncio

    from conftest import WORKSPACE

    db = home / "hindsight.db"
    session = await _serve(home, model_path, db, progress=True)
    try:
        doc = await session.open(WORKSPACE / "shapes" / "_learn.py", TEXT)
        before = await _status(session)
        assert before["gate"] is None and before["nextLearning"]["auto"]
        answers = []

        async def typing_on() -> None:  # requests all along: none is dropped while the run works and reloads
            from lsprotocol import types

            while True:
                try:  # a list (empty when the new gate withholds the suggestion); an error is a dropped request
                    items, _ = await session.ask(doc, len(TEXT), types.InlineCompletionTriggerKind.Automatic)
                    answers.append(items)
                except Exception as exc:
                    answers.append(exc)
                await asyncio.sleep(1.5)  # idle in between: the idle time is 1.2 s

        typist = asyncio.create_task(typing_on())
        status = await _until(lambda: _ended(session), timeout=120)
        typist.cancel()
        gate = versions(home / "data" / "gates").current()
        assert gate is not None and status["gate"] == gate, status  # reloaded: serving the promoted gate
        assert status["lastLearning"]["trigger"] == "server" and status["lastLearning"]["status"] == "done"
        assert any(m.startswith("hindsight learned: gate") and "promoted" in m for m in session.messages), session.messages
        kinds = [getattr(v, "kind", None) or v.get("kind") for v in session.progress]
        assert kinds[0] == "begin" and kinds[-1] == "end" and "report" in kinds, kinds
        assert answers and all(isinstance(a, list) for a in answers), answers  # every request answered
        assert answers[0], "before the gate, the model's suggestion is shown"
    finally:
        await session.close()
    with Store(db) as store:
        assert [r["trigger"] for r in store.learning_runs()] == ["server"]


@pytest.mark.slow
async def test_a_run_that_holds_more_memory_than_allowed_is_stopped_and_changes_nothing(home, model_path):
    db = home / "hindsight.db"
    session = await _serve(home, model_path, db, memoryMb=50)  # the run's Python alone holds more
    try:
        await _until(lambda: _told(session, "the learning run was stopped"), timeout=120)
        status = await _status(session)
        assert not status["nextLearning"]["running"] and status["gate"] is None
    finally:
        await session.close()
    assert versions(home / "data" / "gates").current() is None
    with RunLock(home / "data") as lock:
        assert lock.held
    with Store(db) as store:
        assert store.learning_runs() == []  # killed before it could record itself


async def _told(session, text: str) -> bool:
    await _status(session)  # a round trip: the messages sent before it have arrived
    return any(text in m and "more than learning.memoryMb (50)" in m for m in session.messages)


async def _ended(session) -> dict | None:
    status = await _status(session)
    run = status.get("lastLearning")
    # The run recorded, its gate served, and the server has seen it end (the record is written just before).
    ended = run and run["trigger"] == "server" and status["gate"] and not status["nextLearning"]["running"]
    return status if ended else None


@pytest.mark.slow
async def test_two_idle_servers_on_one_data_directory_start_one_run(home, model_path):
    import asyncio

    db = home / "hindsight.db"
    sessions = await asyncio.gather(_serve(home, model_path, db), _serve(home, model_path, db))
    try:
        await _until(lambda: _both_serve_the_gate(sessions, home), timeout=120)
        await asyncio.sleep(3)  # time for a second run, were one to start
    finally:
        await asyncio.gather(*(s.close() for s in sessions))
    with Store(db) as store:
        runs = store.learning_runs()
    assert len(runs) == 1 and runs[0]["trigger"] == "server", runs


async def _both_serve_the_gate(sessions, home) -> bool:
    """Both serve the promoted gate and neither has a run under way (the one that started it has seen it end)."""
    gate = versions(home / "data" / "gates").current()
    statuses = [await _status(s) for s in sessions]
    return gate is not None and all(st["gate"] == gate and not st["nextLearning"]["running"] for st in statuses)


# -- a run killed at each stage ------------------------------------------------------------------------

STAGES = ["training the acceptance gate", "refreshing the adapter", "pairs to train on",
          "measuring the model before and after"]


def add_pairs(db: Path, n_files: int = 12) -> None:
    """Suggestions turned down where the user wrote something else: the refresh's pairs, in 12 files."""
    from test_refresh import PAIRS

    with Store(db) as store:
        for i in range(n_files):
            pair = PAIRS[i % len(PAIRS)]
            rid = store.insert_request({"created_at": 1_800_000_000.0 + i, "uri": f"file:///work/project/pairs_{i}.py",
                                        "language": "python", "decision": "show", "source": "model",
                                        "prompt": pair["prompt"], "prefix": pair["prompt"], "suffix": "",
                                        "completion": pair["rejected"], "mode": "single"})
            store.set_outcome(rid, "rejected", reason="typed_over")
            store.record_actual_text(rid, pair["chosen"])


@pytest.mark.slow
@pytest.mark.parametrize("stage", STAGES)
async def test_a_run_killed_at_each_stage_leaves_everything_serving_as_before(home, model_path, stage):
    db = home / "hindsight.db"
    add_pairs(db)
    gate = job.run(db, min_outcomes=0, min_pairs=10**6, force=True, refresh=False)["gate"]["version"]
    env = {**os.environ, "HINDSIGHT_DATA_DIR": str(home / "data")}
    child = subprocess.Popen([sys.executable, "-m", "hindsight", "learn", "--db", str(db), "--force"],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seen = []
    for line in child.stderr:
        seen.append(line)
        if stage in line:
            child.send_signal(signal.SIGKILL)
            break
    child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL, "".join(seen)  # killed at that stage, not ended before it
    gates = versions(home / "data" / "gates")
    assert gates.current() == gate or (home / "data" / "gates" / gates.current() / "stage2.onnx").is_file()
    from hindsight.engine.adapters import adapters_dir, current_name
    assert current_name(adapters_dir()) is None  # nothing promoted half-way
    with RunLock(home / "data") as lock:
        assert lock.held  # the kernel dropped the killed run's lock
    session = await _serve(home, model_path, db)
    try:
        status = await _status(session)
        assert status["gate"] == gates.current() and status["adapter"] is None
        await session.complete(await session.open(_workspace() / "shapes" / "_killed.py", TEXT), len(TEXT))
        assert status["modelError"] is None
    finally:
        await session.close()


def _workspace() -> Path:
    from conftest import WORKSPACE

    return WORKSPACE


def test_the_end_of_a_run_is_told_in_one_line():
    from hindsight.pipeline.learning import summary

    run = {"status": "done",
           "gate": {"version": "gate-2", "promoted": True, "auc_stage2": 0.7004, "current_auc_stage2": 0.65},
           "refresh": {"version": "adapter-7", "promoted": False, "reason": "held-out acceptance did not rise",
                       "acceptance_before": 0.25, "acceptance_after": 0.25, "accepted_chars_before": 73,
                       "accepted_chars_after": 70}}
    assert summary(run) == ("gate gate-2 promoted (held-out AUC 0.65 → 0.7); adapter not promoted: held-out "
                            "acceptance did not rise (acceptance on your held-out files 0.25 → 0.25, characters "
                            "kept 73 → 70)")
    run["refresh"].update(promoted=True, acceptance_after=0.29)
    run["gate"] = {"skipped": True, "reason": "12 suggestions judged since the gate was last trained, fewer than 200"}
    assert summary(run) == ("acceptance on your held-out files 0.25 → 0.29, characters kept 73 → 70, adapter "
                            "adapter-7 promoted")
    run["refresh"] = {"skipped": True, "reason": "3 dissatisfied suggestions since the last refresh, fewer than 50"}
    assert summary({**run, "status": "skipped"}).startswith("nothing to learn yet (gate: 12 suggestions judged")
    assert summary({"status": "failed", "reason": "disk full"}) == "the learning run failed: disk full"
