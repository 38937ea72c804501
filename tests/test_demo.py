"""`hindsight demo` runs end to end (a short version: two lines of each file)."""

import subprocess
import sys

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow


def test_demo_types_back_and_prints_the_stats():
    result = subprocess.run(
        [sys.executable, "-m", "hindsight", "demo", "--lines", "2"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("the file was typed back exactly") == 2
    assert "acceptance_rate" in result.stdout and "requests" in result.stdout
