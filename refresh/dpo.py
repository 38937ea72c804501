"""DPO with a LoRA adapter, made to run on a laptop's CPU.

TRL's default DPO step runs the whole model over prompt + chosen and prompt + rejected, with the LM head
(262k tokens × every position) on all of them, and again for the reference model: about 4 pairs a
minute on two cores (0.65 with our ~1,300-token prompts). Here, with the same log-probs:

- The prompt is run once per pair, without gradient, and its KV cache is shared by chosen and rejected
  (one batch of two continuations after it), and by the next pairs of the same file, which begin with
  most of the same prompt (`PromptCache`). The gradient then flows through the adapter at the
  completion tokens only, not through the prompt's keys and values: the log-probs are exact, the
  gradient is that of a model whose prompt representation is held fixed for the step.
- The LM head runs only where a completion token is predicted (a few positions, not a thousand).
- The reference log-probs are computed once, before training (the adapter switched off), not per step.
- Tokens chosen and rejected begin with alike are moved into the prompt: their log-probs would cancel.

The prompt is the one the model saw, whole (cut to its last `max_prompt_tokens` tokens only beyond what the
engine sends), and the serving engine's token healing is reproduced: the partial word at the cursor is cut
from the prompt and begins both completions, as in generation. Whole prompts keep the cross-file context
at their head, and they train faster than cut ones: a cut moves with every pair, so consecutive pairs
share no prefix for the prompt cache (measured: 25 pairs a minute whole, 22 cut to 384 tokens, and a
better trade between acceptance and infilling; docs/BENCHMARKS.md, refresh).
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable, Sequence

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# The refresh adapts attention only: measured on the same 363 pairs, it raised held-out acceptance as much
# as all projections did (+17.5%) for a third of the infilling loss (-0.7 points against -1.55), as
# "LoRA Learns Less and Forgets Less" found of attention-only LoRA (docs/BENCHMARKS.md, refresh).
ATTENTION = TARGETS[:4]


@dataclass
class DPOConfig:
    beta: float = 0.1  # DPO's temperature: how far the policy may move from the reference
    sft_weight: float = 1.0  # plus this much of the chosen text's mean NLL (RPO), so chosen itself rises
    rank: int = 8
    alpha: float = 16.0
    learning_rate: float = 5e-4
    epochs: int = 1
    pairs_per_step: int = 8  # gradients of this many pairs (consecutive in the log) make one step
    max_prompt_tokens: int = 2048  # the engine's prompts (window and context) stay under this: whole
    max_completion_tokens: int = 48
    # Anchors (refresh/anchors.py): per step, the KL from the base model's next-token distribution to the
    # adapted one's along this many lines of general code, times `anchor_weight` (0: no anchors).
    anchor_weight: float = 5.0
    anchors_per_step: int = 4
    anchor_prompt_tokens: int = 256
    anchor_top_k: int = 32  # the base distribution kept as its top k tokens plus the rest as one bin
    seed: int = 0
    targets: tuple[str, ...] = ATTENTION
    top_layers: float = 0.5  # the LoRA sits on this top share of the decoder layers (1: all of them)

    def as_json(self) -> dict:
        return {**asdict(self), "targets": list(self.targets)}


@dataclass
class Example:
    prompt: list[int]  # token ids, BOS first, ending with the tokens chosen and rejected share
    chosen: list[int]
    rejected: list[int]
    ref_chosen: float = math.nan  # the reference model's log-probs of each completion
    ref_rejected: float = math.nan


@dataclass
class Anchor:
    prompt: list[int]  # BOS, then the end of the code before the line
    line: list[int]  # the line's tokens, its newline included
    ref_ids: object = None  # (len(line), k) the base model's likeliest tokens at each position
    ref_logps: object = None  # (len(line), k) their log-probs


@dataclass
class TrainStats:
    pairs: int = 0  # examples trained on (after encoding)
    skipped: int = 0  # pairs that encode to nothing (no tokens where chosen and rejected differ)
    steps: int = 0
    seconds: float = 0.0  # reference pass + training
    reference_seconds: float = 0.0
    losses: list[float] = field(default_factory=list)  # mean loss per epoch
    reward_accuracy: list[float] = field(default_factory=list)  # share of pairs with chosen ahead, per epoch
    anchor_kl: list[float] = field(default_factory=list)  # mean per-token KL on the anchors, per epoch

    @property
    def pairs_per_minute(self) -> float:
        """Pair-epochs trained per minute of wall time, the reference pass included."""
        return self.pairs * max(len(self.losses), 1) * 60.0 / self.seconds if self.seconds else 0.0


def encode(tokenizer, prompt: str, chosen: str, rejected: str, config: DPOConfig) -> Example | None:
    from engine.engine import heal_split

    head, heal = heal_split(prompt)  # the engine's token healing: training sees the tokens generation produced
    ids = tokenizer(head, add_special_tokens=True)["input_ids"]
    c = tokenizer(heal + chosen, add_special_tokens=False)["input_ids"][: config.max_completion_tokens]
    r = tokenizer(heal + rejected, add_special_tokens=False)["input_ids"][: config.max_completion_tokens]
    same = 0
    while same < min(len(c), len(r)) and c[same] == r[same]:
        same += 1
    ids, c, r = ids + c[:same], c[same:], r[same:]
    if not c or not r:
        return None  # one is the other's beginning, token for token: nothing to prefer
    keep = config.max_prompt_tokens
    if len(ids) > keep:
        ids = ids[:1] + ids[len(ids) - keep + 1 :]  # BOS, then the end
    return Example(ids, c, r)


def encode_anchor(tokenizer, prefix: str, line: str, config: DPOConfig) -> Anchor:
    ids = tokenizer(prefix[-8 * config.anchor_prompt_tokens :], add_special_tokens=True)["input_ids"]
    if len(ids) > config.anchor_prompt_tokens:
        ids = ids[:1] + ids[len(ids) - config.anchor_prompt_tokens + 1 :]
    return Anchor(ids, tokenizer(line + "\n", add_special_tokens=False)["input_ids"][:32])


class PromptCache:
    """The KV cache of the last prompt run, so the next one computes only the tokens after their common
    beginning. Pairs sorted by file and time share most of their prompt (the engine anchors its window
    to keep its own cache): measured on a simulated log, 13% of prompt tokens are new from one pair to
    the next. Valid for one set of weights: `clear()` it when they change."""

    def __init__(self):
        self.ids: list[int] = []
        self.layers: list[tuple] = []  # per layer (keys, values) of self.ids

    def clear(self) -> None:
        self.ids, self.layers = [], []

    def extend(self, inner, ids: list[int]) -> None:
        """Make the cache hold `ids` (evaluated without gradient)."""
        import torch

        same = 0
        limit = min(len(ids), len(self.ids))
        while same < limit and ids[same] == self.ids[same]:
            same += 1
        if same == 0 or not self.layers:
            self.layers, same = [], 0
        cache = self.cache(same)
        if same < len(ids):
            device = inner.device
            with torch.no_grad():
                inner.model(
                    input_ids=torch.tensor([ids[same:]], device=device),
                    past_key_values=cache,
                    position_ids=torch.arange(same, len(ids), device=device).unsqueeze(0),
                    cache_position=torch.arange(same, len(ids), device=device),
                    use_cache=True,
                )
        self.ids = list(ids)
        self.layers = [(layer.keys, layer.values) for layer in cache.layers]

    def cache(self, length: int | None = None, batch: int = 1):
        """A fresh DynamicCache of the first `length` cached tokens, repeated `batch` times. Full layers
        throughout (a sliding-window layer drops what a later prompt may need; the model's own mask
        still limits attention to its window)."""
        from transformers import DynamicCache

        cache = DynamicCache()
        length = len(self.ids) if length is None else length
        if length:
            for i, (k, v) in enumerate(self.layers):
                k, v = k[:, :, :length], v[:, :, :length]
                if batch > 1:
                    k, v = k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1)
                cache.update(k, v, i)
        return cache


def _token_logprobs(model, prompt: Sequence[int], completions: Sequence[Sequence[int]], prompts: PromptCache):
    """Next-token log-probs (over the whole vocabulary) at every completion position, after `prompt`:
    (log_probs [positions, vocab], targets [positions], row of each position). The prompt runs without
    gradient (through `prompts`, which keeps its KV cache for the next call); gradient flows through the
    completions."""
    import torch

    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    n = len(completions)
    prompts.extend(inner, list(prompt[:-1]))
    cache = prompts.cache(batch=n)
    width = max(map(len, completions))
    inputs = torch.zeros((n, width), dtype=torch.long)
    targets = torch.full((n, width), -100, dtype=torch.long)
    for i, c in enumerate(completions):
        seq = [prompt[-1], *c[:-1]]
        inputs[i, : len(seq)] = torch.tensor(seq)
        targets[i, : len(c)] = torch.tensor(c)
    start = len(prompt) - 1
    device = inner.device
    inputs, targets = inputs.to(device), targets.to(device)
    positions = torch.arange(start, start + width, device=device)
    # Right padding: a real token never attends to a pad after it, so no mask beyond the causal one.
    hidden = inner.model(
        input_ids=inputs,
        past_key_values=cache,
        position_ids=positions.unsqueeze(0).expand(n, -1),
        cache_position=positions,
        use_cache=True,
    ).last_hidden_state
    mask = targets != -100
    logits = inner.lm_head(hidden[mask]).float()
    cap = getattr(inner.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    rows = torch.arange(n, device=device).unsqueeze(1).expand(n, width)[mask]
    return torch.log_softmax(logits, dim=-1), targets[mask], rows


def _logps(model, prompt: Sequence[int], completions: Sequence[Sequence[int]], prompts: PromptCache):
    """Summed log-probs of each completion after `prompt` (a tensor, one per completion), and their
    token counts."""
    import torch

    log_probs, targets, rows = _token_logprobs(model, prompt, completions, prompts)
    token_logps = log_probs.gather(1, targets.unsqueeze(1)).squeeze(1)
    sums = torch.zeros(len(completions), dtype=token_logps.dtype, device=token_logps.device).index_add(0, rows, token_logps)
    return sums, torch.bincount(rows, minlength=len(completions))


def _anchor_kl(model, anchor: Anchor):
    """Mean per-token KL(base || model) along the anchor's line, both distributions reduced to the
    base's top k tokens plus one bin for the rest (so it is a true KL, never negative)."""
    import torch

    log_probs, _, _ = _token_logprobs(model, anchor.prompt, [anchor.line], PromptCache())
    ref = anchor.ref_logps.to(log_probs.device)
    ids = anchor.ref_ids.to(log_probs.device)
    top = log_probs.gather(1, ids)
    ref_rest = torch.log1p(-ref.exp().sum(1).clamp(max=1 - 1e-6))
    rest = torch.log1p(-top.exp().sum(1).clamp(max=1 - 1e-6))
    kl = (ref.exp() * (ref - top)).sum(1) + ref_rest.exp() * (ref_rest - rest)
    return kl.mean()


