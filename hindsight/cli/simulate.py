"""The simulated developer: `hindsight demo` (watch it use hindsight) and `hindsight simulate` (it writes
code back into a repository's files, and the log it leaves is training data)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from hindsight.cli.common import command, json_option, model_option
from hindsight.cli.output import format_stats, print_result
from hindsight.evaluation.demo import run_demo
from hindsight.paths import data_dir
from hindsight.simulate.simulate import simulate as simulate_repo


@command("demo")
@model_option
@click.option("--lines", type=int, help="stop after typing this many lines of each file")
def demo(model: str | None, lines: int | None) -> None:
    print(format_stats(run_demo(model=model, lines=lines)))


@command("simulate")
@click.argument("repo")
@click.option("--files", type=int, default=10, help="source files to edit")
@click.option("--sites", type=int, default=2, help="edit sites per file")
@click.option("--seed", type=int, default=0)
@click.option("--pace-ms", type=float, default=120.0, help="median time per keystroke (pauses come on top)")
@click.option("--db", metavar="PATH", help="the database to record into  [default: the data dir's simulated.db]")
@model_option
@json_option
def simulate(repo, files, sites, seed, pace_ms, db, model, as_json) -> None:
    result = asyncio.run(simulate_repo(
        Path(repo),
        files=files,
        sites=sites,
        seed=seed,
        db=Path(db).expanduser() if db else data_dir() / "simulated.db",
        pace_ms=pace_ms,
        options={"model": model} if model else None,
    ))
    print_result(result, as_json)
