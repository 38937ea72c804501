"""`hindsight report`: what the user gained, day by day and per model (with its adapter) and gate version.

    hindsight report [--db PATH] [--plot FILE.png] [--json]

From the log's rows (`reader.report_rows`): suggestions shown, acceptance (accepted in full / shown),
characters from accepted suggestions still there at their persistence check (two minutes after the
accept; `reader.KEPT`), the parts of suggestions taken word by word, rejected suggestions shown, and the
median and 95th-percentile latency of the model's answers. Two tables: one row a day, and one a model
(with its adapter) and gate version; the picture draws the days.
"""

from __future__ import annotations

import datetime as dt
import statistics
from pathlib import Path
from typing import Any

from hindsight.collector.reader import report_rows


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return round(values[min(len(values) - 1, int(q * len(values)))], 1)


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    shown = [r for r in rows if r["shown"]]
    accepted = sum(r["outcome"] == "accepted" for r in shown)
    latencies = [r["latency_ms"] for r in rows if r["call"] and r["latency_ms"] is not None]
    return {
        "shown": len(shown),
        "acceptance": round(accepted / len(shown), 4) if shown else None,
        "accepted": accepted,
        "partial": sum(r["outcome"] == "partial" for r in shown),
        "rejected_shown": sum(r["outcome"] == "rejected" for r in shown),
        "kept_chars": sum(r["kept_chars"] for r in shown),
        "p50_ms": round(statistics.median(latencies), 1) if latencies else None,
        "p95_ms": _percentile(latencies, 0.95),
    }


def report(db: Path, by: str = "day") -> list[dict[str, Any]]:
    """One row a day (local time) or a model-and-gate version (in the order each first served), with
    `summarize`'s counts."""
    groups: dict[Any, list[dict]] = {}
    for row in report_rows(db):
        if by == "day":
            key = dt.datetime.fromtimestamp(row["created_at"]).date().isoformat()
        else:
            key = (row["model"] or "?", row["gate_version"] or "no gate")
        groups.setdefault(key, []).append(row)
    out = []
    for key, rows in groups.items():
        head = {"day": key} if by == "day" else {"model": key[0], "gate": key[1]}
        out.append({**head, **summarize(rows)})
    return out


def table(rows: list[dict[str, Any]]) -> str:
    """The report as aligned text columns."""
    if not rows:
        return "nothing logged yet"
    keys = list(rows[0])
    cells = [[str(k) for k in keys]] + [["-" if r[k] is None else str(r[k]) for k in keys] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(keys))]
    return "\n".join("  ".join(c[i].ljust(widths[i]) if i < 2 else c[i].rjust(widths[i]) for i in range(len(keys)))
                     for c in cells)


def plot(rows: list[dict[str, Any]], path: Path, label: str) -> None:
    """Acceptance, characters kept and rejected suggestions shown, a point a day (a row of the report)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["day"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.2), dpi=120)
    for ax, (key, title) in zip(axes, [("acceptance", "acceptance (accepted / shown)"),
                                       ("kept_chars", "characters kept from suggestions"),
                                       ("rejected_shown", "rejected suggestions shown")]):
        ax.plot(range(len(rows)), [r[key] or 0 for r in rows], marker="o")
        ax.set_xticks(range(len(rows)), names, fontsize=6, rotation=30, ha="right")
        ax.set_title(title, fontsize=8)
        ax.set_ylim(bottom=0)
    fig.suptitle(f"hindsight report, {label}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
