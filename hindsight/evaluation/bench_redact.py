"""Redaction: recall on a corpus of realistic secrets, false positives on ordinary code.

Recall: the templates of hindsight/evaluation/redact_corpus.py (AWS, GitHub, GitLab, Slack, Stripe, Google, OpenAI,
Anthropic, npm, PyPI, JWTs, PEM and PuTTY private keys, connection strings, passwords, Authorization
headers, Azure, Twilio, SendGrid, Heroku, Docker, ...), each filled with fresh random values (`--variants`
times, from `--seed`). A case is caught when no 12 characters of any of its secrets are left in
`redact(text)`, and kept when every literal piece of its template (the code around the secret) is still
there.

False positives: `redact` on every file of the standard library (its test packages left out) and on the
JavaScript and TypeScript of the VS Code extension's npm packages with their lockfiles, none of which
was written to hold a secret; a line `redact` changes is a false positive. Reported per 10,000 lines,
with the files affected; `--show N` prints them (and the cases missed) to look at.

    .venv/bin/hindsight bench redact
    .venv/bin/hindsight bench redact --json
    .venv/bin/hindsight bench redact --variants 100 --show 50
"""

from __future__ import annotations

import time
from collections import Counter
from typing import TextIO

from hindsight.redact import redact
from hindsight.evaluation.redact_corpus import changed_lines, leaks, negative_sets, positives, read


def recall(seed: int = 0, variants: int = 3) -> dict:
    cases = positives(seed, variants)
    by_kind: Counter[str] = Counter()
    caught_by_kind: Counter[str] = Counter()
    missed, mangled = [], []
    for case in cases:
        out = redact(case.text)
        by_kind[case.kind] += 1
        leaked = [w for s in case.secrets for w in leaks(s, out, case.template)]
        lost = [k for k in case.keep if k not in out]
        if leaked:
            missed.append({"kind": case.kind, "text": case.text, "redacted": out, "leaked": leaked[:3]})
        else:
            caught_by_kind[case.kind] += 1
        if lost:
            mangled.append({"kind": case.kind, "text": case.text, "redacted": out, "lost": lost})
    return {
        "cases": len(cases),
        "templates": len(cases) // variants,
        "caught": len(cases) - len(missed),
        "recall": round((len(cases) - len(missed)) / len(cases), 4),
        "surroundings_kept": len(cases) - len(mangled),
        "recall_by_kind": {k: round(caught_by_kind[k] / n, 3) for k, n in sorted(by_kind.items())},
        "missed": missed,
        "mangled": mangled,
    }


def false_positives() -> dict:
    sets = {}
    hits = []
    for name, files in negative_sets().items():
        lines = changed = affected = chars = 0
        for path in files:
            text = read(path)
            lines += text.count("\n") + (not text.endswith("\n"))
            chars += len(text)
            found = list(changed_lines(text, redact(text)))
            if found:
                affected += 1
                changed += len(found)
                hits += [{"file": str(path), "line": n, "before": a, "after": b} for n, a, b in found]
        sets[name] = {
            "files": len(files),
            "lines": lines,
            "chars": chars,
            "lines_changed": changed,
            "per_10k_lines": round(changed / lines * 10_000, 2) if lines else None,
            "files_affected": affected,
        }
    return {"sets": sets, "hits": hits}


def run(seed: int = 0, variants: int = 3) -> dict:
    start = time.process_time()
    fp = false_positives()
    seconds = time.process_time() - start  # CPU time: the machine's other jobs do not count
    rec = recall(seed, variants)
    lines = sum(s["lines"] for s in fp["sets"].values())
    changed = sum(s["lines_changed"] for s in fp["sets"].values())
    return {
        "recall": rec["recall"],
        "cases": rec["cases"],
        "caught": rec["caught"],
        "surroundings_kept": rec["surroundings_kept"],
        "fp_per_10k_lines": round(changed / lines * 10_000, 2) if lines else None,
        "fp_lines": changed,
        "negative_lines": lines,
        "negative_files": sum(s["files"] for s in fp["sets"].values()),
        "files_affected": sum(s["files_affected"] for s in fp["sets"].values()),
        "cpu_mb_per_s": round(sum(s["chars"] for s in fp["sets"].values()) / 1e6 / seconds, 1),
        "recall_by_kind": rec["recall_by_kind"],
        "negatives": fp["sets"],
        "missed": rec["missed"],
        "mangled": rec["mangled"],
        "hits": fp["hits"],
    }


def summary(result: dict) -> dict:
    """The result as flat `key  value` lines: one per negative set, one for recall by kind."""
    flat = {k: v for k, v in result.items() if k not in ("recall_by_kind", "negatives")}
    for name, n in result["negatives"].items():
        flat[name] = (f"{n['lines_changed']} of {n['lines']:,} lines changed ({n['per_10k_lines']} per 10k), "
                      f"{n['files_affected']} of {n['files']:,} files")
    flat["recall_by_kind"] = ", ".join(f"{k} {v:g}" for k, v in result["recall_by_kind"].items())
    return flat


def show(result: dict, n: int, out: TextIO) -> None:
    """The first `n` cases missed, cases mangled and false positives of a `run`, to look at."""
    for case in result["missed"][:n]:
        print(f"MISSED {case['kind']}: {case['text']!r}\n    -> {case['redacted']!r}", file=out)
    for case in result["mangled"][:n]:
        print(f"MANGLED {case['kind']}: lost {case['lost']!r}\n    -> {case['redacted']!r}", file=out)
    for hit in result["hits"][:n]:
        print(f"FP {hit['file']}:{hit['line']}\n    {hit['before'].strip()[:160]}\n -> {hit['after'].strip()[:160]}",
              file=out)
