"""BM25Index against rank_bm25's BM25Okapi, the reference: the same scores for every document, also after
any sequence of adds, replacements and removals."""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Hashable

import numpy as np
import pytest
from rank_bm25 import BM25Okapi

from hindsight.retrieval.bm25 import BM25Index, tokenize


def assert_parity(index: BM25Index, docs: dict[Hashable, list[str]], queries: list[list[str]]) -> None:
    keys = list(docs)
    reference = BM25Okapi([docs[key] for key in keys], k1=index.k1, b=index.b, epsilon=index.epsilon)
    assert len(index) == len(docs) and all(key in index for key in keys)
    for query in queries:
        got = index.scores(query)
        assert set(got) <= set(keys) and 0.0 not in got.values()
        dense = [got.get(key, 0.0) for key in keys]
        assert np.allclose(dense, reference.get_scores(query), rtol=1e-9, atol=1e-12), query


def random_docs(rng: random.Random, n: int, prefix: str = "d") -> dict[Hashable, list[str]]:
    """Zipf-like words, plus `common` in about 80% of the documents so that its idf is negative."""
    vocabulary = [f"w{i}" for i in range(60)]
    weights = [1 / (i + 1) for i in range(60)]
    docs = {}
    for i in range(n):
        tokens = rng.choices(vocabulary, weights, k=rng.randrange(0 if i else 1, 30))
        if rng.random() < 0.8:
            tokens += ["common"] * rng.randrange(1, 4)
        docs[(prefix, i)] = tokens
    return docs


def random_queries(rng: random.Random, count: int) -> list[list[str]]:
    words = [f"w{i}" for i in range(60)] + ["common", "unknown", "other_unknown"]
    return [rng.choices(words, k=rng.randrange(1, 12)) for _ in range(count)] + [["common"], ["common", "common", "w0"]]


def build(docs: dict[Hashable, list[str]]) -> BM25Index:
    index = BM25Index()
    for key, tokens in docs.items():
        index.add(key, tokens)
    return index


# -- tokenize -----------------------------------------------------------------------------------------
def test_tokenize_keeps_identifiers_whole_and_adds_their_snake_and_camel_case_parts():
    assert tokenize("toMeters(x)") == ["tometers", "to", "meters", "x"]
    assert tokenize("to_meters") == ["to_meters", "to", "meters"]
    assert tokenize("HTTPServer.getURL") == ["httpserver", "http", "server", "geturl", "get", "url"]
    assert tokenize("def __init__(self): return None") == ["def", "__init__", "init", "self", "return", "none"]
    assert set(tokenize("toMeters")) & set(tokenize("to_meters")) == {"to", "meters"}


def test_tokenize_numbers_punctuation_and_unicode():
    assert tokenize("x = 42 + 3.14  # MAX_SIZE") == ["x", "42", "3", "14", "max_size", "max", "size"]
    assert tokenize("0x1F base64") == ["0x1f", "base64"]
    assert tokenize("größe = ÄpfelBaum + 日本語") == ["größe", "äpfelbaum", "äpfel", "baum", "日本語"]
    assert tokenize("") == [] and tokenize("  {}()[];,.\n") == []


# -- parity -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed,n", [(0, 1), (1, 2), (2, 3), (3, 7), (4, 40), (5, 200)])
def test_scores_match_rank_bm25_on_random_corpora(seed, n):
    rng = random.Random(seed)
    docs = random_docs(rng, n)
    assert sum("common" in tokens for tokens in docs.values()) > n / 2 or n < 7  # the epsilon path
    assert_parity(build(docs), docs, random_queries(rng, 40))


def test_scores_match_rank_bm25_on_asyncio_source_chunks():
    root = os.path.dirname(asyncio.__file__)
    docs = {}
    for name in sorted(os.listdir(root)):
        if name.endswith(".py"):
            with open(os.path.join(root, name), encoding="utf-8") as f:
                lines = f.read().splitlines()
            for start in range(0, len(lines), 12):
                docs[(name, start)] = tokenize("\n".join(lines[start : start + 12]))
    rng = random.Random(0)
    starts = rng.sample(list(docs), 25)
    queries = [docs[key][-40:] for key in starts] + [["self", "self", "return", "no_such_identifier"], ["import"]]
    assert_parity(build(docs), docs, queries)


def test_scores_match_a_fresh_rank_bm25_after_random_adds_replacements_and_removals():
    rng = random.Random(7)
    pool = random_docs(rng, 120, "pool")
    queries = random_queries(rng, 12)
    index, docs = BM25Index(), {}
    for step in range(600):
        key = ("doc", rng.randrange(60))
        if rng.random() < 0.35:
            index.remove(key)
            docs.pop(key, None)
        else:  # a new key or a replacement
            docs[key] = pool[("pool", rng.randrange(120))]
            index.add(key, docs[key])
        if step % 40 == 0 and docs:
            assert_parity(index, docs, queries)
    assert_parity(index, docs, queries)
    for key in list(docs):
        index.remove(key)
    assert len(index) == 0 and index.scores(["common"]) == {} and index.top(["common"], 5) == []
    docs = {("again", i): tokens for i, tokens in enumerate(list(pool.values())[:10])}
    for key, tokens in docs.items():
        index.add(key, tokens)
    assert_parity(index, docs, queries)


# -- top ----------------------------------------------------------------------------------------------
def test_top_returns_the_best_k_with_positive_scores_skipping_excluded_keys():
    rng = random.Random(3)
    docs = random_docs(rng, 300)
    index = build(docs)
    for query in random_queries(rng, 20):
        positive = sorted(((s, key) for key, s in index.scores(query).items() if s > 0), reverse=True)
        hits = index.top(query, 10)
        assert [s for _, s in hits] == [s for s, _ in positive[:10]]
        assert len(hits) == min(10, len(positive)) and all(s > 0 for _, s in hits)
        odd = index.top(query, 7, exclude=lambda key: key[1] % 2 == 1)
        assert [s for _, s in odd] == [s for s, key in positive if key[1] % 2 == 0][:7]
        assert all(key[1] % 2 == 0 for key, _ in odd)
    assert index.top(["unknown"], 5) == [] and index.top(["w0"], 0) == []
    assert index.top(["w0"], 5, exclude=lambda key: True) == []


def test_top_drops_negative_scores_and_an_empty_index_has_none():
    assert BM25Index().top(["a"], 3) == [] and BM25Index().scores(["a"]) == {}
    index = BM25Index()
    index.add("only", ["a", "b"])  # one document: every idf is negative
    assert all(s < 0 for s in index.scores(["a"]).values()) and index.top(["a"], 3) == []
    index.remove("missing")
    assert len(index) == 1 and "only" in index and "missing" not in index


def test_replacing_documents_without_querying_keeps_postings_bounded():
    index = BM25Index()
    index.add("other", ["shared"])
    for i in range(2000):
        index.add("edited", ["shared", f"unique{i % 3}"])
    held = index._postings["shared"]
    assert len(held.slots) + len(held.pending) // 3 <= 2 * held.df + 9
    assert_parity(index, {"other": ["shared"], "edited": ["shared", "unique1"]}, [["shared", "unique1", "unique0"]])
