"""DSAT preference pairs (DRIFT, for code): what the model suggested and the user turned down, against
what they wrote instead, in TRL's preference format (`prompt`, `chosen`, `rejected`) with provenance.

    hindsight export-pairs                                    # the user's database, sampling where needed
    hindsight export-pairs --db a.db --db b.db --format parquet --out team.parquet
    hindsight export-pairs --no-sample --since 2026-01-01 --json

A DSAT (dissatisfaction) is a model suggestion that was shown (`MODEL_SUGGESTION` in
hindsight.collector.reader: decision 'show', source 'model', not an alternative) and then

- rejected: typed over, dismissed, or cycled past to an alternative — each a judgement of its content.
  Not 'superseded' (a newer request replaced it, typically while the user was still typing along it: no
  judgement, and the text "written instead" is often the suggestion itself) and not 'cursor_moved' (the
  user went elsewhere without reading it as wrong; by the time anything is read back the spot is
  untouched, so there is nothing written to prefer). Both are counted under `not_dsat`;
- partially accepted: the user took a prefix and wrote something else after it. The rejected side is the
  whole completion; the chosen side starts with the accepted prefix;
- accepted but not kept: edit similarity at +120 s (else +30 s) below 0.5.

The pair's prompt is the stored prompt, exactly what the model saw; rejected is the stored completion.
Chosen, in order of preference:

1. `written`: the text the user wrote at the spot (`actual_text`: as many lines as the suggestion, from
   the cursor). It runs to the end of those lines, so it also holds what was already there after the
   cursor (an auto-closed `)`, the lines below a short block): the longest end of it that the stored
   suffix begins with is cut off, as the engine cuts the same overlap from a completion. Then the
   engine's `clean` (a single-line suggestion → one line, trailing whitespace off). A written text equal
   to the suggestion up to whitespace means the suggestion was right after all: dropped, not sampled;
2. `sampled` (with a sampler): fresh samples from the current model at T≈0.7 on the same prompt (after
   the accepted prefix, for a partial), shaped by the engine's own stop rule and post-processing; the
   first that is not blank, differs from the rejected one and parses in place (the lines around the
   cursor have no more tree-sitter errors with it than without) is chosen.

Filters, each counted: no chosen (nothing written, no sampler); no sample (none of the samples
qualified); an empty written text (the user was there and left the spot blank: nothing should have been
suggested, which is the gate's lesson, not a sample's, so it is not sampled); chosen equal to rejected
after whitespace normalisation; secrets; duplicates (same prompt, chosen and rejected: a team's merged
logs, a database passed twice).

What is written is read back only after a rejection the tracker follows (typed over, dismissed, and the
superseded and cursor_moved ones left out here): a partial accept, a suggestion cycled past and an
accepted one that was not kept have nothing written, and get a chosen only from a sampler.

Secrets: the collector redacts before it writes, but its rules grow; the miner redacts the prompt, chosen
and rejected again. A pair whose chosen or rejected held a secret (or holds a `«redacted:…»` mark from
the collector) is dropped: a pair whose two sides differ in a secret teaches nothing about code, and one
that keeps the mark teaches the model to write marks. A prompt is context only: it is kept, redacted
(counted as `prompt_redacted`).

Databases are opened read-only (hindsight.collector.reader); `--since` compares with `created_at` (a date
or date-time; UTC unless it carries an offset).
"""

from __future__ import annotations

import inspect
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable
from urllib.parse import unquote, urlparse

from hindsight.collector.reader import KEPT, LogError, shown_suggestions
from hindsight.redact import MARK_RE, redact
from hindsight.engine.backend import BackendError
from hindsight.engine.engine import heal_split
from hindsight.engine.generate import continuation
from hindsight.engine.llama_backend import LlamaBackend, Sampling
from hindsight.engine.model import check_gguf
from hindsight.engine.postprocess import clean, trim_suffix_overlap
from hindsight.engine.stops import StopRule
from hindsight.errors import HindsightError
from hindsight.gating.features import Cursor, parses
from hindsight.paths import ensure_private_dir

# (prompt, n) → up to n raw continuations of `prompt`. A sampler may also take `stop`, a callable that
# says from the continuation so far whether the engine's stop rule would stop there (the miner passes it
# when the sampler's signature has it): sampling stops there instead of at its token limit.
Sampler = Callable[..., list[str]]

PERSISTED = KEPT  # edit similarity of accepted text still there at or above which it counts as kept
DSAT_REASONS = frozenset({"typed_over", "dismissed", "cycled"})
SAMPLES = 4  # samples drawn per pair that needs one

FIELDS = (
    "prompt", "chosen", "rejected", "suggestion_id", "chosen_source", "dsat", "outcome_reason", "repo",
    "uri", "language", "created_at", "database", "session_id",
)  # fmt: skip
FILTERS = ("no_chosen", "no_sample", "empty_chosen", "same_as_rejected", "secret", "duplicate")


