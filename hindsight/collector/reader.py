"""Reading the log: hindsight's SQLite databases opened read-only, the rows each offline consumer needs,
and the one definition of what was shown, accepted, partially accepted and rejected.

The definitions are SQL predicates over the `requests` table, so that every count and every training row
is selected by the same words:

- `SHOWN`: a suggestion the user saw, whatever made it: a request's suggestion (decision 'show'), or an
  alternative they cycled to (decision 'alternative' with `shown_at` set);
- `SHOWN_ONCE`: `SHOWN`, less a suggestion the user typed ahead through ('continued'): its typed-ahead
  child carries it on and holds its outcome, so it is counted once. What `hindsight stats` calls shown;
- `MODEL_CALL`: a request the model was called for (source 'model', not an alternative), whatever came
  of it: shown, empty, withheld by the gate, cancelled;
- `MODEL_SUGGESTION`: a model call's own suggestion, shown (decision 'show'). What the learners read: a
  typed-ahead row is a suggestion carried on, not one the model made for that spot, and an alternative
  cycled past is recorded as its request's rejection (reason 'cycled');
- `EMPTY`: a model call that gave nothing to show;
- outcomes: `ACCEPTED` (in full), `PARTIAL` (a prefix), `REJECTED` (any reason); `DECIDED`, one of the
  three (an expired suggestion says nothing about itself, a continued one is judged in its child);
  `TAKEN`, accepted in full or in part: the gate's positive label.

Who reads what (the differences are deliberate, and named here rather than hidden in each consumer):

- `hindsight stats` (`Store.stats`, on the store's own connection): `SHOWN_ONCE` rows, and every row with
  each outcome, typed-ahead ones included;
- the DSAT pairs (`shown_suggestions`): every `MODEL_SUGGESTION`; the refresh's replay guard
  (`accepted_suggestions`): those `ACCEPTED`, with the prompt the model saw;
- the gate's training data (`gate_rows`): `MODEL_CALL`s with features that were `EMPTY` or a
  `MODEL_SUGGESTION` with a `DECIDED` outcome;
- `hindsight bench gate` (`model_calls`): every `MODEL_CALL` with features (its call counts take them all),
  each marked `empty`, `judged` (a `DECIDED` `MODEL_SUGGESTION`) and `taken`.

Each reader takes `model`: only the rows whose logged model name (`requests.model`, e.g.
`llama.cpp:qwen2.5-coder-1.5b-q8_0.gguf` or `llama-server:http://host:8012 qwen`) contains it, for a log
written by more than one model: a gate or an adapter learns from the model it will serve with.

A database is opened read-only (reading never changes or creates one), checked for the columns the
consumer needs, and closed; every problem is a `LogError` of one line.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from hindsight.collector.migrations import MIGRATIONS_TABLE
from hindsight.errors import HindsightError

SHOWN = "(decision = 'show' OR (decision = 'alternative' AND shown_at IS NOT NULL))"
SHOWN_ONCE = f"({SHOWN} AND outcome IS NOT 'continued')"
MODEL_CALL = "(source = 'model' AND alternative_of IS NULL)"
MODEL_SUGGESTION = f"({MODEL_CALL} AND decision = 'show')"
EMPTY = "decision = 'empty'"
ACCEPTED = "outcome = 'accepted'"
PARTIAL = "outcome = 'partial'"
REJECTED = "outcome = 'rejected'"
DECIDED = "outcome IN ('accepted', 'partial', 'rejected')"
TAKEN = "outcome IN ('accepted', 'partial')"
KEPT = 0.5  # edit similarity at or above which accepted text still there at its persistence check counts as kept

# The columns the pairs miner and the replay read (m001_initial); session_id and alternative_of came
# later (m003, m004) and read as NULL where a database predates them.
SUGGESTION_COLUMNS = (
    "id", "created_at", "uri", "language", "mode", "prompt", "prefix", "suffix", "completion", "source",
    "decision", "outcome", "outcome_reason", "accepted_length", "actual_text", "persist_30s", "persist_120s",
)  # fmt: skip
SUGGESTION_OPTIONAL = ("session_id", "alternative_of")
BY_MODEL = "(? IS NULL OR instr(coalesce(model, ''), ?) > 0)"  # the `model` filter: its text, twice

# Flags the learners' rows carry (0 or 1, never NULL): one definition, computed where the rows are read.
JUDGED = f"coalesce({MODEL_SUGGESTION} AND {DECIDED}, 0) AS judged"
IS_TAKEN = f"coalesce({TAKEN}, 0) AS taken"
IS_EMPTY = f"coalesce({EMPTY}, 0) AS empty"

# Columns added after m001_initial, with the migration that added them and what it brought: a database
# without one predates that migration (the server migrates it when it next opens it).
LATER_COLUMNS = {
    "alternative_of": ("m003_alternatives", "alternatives"),
    **dict.fromkeys(
        ("session_id", "features_json", "gate_p1", "gate_p2", "gate_version", "propensity", "explored"),
        ("m004_gate", "the gate"),
    ),
}


class LogError(HindsightError):
    """A database cannot be read: missing, not a hindsight database, older than what is asked. One line."""

    usage = True  # the database named is refused


def connect(path: Path) -> sqlite3.Connection:
    """The database at `path`, read-only: reading must never change (or create) the user's database."""
    path = Path(path)
    if not path.is_file():
        raise LogError(f"no database at {path}")
    if path.stat().st_size == 0:
        raise LogError(f"{path} is empty, not a hindsight database")
    try:
        return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=10.0)
    except sqlite3.Error as e:
        raise LogError(f"cannot open database {path}: {e}") from None


