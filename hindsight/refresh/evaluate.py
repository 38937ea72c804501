"""Before and after a refresh: what the served model (llama.cpp over the quantized GGUF, with or without the
adapter) would have suggested on held-out logged requests, and HumanEval single-line infilling.

Replay: for each held-out request whose right answer is known (the completion the user accepted, or the
text they wrote after rejecting one), the model's greedy suggestion from the exact logged prompt, with
the engine's token healing, cut as the engine cuts it (at the end of the line, or after as many lines as
the logged suggestion had). It counts as accepted when the simulated developer would accept it
(hindsight.simulate.simulator.decide): exactly what was about to be typed. The accepted rows (those the
user kept: `collector.reader.accepted_suggestions`) guard against an adapter that fixes the rejected
suggestions by breaking the right ones; the characters taken are characters the user kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hindsight.engine.engine import heal_split
from hindsight.engine.generate import continuation
from hindsight.engine.llama_backend import LlamaBackend
from hindsight.refresh.infill import load_tasks, pick, run
from hindsight.simulate.simulator import decide, edit_similarity

MAX_TOKENS = 48  # the engine's single-line budget
INFILL_TASKS = 1033  # HumanEval single-line infilling: all of it (fewer: a fixed random subset)


@dataclass(frozen=True)
class ReplayItem:
    prompt: str
    intended: str  # what the user was about to type there
    lines: int  # lines the suggestion may have


def replay_items(rows: list[dict]) -> list[ReplayItem]:
    """From logged rows (dicts with prompt, completion, outcome and `written`: the chosen text of a
    written pair, when there is one)."""
    items = []
    for row in rows:
        if not row.get("prompt"):
            continue
        if row.get("outcome") == "accepted" and row.get("completion"):
            intended = row["completion"]
        elif row.get("written"):
            intended = row["written"]
        else:
            continue
        items.append(ReplayItem(row["prompt"], intended, max(1, row.get("completion", "").count("\n") + 1)))
    return items


def suggest(backend, prompt: str, lines: int = 1, max_tokens: int = MAX_TOKENS, min_token_prob: float = 0.3) -> str:
    """The greedy suggestion at the end of `prompt`, healed as the engine heals it, and stopped where the
    engine stops: before the first token past the healed text that is less likely than `min_token_prob`
    (an adapter that makes the model unsure shows as shorter, or no, suggestions)."""
    head, heal = heal_split(prompt)
    text = continuation(backend, head, heal, max_tokens=max_tokens, lines=lines, min_token_prob=min_token_prob)
    return (text or "").rstrip()


def replay(backend, items: list[ReplayItem]) -> dict:
    """Acceptance (share accepted in full), partial-or-better, characters taken, and mean edit
    similarity to the text that was about to be typed (cut to the suggestion's length)."""
    accepted = partial = chars = 0
    similarity = 0.0
    for item in items:
        s = suggest(backend, item.prompt, item.lines)
        verdict = decide(s, item.intended)
        accepted += verdict == "accepted"
        partial += verdict != "rejected"
        chars += len(s) if verdict == "accepted" else verdict[1] if isinstance(verdict, tuple) else 0
        similarity += edit_similarity(s, item.intended[: max(len(s), 1)])
    n = max(len(items), 1)
    return {
        "items": len(items),
        "acceptance": round(accepted / n, 4),
        "accepted_chars": chars,  # characters the developer would have taken (whole or partial accepts)
        "useful": round(partial / n, 4),
        "es": round(100 * similarity / n, 2),
    }


def infill(backend, tasks: int = INFILL_TASKS, seed: int = 0) -> float:
    """HumanEval single-line infilling pass@1 through the engine, on `tasks` tasks (a fixed subset when fewer
    than all)."""
    return round(run(pick(load_tasks(), tasks, seed), backend, raw=False).pass_at_1, 4)


def backend_for(model_path: Path, adapter: Path | None = None) -> LlamaBackend:
    return LlamaBackend(model_path, n_ctx=4096, lora_path=adapter)
