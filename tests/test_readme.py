"""The README cannot go stale: its command examples run, and its option table lists every option."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT
from hindsight.options import Options, camel

README = (ROOT / "README.md").read_text()


def option_names(cls=Options, prefix="") -> list[str]:
    names = []
    for f in dataclasses.fields(cls):
        name = prefix + camel(f.name)
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            names += option_names(type(default), name + ".")
        else:
            names.append(name)
    return names


def test_readme_opens_with_the_two_commands():
    first_block = README.split("```")[1]
    assert "make demo" in first_block and "make test" in first_block


def test_every_option_is_documented():
    section = README.split("\n## Options", 1)[1].split("\n## ", 1)[0]  # the options table's own section
    documented = set(re.findall(r"^\| `([\w.]+)` \|", section, re.M))
    assert set(option_names()) == documented


@pytest.mark.slow
@pytest.mark.parametrize("line", re.findall(r"^\$ (hindsight .+)$", README, re.M))
def test_readme_examples_run(line: str, tmp_path):
    args = line.split()[1:]
    env = {**os.environ, "HINDSIGHT_DB": str(tmp_path / "readme.db")}
    result = subprocess.run(
        [sys.executable, "-m", "hindsight", *args], cwd=ROOT, capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr
    if "--json" in args:
        assert isinstance(json.loads(result.stdout), dict)