def _check(conn: sqlite3.Connection, path: Path, required: tuple[str, ...]) -> set[str]:
    """The requests table's columns; LogError when it is not a hindsight database or lacks `required`."""
    tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "requests" not in tables or MIGRATIONS_TABLE not in tables:
        raise LogError(f"{path} is not a hindsight database (no requests or {MIGRATIONS_TABLE} table)")
    columns = {row[1] for row in conn.execute("PRAGMA table_info(requests)")}
    missing = [c for c in required if c not in columns]
    later = [c for c in missing if c in LATER_COLUMNS]
    if later:
        migration, what = max(LATER_COLUMNS[c] for c in later)
        raise LogError(
            f"{path} predates {what} (no column {', '.join(later)}; migration {migration}): "
            "start the hindsight server on it once to migrate it"
        )
    if missing:
        raise LogError(f"{path} is not a hindsight database (its requests table has no {', '.join(missing)})")
    return columns


def _select(
    path: Path,
    columns: tuple[str, ...],
    where: str,
    params: tuple | list = (),
    *,
    required: tuple[str, ...],
    optional: tuple[str, ...] = (),
) -> list[dict[str, Any]]:
    """`columns` (names or `expr AS name`) and `optional` ones (NULL where the database predates them) of
    the requests matching `where`, oldest first, as dicts. `required`: the columns the query uses."""
    path = Path(path)
    conn = connect(path)
    try:
        present = _check(conn, path, required)
        # A missing optional column is selected as NULL under its name, which `where` may use (SQLite
        # resolves a name the table lacks to the result column of that name).
        select = [*columns, *(c if c in present else f"NULL AS {c}" for c in optional)]
        conn.row_factory = sqlite3.Row
        result = conn.execute(f"SELECT {', '.join(select)} FROM requests WHERE {where} ORDER BY created_at, id", params)
        return [dict(r) for r in result]
    except sqlite3.DatabaseError as e:
        raise LogError(f"{path} is not a readable hindsight database ({e})") from None
    finally:
        conn.close()


def shown_suggestions(path: Path, since: float | None = None, model: str | None = None) -> list[dict[str, Any]]:
    """Every `MODEL_SUGGESTION` of one database (created at or after `since`, a Unix time, when given),
    oldest first: what the DSAT pairs are mined from."""
    return _select(
        path, SUGGESTION_COLUMNS, f"{MODEL_SUGGESTION} AND (? IS NULL OR created_at >= ?) AND {BY_MODEL}",
        [since, since, model, model], required=(*SUGGESTION_COLUMNS, "model"), optional=SUGGESTION_OPTIONAL,
    )  # fmt: skip


