"""`hindsight bench infill`: HumanEval infilling, executed, through the product and through the raw model.

The tasks, the executor and the runner are hindsight/refresh/infill.py (the refresh's forgetting guard
runs them too); this is the command: which sets, how many tasks, which prompt format, and the report.
The multi-line (4,782 tasks) and random-span (1,640) sets are sampled, 300 tasks each (seed 0), unless
`--sample` says otherwise.

The prompt format is the model's profile (hindsight/engine/profiles.py): what its vocabulary says, or
for the embedded Gemma the format its adapter's manifest declares. `--mode prefix` prompts any model
with the text before the cursor only; `--mode fim` with the model's fill-in-the-middle format (the one
`hindsight train-fim` teaches the embedded Gemma, for a model that has none).

Run:

    # the single-line set (1,033 tasks; about 8 minutes on two CPU cores)
    hindsight bench infill
    # the three sets, one JSON object
    hindsight bench infill --set all --json
    # an adapter trained for fill-in-the-middle
    hindsight bench infill --set all --adapter path/to/adapter.gguf --json
"""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from hindsight.engine.engine import EngineConfig
from hindsight.engine.llama_backend import LlamaBackend
from hindsight.engine.model import resolve_model
from hindsight.engine.backend import BackendError
from hindsight.engine.profiles import ProfileError, from_template, named
from hindsight.engine.servers import connect
from hindsight.errors import UsageError
from hindsight.refresh.infill import Report, load_tasks, pick, run


def format_report(report: Report, title: str) -> str:
    table = Table(title=f"{title} · {report.tasks} tasks")
    table.add_column("system")
    table.add_column("pass@1", justify="right")
    table.add_column("exact match", justify="right")
    table.add_row("hindsight (Engine.complete)", f"{report.pass_at_1:.3f}", f"{report.exact_match:.3f}")
    table.add_row("raw model (no post-processing)", f"{report.pass_at_1_raw:.3f}", f"{report.exact_match_raw:.3f}")
    console = Console(width=100)
    with console.capture() as cap:
        console.print(table)
    return cap.get().rstrip() + f"\n{report.seconds:.0f} s"


SETS = ("single", "multi", "span")
SAMPLE = {"multi": 300, "span": 300}  # tasks drawn (seed 0) from the larger sets unless --sample says


def main(*, which: str, mode: str | None, adapter: Path | None, limit: int | None, sample: int | None,
         min_token_prob: float | None, model: str | None, as_json: bool, server: dict | None = None) -> None:
    """`hindsight bench infill --set WHICH`: each set's report printed as it is done (one JSON object at the
    end with `as_json`)."""
    if limit is not None and limit < 1 or sample is not None and sample < 1:
        raise UsageError("--limit and --sample must be at least 1")
    if adapter is not None and not adapter.is_file():
        raise UsageError(f"no adapter at {adapter}")
    config = EngineConfig()
    if min_token_prob is not None:
        config.min_token_prob = min_token_prob
    sets = SETS if which == "all" else (which,)
    server = server or {}
    try:
        template = from_template(server.get("template"))
    except ProfileError as exc:
        raise UsageError(str(exc)) from None
    if server.get("backend", "embedded") != "embedded":
        try:
            backend = connect(server["backend"], server["base_url"], model=server.get("model_name"),
                              profile=template or (named("none") if mode == "prefix" else None))
        except BackendError as exc:
            raise UsageError(str(exc)) from None
    else:
        # By default the profile the model's vocabulary (or its adapter) points to; --mode prefix: prefix-only
        # prompts for any model; --mode fim: the model's FIM format, the embedded Gemma's for a model without.
        backend = LlamaBackend(resolve_model(model), lora_path=adapter,
                               profile=template or (named("none") if mode == "prefix" else None))
        if mode == "fim" and not backend.profile.fim:
            backend = LlamaBackend(resolve_model(model), lora_path=adapter, profile=named("gemma-fim"))
    mode = "fim" if backend.profile.fim else "prefix"
    out: dict = {"mode": mode, "adapter": str(adapter) if adapter else None, "backend": backend.name,
                 "profile": backend.profile.name}
    for name in sets:
        tasks = pick(load_tasks(name)[:limit], sample if sample else SAMPLE.get(name))
        kwargs = dict(config=config, product=name == "single")  # the engine writes single lines here
        if as_json:
            report = run(tasks, backend, **kwargs)
        else:
            columns = (TextColumn(f"infill {name}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
            with Progress(*columns, console=Console(stderr=True)) as bar:
                job = bar.add_task(name, total=len(tasks))
                report = run(tasks, backend, progress=lambda n: bar.advance(job, n), **kwargs)
            print(format_report(report, f"HumanEval {name}-{'line' if name != 'span' else 'random-span'} infilling "
                                        f"· {mode} · {backend.name}"))
        out[name] = report.as_json()
    if as_json:
        head = {k: out[k] for k in ("mode", "adapter", "backend", "profile")}
        print(json.dumps(out if len(sets) > 1 else {**head, "set": sets[0], **out[sets[0]]}))