class PairsError(HindsightError):
    """Pairs cannot be mined: no database, not a hindsight database, bad arguments. One line."""

    usage = True  # what was given is refused


@dataclass
class Mined:
    pairs: list[dict[str, Any]]
    counts: dict[str, Any]


@dataclass
class _Counts:
    shown: int = 0
    dsat: Counter = field(default_factory=Counter)
    not_dsat: Counter = field(default_factory=Counter)
    chosen: Counter = field(default_factory=Counter)
    pairs_by_dsat: Counter = field(default_factory=Counter)
    filtered: Counter = field(default_factory=Counter)
    prompt_redacted: int = 0

    def as_dict(self, databases: list[Path]) -> dict[str, Any]:
        return {
            "databases": [str(p) for p in databases],
            "shown": self.shown,
            "dsat": {k: self.dsat[k] for k in ("rejected", "partial", "not_persisted")},
            "not_dsat": dict(sorted(self.not_dsat.items())),
            "pairs": sum(self.chosen.values()),
            "chosen": {k: self.chosen[k] for k in ("written", "sampled")},
            "pairs_by_dsat": {k: self.pairs_by_dsat[k] for k in ("rejected", "partial", "not_persisted")},
            "filtered": {k: self.filtered[k] for k in FILTERS},
            "prompt_redacted": self.prompt_redacted,
        }


# -- reading ------------------------------------------------------------------------------------------------


def parse_since(text: str | None) -> float | None:
    """`--since`: an ISO date or date-time → a Unix time (UTC unless the text has an offset)."""
    if text is None:
        return None
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise PairsError(f"--since expects an ISO date such as 2026-01-31 (or a date-time), not {text!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()


def _iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, timezone.utc).isoformat()


def _path_of(uri: str | None) -> Path | None:
    if not uri:
        return None
    parsed = urlparse(uri)
    return Path(unquote(parsed.path)) if parsed.scheme in ("file", "") and parsed.path else None


def repo_of(row: dict[str, Any]) -> str | None:
    """The workspace root the suggestion was made in, else the document's directory.

    No column holds the root, but the prompt does: its header line (just before the prefix window) is the
    document's path relative to the workspace root (the file name alone when the server had no root or
    the file lies outside it), so the root is the document's path without that tail."""
    path = _path_of(row.get("uri"))
    if path is None:
        return None
    prompt, prefix = row.get("prompt") or "", row.get("prefix") or ""
    if prompt.endswith(prefix):
        head = prompt[: len(prompt) - len(prefix)]
        if head.endswith("\n"):
            header = head[:-1].rsplit("\n", 1)[-1]
            shown = header.split(" ", 1)[1] if " " in header else ""
            parts = Path(shown).parts
            if parts and ".." not in parts and path.parts[-len(parts) :] == parts:
                return str(Path(*path.parts[: len(path.parts) - len(parts)]))
    return str(path.parent)


# -- DSAT and chosen ----------------------------------------------------------------------------------------


def dsat_kind(row: dict[str, Any]) -> str | None:
    """'rejected', 'partial' or 'not_persisted'; None for a suggestion that says nothing against itself."""
    outcome = row.get("outcome")
    if outcome == "rejected":
        return "rejected" if row.get("outcome_reason") in DSAT_REASONS else None
    if outcome == "partial":
        return "partial" if _accepted_part(row) != (row.get("completion") or "") else None
    if outcome == "accepted":
        kept = row.get("persist_120s")
        if kept is None:
            kept = row.get("persist_30s")
        return "not_persisted" if kept is not None and kept < PERSISTED else None
    return None


def _accepted_part(row: dict[str, Any]) -> str:
    completion = row.get("completion") or ""
    if row.get("outcome") != "partial":
        return ""
    n = row.get("accepted_length") or 0
    return completion[: max(0, min(int(n), len(completion)))]


def _mode(row: dict[str, Any]) -> str:
    mode = row.get("mode")
    if mode in ("single", "multi"):
        return mode
    return "multi" if "\n" in (row.get("completion") or "") else "single"


def normalized(text: str) -> str:
    """Whitespace runs → one space, none at the ends: what 'the same up to whitespace' compares."""
    return " ".join(text.split())


def _overlap_start(text: str, suffix: str) -> int:
    """Where the end of `text` that `suffix` begins with starts (len(text) when none does)."""
    for i in range(len(text)):
        if suffix.startswith(text[i:]):
            return i
    return len(text)