def top_layers(model, share: float) -> list[int] | None:
    """The indices of the top `share` of the model's decoder layers (None: all of them)."""
    n = model.config.num_hidden_layers
    k = max(1, round(n * share))
    return None if k >= n else list(range(n - k, n))


def add_lora(model, config: DPOConfig):
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=config.rank,
        lora_alpha=config.alpha,
        target_modules=list(config.targets),
        layers_to_transform=top_layers(model, config.top_layers),
        lora_dropout=0.0,
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)


def reference(model, examples: Iterable[Example], anchors: Iterable[Anchor] = (), top_k: int = 32) -> None:
    """Fill in each example's reference log-probs, and each anchor's top-k distribution: the model with
    the adapter switched off."""
    import torch

    prompts = PromptCache()
    with torch.no_grad(), model.disable_adapter():
        for ex in examples:
            sums, _ = _logps(model, ex.prompt, [ex.chosen, ex.rejected], prompts)
            ex.ref_chosen, ex.ref_rejected = float(sums[0]), float(sums[1])
        for anchor in anchors:
            log_probs, _, _ = _token_logprobs(model, anchor.prompt, [anchor.line], PromptCache())
            top = log_probs.topk(top_k, dim=1)
            anchor.ref_logps, anchor.ref_ids = top.values.cpu(), top.indices.cpu()


