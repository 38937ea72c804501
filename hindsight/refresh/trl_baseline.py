"""The baseline hindsight/refresh/dpo.py is measured against: TRL's *default* DPO training, timed on this machine.

    from hindsight.refresh.trl_baseline import trl_pairs_per_minute
    trl_pairs_per_minute(pairs)   # {"pairs_per_minute": ..., "seconds": ..., "config": {...}, ...}

`pairs` are TRL's standard (non-chat) preference format: dicts with "prompt", "chosen", "rejected"
strings. The model is the embedded GGUF's dequantized HF copy (`hindsight.refresh.base.load_base`), with a fresh
LoRA adapter on the same projections as hindsight/refresh/dpo.py, handed to `trl.DPOTrainer` as `peft_config` so
that TRL uses the adapter-disabled model as the reference (its default for PEFT).

`trl.DPOConfig` keeps TRL's defaults except what running here needs: a temporary output dir, the step
count, 4 pairs per step, no reporting/saving, float32 (TRL defaults `bf16` to True when `fp16` is unset),
the CPU, seed 0. In trl 1.16 the defaults that set the cost of a step are `max_length=1024` (prompt +
completion, cut with `truncation_mode="keep_start"`), `gradient_checkpointing=True` and
`precompute_ref_log_probs=False` (a reference forward every step); there is no `max_prompt_length` any
more. With `keep_start`, TRL *drops* every pair whose prompt alone has 1,024 tokens or more (most of the
collector's pairs: their prompts run ~1,300-1,450 tokens), so `max_length=None` (no truncation) measures
what training on them untruncated costs. The result's "config" records the values as used,
"pairs_dropped" how many pairs TRL filtered out and "pairs_over_max_length" how many kept pairs lost
completion tokens to the cut.

Only `trainer.train()` is timed: loading the model and TRL's tokenization (in the DPOTrainer
constructor) are not.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from hindsight.engine.model import resolve_model
from hindsight.refresh.base import load_base
from hindsight.refresh.dpo import DPOConfig as OurConfig, top_layers

BATCH = 4  # pairs per step, as in the reference measurement (60 s per step of 4 pairs)
CONFIG_KEYS = (
    "max_length",
    "max_prompt_length",
    "max_completion_length",
    "truncation_mode",
    "gradient_checkpointing",
    "precompute_ref_log_probs",
    "loss_type",
    "beta",
    "learning_rate",
)


def trl_pairs_per_minute(
    pairs: list[dict],
    *,
    steps: int = 2,
    rank: int = 8,
    alpha: float = 16.0,
    work_dir: Path | None = None,
    max_length: int | None | str = "default",
    model_path: Path | None = None,
    weights: Path | None = None,
) -> dict:
    """Pairs per minute of wall time that `trl.DPOTrainer` with its default config trains on here,
    over `steps` steps of 4 pairs (the pairs are repeated if there are fewer than steps × 4).

    `max_length` "default" leaves TRL's (1024); TRL then drops every pair whose prompt alone reaches it
    ("pairs_dropped"), and if it drops them all there is nothing to time (ValueError). `None` trains
    on the whole prompt + completion, the cost of these pairs untruncated. The model: as `load_base`'s
    (default: the embedded one)."""
    if not pairs:
        raise ValueError("no pairs given")
    if steps < 1:
        raise ValueError("steps must be at least 1")

    import datasets
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import TrainerCallback, set_seed
    from trl import DPOConfig, DPOTrainer

    needed = steps * BATCH
    rows = [{k: str(p[k]) for k in ("prompt", "chosen", "rejected")} for p in pairs]
    rows = (rows * -(-needed // len(rows)))[:needed]

    threads = torch.get_num_threads()
    bars = datasets.is_progress_bar_enabled()
    torch.set_num_threads(os.cpu_count() or 1)
    datasets.disable_progress_bars()
    out = Path(tempfile.mkdtemp(prefix="trl-baseline-", dir=work_dir))
    try:
        set_seed(0)
        model, tokenizer = load_base(model_path or resolve_model(None), weights)
        args = DPOConfig(
            output_dir=str(out / "tempdir"),
            max_steps=steps,
            per_device_train_batch_size=BATCH,
            gradient_accumulation_steps=1,
            report_to="none",
            save_strategy="no",
            logging_steps=1,
            use_cpu=True,
            bf16=False,
            fp16=False,
            seed=0,
            disable_tqdm=True,
            **({} if max_length == "default" else {"max_length": max_length}),
        )
        ours = OurConfig()  # the same adapter as ours
        peft_config = LoraConfig(
            r=rank,
            lora_alpha=alpha,
            lora_dropout=0.0,
            target_modules=list(ours.targets),
            layers_to_transform=top_layers(model, ours.top_layers),
            task_type="CAUSAL_LM",
        )
        step_seconds: list[float] = []

        class _StepTimer(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                self.start = time.perf_counter()

            def on_step_end(self, args, state, control, **kwargs):
                step_seconds.append(time.perf_counter() - self.start)

        trainer = DPOTrainer(
            model=model,
            args=args,
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
            peft_config=peft_config,
            callbacks=[_StepTimer()],
        )
        kept = len(trainer.train_dataset)
        if kept == 0:
            raise ValueError(
                f"TRL dropped all {needed} pairs: every prompt is at least max_length={args.max_length} tokens "
                "(DPOTrainer filters those out with truncation_mode='keep_start'); pass max_length=None"
            )
        # Trainer's loader (no drop_last) cycles the kept rows in batches of 4, the last of an epoch short
        per_epoch = [min(BATCH, kept - i) for i in range(0, kept, BATCH)]
        trained = sum(per_epoch[i % len(per_epoch)] for i in range(steps))
        over = 0
        if args.max_length is not None:
            for ex in trainer.train_dataset:
                longest = max(len(ex["chosen_ids"]), len(ex["rejected_ids"]))
                over += len(ex["prompt_ids"]) + longest > args.max_length

        start = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):  # its log lines are not our output (--json)
            trainer.train()
        seconds = time.perf_counter() - start

        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        return {
            "pairs_per_minute": trained * 60.0 / seconds,
            "seconds": seconds,
            "steps": steps,
            "pairs": trained,
            "seconds_per_step": seconds / steps,
            "step_seconds": step_seconds,
            "pairs_dropped": needed - kept,  # by TRL: prompt alone >= max_length
            "pairs_over_max_length": over,  # kept, but with completion tokens cut by max_length
            "losses": losses,
            "threads": torch.get_num_threads(),
            "config": {k: _plain(getattr(args, k)) for k in CONFIG_KEYS if hasattr(args, k)},
        }
    finally:
        shutil.rmtree(out, ignore_errors=True)
        torch.set_num_threads(threads)
        if bars:
            datasets.enable_progress_bars()


def _plain(value):
    """A config value as JSON would hold it (enums by their value)."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return getattr(value, "value", value)
