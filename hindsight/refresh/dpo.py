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
- The layers below the adapter (it sits on the top quarter: `DPOConfig.top_layers`) compute the same all
  through training: the reference pass keeps the hidden states that leave them, and training runs only
  the adapted layers, from those states (exact; `PromptCache`).
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
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable, Sequence

from hindsight.engine.engine import heal_split

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
    # Anchors (hindsight/refresh/anchors.py): per step, the KL from the base model's next-token distribution to the
    # adapted one's along this many lines of general code, times `anchor_weight` (0: no anchors).
    anchor_weight: float = 5.0
    anchors_per_step: int = 4
    anchor_prompt_tokens: int = 256
    anchor_top_k: int = 32  # the base distribution kept as its top k tokens plus the rest as one bin
    seed: int = 0
    targets: tuple[str, ...] = ATTENTION
    # The LoRA sits on this top share of the decoder layers (1: all of them). Measured on the same pairs
    # (docs/BENCHMARKS.md, refresh): the top half kept the gain of all 18 layers for half the infilling
    # loss; the top quarter (4 layers) kept +17% of +28% acceptance for a quarter of the top half's loss.
    top_layers: float = 0.25

    def as_json(self) -> dict:
        return {**asdict(self), "targets": list(self.targets)}


@dataclass
class Example:
    prompt: list[int]  # token ids, BOS first, ending with the tokens chosen and rejected share
    chosen: list[int]
    rejected: list[int]
    ref_chosen: float = math.nan  # the reference model's log-probs of each completion
    ref_rejected: float = math.nan
    trunk: tuple | None = None  # the hidden states entering the lowest adapted layer (PromptCache), of the
    # prompt (chunks) and of the completions' inputs


@dataclass
class Anchor:
    prompt: list[int]  # BOS, then the end of the code before the line
    line: list[int]  # the line's tokens, its newline included
    ref_ids: object = None  # (len(line), k) the base model's likeliest tokens at each position
    ref_logps: object = None  # (len(line), k) their log-probs
    trunk: tuple | None = None  # as Example.trunk


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


class _KV:
    """Keys and values per decoder layer, in the form the attention layers update: a minimal transformers
    Cache, full length in every layer (a sliding-window layer's mask limits attention to its window)."""

    def __init__(self, layers: dict | None = None):
        self.layers = dict(layers or {})  # layer index -> (keys, values)

    def update(self, keys, values, layer_idx, *args, **kwargs):
        import torch

        if layer_idx in self.layers:
            k, v = self.layers[layer_idx]
            batch = (keys.shape[0], -1, -1, -1)
            keys, values = torch.cat([k.expand(batch), keys], dim=2), torch.cat([v.expand(batch), values], dim=2)
        self.layers[layer_idx] = (keys, values)
        return keys, values


def _forward(inner, x, start: int, kv: _KV, first: int = 0, split: int = 0):
    """Run the decoder layers from `first` up over the tokens at positions `start`.. after those in `kv`,
    which it extends. `x` is their ids (batch, tokens) when `first` is 0, else the hidden states that enter
    layer `first`. Returns the final (normed) hidden states, and the ones entering layer `split` when
    `split` > `first` (else None). Batches are right-padded: a real token never attends to a pad after it."""
    import torch

    body = inner.model
    config = body.config
    hidden = body.embed_tokens(x) if first == 0 else x
    batch, n = hidden.shape[:2]
    positions = torch.arange(start, start + n, device=hidden.device)
    distance = positions[:, None] - torch.arange(start + n, device=hidden.device)[None, :]
    masks = {"full_attention": (distance >= 0)[None, None]}
    if getattr(config, "sliding_window", None):
        masks["sliding_attention"] = ((distance >= 0) & (distance < config.sliding_window))[None, None]
    position_ids = positions.unsqueeze(0).expand(batch, -1)
    types = getattr(config, "layer_types", None)
    if types:  # a rotary embedding per attention type (Gemma 3: local and global)
        rope = {t: body.rotary_emb(hidden, position_ids, t) for t in set(types)}
    else:
        rope = {"full_attention": body.rotary_emb(hidden, position_ids)}
    boundary = None
    for i in range(first, config.num_hidden_layers):
        if i == split > first:
            boundary = hidden
        kind = types[i] if types else "full_attention"
        hidden = body.layers[i](
            hidden, attention_mask=masks[kind], position_embeddings=rope[kind], position_ids=position_ids, cache=kv
        )
    return body.norm(hidden), boundary


def trunk_depth(model) -> int:
    """How many decoder layers, from the bottom, hold no adapter: training never changes what they compute."""
    adapted = {int(m.group(1)) for name, _ in model.named_parameters()
               if "lora_" in name and (m := re.search(r"layers\.(\d+)\.", name))}
    return min(adapted) if adapted else 0


def _cut(chunks: list, n: int) -> list:
    """The first `n` tokens of hidden states held as chunks (batch, tokens, dim)."""
    out = []
    for chunk in chunks:
        if n <= 0:
            break
        out.append(chunk[:, :n])
        n -= chunk.shape[1]
    return out


