"""The `hindsight` command, run as a user runs it: a real process, the real model, a real database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import WORKSPACE

GEOMETRY = WORKSPACE / "shapes" / "geometry.py"


def hindsight(*args: str, env: dict | None = None, timeout: float = 300, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lsp_server", *args],
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
    assert set(out) == {"id", "text", "timings_ms"}
    assert out["text"].strip() and "\n" not in out["text"]
    assert out["timings_ms"]["total_ms"] > 0


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
