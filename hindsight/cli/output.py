"""How the commands print what they return: the packages return dicts, and only the command line turns
them into text (a table, or aligned `key  value` lines) or, with `--json`, into one JSON object."""

from __future__ import annotations

import json

from rich.console import Console
from rich.table import Table


def print_result(result: dict, as_json: bool) -> None:
    """A command's result: one JSON object, or one aligned `key  value` line per field."""
    if as_json:
        print(json.dumps(result))
        return
    width = max(map(len, result), default=0)
    for key, value in result.items():
        print(f"{key:>{width}}  {value}")


def render(title: str, rows: list[tuple[str, str]], width: int, justify: str = "right") -> str:
    """A two-column metric/value table as text (rich's, captured: the caller decides where it goes)."""
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify=justify)
    for key, value in rows:
        table.add_row(key, value)
    console = Console(file=None, width=width)
    with console.capture() as cap:
        console.print(table)
    return cap.get().rstrip()


def format_stats(stats: dict, title: str = "hindsight stats") -> str:
    """`hindsight stats` (and the demo's last table): outcome counts, acceptance rate, latency."""
    rows = []
    for key, value in stats.items():
        if isinstance(value, float):
            value = f"{value:.3f}" if key == "acceptance_rate" else f"{value:.1f}"
        elif isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items()) or "-"
        rows.append((key, "-" if value is None else str(value)))
    return render(title, rows, width=100)


def format_gate_metrics(metrics: dict) -> str:
    """The few numbers a user wants after training: how good, what it hides, whether it is in use."""

    def num(value, digits=3):
        return "-" if value is None else f"{value:.{digits}f}"

    held = metrics["held_out"]
    current = metrics["current"]
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
    return render(f"hindsight gate {metrics['version']}", rows, width=120)


def pairs_summary(counts: dict) -> str:
    """Why mining found no pairs, in a few words: nothing shown, or what was turned down and dropped."""
    if not counts["shown"]:
        return "no shown suggestions" + (" since then" if counts.get("since") is not None else "")
    dsat = sum(counts["dsat"].values())
    dropped = ", ".join(f"{k} {v}" for k, v in counts["filtered"].items() if v)
    return f"{counts['shown']} shown suggestions, {dsat} turned down" + (f"; dropped: {dropped}" if dropped else "")


def format_pairs_counts(result: dict) -> str:
    """Pairs by where chosen came from and by kind of DSAT, and what each filter dropped."""

    def parts(d: dict) -> str:
        return ", ".join(f"{k} {v}" for k, v in d.items()) or "-"

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
    # The path on a line of its own: a table would wrap it.
    table = render("hindsight export-pairs", rows, width=120, justify="left")
    return f"{table}\nwritten to {result['out']} ({result['format']})"