def written_chosen(actual_text: str, completion: str, suffix: str) -> str:
    """What the user wrote at the spot, in the suggestion's shape: as many lines as it, without the text
    that was already after the cursor, trailing whitespace off (a single-line one → one line)."""
    n_lines = completion.count("\n") + 1
    text = "\n".join(actual_text.split("\n")[:n_lines])
    text = text[: _overlap_start(text, suffix)]
    return clean(text, "multi" if n_lines > 1 else "single")


def _stop_rule(row: dict[str, Any]) -> StopRule:
    prefix = row.get("prefix") or ""
    return StopRule(_mode(row), cursor_line_prefix=prefix[prefix.rfind("\n") + 1 :], suffix=row.get("suffix") or "")


def shape_sample(text: str, row: dict[str, Any]) -> str:
    """A raw continuation of the prompt, cut and cleaned as the engine cuts and cleans its own."""
    suffix, mode = row.get("suffix") or "", _mode(row)
    return clean(trim_suffix_overlap(_stop_rule(row).finish(text), suffix, mode), mode)


def parses_in_place(completion: str, prefix: str, suffix: str, language: str | None) -> bool:
    """The gate's check: no more tree-sitter errors around the cursor with the completion than without."""
    line = prefix.count("\n")
    character = len(prefix) - (prefix.rfind("\n") + 1)
    return parses(Cursor((prefix + suffix).split("\n"), line, character, language), completion)


def _takes_stop(sampler: Sampler) -> bool:
    try:
        params = inspect.signature(sampler).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "stop" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def sampled_chosen(row: dict[str, Any], sampler: Sampler, n: int, stop_kw: bool = False) -> str | None:
    """The first of `n` fresh samples that is not blank, differs from the rejected completion and parses
    in place; for a partial accept, a continuation of the accepted part."""
    accepted = _accepted_part(row)
    prompt = row["prompt"] + accepted
    kwargs = {}
    if stop_kw:
        rule = _stop_rule(row)
        kwargs["stop"] = lambda text: rule.feed(accepted + text) is not None
    rejected = normalized(row["completion"])
    for raw in sampler(prompt, n, **kwargs):
        candidate = shape_sample(accepted + raw, row)
        if not candidate.strip() or normalized(candidate) == rejected:
            continue
        if parses_in_place(candidate, row.get("prefix") or "", row.get("suffix") or "", row.get("language")):
            return candidate
    return None


def _has_secret(text: str) -> bool:
    return redact(text) != text or MARK_RE.search(text) is not None


# -- mining -------------------------------------------------------------------------------------------------


def mine(
    db_paths: Iterable[str | Path],
    *,
    since: float | None = None,
    model: str | None = None,
    sampler: Sampler | None = None,
    samples: int = SAMPLES,
    progress: Callable[[int, int], None] | None = None,
) -> Mined:
    """Every DSAT pair of every database in `db_paths`, merged in order, with the counts of what was
    found and filtered; `model`: only the suggestions of the model whose logged name contains it. All
    databases are read (and checked) before any sampling starts."""
    paths = [Path(p).expanduser() for p in db_paths]
    if not paths:
        raise PairsError("no database given")
    try:
        tables = [(path, shown_suggestions(path, since, model)) for path in paths]
    except LogError as e:
        raise PairsError(str(e)) from None
    counts = _Counts()
    candidates: list[tuple[Path, dict[str, Any], str]] = []
    for path, rows in tables:
        for row in rows:
            counts.shown += 1
            kind = dsat_kind(row)
            if kind is None:
                if row.get("outcome") == "rejected":
                    counts.not_dsat[row.get("outcome_reason") or "unknown"] += 1
                continue
            if not row.get("prompt") or not (row.get("completion") or "").strip():
                counts.not_dsat["no_prompt"] += 1
                continue
            counts.dsat[kind] += 1
            candidates.append((path, row, kind))

    stop_kw = sampler is not None and _takes_stop(sampler)
    pairs: list[dict[str, Any]] = []
    seen: set[tuple[str, str, str]] = set()
    for done, (path, row, kind) in enumerate(candidates):
        if progress is not None:
            progress(done, len(candidates))
        if row.get("actual_text") is not None:
            chosen, source = written_chosen(row["actual_text"], row["completion"], row.get("suffix") or ""), "written"
            if not chosen.strip():
                counts.filtered["empty_chosen"] += 1
                continue
            if normalized(chosen) == normalized(row["completion"]):
                counts.filtered["same_as_rejected"] += 1
                continue
        elif sampler is None:
            counts.filtered["no_chosen"] += 1
            continue
        else:
            chosen, source = sampled_chosen(row, sampler, samples, stop_kw), "sampled"
            if chosen is None:
                counts.filtered["no_sample"] += 1
                continue
        rejected = row["completion"]
        if _has_secret(chosen) or _has_secret(rejected):
            counts.filtered["secret"] += 1
            continue
        prompt = redact(row["prompt"])
        key = (prompt, chosen, rejected)
        if key in seen:
            counts.filtered["duplicate"] += 1
            continue
        seen.add(key)
        counts.prompt_redacted += prompt != row["prompt"]
        counts.chosen[source] += 1
        counts.pairs_by_dsat[kind] += 1
        pairs.append(
            {
                "prompt": prompt,
                "chosen": chosen,
                "rejected": rejected,
                "suggestion_id": row["id"],
                "chosen_source": source,
                "dsat": kind,
                "outcome_reason": row.get("outcome_reason"),
                "repo": repo_of(row),
                "uri": row.get("uri"),
                "language": row.get("language"),
                "created_at": _iso(row.get("created_at")),
                "database": str(path.resolve()),
                "session_id": row.get("session_id"),
            }
        )
    if progress is not None:
        progress(len(candidates), len(candidates))
    return Mined(pairs, counts.as_dict(paths))


