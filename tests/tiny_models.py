"""Tiny models around real tokenizers, for the model-profile and server tests.

llama.cpp's source carries vocabulary-only GGUFs of real tokenizers (`models/ggml-vocab-*.gguf`); the
Makefile fetches that source once (the llama-cpp-python sdist, `make llama-src`) into a cache outside the
clone. Around a vocabulary, `build` writes a llama-architecture model of two layers and 64 dimensions,
so that the real tokenizer and the real llama.cpp (in process, or `llama-server`) load it. Where a
family's tokens are not in the vocabulary that carries its tokenizer, they are written in, at the ids
the family uses where those are free (Qwen2.5-Coder's FIM tokens at 151659-151664, over Qwen2's padding).

`says`: every position's logits favour that one token (all layers zero, every embedding the same vector,
the output row of that token along it, the others zero), so greedy generation writes it again and
again: a model whose next token is known, to test where generation stops.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

LLAMA_VERSION = "0.3.36"


def llama_src() -> Path:
    """llama.cpp's source as the sdist carries it (`make llama-src`)."""
    default = Path.home() / ".cache" / "hindsight-build" / f"llama-cpp-python-{LLAMA_VERSION}"
    return Path(os.environ.get("HINDSIGHT_LLAMA_SRC") or default)


def vocab_path(name: str) -> Path:
    return llama_src() / "models" / f"ggml-vocab-{name}.gguf"


CONTROL = 3


@dataclass(frozen=True)
class Family:
    vocab: str  # ggml-vocab-<vocab>.gguf
    name: str  # general.name
    tokens: dict[int, str] = field(default_factory=dict)  # id → text, written over the vocabulary (or appended)


FAMILIES = {
    "qwen2.5-coder": Family("qwen2", "Qwen2.5 Coder 1.5B", {
        151659: "<|fim_prefix|>", 151660: "<|fim_middle|>", 151661: "<|fim_suffix|>", 151662: "<|fim_pad|>",
        151663: "<|repo_name|>", 151664: "<|file_sep|>",
    }),
    "starcoder2": Family("starcoder", "StarCoder2 3B"),
    "starcoder": Family("refact", "Refact 1.6B"),  # StarCoder's tokens: <fim_*>, <filename>, <reponame>
    "granite-code": Family("refact", "Granite 3b Code Base"),
    "deepseek-coder": Family("deepseek-coder", "DeepSeek Coder 1.3B Base"),
    "deepseek-coder-instruct": Family("deepseek-coder", "DeepSeek Coder 1.3B Instruct"),
    "deepseek-coder-v2": Family("deepseek-llm", "DeepSeek Coder V2 Lite Base", {
        100015: "<｜fim▁hole｜>", 100016: "<｜fim▁begin｜>", 100017: "<｜fim▁end｜>",
    }),
    "codellama": Family("llama-spm", "CodeLlama 7B", {
        32000: "▁<PRE>", 32001: "▁<SUF>", 32002: "▁<MID>", 32003: "▁<EOT>",
    }),
    "codestral": Family("llama-spm", "Codestral 22B v0.1", {32000: "[PREFIX]", 32001: "[SUFFIX]", 32002: "[MIDDLE]"}),
    "codegemma": Family("llama-spm", "CodeGemma 2B", {
        32000: "<|fim_prefix|>", 32001: "<|fim_middle|>", 32002: "<|fim_suffix|>", 32003: "<|file_separator|>",
    }),
    "plain": Family("llama-spm", "Llama 2 7B"),  # no FIM tokens: prefix-only prompts
}


def build(family: str, out: Path, *, says: str | None = None, seed: int = 0) -> Path:
    """A tiny llama model with `family`'s tokenizer, written to `out` (a .gguf path)."""
    import gguf

    spec = FAMILIES[family]
    reader = gguf.GGUFReader(vocab_path(spec.vocab))
    tokens = list(reader.fields["tokenizer.ggml.tokens"].contents())
    types = list(reader.fields["tokenizer.ggml.token_type"].contents())
    scores = list(reader.fields["tokenizer.ggml.scores"].contents()) if "tokenizer.ggml.scores" in reader.fields else None
    for token_id, text in spec.tokens.items():
        while len(tokens) <= token_id:
            tokens.append(f"<extra_{len(tokens)}>")
            types.append(CONTROL)
            if scores is not None:
                scores.append(0.0)
        tokens[token_id], types[token_id] = text, CONTROL
    n_vocab, n_embd, n_ff, n_layer, n_head = len(tokens), 64, 128, 2, 4

    writer = gguf.GGUFWriter(str(out), "llama")
    writer.add_name(spec.name)
    writer.add_context_length(4096)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(n_layer)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head)
    writer.add_rope_dimension_count(n_embd // n_head)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(n_vocab)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model(reader.fields["tokenizer.ggml.model"].contents())
    writer.add_tokenizer_pre(reader.fields["tokenizer.ggml.pre"].contents())
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    if scores is not None:
        writer.add_token_scores(scores)
    if "tokenizer.ggml.merges" in reader.fields:
        writer.add_token_merges(list(reader.fields["tokenizer.ggml.merges"].contents()))
    for key, add in (("bos", writer.add_bos_token_id), ("eos", writer.add_eos_token_id),
                     ("unknown", writer.add_unk_token_id), ("padding", writer.add_pad_token_id)):
        field_ = reader.fields.get(f"tokenizer.ggml.{key}_token_id")
        if field_ is not None:
            add(int(field_.contents()))
    for key, add in (("add_bos_token", writer.add_add_bos_token), ("add_eos_token", writer.add_add_eos_token)):
        field_ = reader.fields.get(f"tokenizer.ggml.{key}")
        if field_ is not None:
            add(bool(field_.contents()))

    rng = np.random.default_rng(seed)

    def weights(*shape: int) -> np.ndarray:
        if says is not None:
            return np.zeros(shape, dtype=np.float32)
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    if says is None:
        embd = weights(n_vocab, n_embd)
        output = embd
    else:
        target = tokens.index(says)
        embd = np.ones((n_vocab, n_embd), dtype=np.float32)
        output = np.zeros((n_vocab, n_embd), dtype=np.float32)
        output[target] = 1.0
    writer.add_tensor("token_embd.weight", embd)
    writer.add_tensor("output_norm.weight", np.ones(n_embd, dtype=np.float32))
    writer.add_tensor("output.weight", output)
    for i in range(n_layer):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(n_embd, dtype=np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            writer.add_tensor(f"blk.{i}.{name}.weight", weights(n_embd, n_embd))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(n_embd, dtype=np.float32))
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", weights(n_ff, n_embd))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", weights(n_ff, n_embd))
        writer.add_tensor(f"blk.{i}.ffn_down.weight", weights(n_embd, n_ff))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


def cached(family: str, *, says: str | None = None) -> Path:
    """`build`'s model, kept in the build cache beside llama.cpp's source (rebuilt when this file changes)."""
    import hashlib

    if not vocab_path(FAMILIES[family].vocab).is_file():
        import pytest

        pytest.skip(f"llama.cpp's vocabularies are not at {llama_src()} (`make llama-src` fetches them)")
    digest = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]
    tag = f"-says-{hashlib.sha256(says.encode()).hexdigest()[:8]}" if says else ""
    out = llama_src().parent / "tiny-models" / f"{family}{tag}-{digest}.gguf"
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = out.with_suffix(f".{os.getpid()}.part")
        build(family, partial, says=says)
        partial.replace(out)
    return out