def judged_since(path: Path, since: float | None) -> int:
    """How many `MODEL_SUGGESTION`s of one database created at or after `since` (a Unix time; None: ever)
    have a `DECIDED` outcome: the new signal the learning loop waits for."""
    return len(_select(
        path, ("id",), f"{MODEL_SUGGESTION} AND {DECIDED} AND (? IS NULL OR created_at >= ?)", [since, since],
        required=("id", "created_at", "decision", "outcome", "source", "alternative_of"),
    ))  # fmt: skip


def accepted_suggestions(path: Path, model: str | None = None) -> list[dict[str, Any]]:
    """The `MODEL_SUGGESTION`s of one database `ACCEPTED` in full and not undone (their last persistence
    check found them `KEPT`, or none ran), with a prompt: the replay's guard against breaking what was
    right, whose characters are the ones the user kept. Oldest first; the columns of `shown_suggestions`."""
    return _select(
        path, SUGGESTION_COLUMNS,
        f"{MODEL_SUGGESTION} AND {ACCEPTED} AND coalesce(persist_120s, persist_30s, 1) >= {KEPT} AND prompt != '' "
        f"AND {BY_MODEL}", [model, model],
        required=(*SUGGESTION_COLUMNS, "model"), optional=SUGGESTION_OPTIONAL,
    )  # fmt: skip


def gate_rows(path: Path, model: str | None = None) -> list[dict[str, Any]]:
    """The gate's training rows of one database, oldest first: `MODEL_CALL`s with features that came back
    `EMPTY` (stage 1 decides whether to call the model at all, so an empty call is one it should skip)
    or were shown and `DECIDED`. Columns: id, uri, session_id, features_json, propensity, `judged` (shown
    and decided; else empty) and `taken` (the label)."""
    return _select(
        path,
        ("id", "uri", "session_id", "features_json", "propensity", JUDGED, IS_TAKEN),
        f"{MODEL_CALL} AND features_json IS NOT NULL AND ({EMPTY} OR ({MODEL_SUGGESTION} AND {DECIDED})) "
        f"AND {BY_MODEL}",
        [model, model],
        required=("id", "created_at", "uri", "session_id", "features_json", "propensity", "alternative_of",
                  "outcome", "decision", "source", "model"),
    )  # fmt: skip


def model_calls(path: Path) -> list[dict[str, Any]]:
    """Every `MODEL_CALL` of one database with gate features, whatever its decision, oldest first: what
    `hindsight bench gate` scores again. Columns: features_json, timings_json, `empty`, `judged` (a
    `MODEL_SUGGESTION` with a `DECIDED` outcome) and `taken`."""
    return _select(
        path,
        ("features_json", "timings_json", IS_EMPTY, JUDGED, IS_TAKEN),
        f"{MODEL_CALL} AND features_json IS NOT NULL",
        required=("id", "created_at", "decision", "outcome", "features_json", "timings_json", "source",
                  "alternative_of"),
    )  # fmt: skip



def report_rows(path: Path) -> list[dict[str, Any]]:
    """Every `MODEL_CALL` and every shown alternative of one database, oldest first, with what `hindsight
    report` counts: `shown` (`SHOWN_ONCE`), the outcome, the characters taken and kept (`kept_chars`: a
    suggestion `ACCEPTED` whose last persistence check, at two minutes or else 30 s, found it `KEPT`, its
    length; `PARTIAL`, the part taken, which is not checked), the latency, and the model (with its
    adapter) and gate that served it."""
    kept = (f"CASE WHEN {ACCEPTED} AND coalesce(persist_120s, persist_30s) >= {KEPT} THEN length(completion) "
            f"WHEN {PARTIAL} THEN coalesce(accepted_length, 0) ELSE 0 END AS kept_chars")
    return _select(
        path, ("created_at", "model", "gate_version", "latency_ms", f"coalesce({SHOWN_ONCE}, 0) AS shown",
               f"coalesce({MODEL_CALL}, 0) AS call", "outcome", kept),
        f"{MODEL_CALL} OR {SHOWN}", [],
        required=("created_at", "model", "gate_version", "latency_ms", "decision", "shown_at", "outcome", "source",
                  "alternative_of", "completion", "accepted_length", "persist_30s", "persist_120s"),
    )  # fmt: skip