class PromptCache:
    """The KV cache of the last prompt run, so the next one computes only the tokens after their common
    beginning. Pairs sorted by file and time share most of their prompt (the engine anchors its window
    to keep its own cache): measured on a simulated log, 13% of prompt tokens are new from one pair to
    the next. Valid for one set of weights: `clear()` it when they change.

    The trunk: the decoder layers below the lowest adapted one compute the same with the adapter as
    without. With `split` (the reference pass, which runs every layer), the cache also keeps the hidden
    states that enter layer `split`, as chunks shared between consecutive prompts. With `first` (training),
    it runs only the layers from `first` up, from those states: exact, and a fraction of the work per token
    when the adapter sits on the top layers only."""

    def __init__(self, first: int = 0, split: int = 0):
        self.first, self.split = first, split
        self.clear()

    def clear(self) -> None:
        self.ids: list[int] = []
        self.layers: dict = {}  # per layer (keys, values) of self.ids
        self.trunk: list = []  # with `split`: chunks of the hidden states entering layer `split` at self.ids

    def extend(self, inner, ids: list[int], trunk: list | None = None) -> None:
        """Make the cache hold `ids` (evaluated without gradient). With `first`, `trunk` holds the hidden
        states entering layer `first` at `ids` (chunks)."""
        import torch

        same = 0
        limit = min(len(ids), len(self.ids))
        while same < limit and ids[same] == self.ids[same]:
            same += 1
        kv = self.cache(same)
        if same < len(ids):
            if self.first:
                x = torch.cat(_cut(trunk, len(ids)), dim=1)[:, same:]
            else:
                x = torch.tensor([ids[same:]], device=inner.device)
            with torch.no_grad():
                _, boundary = _forward(inner, x, same, kv, self.first, self.split)
            self.trunk = _cut(self.trunk, same) + ([boundary] if boundary is not None else [])
        self.ids = list(ids)
        self.layers = kv.layers

    def cache(self, length: int | None = None) -> _KV:
        """A fresh cache of the first `length` cached tokens (the new tokens' keys and values are added to
        it, not to this one's)."""
        length = len(self.ids) if length is None else length
        return _KV({i: (k[:, :, :length], v[:, :, :length]) for i, (k, v) in self.layers.items()} if length else {})


def _token_logprobs(model, prompt: Sequence[int], completions: Sequence[Sequence[int]], prompts: PromptCache,
                    item: "Example | Anchor | None" = None):
    """Next-token log-probs (over the whole vocabulary) at every completion position, after `prompt`:
    (log_probs [positions, vocab], targets [positions], row of each position). The prompt runs without
    gradient (through `prompts`, which keeps its KV cache for the next call); gradient flows through the
    completions. When `prompts` records the trunk, `item` keeps its states (`item.trunk`); when it runs
    from the trunk, they come from `item`."""
    import torch

    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    n = len(completions)
    prompts.extend(inner, list(prompt[:-1]), item.trunk[0] if prompts.first else None)
    cache = prompts.cache()
    width = max(map(len, completions))
    inputs = torch.zeros((n, width), dtype=torch.long)
    targets = torch.full((n, width), -100, dtype=torch.long)
    for i, c in enumerate(completions):
        seq = [prompt[-1], *c[:-1]]
        inputs[i, : len(seq)] = torch.tensor(seq)
        targets[i, : len(c)] = torch.tensor(c)
    device = inner.device
    inputs, targets = inputs.to(device), targets.to(device)
    x = item.trunk[1] if prompts.first else inputs
    hidden, boundary = _forward(inner, x, len(prompt) - 1, cache, prompts.first, prompts.split)
    if boundary is not None and item is not None:
        item.trunk = (list(prompts.trunk), boundary.detach())
    mask = targets != -100
    logits = inner.lm_head(hidden[mask]).float()
    cap = getattr(inner.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    rows = torch.arange(n, device=device).unsqueeze(1).expand(n, width)[mask]
    return torch.log_softmax(logits, dim=-1), targets[mask], rows


def _logps(model, ex: Example, prompts: PromptCache):
    """Summed log-probs of the example's chosen and rejected completions (a tensor of two), and their
    token counts."""
    import torch

    completions = [ex.chosen, ex.rejected]
    log_probs, targets, rows = _token_logprobs(model, ex.prompt, completions, prompts, ex)
    token_logps = log_probs.gather(1, targets.unsqueeze(1)).squeeze(1)
    sums = torch.zeros(len(completions), dtype=token_logps.dtype, device=token_logps.device).index_add(0, rows, token_logps)
    return sums, torch.bincount(rows, minlength=len(completions))


def _anchor_kl(model, anchor: Anchor):
    """Mean per-token KL(base || model) along the anchor's line, both distributions reduced to the
    base's top k tokens plus one bin for the rest (so it is a true KL, never negative)."""
    import torch

    prompts = PromptCache(first=trunk_depth(model) if anchor.trunk else 0)
    log_probs, _, _ = _token_logprobs(model, anchor.prompt, [anchor.line], prompts, anchor)
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
    the adapter switched off. Each keeps its trunk states too, from which training runs (PromptCache)."""
    import torch

    depth = trunk_depth(model)
    prompts = PromptCache(split=depth)
    with torch.no_grad(), model.disable_adapter():
        for ex in examples:
            sums, _ = _logps(model, ex, prompts)
            ex.ref_chosen, ex.ref_rejected = float(sums[0]), float(sums[1])
        for anchor in anchors:
            log_probs, _, _ = _token_logprobs(model, anchor.prompt, [anchor.line], PromptCache(split=depth), anchor)
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
    prompts = PromptCache(first=trunk_depth(model))
    turn = 0
    for epoch in range(config.epochs):
        rng.shuffle(steps)
        losses, wins, kls = [], 0, []
        for batch in steps:
            optimizer.zero_grad(set_to_none=True)
            prompts.clear()  # the weights changed at the last step
            for ex in batch:
                sums, counts = _logps(model, ex, prompts)
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
