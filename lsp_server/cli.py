"""`hindsight`: the language server and the offline commands around it.

    hindsight serve [--tcp PORT] [--model PATH]      the language server (stdio by default)
    hindsight complete FILE:LINE:COL [--json]        one completion at a position (1-based line and column)
    hindsight stats [--json]                         outcomes, acceptance rate and latency from the database
    hindsight forget (--since DATE | --all) [--db PATH] [--json]  delete the logged data, then VACUUM
    hindsight demo                                   a simulated developer typing through a sample workspace
    hindsight simulate REPO [--files N] [--json]     a simulated developer writes code back into a repository
    hindsight index [PATH] [--json]                  index a workspace (cached; the server does it on start)
    hindsight train-gate [--db PATH ...] [--json]    train the acceptance gate on the recorded outcomes
    hindsight export-pairs [--db PATH ...] [--json]  DSAT preference pairs (prompt, chosen, rejected) for DPO
    hindsight refresh [--db PATH ... | --pairs FILE] [--json]  DPO LoRA adapter from the pairs; promoted if better
    hindsight refresh --rollback                     the adapter promoted before the current one
    hindsight cold-start [--json]                    the first gate, from simulated sessions on the standard library
    hindsight build-fim-data [--files N] [--out FILE] [--json]  fill-in-the-middle training examples (JSONL)
    hindsight train-fim [--data FILE] [--steps N] [--resume] [--json]  a LoRA adapter that fills in the middle
    hindsight bench latency|infill|repo|bm25|gate|refresh|storm|redact  benchmarks (docs/BENCHMARKS.md)
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import stat
import sys
import uuid
from pathlib import Path

from . import __version__


class CliError(Exception):
    """A domain error: printed as one line, exit status 1."""


def _setup_logging(verbose: int, log_file: str | None) -> None:
    level = logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING
    handler = _private_log(log_file) if log_file else logging.StreamHandler(sys.stderr)
    logging.basicConfig(level=level, handlers=[handler], format="%(asctime)s %(name)s %(levelname)s %(message)s")


def _private_log(path: str) -> logging.Handler:
    """A handler on a log file only its owner can read (0600, like the database: the log names files and
    can hold code). The file is created 0600 before logging opens it, and an existing one is narrowed to
    0600; a device or a pipe (`--log-file /dev/stderr`) is left as it is."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            if stat.S_ISREG(os.fstat(fd).st_mode):
                os.fchmod(fd, 0o600)  # an existing file too; O_CREAT's mode is filtered by the umask
        finally:
            os.close(fd)
        return logging.FileHandler(path)
    except OSError as exc:
        raise SystemExit(f"hindsight: cannot write the log file {path}: {exc.strerror}") from None


def cmd_serve(args) -> int:
    from .server import server

    server.model_override = args.model
    if args.tcp:
        server.start_tcp("127.0.0.1", args.tcp)
        return 0
    # The protocol gets its own copy of stdout, and fd 1 is pointed at stderr: nothing but protocol may
    # reach the client. (llama-cpp-python redirects fd 1 to /dev/null while it loads a model, from the
    # model thread; a response written meanwhile would be lost.)
    protocol_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    server.start_io(sys.stdin.buffer, protocol_out)
    return 0


def _parse_location(spec: str) -> tuple[Path, int, int]:
    try:
        file, line, col = spec.rsplit(":", 2)
        line_no, col_no = int(line), int(col)
    except ValueError:
        raise CliError(f"expected FILE:LINE:COL (1-based), got {spec!r}") from None
    path = Path(file)
    if not path.is_file():
        raise CliError(f"no such file: {file}")
    if line_no < 1 or col_no < 1:
        raise CliError("LINE and COL are 1-based")
    return path, line_no - 1, col_no - 1


def read_source(path: Path, max_bytes: int = 2_000_000) -> str:
    data = path.read_bytes()
    if len(data) > max_bytes:
        raise CliError(f"{path} is too large to complete in ({len(data)} bytes > {max_bytes})")
    if b"\0" in data[:8192]:
        raise CliError(f"{path} looks like a binary file")
    return data.decode("utf-8", errors="replace")