def train(
    model,
    examples: list[Example],
    config: DPOConfig,
    *,
    anchors: Sequence[Anchor] = (),
    progress: Callable[[str], None] | None = None,
    stats: TrainStats | None = None,
) -> TrainStats:
    """DPO plus the chosen text's mean NLL (RPO; `sft_weight`) on `model`, a PEFT LoRA model
    (`add_lora`); in place. With `anchors`, each step also takes `anchors_per_step` of them (in turn)
    and adds `anchor_weight` times their mean KL from the base model.

    `examples` in log order (by file, then time): a step takes consecutive ones, which share most of
    their prompt; the steps are shuffled each epoch."""
    import torch
    import torch.nn.functional as F

    stats = stats or TrainStats()
    start = time.perf_counter()
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    anchors = list(anchors) if config.anchor_weight > 0 else []
    reference(model, examples, anchors, config.anchor_top_k)
    stats.reference_seconds = time.perf_counter() - start
    stats.pairs = len(examples)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=0.0)
    total_steps = max(1, config.epochs * math.ceil(len(examples) / config.pairs_per_step))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: max(0.0, 1.0 - s / total_steps))
    model.train()
    steps = [examples[i : i + config.pairs_per_step] for i in range(0, len(examples), config.pairs_per_step)]
    prompts = PromptCache()
    turn = 0
    for epoch in range(config.epochs):
        rng.shuffle(steps)
        losses, wins, kls = [], 0, []
        for batch in steps:
            optimizer.zero_grad(set_to_none=True)
            prompts.clear()  # the weights changed at the last step
            for ex in batch:
                sums, counts = _logps(model, ex.prompt, [ex.chosen, ex.rejected], prompts)
                margin = (sums[0] - ex.ref_chosen) - (sums[1] - ex.ref_rejected)
                loss = -F.logsigmoid(config.beta * margin)
                if config.sft_weight:
                    loss = loss + config.sft_weight * (-sums[0] / counts[0])
                (loss / len(batch)).backward()
                losses.append(float(loss.detach()))
                wins += float(margin.detach()) > 0
            if anchors:
                taken = [anchors[(turn + i) % len(anchors)] for i in range(config.anchors_per_step)]
                turn += config.anchors_per_step
                for anchor in taken:
                    kl = _anchor_kl(model, anchor)
                    (config.anchor_weight * kl / len(taken)).backward()
                    kls.append(float(kl.detach()))
            optimizer.step()
            schedule.step()
            stats.steps += 1
        stats.losses.append(sum(losses) / max(len(losses), 1))
        stats.reward_accuracy.append(wins / max(len(examples), 1))
        if kls:
            stats.anchor_kl.append(sum(kls) / len(kls))
        if progress:
            progress(f"epoch {epoch + 1}/{config.epochs}: loss {stats.losses[-1]:.4f}, "
                     f"chosen ahead {stats.reward_accuracy[-1]:.0%}"
                     + (f", anchor KL {stats.anchor_kl[-1]:.4f}" if kls else ""))
    model.eval()
    stats.seconds = time.perf_counter() - start
    return stats


def lora_state(model) -> dict:
    """The adapter's weights, as PEFT names them."""
    from peft import get_peft_model_state_dict

    return {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(model).items()}
