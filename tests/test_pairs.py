"""`hindsight export-pairs`: DSAT preference pairs from what the real server recorded.

The slow tests drive the real server through the simulated developer and mine its database (and sample
with the real model); the others build databases with the real Store and check each filter and the CLI.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from hindsight.refresh.pairs import FIELDS, PairsError, llama_sampler, mine, parse_since, repo_of, written_chosen
from hindsight.collector.store import Store
from conftest import WORKSPACE, rows
from hindsight.syntax import parse

DAY = 86400.0
NOW = 1_790_000_000.0  # 2026-09-21
PREFIX = "import math\n\n\ndef area(a, b):\n    "
SUFFIX = "\n\n\ndef perimeter(a, b):\n    return 2 * (a + b)\n"
PROMPT = "# shapes/rect.py\n" + PREFIX
_clock = itertools.count()  # one second apart, in the order they are made: the order they are mined in


def hindsight(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hindsight", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def suggestion(store: Store, completion: str, *, prompt: str = PROMPT, at: float | None = None, **fields) -> str:
    """A shown model suggestion, as the server inserts one."""
    return store.insert_request(
        {
            "created_at": NOW + next(_clock) if at is None else at,
            "session_id": "s1",
            "uri": "file:///work/proj/shapes/rect.py",
            "language": "python",
            "line": 4,
            "character": 4,
            "decision": "show",
            "source": "model",
            "mode": "single",
            "prompt": prompt,
            "prefix": PREFIX,
            "suffix": SUFFIX,
            "completion": completion,
            **fields,
        }
    )


def rejected(store: Store, completion: str, written: str | None, reason: str = "typed_over", **fields) -> str:
    """A suggestion the user turned down and, when `written` is given, what they wrote there instead."""
    id = suggestion(store, completion, **fields)
    store.set_outcome(id, "rejected", reason=reason)
    if written is not None:
        store.record_actual_text(id, written)
    return id


def accepted(store: Store, completion: str, **persistence: float) -> str:
    """A suggestion the user accepted; p30s / p120s: how much of it was still there then."""
    id = suggestion(store, completion)
    store.set_outcome(id, "accepted", reason="command")
    for slot, value in persistence.items():
        store.record_persistence(id, slot.removeprefix("p"), value)
    return id


@pytest.fixture
def logged(tmp_path: Path):
    """A database with one suggestion of every kind the miner must tell apart; name → suggestion id."""
    db = tmp_path / "logged.db"
    ids = {}
    global _clock
    _clock = itertools.count()
    with Store(db) as store:
        ids["written"] = rejected(store, "return a - b", "return a * b")
        ids["again"] = rejected(store, "return a - b", "return a * b")  # the same pair a second time
        ids["dismissed"] = rejected(store, "return b", "return a * b  # area", reason="dismissed")
        ids["spaces"] = rejected(store, "return a*b", "return   a*b   ")  # what it suggested, after all
        ids["blank"] = rejected(store, "return 0", "")  # left the line empty
        ids["superseded"] = rejected(store, "return 1", "return a * b", reason="superseded")
        ids["cursor_moved"] = rejected(store, "return 2", "return a * b", reason="cursor_moved")
        ids["secret_completion"] = rejected(store, 'api_key = "sk-live0123456789abcdefghijkl"', "return a * b")
        ids["secret_written"] = rejected(store, "return 3", 'token = "ghp_0123456789abcdefghijklmnop"')
        ids["secret_old_rules"] = rejected(store, "return 6", "return a * b")
        ids["old"] = rejected(store, "return 4", "return a * b", at=NOW - 30 * DAY)
        ids["not_kept"] = accepted(store, "return a + b", p120s=0.2)
        ids["not_kept_30s"] = accepted(store, "return a + a", p30s=0.3)
        ids["kept_late"] = accepted(store, "return b + b", p30s=0.3, p120s=0.9)  # +120 s decides
        ids["kept"] = accepted(store, "return a * b", p30s=1.0, p120s=1.0)
        ids["partial"] = suggestion(store, "return a + b + 1")
        store.set_outcome(ids["partial"], "partial", accepted_length=len("return a"))
        ids["withheld"] = store.insert_request({"decision": "withheld_stage1", "source": "model", "created_at": NOW})
        ids["typed_ahead"] = rejected(store, "b", "c", source="typed_ahead")
    # Rows written before the collector knew a kind of secret: a prompt and a completion that hold one.
    conn = sqlite3.connect(db)
    with conn:
        conn.execute(
            "UPDATE requests SET prompt = ? WHERE id = ?",
            ['# shapes/rect.py\nTOKEN = "xoxb-0123456789-abcdefghij"\n' + PREFIX, ids["dismissed"]],
        )
        conn.execute(
            "UPDATE requests SET completion = ? WHERE id = ?", ['return "AKIAABCDEFGHIJKLMNOP"', ids["secret_old_rules"]]
        )
    conn.close()
    return db, ids


def test_filters_and_kinds_are_counted(logged):
    db, ids = logged
    mined = mine([db])
    c = mined.counts
    assert c["shown"] == 16  # model suggestions shown: not the withheld request, not the typed-ahead one
    assert c["dsat"] == {"rejected": 9, "partial": 1, "not_persisted": 2}
    assert c["not_dsat"] == {"cursor_moved": 1, "superseded": 1}
    assert c["filtered"] == {
        "no_chosen": 3,  # partial, not_kept, not_kept_30s: nothing written there, no sampler
        "no_sample": 0,
        "empty_chosen": 1,
        "same_as_rejected": 1,
        "secret": 3,
        "duplicate": 1,
    }
    assert c["pairs"] == len(mined.pairs) == 3 and c["chosen"] == {"written": 3, "sampled": 0}
    assert c["pairs_by_dsat"] == {"rejected": 3, "partial": 0, "not_persisted": 0}
    assert c["prompt_redacted"] == 1
    by_id = {p["suggestion_id"]: p for p in mined.pairs}
    assert set(by_id) == {ids["written"], ids["dismissed"], ids["old"]}
    assert by_id[ids["written"]]["chosen"] == "return a * b"
    assert by_id[ids["written"]]["rejected"] == "return a - b"
    assert by_id[ids["dismissed"]]["chosen"] == "return a * b  # area"
    # The prompt that held a secret the collector's rules of the time missed is kept, redacted now.
    prompt = by_id[ids["dismissed"]]["prompt"]
    assert "xoxb-" not in prompt and "«redacted:slack_token»" in prompt and prompt.endswith(PREFIX)


def test_since_leaves_out_older_suggestions(logged):
    db, ids = logged
    mined = mine([db], since=parse_since("2026-09-01"))
    assert ids["old"] not in {p["suggestion_id"] for p in mined.pairs}
    assert mined.counts["shown"] == 15 and mined.counts["pairs"] == 2
    assert mine([db], since=parse_since("2026-09-21T00:00:00+00:00")).counts["shown"] == 15
    assert mine([db], since=parse_since("2030-01-01")).counts["shown"] == 0
    with pytest.raises(PairsError, match="ISO date"):
        parse_since("last week")


def test_a_log_several_models_wrote_is_read_for_one_of_them(tmp_path: Path):
    """`--only-model`: the pairs, the replay's accepted rows and the gate's rows of one model only."""
    from hindsight.collector.reader import accepted_suggestions, gate_rows

    db = tmp_path / "team.db"
    with Store(db) as store:
        qwen = rejected(store, " None", " width * height", model="llama-server:http://gpu:8080 qwen2.5-coder:1.5b-base")
        gemma = rejected(store, " 0", " width * height", model="llama.cpp:gemma-3-270m-q4_k_m.gguf")
        right = accepted(store, " width * height")
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE requests SET model = 'openai:http://gpu:8000/v1 qwen2.5-coder' WHERE id = ?", (right,))
    assert {p["suggestion_id"] for p in mine([db]).pairs} == {qwen, gemma}
    assert [p["suggestion_id"] for p in mine([db], model="qwen2.5-coder").pairs] == [qwen]
    assert [p["suggestion_id"] for p in mine([db], model="gemma-3").pairs] == [gemma]
    assert mine([db], model="starcoder2").pairs == []
    assert len(accepted_suggestions(db, "qwen2.5-coder")) == 1 and accepted_suggestions(db, "gemma") == []
    assert len(gate_rows(db)) == len(gate_rows(db, "")) >= len(gate_rows(db, "qwen2.5-coder"))


def test_provenance(logged):
    db, ids = logged
    (pair,) = [p for p in mine([db]).pairs if p["suggestion_id"] == ids["written"]]
    assert set(pair) == set(FIELDS)
    assert pair["chosen_source"] == "written" and pair["dsat"] == "rejected"
    assert pair["outcome_reason"] == "typed_over"
    assert pair["repo"] == "/work/proj"  # the header line says shapes/rect.py relative to the root
    assert pair["uri"] == "file:///work/proj/shapes/rect.py" and pair["language"] == "python"
    assert pair["created_at"] == "2026-09-21T14:13:20+00:00"  # the first suggestion made: at NOW
    assert pair["database"] == str(db.resolve()) and pair["session_id"] == "s1"


def test_merged_databases_drop_repeats(logged, tmp_path: Path):
    db, _ = logged
    copy = tmp_path / "teammate.db"
    shutil.copy(db, copy)
    mined = mine([db, copy])
    assert mined.counts["shown"] == 32 and mined.counts["pairs"] == 3
    assert mined.counts["filtered"]["duplicate"] == 1 + 4  # its own repeat, then all four again


def test_repo_is_the_document_directory_without_a_workspace_path():
    row = {"uri": "file:///tmp/scratch/rect.py", "prompt": "# rect.py\n" + PREFIX, "prefix": PREFIX}
    assert repo_of(row) == "/tmp/scratch"
    row["prompt"] = "# other/rect.py\n" + PREFIX  # a header that is not the document's path
    assert repo_of(row) == "/tmp/scratch"
    js = {"uri": "file:///w/web/a.js", "prompt": "// a.js:1-3\nx\n\n// web/a.js\nconst ", "prefix": "const "}
    assert repo_of(js) == "/w"


@pytest.mark.parametrize(
    "actual, completion, suffix, chosen",
    [
        # Single line: the rest of the line the user wrote, trailing whitespace off.
        ("return a * b  ", "return a - b", "\n\ndef f():", "return a * b"),
        # An auto-closed `)` was already after the cursor: the written text ends with it; it is cut.
        ("x, y)", "x)", ")\n    return z", "x, y"),
        # The user wrote one line of a two-line suggestion; the second line read back is the old suffix.
        ("\n    r = a\n    return r", "\n    x = 1\n    return x", "\n    return r\n", "\n    r = a"),
        # Two lines written, the suggestion had one: one line.
        ("return a\nfoo()", "return b", "\nfoo()", "return a"),
    ],
)
def test_written_text_takes_the_suggestions_shape(actual, completion, suffix, chosen):
    assert written_chosen(actual, completion, suffix) == chosen


def test_sampled_chosen_differs_and_parses(tmp_path: Path):
    """The choice among samples, with a stand-in sampler of fixed texts: the first that is not the
    rejected one (up to whitespace) and keeps the file parsing; for a partial, after the accepted part."""
    db = tmp_path / "s.db"
    with Store(db) as store:
        not_kept = accepted(store, "return a + b", p120s=0.1)
        partial = suggestion(store, "return a + b + 1")  # made after the other: mined after it
        store.set_outcome(partial, "partial", accepted_length=len("return a"))
    seen = []

    def sampler(prompt: str, n: int) -> list[str]:
        seen.append((prompt, n))
        if prompt.endswith("return a"):
            return [" + b + 1", " * (b", " * b\nfoo(", " * b"]
        return ["return  a + b", "return (a *", "", "return a * b\nprint(1)"]

    mined = mine([db], sampler=sampler)
    by_id = {p["suggestion_id"]: p for p in mined.pairs}
    assert by_id[not_kept]["chosen"] == "return a * b"  # cut at the newline: a single-line suggestion
    assert by_id[not_kept]["chosen_source"] == "sampled" and by_id[not_kept]["dsat"] == "not_persisted"
    assert by_id[partial]["chosen"] == "return a * b"
    assert by_id[partial]["rejected"] == "return a + b + 1" and by_id[partial]["dsat"] == "partial"
    assert seen == [(PROMPT, 4), (PROMPT + "return a", 4)]

    mined = mine([db], sampler=lambda prompt, n: ["return a + b"] * n)  # never anything new
    assert mined.counts["pairs"] == 0 and mined.counts["filtered"]["no_sample"] == 2


def test_not_a_hindsight_database(tmp_path: Path):
    (tmp_path / "notes.db").write_text("not sqlite at all\n" * 10)
    with pytest.raises(PairsError, match="not a readable hindsight database"):
        mine([tmp_path / "notes.db"])
    conn = sqlite3.connect(tmp_path / "other.db")
    conn.execute("CREATE TABLE requests (id TEXT)")
    conn.close()
    with pytest.raises(PairsError, match="not a hindsight database"):
        mine([tmp_path / "other.db"])
    with pytest.raises(PairsError, match="no database at"):
        mine([tmp_path / "missing.db"])
    assert not (tmp_path / "missing.db").exists()


# -- the command ---------------------------------------------------------------------------------------------


def test_cli_jsonl_and_parquet(logged, tmp_path: Path):
    import pyarrow.parquet as pq

    db, ids = logged
    jsonl, parquet = tmp_path / "out" / "pairs.jsonl", tmp_path / "pairs.parquet"
    result = hindsight("export-pairs", "--db", str(db), "--no-sample", "--out", str(jsonl), "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["pairs"] == 3 and out["chosen"] == {"written": 3, "sampled": 0}
    assert out["filtered"]["duplicate"] == 1 and out["out"] == str(jsonl) and out["format"] == "jsonl"
    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [line["suggestion_id"] for line in lines] == [ids["old"], ids["written"], ids["dismissed"]]
    assert all(list(line) == list(FIELDS) for line in lines)
    assert jsonl.stat().st_mode & 0o777 == 0o600

    result = hindsight("export-pairs", "--db", str(db), "--no-sample", "--out", str(parquet), "--since", "2026-09-01")
    assert result.returncode == 0, result.stderr
    assert "written 2" in result.stdout and str(parquet) in result.stdout
    table = pq.read_table(parquet)
    assert table.column_names == list(FIELDS)
    assert table.to_pylist() == [line for line in lines if line["suggestion_id"] != ids["old"]]


def test_cli_default_output_in_the_data_dir(logged, tmp_path: Path):
    db, _ = logged
    data = tmp_path / "data"
    result = hindsight("export-pairs", "--db", str(db), "--no-sample", "--format", "parquet", env={"HINDSIGHT_DATA_DIR": str(data)})
    assert result.returncode == 0, result.stderr
    (written,) = (data / "pairs").glob("pairs-*.parquet")
    assert str(written) in result.stdout


def test_cli_empty_and_foreign_databases(tmp_path: Path):
    Store(tmp_path / "new.db").close()  # a hindsight database nothing was recorded in
    (tmp_path / "notes.txt").write_text("hello\n")
    (tmp_path / "zero.db").touch()
    cases = {
        "new.db": "no shown suggestions",
        "notes.txt": "not a readable hindsight database",
        "zero.db": "is empty",
        "missing.db": "no database at",
    }
    for name, message in cases.items():
        out = tmp_path / f"{name}.jsonl"
        result = hindsight("export-pairs", "--db", str(tmp_path / name), "--out", str(out), "--no-sample")
        assert result.returncode == 2, (name, result.stderr)
        assert result.stderr.startswith("hindsight: ") and message in result.stderr, result.stderr
        assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr
        assert not out.exists()


# -- the real server and model -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    """The simulated developer on a copy of the fixture workspace (two files, a site each), through the
    real server and model: (database, steps, plans, workspace root)."""
    from hindsight.simulate.simulate import plan, simulate

    work = tmp_path_factory.mktemp("pairs")
    root = work / "ws"
    shutil.copytree(WORKSPACE, root)
    db = work / "simulated.db"
    steps = []
    args = dict(files=2, sites=1, seed=0, min_lines=10)
    asyncio.run(simulate(root, db=db, pace_ms=5, steps=steps, log_file=work / "server.log", **args))  # type: ignore[arg-type]
    return db, steps, plan(root.resolve(), **args), root.resolve()


def _lines_rstripped(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.split("\n")).rstrip()


@pytest.mark.slow
def test_pairs_from_what_the_real_server_recorded(simulated):
    db, steps, plans, root = simulated
    stored = {r["id"]: r for r in rows(db, "select * from requests")}
    mined = mine([db])
    assert mined.counts["chosen"]["written"] >= 3, mined.counts  # seed 0 gives several rejections
    rejected_ids = {s.id for s in steps if s.action in ("typed_over", "dismissed")}
    assert {p["suggestion_id"] for p in mined.pairs} <= rejected_ids
    targets = {p.path.as_uri(): p.sites for p in plans}
    step_of = {s.id: s for s in steps}
    for pair in mined.pairs:
        row = stored[pair["suggestion_id"]]
        assert pair["prompt"] == row["prompt"] and pair["prompt"].endswith(row["prefix"])
        assert pair["rejected"] == row["completion"] == step_of[row["id"]].suggestion
        assert pair["chosen_source"] == "written" and row["actual_text"] is not None
        assert _lines_rstripped(row["actual_text"]).startswith(pair["chosen"])
        # What the developer was about to type there, as many lines as the suggestion had.
        step = step_of[row["id"]]
        (site,) = [s for s in targets[row["uri"]] if s.offset <= step.offset <= s.offset + len(s.target)]
        intended = site.target[step.offset - site.offset :].split("\n")[: row["completion"].count("\n") + 1]
        assert pair["chosen"] == _lines_rstripped("\n".join(intended))
        assert pair["dsat"] == "rejected" and pair["outcome_reason"] == row["outcome_reason"]
        assert pair["repo"] == str(root) and pair["uri"] == row["uri"] and pair["language"] == row["language"]
        assert pair["session_id"] == row["session_id"] and pair["database"] == str(db.resolve())
        assert pair["created_at"].startswith("20")


def _errors(node) -> int:
    """ERROR and missing nodes in a tree, counted here independently of the gate's check."""
    if not node.has_error:
        return 0
    if node.type == "ERROR" or node.is_missing:
        return 1
    return sum(_errors(child) for child in node.children)


