"""`hindsight refresh`: the user's dissatisfaction pairs → a DPO LoRA adapter → promoted if it measures
better, and the server hot-loads it (`hindsight.reload`, or its next start).

    hindsight refresh [--db PATH ... | --pairs FILE] [--model GGUF [--weights DIR]] [--only-model TEXT]
                      [--epochs N] [--no-promote] [--json]
    hindsight refresh --rollback

The model is the GGUF the user serves (default: the embedded Gemma), of any architecture transformers
reads, or trained from its Hugging Face directory (`--weights`; hindsight/refresh/base.py).

The pairs (mined from the databases, or read from `hindsight export-pairs`' file) are split by file:
a fifth of the files are held out. The adapter trains on the rest (hindsight/refresh/dpo.py), is written as a
GGUF adapter and test-loaded by llama.cpp in a child process, and then the served model is measured with
and without it: replay on the held-out files' logged requests (hindsight/refresh/evaluate.py) and HumanEval
single-line infilling (all 1,033 tasks: on a subset of 200, one point is two tasks, inside the flips of
any adapter that changes outputs). When the adapter costs more than one point of infilling, its effect
is halved (alpha scaled: a point between the base model and the trained adapter, as WiSE-FT
interpolates weights) and measured again, down to a quarter, so that what is promoted keeps the
infilling goal and part of the gain. (On the bench's small log, both shrink about in proportion:
docs/BENCHMARKS.md, refresh run 3.) It is promoted only if replay acceptance rises, the characters the
user would have kept from its suggestions do not fall by more than 5% (an adapter accepted more often only
by saying less is not better; the replay's right answers are what the user wrote and kept: accepted
suggestions that were edited away count by what replaced them), and infilling drops by at most one point. Every adapter is
kept (data dir `adapters/`; `hindsight learn` prunes the oldest beyond a bound); `--rollback` makes the one
before the current one current again.
"""

from __future__ import annotations

import gc
import hashlib
import json
import math
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from hindsight.collector.reader import LogError, accepted_suggestions
from hindsight.engine.adapters import adapters_dir, promoted_for
from hindsight.engine.model import check_adapter, gguf_sha256, resolve_model
from hindsight.errors import HindsightError
from hindsight.refresh.anchors import anchor_texts
from hindsight.refresh.base import load_base
from hindsight.refresh.dpo import DPOConfig, add_lora, encode, encode_anchor, lora_state, train
from hindsight.refresh.evaluate import INFILL_TASKS, backend_for, infill, replay, replay_items
from hindsight.refresh.gguf_adapter import scale_adapter, write_adapter
from hindsight.refresh.pairs import _iso, _path_of, llama_sampler, mine, repo_of
from hindsight.refresh.registry import promote as promote_version, write_version

HELD_OUT = 0.2  # share of files (groups of pairs) held out for the before/after replay
MAX_REPLAY = 600  # held-out replay items, at most (each is a generation with each model), spread over the files
CHARS_DROP = 0.05  # the characters kept in the replay may fall by at most this share (BENCHMARKS, runs 10-11)
INFILL_DROP = 0.01  # infilling pass@1 may drop by at most this much for an adapter to be promoted
SCALES = (1.0, 0.5, 0.25)  # the adapter's effect, tried in turn while it costs more infilling than that


class RefreshError(HindsightError):
    """A refresh cannot go on (no pairs, a malformed pairs file): one line for the user."""

    usage = True  # what it was given is refused (exit status 2), but for an adapter llama.cpp rejects


def read_pairs(path: Path) -> list[dict]:
    """Pairs from a JSONL or Parquet file in TRL's preference format (prompt, chosen, rejected; the
    provenance columns are optional)."""
    path = Path(path)
    if not path.is_file():
        raise RefreshError(f"no pairs file at {path}")
    if path.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq

            rows = pq.read_table(path).to_pylist()
        except Exception as exc:
            raise RefreshError(f"{path}: not a readable Parquet file ({exc})") from None
        where = lambda i: f"{path}: row {i + 1}"  # noqa: E731
    else:
        rows = []
        with open(path, encoding="utf-8", errors="replace") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    raise RefreshError(f"{path}:{n}: not a JSON object (expected one pair per line)") from None
        where = lambda i: f"{path}: pair {i + 1}"  # noqa: E731
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise RefreshError(f"{where(i)}: not an object with prompt, chosen and rejected")
        for key in ("prompt", "chosen", "rejected"):
            if not isinstance(row.get(key), str) or not row[key]:
                raise RefreshError(f"{where(i)}: '{key}' must be a non-empty string")
    if not rows:
        raise RefreshError(f"{path} holds no pairs")
    return rows


def _group(row: dict) -> str:
    """The file a pair (or a logged suggestion) was written in, as its path inside its repository: so the
    split is the same wherever the database lies, and a file that several databases hold (a team's) falls
    on one side. (`hindsight bench refresh` picks its held-out files by `repo-name/path`, another key, so
    the two splits are independent.)"""
    path = _path_of(row.get("uri"))
    if path is None:
        return row.get("repo") or ""
    try:
        return path.relative_to(row.get("repo") or repo_of(row)).as_posix()
    except ValueError:
        return path.as_posix()


