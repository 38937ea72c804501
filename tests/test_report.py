"""`hindsight report`: what the user gained, day by day and per model and gate, from a log written by the
real Store; and the refresh's replay guard reads only the accepted suggestions the user kept."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

from hindsight.collector import report
from hindsight.collector.reader import accepted_suggestions
from hindsight.collector.store import Store

DAY1 = dt.datetime(2026, 12, 1, 10).timestamp()
DAY2 = dt.datetime(2026, 12, 2, 10).timestamp()


def make_log(path: Path) -> dict[str, str]:
    """Day 1, base model, no gate: accepted and kept (10 chars), accepted then edited away (12), partly
    taken (4 of 9), rejected. Day 2, with an adapter and a gate: accepted and kept (6), an empty answer,
    and a withheld one."""
    ids = {}
    with Store(path) as store:
        def row(name, at, completion, model="llama.cpp:base.gguf", gate=None, decision="show", latency=50.0):
            ids[name] = store.insert_request({
                "created_at": at, "uri": "file:///p/a.py", "language": "python", "decision": decision,
                "source": "model", "completion": completion, "prompt": "x = ", "model": model,
                "gate_version": gate, "latency_ms": latency})
            return ids[name]

        store.set_outcome(row("kept", DAY1, "value + 10"), "accepted")
        store.record_persistence(ids["kept"], "120s", 0.9)
        store.set_outcome(row("undone", DAY1 + 1, "other_thing1"), "accepted")
        store.record_persistence(ids["undone"], "30s", 0.9)
        store.record_persistence(ids["undone"], "120s", 0.1)  # edited away by two minutes
        store.set_outcome(row("partial", DAY1 + 2, "abcd efgh"), "partial", accepted_length=4)
        store.set_outcome(row("rejected", DAY1 + 3, "nope"), "rejected", reason="typed_over")
        later = {"model": "llama.cpp:base.gguf+adapter-7", "gate": "gate-2"}
        store.set_outcome(row("kept2", DAY2, "abcdef", latency=70.0, **later), "accepted")
        store.record_persistence(ids["kept2"], "120s", 1.0)
        row("empty", DAY2 + 1, "", decision="empty", latency=30.0, **later)
        row("withheld", DAY2 + 2, "zzz", decision="withheld_stage2", latency=90.0, **later)
    return ids


def test_the_report_counts_what_was_kept_day_by_day_and_per_version(tmp_path):
    db = tmp_path / "hindsight.db"
    make_log(db)
    days = report.report(db, "day")
    assert [d["day"] for d in days] == ["2026-12-01", "2026-12-02"]
    first, second = days
    assert (first["shown"], first["accepted"], first["partial"], first["rejected_shown"]) == (4, 2, 1, 1)
    assert first["acceptance"] == 0.5 and first["kept_chars"] == 10 + 4  # the undone one is not kept
    assert (second["shown"], second["acceptance"], second["kept_chars"]) == (1, 1.0, 6)
    assert second["p50_ms"] == 70.0  # every model call's latency: shown, empty and withheld
    versions = report.report(db, "version")
    assert [(v["model"], v["gate"]) for v in versions] == [("llama.cpp:base.gguf", "no gate"),
                                                           ("llama.cpp:base.gguf+adapter-7", "gate-2")]
    assert "2026-12-01" in report.table(days) and report.table([]) == "nothing logged yet"


def test_the_command_prints_both_tables_json_and_a_picture(tmp_path):
    db = tmp_path / "hindsight.db"
    make_log(db)
    png = tmp_path / "report.png"
    done = subprocess.run([sys.executable, "-m", "hindsight", "report", "--db", str(db), "--plot", str(png), "--json"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert len(result["days"]) == 2 and len(result["versions"]) == 2
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = subprocess.run([sys.executable, "-m", "hindsight", "report", "--db", str(db)], capture_output=True,
                          text=True, timeout=120)
    assert "By day" in text.stdout and "adapter-7" in text.stdout and "gate-2" in text.stdout
    missing = subprocess.run([sys.executable, "-m", "hindsight", "report", "--db", str(tmp_path / "none.db")],
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "no database" in missing.stderr


def test_the_replay_guard_reads_only_accepted_suggestions_the_user_kept(tmp_path):
    db = tmp_path / "hindsight.db"
    ids = make_log(db)
    assert {r["id"] for r in accepted_suggestions(db)} == {ids["kept"], ids["kept2"]}