def cmd_complete(args) -> int:
    from engine.backend import BackendError
    from engine.engine import CompletionRequest, Engine
    from engine.llama_backend import LlamaBackend
    from engine.model import resolve_model
    from engine.syntax import language_for

    path, line, col = _parse_location(args.location)
    text = read_source(path)
    lines = text.split("\n")
    if line >= len(lines):
        raise CliError(f"{path} has {len(lines)} lines; line {line + 1} is past the end")
    if col > len(lines[line]):
        raise CliError(f"line {line + 1} has {len(lines[line])} characters; column {col + 1} is past its end + 1")
    try:
        if args.backend == "http":
            from engine.http_backend import HttpBackend

            backend = HttpBackend(args.base_url)
        else:
            backend = LlamaBackend(resolve_model(args.model))
    except BackendError as exc:
        raise CliError(str(exc)) from None
    engine = Engine(backend)
    req = CompletionRequest(
        uri=path.resolve().as_uri(),
        text=text,
        line=line,
        character=col,
        language=language_for(str(path)),
        path=path.name,
        request_id=uuid.uuid4().hex[:16],
    )
    try:
        result = engine.complete(req)
    except BackendError as exc:
        raise CliError(str(exc)) from None
    timings = {k: round(v, 2) for k, v in result.timings_ms.items()}
    if args.json:
        print(json.dumps({"id": req.request_id, "text": result.text, "timings_ms": timings}))
    else:
        print(result.text)
        print("  ".join(f"{k}={v:.1f}" for k, v in timings.items()), file=sys.stderr)
    return 0


def cmd_stats(args) -> int:
    from collector.store import Store, StoreError

    try:
        store = Store(args.db)
        stats = store.stats()
    except StoreError as exc:
        raise CliError(str(exc)) from None
    if args.json:
        print(json.dumps(stats))
        return 0
    print(format_stats(stats))
    return 0


def cmd_forget(args) -> int:
    """Delete what was recorded (all, or since DATE), then rebuild the file so none of it is left behind."""
    from collector.pairs import PairsError, parse_since
    from collector.paths import db_path
    from collector.store import Store, StoreError

    try:
        since = None if args.all else parse_since(args.since)
    except PairsError as exc:
        raise CliError(str(exc)) from None
    path = Path(args.db).expanduser() if args.db else db_path()
    if not path.is_file():
        raise CliError(f"no database at {path}")

    def size() -> int:
        return sum(Path(f"{path}{s}").stat().st_size for s in ("", "-wal") if Path(f"{path}{s}").exists())

    before = size()
    try:
        with Store(path) as store:
            deleted = store.forget(since)
            wal_truncated = store.compact()
    except StoreError as exc:
        raise CliError(str(exc)) from None
    report = {
        "database": str(path),
        "since": args.since if since is not None else None,
        "deleted": deleted,
        "bytes_before": before,
        "bytes_after": size(),
        "wal_truncated": wal_truncated,
    }
    if args.json:
        print(json.dumps(report))
    else:
        counts = ", ".join(f"{n} {table}" for table, n in deleted.items())
        scope = f"since {args.since}" if since is not None else "all"
        print(f"deleted {counts} ({scope}) from {path}; {before:,} → {report['bytes_after']:,} bytes after VACUUM")
    if not wal_truncated:
        print(f"hindsight: the WAL ({path}-wal) was busy and may still hold deleted text; run forget again", file=sys.stderr)
        return 1
    return 0


def format_stats(stats: dict) -> str:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="hindsight stats")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in stats.items():
        if isinstance(value, float):
            value = f"{value:.3f}" if key == "acceptance_rate" else f"{value:.1f}"
        elif isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items()) or "-"
        table.add_row(key, "-" if value is None else str(value))
    console = Console(file=None, width=100)
    with console.capture() as cap:
        console.print(table)
    return cap.get().rstrip()