@pytest.mark.slow
def test_sampled_chosen_from_the_real_model(simulated, tmp_path: Path):
    """A suggestion the real server recorded, accepted and then not kept: nothing written there, so the
    model samples the chosen side."""
    db, _, _, _ = simulated
    row = next(r for r in rows(db, "select * from requests where decision = 'show' and mode = 'single'"))
    copy = tmp_path / "not-kept.db"
    fields = {k: row[k] for k in ("id", "created_at", "session_id", "uri", "language", "line", "character",
                                  "decision", "source", "mode", "prompt", "prefix", "suffix", "completion")}
    with Store(copy) as store:
        store.insert_request(fields)
        store.set_outcome(row["id"], "accepted", reason="command")
        store.record_persistence(row["id"], "120s", 0.2)
    from hindsight.engine.model import resolve_model

    mined = mine([copy], sampler=llama_sampler(resolve_model(None), seed=0))
    assert mined.counts["dsat"]["not_persisted"] == 1
    (pair,) = mined.pairs
    assert pair["chosen_source"] == "sampled" and pair["prompt"] == row["prompt"]
    assert pair["rejected"] == row["completion"]
    assert pair["chosen"].strip() and " ".join(pair["chosen"].split()) != " ".join(row["completion"].split())
    assert "\n" not in pair["chosen"]  # a single-line suggestion's shape
    before = parse(row["prefix"] + row["suffix"], row["language"]).root_node
    after = parse(row["prefix"] + pair["chosen"] + row["suffix"], row["language"]).root_node
    assert _errors(after) <= _errors(before)
