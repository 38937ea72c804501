"""`hindsight train-fim`: LoRA SFT that teaches the embedded model the FIM format (hindsight/engine/fim.py).

    hindsight train-fim [--data fim-data.jsonl] [--steps N] [--batch-size B] [--max-seconds S] [--out DIR]
                        [--resume] [--json]

The examples come from `hindsight build-fim-data` (JSONL, or JSONL.gz). Each is encoded as the engine will
prompt: cross-file context, the suffix window, the header and prefix, with the cursor's partial word
moved to the middle (token healing); the loss is the middle's NLL (its `<eos>` included) and nothing
else. The LM head runs only where a middle token is predicted: with Gemma's 262k-token vocabulary that
is most of the arithmetic saved. The steps follow a curriculum: the first `curriculum` share of them
draws only single-line spans (the product's main case), the rest draws from every kind.

A run checkpoints to `--out` every `checkpoint_every` steps (adapter, optimizer, step); `--resume`
continues from there, drawing the same batches it would have drawn. The same code runs on a GPU when one
is there (bfloat16 autocast). The result in `--out`: `adapter.gguf` and `manifest.json` (the recipe, the
data's sha256, the seed, the losses); `hindsight bench infill --set all --adapter DIR/adapter.gguf`
measures it (in the format its manifest declares). It is not promoted into the served adapters by this
command: no FIM adapter has yet measured better than the base model (docs/BENCHMARKS.md, infill).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from hindsight.engine.engine import heal_split
from hindsight.engine.fim import FORMAT, MIDDLE, SUFFIX, clean, suffix_window
from hindsight.engine.model import file_sha256, gguf_sha256, resolve_model
from hindsight.engine.profiles import BY_NAME
from hindsight.errors import UsageError
from hindsight.refresh.base import load_base
from hindsight.refresh.dpo import TARGETS, lora_state
from hindsight.refresh.gguf_adapter import write_adapter

SINGLE_LINE = ("line", "rest_of_line", "expression", "statement")


@dataclass
class FIMConfig:
    steps: int = 1000
    batch_size: int = 16
    rank: int = 16
    alpha: float = 32.0
    learning_rate: float = 1.5e-4
    warmup: int = 30
    curriculum: float = 0.3  # the first share of the steps draws only single-line spans
    context_tokens: int = 384
    suffix_tokens: int = 256
    prefix_tokens: int = 768
    middle_tokens: int = 128
    checkpoint_every: int = 100
    max_seconds: float | None = None  # fewer steps (the schedule shortened to fit) when they would take longer
    validation: int = 200  # examples held out (by source file) for the validation loss
    seed: int = 0
    targets: tuple[str, ...] = TARGETS

    def as_json(self) -> dict:
        return {**asdict(self), "targets": list(self.targets)}


@dataclass
class Encoded:
    ids: list[int]  # prompt, then middle (ending with <eos>)
    middle: int  # how many of the last ids are the middle
    kind: str


class FIMError(UsageError):
    """A clear, one-line reason a training run cannot go on: the data or the options given are refused."""


def read_examples(path: Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise FIMError(f"no FIM data at {path} (make it with: hindsight build-fim-data --out {path})")
    opener = gzip.open if path.suffix == ".gz" else open
    rows = []
    with opener(path, "rt", encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                raise FIMError(f"{path}:{n}: not a JSON object") from None
            if not all(isinstance(row.get(k), str) for k in ("prefix", "middle", "suffix")) or not row["middle"]:
                raise FIMError(f"{path}:{n}: needs prefix, middle (non-empty) and suffix strings")
            rows.append(row)
    if not rows:
        raise FIMError(f"{path} holds no examples")
    return rows


def data_sha256(path: Path) -> str:
    return file_sha256(Path(path))


def encode(tokenizer, example: dict, config: FIMConfig) -> Encoded | None:
    """Token ids as the engine will prompt (hindsight.engine.fim.layout), healed, each part cut to its budget."""
    language = example.get("language") or "python"
    prefix, middle, suffix = clean(example["prefix"]), clean(example["middle"]), clean(example["suffix"])
    prefix, heal = heal_split(prefix)
    middle = heal + middle
    path = example.get("path") or (example.get("source") or "").split("/", 1)[-1]
    head = BY_NAME["gemma-fim"].file_header(path, language)

    def ids(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    def counts(lines: list[str]) -> list[int]:
        return [len(x) for x in tokenizer(lines, add_special_tokens=False)["input_ids"]] if lines else []

    # Each part is chosen as text and tokenized whole, as the engine's prompt is (LlamaBackend.tokenize).
    # The snippets' blocks as the prompt builder renders them, best nearest the code (hindsight/fim/data.py)
    blocks = "".join(c["text"] for c in reversed(example.get("context") or [])) if config.context_tokens else ""
    context = ids(clean(blocks))[-config.context_tokens :] if blocks else []
    lines = suffix.split("\n")
    sizes = iter(counts(lines))
    window = suffix_window(suffix, lambda line: next(sizes), config.suffix_tokens)
    suffix_ids = ids(window)[: config.suffix_tokens]
    # The prefix: whole lines from the end while they fit (the engine's window, without its anchoring)
    lines = prefix.split("\n")
    room = config.prefix_tokens - len(ids(head)) - len(ids(lines[-1]))
    start = len(lines) - 1
    for size in reversed(counts(lines[:-1])):
        if size + 1 > room:
            break
        room -= size + 1
        start -= 1
    before = ids(head + "\n".join(lines[start:]))[-config.prefix_tokens :]
    mid = ids(middle)[: config.middle_tokens - 1] + [tokenizer.eos_token_id]
    if len(mid) < 2:
        return None
    sentinel = tokenizer.convert_tokens_to_ids
    prompt = [tokenizer.bos_token_id, *context, sentinel(SUFFIX), *suffix_ids, sentinel(MIDDLE), *before]
    return Encoded(prompt + mid, len(mid), example.get("kind", ""))


def _held_out(example: dict, share: float) -> bool:
    digest = hashlib.sha1((example.get("source") or example["prefix"][:200]).encode()).hexdigest()
    return int(digest[:8], 16) / 0xFFFFFFFF < share


def split(examples: list[Encoded], rows: list[dict], config: FIMConfig) -> tuple[list[Encoded], list[Encoded]]:
    """(train, validation): whole source files held out, about `config.validation` examples."""
    share = min(0.5, config.validation / max(len(rows), 1))
    train, valid = [], []
    for e, row in zip(examples, rows):
        (valid if _held_out(row, share) else train).append(e)
    if not train:  # too few files to spare any: no validation
        return valid, []
    return train, valid[: config.validation]


def batch_indices(step: int, train: list[Encoded], config: FIMConfig) -> list[int]:
    """The batch of `step`, the same on a resumed run: single-line spans only in the curriculum's first
    part, then every kind."""
    rng = random.Random(f"{config.seed}:{step}")
    pool = range(len(train))
    if step < config.curriculum * config.steps:
        single = [i for i in pool if train[i].kind in SINGLE_LINE]
        pool = single or pool
    return [rng.choice(pool) for _ in range(config.batch_size)]


def middle_loss(model, batch: list[Encoded]):
    """Mean NLL of the middle tokens of `batch` (right-padded; the LM head at middle positions only)."""
    import torch

    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    device = inner.device
    width = max(len(e.ids) for e in batch)
    inputs = torch.zeros((len(batch), width), dtype=torch.long)
    attention = torch.zeros((len(batch), width), dtype=torch.long)
    targets = torch.full((len(batch), width), -100, dtype=torch.long)
    for i, e in enumerate(batch):
        n = len(e.ids)
        inputs[i, :n] = torch.tensor(e.ids)
        attention[i, :n] = 1
        targets[i, n - e.middle - 1 : n - 1] = torch.tensor(e.ids[n - e.middle :])  # position t predicts t+1
    inputs, attention, targets = inputs.to(device), attention.to(device), targets.to(device)
    hidden = inner.model(input_ids=inputs, attention_mask=attention).last_hidden_state
    mask = targets != -100
    logits = inner.lm_head(hidden[mask]).float()
    cap = getattr(inner.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return torch.nn.functional.cross_entropy(logits, targets[mask])


def _save_checkpoint(out: Path, model, optimizer, step: int, steps: int, losses: list[float]) -> None:
    import torch

    tmp = out / "checkpoint.pt.tmp"
    torch.save({"step": step, "steps": steps, "lora": lora_state(model), "optimizer": optimizer.state_dict(),
                "losses": losses}, tmp)
    tmp.replace(out / "checkpoint.pt")


def train(
    rows: list[dict],
    model_path: Path,
    out: Path,
    config: FIMConfig,
    *,
    resume: bool = False,
    data_hash: str = "",
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Train (or go on training) and write `out/adapter.gguf` and `out/manifest.json`; the manifest."""
    import torch
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict

    say = progress or (lambda message: None)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    model, tokenizer = load_base(model_path)
    cuda = torch.cuda.is_available()
    if cuda:
        model = model.to("cuda")
    encoded = [encode(tokenizer, r, config) for r in rows]
    keep = [i for i, e in enumerate(encoded) if e is not None]
    train_set, valid = split([encoded[i] for i in keep], [rows[i] for i in keep], config)
    if not train_set:
        raise FIMError("no examples left to train on")
    say(f"{len(train_set)} examples to train on, {len(valid)} held out; {'GPU' if cuda else 'CPU'}")
    model = get_peft_model(model, LoraConfig(r=config.rank, lora_alpha=config.alpha, target_modules=list(config.targets),
                                             lora_dropout=0.0, bias="none", task_type="CAUSAL_LM"))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=0.0)

    def rate(step: int) -> float:
        if step < config.warmup:
            return (step + 1) / config.warmup
        return 0.5 * (1 + math.cos(math.pi * (step - config.warmup) / max(1, config.steps - config.warmup)))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, rate)
    start_step, losses = 0, []
    checkpoint = out / "checkpoint.pt"
    if resume and checkpoint.is_file():
        state = torch.load(checkpoint, map_location=model.device if hasattr(model, "device") else "cpu")
        set_peft_model_state_dict(model, state["lora"])
        optimizer.load_state_dict(state["optimizer"])
        start_step, losses, config.steps = state["step"], state["losses"], state["steps"]
        for _ in range(start_step):
            schedule.step()
        say(f"resumed at step {start_step}")

    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else torch.autocast("cpu", enabled=False)

    def validation_loss() -> float:
        if not valid:
            return math.nan
        model.eval()
        total = 0.0
        with torch.no_grad(), autocast:
            for i in range(0, len(valid), config.batch_size):
                part = valid[i : i + config.batch_size]
                total += float(middle_loss(model, part)) * len(part)
        model.train()
        return total / len(valid)

    started = time.perf_counter()
    base_valid = None
    if start_step == 0:
        with model.disable_adapter():
            base_valid = validation_loss()
        say(f"validation loss before: {base_valid:.4f}")
    model.train()
    looping = paced = time.perf_counter()
    step, skipped = start_step, 0
    while step < config.steps:
        batch = [train_set[i] for i in batch_indices(step, train_set, config)]
        with autocast:
            loss = middle_loss(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(params, 1.0)
        if torch.isfinite(norm):  # a step that overflowed is skipped, not allowed to poison the adapter
            optimizer.step()
        else:
            skipped += 1
        schedule.step()
        losses.append(round(float(loss.detach()), 4))
        step += 1
        if step == start_step + 10:
            paced = time.perf_counter()
        if config.max_seconds and step == start_step + 20:  # the pace is known (warm): fit the run to the time
            pace = (time.perf_counter() - paced) / 10
            fit = step + int((config.max_seconds - (time.perf_counter() - looping)) / pace)
            if fit < config.steps:
                say(f"{pace:.2f} s a step: {fit} steps fit in {config.max_seconds:.0f} s, not {config.steps}")
                config.steps = max(step, fit)
        if step % 25 == 0 or step == config.steps:
            recent = losses[-25:]
            say(f"step {step}/{config.steps}: loss {sum(recent) / len(recent):.4f} ({time.perf_counter() - looping:.0f} s)")
        if step % config.checkpoint_every == 0 or step == config.steps:
            _save_checkpoint(out, model, optimizer, step, config.steps, losses)
    seconds = time.perf_counter() - started
    after_valid = validation_loss()
    write_adapter(lora_state(model), alpha=config.alpha, out=out / "adapter.gguf", base_gguf=model_path)
    manifest = {
        "kind": "fim",
        "prompt_format": FORMAT,
        "base_model": Path(model_path).name,
        "base_sha256": gguf_sha256(model_path),
        "recipe": config.as_json(),
        "data_sha256": data_hash,
        "examples": {"train": len(train_set), "validation": len(valid)},
        "seed": config.seed,
        "metrics": {
            "steps": config.steps,
            "train_seconds_this_run": round(seconds, 1),
            "device": "cuda" if cuda else "cpu",
            "steps_skipped_non_finite": skipped,
            "validation_loss_base": None if base_valid is None or math.isnan(base_valid) else round(base_valid, 4),
            "validation_loss": None if math.isnan(after_valid) else round(after_valid, 4),
            "loss_first_25": round(sum(losses[:25]) / max(1, len(losses[:25])), 4),
            "loss_last_25": round(sum(losses[-25:]) / max(1, len(losses[-25:])), 4),
        },
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def run(*, data: Path, out: Path, config: FIMConfig, model: str | None = None, resume: bool = False,
        progress: Callable[[str], None] | None = None) -> dict:
    """`hindsight train-fim`: train on the examples in `data` into `out`; what the command reports."""
    if config.steps < 1 or config.batch_size < 1:
        raise FIMError("--steps and --batch-size must be at least 1")
    if not resume and (out / "checkpoint.pt").exists():
        raise FIMError(f"{out} holds a run already: --resume to go on with it, or another --out")
    rows = read_examples(data)
    manifest = train(rows, resolve_model(model), out, config, resume=resume, data_hash=data_sha256(data),
                     progress=progress)
    return {"out": str(out), **manifest["metrics"], "examples": manifest["examples"]}
