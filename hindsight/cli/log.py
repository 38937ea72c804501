"""The log: `hindsight stats` and `hindsight report` read it, `hindsight forget` deletes from it."""

from __future__ import annotations

import json
from pathlib import Path

import click

from hindsight.cli.common import command, databases, db_option, json_option, need
from hindsight.cli.output import format_stats
from hindsight.collector import report as gains
from hindsight.collector.store import Store
from hindsight.errors import HindsightError, UsageError
from hindsight.paths import db_path
from hindsight.refresh.pairs import parse_since


@command("report")
@click.option("--db", "db", metavar="PATH", help="the log  [default: $HINDSIGHT_DB or the data dir's hindsight.db]")
@click.option("--plot", type=click.Path(path_type=Path), metavar="FILE.png", help="draw the days to this file")
@json_option
def report(db, plot, as_json) -> None:
    path = databases((db,) if db else ())[0]
    result = {"days": gains.report(path, "day"), "versions": gains.report(path, "version")}
    if plot:
        need("bench", "matplotlib")
        gains.plot(result["days"], plot, str(path))
        result["plot"] = str(plot)
    if as_json:
        print(json.dumps(result))
        return
    print("By day\n" + gains.table(result["days"]) + "\n\nBy model (and adapter) and gate\n" + gains.table(result["versions"]))
    if plot:
        print(f"\nplot: {plot}")


@command("stats")
@json_option
@db_option("a database; several: the stats of each")
def stats(as_json: bool, dbs: tuple[str, ...]) -> None:
    found = {}
    for path in databases(dbs):
        with Store(path) as store:
            found[str(path)] = store.stats()
    if len(found) == 1:  # one database (the usual case): its stats alone, as before several could be asked for
        (only,) = found.values()
        print(json.dumps(only) if as_json else format_stats(only))
    elif as_json:
        print(json.dumps(found))
    else:
        print("\n".join(format_stats(s, title=f"hindsight stats: {path}") for path, s in found.items()))


# forget takes one --db: it deletes, so it acts on the one file named, and its report (bytes before and
# after, the WAL) is that file's.
@command("forget")
@click.option("--since", metavar="DATE", help="what was recorded at or after this ISO date (UTC)")
@click.option("--all", "everything", is_flag=True, help="everything")
@click.option("--db", metavar="PATH", help="the database  [default: $HINDSIGHT_DB or the data dir's hindsight.db]")
@json_option
def forget(since: str | None, everything: bool, db: str | None, as_json: bool) -> None:
    """Delete what was recorded (all, or since DATE), then rebuild the file so none of it is left behind."""
    if everything == (since is not None):
        raise click.UsageError("give one of --since DATE and --all")
    cutoff = None if everything else parse_since(since)
    path = Path(db).expanduser() if db else db_path()
    if not path.is_file():
        raise UsageError(f"no database at {path}")

    def size() -> int:
        return sum(Path(f"{path}{s}").stat().st_size for s in ("", "-wal") if Path(f"{path}{s}").exists())

    before = size()
    with Store(path) as store:
        deleted = store.forget(cutoff)
        wal_truncated = store.compact()
    report = {
        "database": str(path),
        "since": since,
        "deleted": deleted,
        "bytes_before": before,
        "bytes_after": size(),
        "wal_truncated": wal_truncated,
    }
    if as_json:
        print(json.dumps(report))
    else:
        counts = ", ".join(f"{n} {table}" for table, n in deleted.items())
        scope = f"since {since}" if since is not None else "all"
        print(f"deleted {counts} ({scope}) from {path}; {before:,} → {report['bytes_after']:,} bytes after VACUUM")
    if not wal_truncated:
        raise HindsightError(f"the WAL ({path}-wal) was busy and may still hold deleted text; run forget again")