def held_out(key: str, share: float = HELD_OUT) -> bool:
    """Whether a file is held out: by a hash of its name, so the split is the same on every run."""
    return int(hashlib.sha1(key.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < share


def accepted_rows(dbs: list[Path], model: str | None = None) -> list[dict]:
    """Logged suggestions accepted in full (the replay's guard against breaking what was right: the
    reader's `accepted_suggestions`; `model`, its filter), each with its time in ISO form and its
    database, as a pair has."""
    rows = []
    for db in map(Path, dbs):
        try:
            table = accepted_suggestions(db, model)
        except LogError as exc:
            raise RefreshError(str(exc)) from None
        database = str(db.resolve())
        rows += [{**r, "created_at": _iso(r["created_at"]), "database": database} for r in table]
    return rows


def better_replay(before: dict, after: dict) -> bool:
    """Acceptance rises without the characters taken falling by more than CHARS_DROP: an adapter that only
    makes the model unsure (shorter suggestions, accepted more often, worth less) is not better; one that
    suggests a little shorter and is right more often is (the characters of a few suggestions are noise)."""
    return after["acceptance"] > before["acceptance"] and after["accepted_chars"] >= (1 - CHARS_DROP) * before["accepted_chars"]


def _order(pairs: list[dict]) -> list[dict]:
    """By file, then time: consecutive pairs share most of their prompt (hindsight.refresh.dpo.PromptCache)."""
    return sorted(pairs, key=lambda p: (_group(p), p.get("created_at") or ""))


def train_adapter(pairs: list[dict], model_path: Path, config: DPOConfig, out: Path,
                  progress: Callable[[str], None] | None = None, weights: Path | None = None) -> dict:
    """Train on `pairs` and write the GGUF adapter for the model at `model_path` to `out`; the training
    statistics. `weights`: the model's Hugging Face directory to train on (`load_base`)."""
    import torch

    torch.manual_seed(config.seed)
    model, tokenizer = load_base(model_path, weights)
    if torch.cuda.is_available():  # the same code on a GPU, where there is one
        model = model.to("cuda")
    examples = [e for p in _order(pairs) if (e := encode(tokenizer, p["prompt"], p["chosen"], p["rejected"], config))]
    if not examples:
        raise RefreshError("none of the pairs differ in a token once tokenized: nothing to train on")
    anchors = []
    if config.anchor_weight > 0:  # general code, none from the repositories the pairs come from
        count = math.ceil(len(examples) / config.pairs_per_step) * config.anchors_per_step
        texts = anchor_texts(count, exclude={p.get("repo") for p in pairs}, seed=config.seed)
        anchors = [encode_anchor(tokenizer, prefix, line, config) for prefix, line in texts]
    peft_model = add_lora(model, config)
    stats = train(peft_model, examples, config, anchors=anchors, progress=progress)
    write_adapter(lora_state(peft_model), alpha=config.alpha, out=out, base_gguf=model_path)
    del peft_model, model
    gc.collect()
    return {
        "pairs": stats.pairs,
        "skipped": len(pairs) - len(examples),
        "steps": stats.steps,
        "train_seconds": round(stats.seconds, 1),
        "reference_seconds": round(stats.reference_seconds, 1),
        "pairs_per_minute": round(stats.pairs_per_minute, 1),
        "loss": [round(x, 4) for x in stats.losses],
        "reward_accuracy": [round(x, 3) for x in stats.reward_accuracy],
        "anchors": len(anchors),
        "anchor_kl": [round(x, 4) for x in stats.anchor_kl],
    }


def measure(model_path: Path, adapter: Path | None, items, infill_tasks: int) -> dict:

    backend = backend_for(model_path, adapter)
    result = replay(backend, items)
    if infill_tasks:
        result["infill"] = infill(backend, infill_tasks)
    del backend
    gc.collect()
    return result


def refresh(
    *,
    pairs: list[dict],
    accepted: list[dict] = (),
    config: DPOConfig | None = None,
    model_path: Path | None = None,
    weights: Path | None = None,
    infill_tasks: int = INFILL_TASKS,
    promote: bool = True,
    adapters: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """The whole job on mined or read `pairs` (and, for the replay, the logged `accepted` rows), for the
    GGUF at `model_path` (default: the embedded model), trained from `weights` when given."""
    say = progress or (lambda message: None)
    config = config or DPOConfig()
    model_path = Path(model_path) if model_path else resolve_model(None)
    train_pairs = [p for p in pairs if not held_out(_group(p))]
    test_pairs = [p for p in pairs if held_out(_group(p))]
    if not train_pairs:
        raise RefreshError(f"no pairs to train on ({len(pairs)} pairs, all in held-out files)")
    rows = [{**p, "written": p["chosen"], "completion": p["rejected"], "outcome": "rejected"}
            for p in test_pairs if p.get("chosen_source", "written") == "written"]
    rows += [r for r in accepted if held_out(_group(r))]
    items = replay_items(_order(rows))
    items = items[::math.ceil(len(items) / MAX_REPLAY)] if items else items  # every file, not the first ones
    say(f"{len(train_pairs)} pairs to train on, {len(items)} held-out requests to replay")
    work = Path(tempfile.mkdtemp(prefix="hindsight-refresh-"))
    try:
        adapter = work / "adapter.gguf"
        started = time.perf_counter()
        training = train_adapter(train_pairs, model_path, config, adapter, progress, weights)
        problem = check_adapter(adapter, model_path)
        if problem:
            raise RefreshError(f"the trained adapter does not load in llama.cpp: {problem}", usage=False)
        directory = adapters or adapters_dir()
        current = promoted_for(model_path, directory)  # "before" is the model being served now
        say("measuring the model before and after")
        before = measure(model_path, current, items, infill_tasks)
        tried = []
        for scale in SCALES:
            candidate = adapter
            if scale != 1:
                say(f"infilling fell from {before['infill']:.3f} to {tried[-1][2]:.3f}: the adapter at {scale:g}")
                candidate = scale_adapter(adapter, work / f"adapter-{scale:g}.gguf", scale)
            after = measure(model_path, candidate, items, infill_tasks)
            tried.append([scale, after["acceptance"], after.get("infill")])
            kept = not infill_tasks or after["infill"] >= before["infill"] - INFILL_DROP - 1e-9
            if kept:
                break
        better = bool(items) and better_replay(before, after)
        result: dict[str, Any] = {
            **training,
            "held_out_items": len(items),
            "before": current.parent.name if current else "base model",
            "scale": scale,
            "tried": tried,  # [scale, acceptance, infilling] for each adapter measured
            "acceptance_before": before["acceptance"],
            "acceptance_after": after["acceptance"],
            "accepted_chars_before": before["accepted_chars"],
            "accepted_chars_after": after["accepted_chars"],
            "es_before": before["es"],
            "es_after": after["es"],
            "infill_before": before.get("infill"),
            "infill_after": after.get("infill"),
            "seconds": round(time.perf_counter() - started, 1),
        }
        manifest = {
            "base_model": model_path.name,
            "base_sha256": gguf_sha256(model_path),
            "base_path": str(model_path.resolve()),
            "weights": str(Path(weights).resolve()) if weights else None,
            "kind": "dpo",
            "config": config.as_json(),
            "pairs_sha256": hashlib.sha256(
                json.dumps([[p["prompt"], p["chosen"], p["rejected"]] for p in train_pairs]).encode()
            ).hexdigest(),
            "metrics": result,
        }
        version = write_version(directory, candidate, manifest)
        result["adapter"] = version.name
        result["promoted"] = bool(promote and better and kept)
        if result["promoted"]:
            promote_version(version)
        result["why"] = (
            "promoted" if result["promoted"] else
            "not asked to promote" if not promote else
            f"held-out acceptance did not rise (or the characters taken fell by more than {CHARS_DROP:.0%})" if not better else
            f"infilling dropped by more than {INFILL_DROP * 100:g} point"
        )
        return result
    finally:  # the work directory goes, whatever happened (the registry keeps its own copy)
        shutil.rmtree(work, ignore_errors=True)


def run(*, dbs: list[Path], pairs_file: Path | None = None, sample: bool = True, epochs: int = 1,
        infill_tasks: int = INFILL_TASKS, promote: bool = True, model: str | None = None,
        weights: Path | None = None, only_model: str | None = None,
        progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """`hindsight refresh`: the pairs from `pairs_file` (`hindsight export-pairs`' file), else mined from
    `dbs` (with `sample`, chosen texts sampled from the current model where none was written; with
    `only_model`, from the suggestions of the model whose logged name contains it), then the whole job
    on `model` (a GGUF path; default: the embedded model); its result."""
    model_path = resolve_model(model)
    if weights is not None and not (Path(weights) / "config.json").is_file():
        raise RefreshError(f"{weights} is not a Hugging Face model directory (no config.json)")
    accepted: list[dict] = []
    if pairs_file is not None:
        pairs = read_pairs(pairs_file)
    else:
        sampler = None
        if sample:
            sampler = llama_sampler(model_path, lora_path=promoted_for(model_path))  # the current model
        pairs = mine(dbs, model=only_model, sampler=sampler).pairs
        if not pairs:
            raise RefreshError("no dissatisfaction pairs in " + ", ".join(map(str, dbs)) + ": nothing to learn yet")
        accepted = accepted_rows(dbs, only_model)
    return refresh(pairs=pairs, accepted=accepted, config=DPOConfig(epochs=epochs), model_path=model_path,
                   weights=weights, infill_tasks=infill_tasks, promote=promote, progress=progress)
