"""The `hindsight` command, run as a user runs it: a real process, the real model, a real database (and its
error handling, in process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest

from conftest import WORKSPACE
from hindsight.cli import cli, main
from hindsight.cli.common import COMMANDS, command, need
from hindsight.collector.store import CORRUPT, StoreError
from hindsight.errors import HindsightError, UsageError

GEOMETRY = WORKSPACE / "shapes" / "geometry.py"


def hindsight(*args: str, env: dict | None = None, timeout: float = 300, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hindsight", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )


def return_position() -> str:
    lines = GEOMETRY.read_text().split("\n")
    line = next(i for i, l in enumerate(lines) if l.strip().startswith("return 2 * math.pi"))
    return f"{GEOMETRY}:{line + 1}:{len('        return ') + 1}"


@pytest.mark.slow
def test_complete_json():
    result = hindsight("complete", return_position(), "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert set(out) == {"id", "text", "timings_ms", "profile", "prompt", "request"}
    assert out["text"].strip() and "\n" not in out["text"]
    assert out["timings_ms"]["total_ms"] > 0
    # The embedded Gemma has no FIM tokens: a prefix-only prompt that ends at the cursor; no server request.
    assert out["profile"]["name"] == "none" and out["request"] is None
    assert out["prompt"].startswith("# geometry.py\n") and out["prompt"].endswith("return ")


@pytest.mark.slow
def test_complete_human_output_has_timings():
    result = hindsight("complete", return_position())
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
    assert "total_ms=" in result.stderr


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"", "empty"),
        (b"GGUF", "truncated"),
        (b"not a model at all, just text", "not a GGUF"),
        (b"GGUF\x03\x00\x00\x00" + b"\x00" * 64, "could not load model"),
    ],
)
def test_bad_model_file_is_one_clear_line(tmp_path: Path, content: bytes, expected: str):
    model = tmp_path / "model.gguf"
    model.write_bytes(content)
    result = hindsight("complete", return_position(), "--model", str(model))
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert expected in lines[0]


def test_missing_model_file(tmp_path: Path):
    result = hindsight("complete", return_position(), "--model", str(tmp_path / "nope.gguf"))
    assert result.returncode != 0
    assert result.stderr.strip() == f"hindsight: model file not found: {tmp_path / 'nope.gguf'}"


@pytest.mark.parametrize("spec", ["nofile.py:1:1", f"{GEOMETRY}:0:1", f"{GEOMETRY}:9999:1", f"{GEOMETRY}:x:y"])
def test_bad_location_is_one_clear_line(spec: str):
    result = hindsight("complete", spec)
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1


def test_stats_json_on_an_empty_database(tmp_path: Path):
    result = hindsight("stats", "--json", env={"HINDSIGHT_DB": str(tmp_path / "s.db")})
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout)
    for key in ["requests", "shown", "accepted", "partial", "rejected", "acceptance_rate", "latency_p50_ms", "latency_p95_ms"]:
        assert key in stats
    assert stats["requests"] == 0


def test_stats_on_a_corrupt_database(tmp_path: Path):
    db = tmp_path / "bad.db"
    db.write_bytes(b"this is not sqlite" * 100)
    result = hindsight("stats", "--db", str(db))
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1
    assert db.read_bytes() == b"this is not sqlite" * 100  # nothing is lost


def test_version():
    result = hindsight("--version")
    assert result.returncode == 0 and result.stdout.startswith("hindsight ")


@pytest.mark.parametrize(
    "args, expected",
    [
        (["storm", "no-such-dir"], "is not a directory"),
        (["gate", "--db", "no-such.db"], "no promoted gate"),
        (["refresh", "no-such-repo", "--train-db", "no-such.db"], "no database at"),
    ],
)
def test_a_benchmark_refusing_its_input_says_one_line(tmp_path: Path, args: list[str], expected: str):
    result = hindsight("bench", *args, cwd=tmp_path, env={"TMPDIR": str(tmp_path)})
    assert result.returncode == 2, result.stderr
    assert not list(tmp_path.glob("hindsight-*")), "a work directory was left behind"
    assert result.stderr.startswith("hindsight: ") and expected in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


# The command line's contract: exit statuses, flags, help, extras -----------------------------------------


def test_exit_status_is_0_1_or_2():
    """0: done; 1: the work failed (here, a server that does not answer); 2: the command refused what it was
    given (a bad argument, a file that is not there) or was used wrongly (click's own usage errors)."""
    done = hindsight("complete", f"{GEOMETRY}:1:1", "--backend", "openai", "--base-url", "http://127.0.0.1:9")
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip() == "hindsight: model server http://127.0.0.1:9 is unreachable: connection refused"
    refused = hindsight("complete", "nofile.py:1:1")
    assert refused.returncode == 2 and refused.stderr.strip() == "hindsight: no such file: nofile.py"
    for wrong in (["forget"], ["stats", "--no-such-option"], ["no-such-command"]):
        assert hindsight(*wrong).returncode == 2, wrong


@pytest.mark.parametrize(
    "error, status",
    [(HindsightError("the work failed"), 1), (UsageError("what was given is refused"), 2),
     (HindsightError("refused by the raise", usage=True), 2), (StoreError("corrupt", CORRUPT), 2)],
)
def test_every_error_is_caught_once_as_one_line(capsys, error, status):
    @command("raise-for-the-test")
    def failing() -> None:
        raise error

    cli.add_command(failing)
    try:
        assert main(["raise-for-the-test"]) == status
    finally:
        cli.commands.pop("raise-for-the-test")
    assert capsys.readouterr().err == f"hindsight: {error}\n"


def test_a_missing_extra_is_one_line_naming_what_to_install(capsys):
    @command("needs-for-the-test")
    def needing() -> None:
        need("train", "json", "hindsight_no_such_module")
        raise AssertionError("ran without its libraries")

    cli.add_command(needing)
    try:
        assert main(["needs-for-the-test"]) == 2
    finally:
        cli.commands.pop("needs-for-the-test")
    expected = "hindsight: hindsight needs-for-the-test needs the training libraries: pip install 'hindsight[train]'\n"
    assert capsys.readouterr().err == expected


@pytest.mark.parametrize("args", [["serve", "-v"], ["-v", "serve"]])
def test_the_global_flags_go_before_or_after_the_command(args):
    """`hindsight serve -v`, as editors' configurations write it: the server starts over stdio, logs at
    INFO, and stops at the end of its input."""
    done = subprocess.run([sys.executable, "-m", "hindsight", *args], stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert " INFO " in done.stderr and done.stdout == ""


def test_help_shows_the_defaults():
    done = hindsight("train-gate", "--help")
    assert done.returncode == 0
    help_text = " ".join(done.stdout.split())
    assert "[default: 0.35]" in help_text and "--log-file" in help_text
    assert "$HINDSIGHT_DB or the data dir's hindsight.db" in help_text


def test_stats_reads_several_databases(tmp_path: Path):
    one, two = tmp_path / "one.db", tmp_path / "two.db"
    done = hindsight("stats", "--db", str(one), "--db", str(two), "--json")
    assert done.returncode == 0, done.stderr
    stats = json.loads(done.stdout)
    assert list(stats) == [str(one), str(two)] and stats[str(one)]["requests"] == 0


def test_every_listed_command_loads_under_its_name():
    """The top group imports a command's module only when it runs: each name in COMMANDS must find its
    command there, and `hindsight --help` lists them all without importing any."""
    ctx = click.Context(cli)
    for name, (_, summary) in COMMANDS.items():
        loaded = cli.get_command(ctx, name)
        assert loaded is not None and loaded.name == name and loaded.help == summary, name
    listing = hindsight("--help")
    assert listing.returncode == 0 and all(name in listing.stdout for name in COMMANDS)