# -- writing ------------------------------------------------------------------------------------------------


def format_for(out: Path, fmt: str | None) -> str:
    """The output format: as given, else from the file's extension (.parquet), else JSONL."""
    if fmt is not None:
        if fmt not in ("jsonl", "parquet"):
            raise PairsError(f"unknown format {fmt!r}; expected jsonl or parquet")
        return fmt
    return "parquet" if out.suffix.lower() == ".parquet" else "jsonl"


def write(pairs: list[dict[str, Any]], out: Path, fmt: str) -> Path:
    """Write the pairs (mode 0600: they hold the user's code) to a temporary file beside `out`, then
    rename it into place: a reader never sees half a file."""
    out = Path(out).expanduser()
    ensure_private_dir(out.parent)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.partial")
    try:
        fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
        if fmt == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            os.close(fd)
            schema = pa.schema([(name, pa.string()) for name in FIELDS])
            table = pa.Table.from_pylist([{k: p.get(k) for k in FIELDS} for p in pairs], schema=schema)
            pq.write_table(table, tmp)
        else:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                for p in pairs:
                    f.write(json.dumps({k: p.get(k) for k in FIELDS}, ensure_ascii=False) + "\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, out)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise PairsError(f"cannot write {out}: {e.strerror or e}") from None
    return out


# -- sampling with the embedded model --------------------------------------------------------------------


class LlamaSampler:
    """Fresh samples from a GGUF model through llama.cpp (`LlamaBackend.generate` with `Sampling`):
    temperature sampling over the best `top_k` tokens within nucleus `top_p`, seeded. The model is loaded
    on the first call (a database with nothing to sample never loads it).

    As the engine does, the partial word (or indentation) at the end of the prompt is cut off and the
    model writes it again, in the tokens it prefers ("token healing"): a prompt that ends mid-token is text
    it never saw in training. What is returned starts where the prompt ends. A sample ends at end of
    text, after `max_tokens` (the engine's multi-line budget), or where `stop` (given the text so far)
    says so: the miner passes the engine's stop rule. It reuses the backend's KV cache: each sample after
    the first evaluates only its own tokens."""

    def __init__(
        self,
        model_path: str | Path,
        *,
        temperature: float = 0.7,
        top_p: float = 0.95,
        top_k: int = 40,
        seed: int = 0,
        max_tokens: int = 160,
        lora_path: str | Path | None = None,
    ):
        self.sampling = Sampling(temperature=temperature, top_p=top_p, top_k=top_k, seed=seed)
        self.model_path = Path(model_path)
        try:
            check_gguf(self.model_path)
        except BackendError as e:
            raise PairsError(str(e)) from None
        self.max_tokens = max_tokens
        self.lora_path = lora_path  # the promoted adapter, for samples from the policy the user has now
        self._backend: LlamaBackend | None = None

    @property
    def backend(self) -> LlamaBackend:
        if self._backend is None:
            try:
                extra = {"lora_path": self.lora_path} if self.lora_path else {}
                self._backend = LlamaBackend(self.model_path, **extra)
            except BackendError as e:
                raise PairsError(str(e)) from None
        return self._backend

    def __call__(self, prompt: str, n: int, *, stop: Callable[[str], bool] | None = None) -> list[str]:
        head, heal = heal_split(prompt)
        samples = (
            continuation(self.backend, head, heal, max_tokens=self.max_tokens, stop=stop, sampling=self.sampling)
            for _ in range(n)
        )
        return [text for text in samples if text is not None]


def llama_sampler(
    model_path: str | Path, *, temperature: float = 0.7, seed: int = 0, lora_path: str | Path | None = None
) -> LlamaSampler:
    """A sampler for `mine` on a GGUF model (the embedded one: hindsight.engine.model.resolve_model(None)), with a
    LoRA adapter over it when `lora_path` is given."""
    return LlamaSampler(model_path, temperature=temperature, seed=seed, lora_path=lora_path)