def cmd_train_gate(args) -> int:
    from rich.console import Console

    from collector.paths import data_dir, db_path
    from gating.dataset import GateError, load
    from gating.train import train

    dbs = [Path(p).expanduser() for p in args.db] if args.db else [db_path()]
    gates_dir = Path(args.gates_dir).expanduser() if args.gates_dir else data_dir() / "gates"
    try:
        with Console(stderr=True).status("training the acceptance gate"):
            metrics = train(
                load(dbs),
                value_accept=args.value_accept,
                cost_reject=args.cost_reject,
                cost_call=args.cost_call,
                seed=args.seed,
                gates_dir=gates_dir,
                force=args.force,
            )
    except GateError as exc:
        print(f"hindsight: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(metrics))
    else:
        print(format_gate_metrics(metrics))
    return 0


def format_gate_metrics(metrics: dict) -> str:
    """The few numbers a user wants after training: how good, what it hides, whether it is in use."""
    from rich.console import Console
    from rich.table import Table

    def num(value, digits=3):
        return "-" if value is None else f"{value:.{digits}f}"

    held = metrics["held_out"]
    current = metrics["current"]
    table = Table(title=f"hindsight gate {metrics['version']}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    rows = [
        ("promoted", f"{'yes' if metrics['promoted'] else 'no'}: {metrics['promotion_reason']}"),
        ("suggestions (train / held out)", f"{metrics['rows_train']} / {metrics['rows_held_out']}"),
        ("groups (held out)", f"{metrics['groups']} ({metrics['groups_held_out']})"),
        ("accept rate", num(metrics["accept_rate"])),
        ("cross-validated AUC stage 1 / 2", f"{num(metrics['cv_auc_stage1'])} / {num(metrics['cv_auc_stage2'])}"),
        ("held-out AUC stage 1 / 2", f"{num(held['auc_stage1'])} / {num(held['auc_stage2'])}"),
        ("thresholds t1 / t2", f"{metrics['t1']:.2f} / {metrics['t2']:.2f}"),
        ("held out: rejects hidden", num(held["rejected_hidden"])),
        ("held out: accepts lost", num(held["accepted_lost"])),
        ("held out: model calls skipped", num(held["calls_skipped"])),
        ("held out: utility with / without gate",
         f"{num(held['utility_with_gate'], 1)} / {num(held['utility_without_gate'], 1)}"),
    ]
    if current.get("version"):
        aucs = f"{num(current['auc_stage1'])} / {num(current['auc_stage2'])}"
        rows.append((f"current {current['version']}: held-out AUC 1 / 2", aucs))
    rows.append(("directory", metrics["directory"]))
    for key, value in rows:
        table.add_row(key, value)
    console = Console(file=None, width=120)
    with console.capture() as cap:
        console.print(table)
    return cap.get().rstrip()


def cmd_export_pairs(args) -> int:
    import time

    from rich.console import Console
    from rich.progress import Progress

    from collector.pairs import PairsError, format_for, llama_sampler, mine, parse_since, write
    from collector.paths import data_dir, db_path

    dbs = [Path(p).expanduser() for p in args.db] if args.db else [db_path()]
    try:
        since = parse_since(args.since)
        if args.out:
            out = Path(args.out).expanduser()
            fmt = format_for(out, args.format)
        else:
            fmt = args.format or "jsonl"
            out = data_dir() / "pairs" / f"pairs-{time.strftime('%Y%m%d-%H%M%S')}.{fmt}"
        sampler = None
        if not args.no_sample:
            from engine.backend import BackendError
            from engine.model import resolve_model

            try:
                from refresh.registry import promoted_for

                model_path = resolve_model(args.model)
                # The current model: with the promoted adapter, when there is one for this model file.
                sampler = llama_sampler(model_path, seed=args.seed, lora_path=promoted_for(model_path))
            except BackendError as exc:
                raise PairsError(str(exc)) from None
        console = Console(stderr=True)
        # Progress only while the model samples (the rest takes a second), and only on a terminal.
        with Progress(console=console, transient=True, disable=sampler is None or not console.is_terminal) as progress:
            task = progress.add_task("mining pairs", total=None)
            mined = mine(dbs, since=since, sampler=sampler,
                         progress=lambda done, total: progress.update(task, completed=done, total=total))
        if not mined.pairs:
            summary = _pairs_summary({**mined.counts, "since": since})
            raise PairsError(f"no preference pairs in {', '.join(map(str, dbs))}: {summary}")
        write(mined.pairs, out, fmt)
    except PairsError as exc:
        print(f"hindsight: {exc}", file=sys.stderr)
        return 2
    result = {**mined.counts, "out": str(out), "format": fmt}
    if args.json:
        print(json.dumps(result))
    else:
        print(format_pairs_counts(result))
    return 0


def _pairs_summary(counts: dict) -> str:
    if not counts["shown"]:
        return "no shown suggestions" + (" since then" if counts.get("since") is not None else "")
    dsat = sum(counts["dsat"].values())
    dropped = ", ".join(f"{k} {v}" for k, v in counts["filtered"].items() if v)
    return f"{counts['shown']} shown suggestions, {dsat} turned down" + (f"; dropped: {dropped}" if dropped else "")


def format_pairs_counts(result: dict) -> str:
    """Pairs by where chosen came from and by kind of DSAT, and what each filter dropped."""
    from rich.console import Console
    from rich.table import Table

    def parts(d: dict) -> str:
        return ", ".join(f"{k} {v}" for k, v in d.items()) or "-"

    table = Table(title="hindsight export-pairs")
    table.add_column("metric")
    table.add_column("value")
    rows = [
        ("pairs", str(result["pairs"])),
        ("chosen", parts(result["chosen"])),
        ("by DSAT", parts(result["pairs_by_dsat"])),
        ("shown suggestions", str(result["shown"])),
        ("DSAT found", parts(result["dsat"])),
        ("rejected, not DSAT", parts(result["not_dsat"])),
        ("dropped", parts(result["filtered"])),
        ("prompts redacted again", str(result["prompt_redacted"])),
    ]
    for key, value in rows:
        table.add_row(key, value)
    console = Console(file=None, width=120)
    with console.capture() as cap:
        console.print(table)
    # The path on a line of its own: a table would wrap it.
    return f"{cap.get().rstrip()}\nwritten to {result['out']} ({result['format']})"


def cmd_demo(args) -> int:
    from evaluation.demo import run_demo

    return run_demo(model=args.model, lines=args.lines)


def cmd_index(args) -> int:
    from rich.progress import Progress

    from collector.paths import data_dir
    from evaluation import print_result
    from retrieval.workspace import WorkspaceIndex

    index = WorkspaceIndex(args.path, cache_dir=data_dir() / "index")
    with Progress(transient=True) as progress:
        task = progress.add_task("indexing", total=None)
        stats = index.build(lambda done, total: progress.update(task, completed=done, total=total))
    result = {
        "root": str(index.root),
        "files": stats.files,
        "lines": stats.lines,
        "chunks": stats.chunks,
        "definitions": sum(len(info.definitions) for info in index.files.values()),
        "parsed": stats.parsed,
        "skipped": stats.skipped,
        "seconds": round(stats.seconds, 2),
    }
    print_result(result, args.json)
    return 0


def cmd_simulate(args) -> int:
    from evaluation.simulate import SimulateError, main as simulate

    try:
        return simulate(args)
    except SimulateError as exc:
        print(f"hindsight: {exc}", file=sys.stderr)
        return 2


def cmd_refresh(args) -> int:
    from collector.pairs import PairsError
    from engine.backend import BackendError
    from refresh.job import RefreshError, main

    try:
        return main(args)
    except (RefreshError, PairsError, BackendError) as exc:
        print(f"hindsight: {exc}", file=sys.stderr)
        return 2


def cmd_cold_start(args) -> int:
    from gating.cold_start import run
    from gating.dataset import GateError

    try:
        metrics = run(files=args.files, seed=args.seed, pace_ms=args.pace_ms, force=args.force, model=args.model,
                      log=lambda m: print(m, file=sys.stderr))
    except GateError as exc:
        print(f"hindsight: {exc}", file=sys.stderr)
        return 2
    if metrics.get("skipped"):
        print(f"hindsight: {metrics['reason']}; nothing to do (--force trains a new one)", file=sys.stderr)
    if args.json:
        print(json.dumps(metrics))
    elif not metrics.get("skipped"):
        print(format_gate_metrics(metrics))
    return 0


def cmd_build_fim_data(args) -> int:
    from rich.console import Console
    from rich.progress import Progress

    from evaluation import print_result
    from fim.data import EXCLUDED, FimDataError, build

    languages = [name.strip() for name in args.languages.split(",") if name.strip()]
    console = Console(stderr=True)
    try:
        with Progress(console=console, transient=True, disable=not console.is_terminal) as progress:
            task = progress.add_task("FIM examples", total=None)
            summary = build(
                Path(args.out),
                files=args.files,
                per_file=args.per_file,
                seed=args.seed,
                context=not args.no_context,
                exclude=EXCLUDED if args.exclude is None else args.exclude,
                languages=languages,
                root=args.root,
                window=args.window,
                progress=lambda done, total: progress.update(task, completed=done, total=total),
            )
    except FimDataError as exc:
        print(f"hindsight: {exc}", file=sys.stderr)
        return 2
    print_result(summary, args.json)
    return 0


def cmd_train_fim(args) -> int:
    from fim.train import FIMError, main as train_fim

    try:
        return train_fim(args)
    except FIMError as exc:
        print(f"hindsight: {exc}", file=sys.stderr)
        return 2


# `hindsight bench NAME`: the module in evaluation/ whose main(args) runs it. The errors a module lists in
# its ERRORS are the user's (a bad path, too few files, a missing tool): one line, and exit status 2.
BENCHES = {
    "latency": "bench_latency",
    "repo": "bench_repo",
    "gate": "bench_gate",
    "refresh": "bench_refresh",
    "storm": "bench_storm",
    "bm25": "bench_bm25",
    "redact": "bench_redact",
    "infill": "infill",
}


def cmd_bench(args) -> int:
    bench = importlib.import_module(f"evaluation.{BENCHES[args.bench]}")
    try:
        return bench.main(args)
    except getattr(bench, "ERRORS", ()) as exc:
        print(f"hindsight: {exc}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    from refresh.evaluate import INFILL_TASKS  # standard library only: the parser stays quick to build

    parser = argparse.ArgumentParser(prog="hindsight", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"hindsight {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0)
    parser.add_argument("--log-file")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the language server (stdio unless --tcp)")
    p.add_argument("--tcp", type=int, metavar="PORT", help="listen on 127.0.0.1:PORT instead of stdio")
    p.add_argument("--model", help="path to a GGUF model (default: the embedded Gemma 3 270M)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("complete", help="one completion at FILE:LINE:COL (1-based)")
    p.add_argument("location")
    p.add_argument("--json", action="store_true")
    p.add_argument("--model")
    p.add_argument("--backend", choices=["embedded", "http"], default="embedded")
    p.add_argument("--base-url", default="http://127.0.0.1:8080")
    p.set_defaults(func=cmd_complete)

    p = sub.add_parser("index", help="index a workspace for cross-file context (the server does it on start)")
    p.add_argument("path", nargs="?", default=".")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("stats", help="outcome counts, acceptance rate and latency from the database")
    p.add_argument("--json", action="store_true")
    p.add_argument("--db", help="database path (default: $HINDSIGHT_DB or the data dir)")
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("forget", help="delete the logged data (all, or since a date), then VACUUM the database")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--since", metavar="DATE", help="what was recorded at or after this ISO date (UTC)")
    which.add_argument("--all", action="store_true", help="everything")
    p.add_argument("--db", help="database path (default: $HINDSIGHT_DB or the data dir)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_forget)

    p = sub.add_parser("train-gate", help="train the acceptance gate on the recorded outcomes; promote it if better")
    p.add_argument("--db", action="append", metavar="PATH", help="a database (repeatable; default: the user's)")
    p.add_argument("--gates-dir", metavar="DIR", help="where gate versions live (default: the data dir's gates/)")
    p.add_argument("--value-accept", type=float, metavar="V", default=1.0, help="worth of an accepted suggestion")
    p.add_argument("--cost-reject", type=float, metavar="C", default=0.35, help="cost of a rejected suggestion")
    p.add_argument("--cost-call", type=float, metavar="K", default=0.02, help="cost of one model call")
    p.add_argument("--seed", type=int, metavar="S", default=0, help="chooses the held-out groups and seeds LightGBM")
    p.add_argument("--force", action="store_true", help="promote even if it is worse than the current gate")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_train_gate)

    p = sub.add_parser("refresh", help="DPO LoRA adapter from the dissatisfaction pairs; promoted if it measures better")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--db", action="append", metavar="PATH", help="mine pairs from a database (repeatable; default: the user's)")
    source.add_argument("--pairs", metavar="FILE", help="pairs from `hindsight export-pairs` (jsonl or parquet)")
    source.add_argument("--rollback", action="store_true", help="make the adapter promoted before the current one current again")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--no-sample", action="store_true", help="with --db: only pairs with a written chosen")
    p.add_argument("--infill-tasks", type=int, default=INFILL_TASKS, metavar="N",
                   help="HumanEval single-line tasks to check (default: all 1,033; fewer: a fixed subset; 0: skip)")
    p.add_argument("--no-promote", action="store_true", help="measure and keep the adapter, but do not promote it")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_refresh)

    p = sub.add_parser("export-pairs", help="DSAT preference pairs (prompt, chosen, rejected) for DPO, with provenance")
    p.add_argument("--db", action="append", metavar="PATH", help="a database (repeatable: merged; default: the user's)")
    p.add_argument("--out", metavar="FILE", help="where to write (default: the data dir's pairs/pairs-<time>.jsonl)")
    p.add_argument("--format", choices=["jsonl", "parquet"], help="default: from --out's extension, else jsonl")
    p.add_argument("--since", metavar="DATE", help="only suggestions made at or after this ISO date (UTC)")
    p.add_argument("--no-sample", action="store_true", help="only pairs with a written chosen; never load the model")
    p.add_argument("--model", help="the model to sample chosen texts from (default: the embedded one)")
    p.add_argument("--seed", type=int, default=0, help="seeds the sampling")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_export_pairs)

    p = sub.add_parser("demo", help="watch a simulated developer use hindsight over real LSP")
    p.add_argument("--model")
    p.add_argument("--lines", type=int, default=None, help="stop after typing this many lines")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("simulate", help="a simulated developer removes code from a repository and types it back")
    p.add_argument("repo", help="the repository (a directory); its files are read, never written")
    p.add_argument("--files", type=int, default=10, help="source files to edit")
    p.add_argument("--sites", type=int, default=2, help="edit sites per file")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pace-ms", type=float, default=120.0, help="median time per keystroke (pauses come on top)")
    p.add_argument("--db", help="database to record into (default: simulated.db in the data dir)")
    p.add_argument("--model")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("cold-start", help="the first acceptance gate: simulated sessions on the standard library, trained")
    p.add_argument("--files", type=int, default=6, help="files per standard-library package")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pace-ms", type=float, default=25.0, help="the simulated developer's time per keystroke")
    p.add_argument("--force", action="store_true", help="train one even if a gate is already promoted")
    p.add_argument("--model")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_cold_start)

    p = sub.add_parser("build-fim-data", help="fill-in-the-middle training examples with cross-file context (JSONL)")
    p.add_argument("--out", default="fim-data.jsonl", metavar="FILE", help="where to write (default: ./fim-data.jsonl)")
    p.add_argument("--files", type=int, default=None, metavar="N", help="files to use, split across the languages (default: all)")
    p.add_argument("--per-file", type=int, default=8, metavar="K", help="examples per file")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-context", action="store_true", help="no cross-file context (much faster)")
    p.add_argument("--exclude", action="append", metavar="NAME",
                   help="leave out packages and directories of this name (repeatable; giving any replaces the "
                        "default: idlelib, asyncio, undici, what the benchmarks evaluate on)")
    p.add_argument("--languages", default="python,javascript,typescript", help="comma-separated")
    p.add_argument("--root", metavar="DIR", help="build from this directory (one package) instead of the "
                                                 "standard library and npm packages")
    p.add_argument("--window", type=int, metavar="CHARS", help="keep the last CHARS of each prefix and the first "
                                                               "CHARS/2 of each suffix (default: the whole file)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_build_fim_data)

    p = sub.add_parser("train-fim", help="LoRA SFT that teaches the model the fill-in-the-middle format")
    p.add_argument("--data", default="fim-data.jsonl", metavar="FILE", help="build-fim-data's examples (.jsonl or .jsonl.gz)")
    p.add_argument("--out", default="fim-adapter", metavar="DIR", help="checkpoints, adapter.gguf and manifest.json")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps (default 1000)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--learning-rate", type=float, default=None)
    p.add_argument("--max-seconds", type=float, default=None, help="fewer steps if they would take longer (the pace "
                                                                   "is measured on the first ten)")
    p.add_argument("--resume", action="store_true", help="go on from the checkpoint in --out")
    p.add_argument("--model")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_train_fim)

    p = sub.add_parser("bench", help="benchmarks")
    bench = p.add_subparsers(dest="bench", required=True)
    b = bench.add_parser("latency", help="typing replay through the real server: p50/p95, cold start, RSS")
    b.add_argument("--json", action="store_true")
    b.add_argument("--file", help="source file to replay (default: a standard-library module)")
    b.add_argument("--lines", type=int, default=80, help="lines of the file to type")
    b.add_argument("--model")
    b.set_defaults(func=cmd_bench)
    b = bench.add_parser("repo", help="cross-file context on a real repository (CrossCodeEval-style)")
    b.add_argument("path", help="the repository (a directory)")
    b.add_argument("--points", type=int, default=100)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--json", action="store_true")
    b.add_argument("--model")
    b.set_defaults(func=cmd_bench)
    b = bench.add_parser("gate", help="the promoted acceptance gate on held-out sessions (--repo simulates them)")
    b.add_argument("--repo", help="simulate sessions on this repository (one the gate was not trained on)")
    b.add_argument("--db", action="append", metavar="PATH", help="sessions already logged (repeatable)")
    b.add_argument("--files", type=int, default=10)
    b.add_argument("--sites", type=int, default=2)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--pace-ms", type=float, default=25.0)
    b.add_argument("--keep-db", metavar="PATH", help="where to keep the simulated sessions")
    b.add_argument("--gates-dir", metavar="DIR")
    b.add_argument("--plot", metavar="PNG", help="draw the trade-off curve")
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=cmd_bench)
    b = bench.add_parser("refresh", help="simulated sessions → pairs → DPO refresh → held-out files, before and after")
    b.add_argument("repo")
    b.add_argument("--files", type=int, default=30, help="files the simulated developer works on for the training data")
    b.add_argument("--held-out-files", type=int, default=12, help="held-out files replayed before and after")
    b.add_argument("--sites", type=int, default=2)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--pace-ms", type=float, default=25.0)
    b.add_argument("--epochs", type=int, default=1)
    b.add_argument("--sft-weight", type=float, default=1.0, help="weight of the chosen text's NLL beside DPO's loss")
    b.add_argument("--learning-rate", type=float, default=5e-4)
    b.add_argument("--anchor-weight", type=float, default=None,
                   help="the anchors' KL weight (refresh/anchors.py; default: DPOConfig's, 0: none)")
    b.add_argument("--infill-tasks", type=int, default=INFILL_TASKS)
    b.add_argument("--trl-steps", type=int, default=1, help="steps of TRL's default DPO to time (4 pairs each; 0: skip)")
    b.add_argument("--train-db", metavar="PATH", help="the training side's sessions, already simulated (--keep'd train.db)")
    b.add_argument("--keep", action="store_true", help="keep the work directory (databases, adapter)")
    b.add_argument("--plot", metavar="PNG", help="draw before/after")
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=cmd_bench)
    b = bench.add_parser("storm", help="a typing storm through the real server: all answered, RSS start/end, p95")
    b.add_argument("repo", nargs="?", help="the workspace (default: the standard library's email package)")
    b.add_argument("--seconds", type=float, default=60.0, help="how long to type (default 60)")
    b.add_argument("--rate", type=float, default=20.0, help="keystrokes a second, each with a request (default 20)")
    b.add_argument("--documents", type=int, default=4, help="open documents typed in round-robin (default 4)")
    b.add_argument("--gate", action="store_true", help="keep the promoted acceptance gate on (default: off)")
    b.add_argument("--model")
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=cmd_bench)
    b = bench.add_parser("bm25", help="BM25 query and update latency against rank-bm25, ~50k lines")
    b.set_defaults(func=cmd_bench)
    b = bench.add_parser("redact", help="secret redaction: recall on a corpus of secrets, false positives on ordinary code")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--variants", type=int, default=3, help="fillings of each template with fresh random values")
    b.add_argument("--show", type=int, default=0, metavar="N", help="print N misses and false positives")
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=cmd_bench)
    b = bench.add_parser("infill", help="HumanEval infilling (single-line, multi-line, random-span), executed")
    b.add_argument("--json", action="store_true")
    b.add_argument("--set", choices=("single", "multi", "span", "all"), default="single",
                   help="which of the FIM paper's three sets (default single: 1,033 tasks)")
    b.add_argument("--mode", choices=("prefix", "fim"), help="prompt format (default: what the adapter declares)")
    b.add_argument("--adapter", metavar="GGUF", help="a LoRA adapter over the model (hindsight train-fim's)")
    b.add_argument("--limit", type=int, default=None, help="first N tasks of each set")
    b.add_argument("--sample", type=int, default=None, help="N tasks of each set drawn at random, seed 0 "
                   "(default: all of single, 300 of multi and of span)")
    b.add_argument("--min-token-prob", type=float, default=None, help="override the engine's (0 = no truncation)")
    b.add_argument("--model")
    b.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose, args.log_file)
    try:
        return args.func(args) or 0
    except CliError as exc:
        print(f"hindsight: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130

