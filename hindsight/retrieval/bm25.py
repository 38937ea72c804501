"""BM25 over code chunks: a tokenizer for code and an incrementally updated index.

The scores equal rank_bm25's `BM25Okapi(corpus, k1, b, epsilon).get_scores(query)` over the current
documents, quirks included: idf = log(N - df + 0.5) - log(df + 0.5); a term whose idf is negative gets
epsilon * the mean idf of all terms (taken before that replacement); every repeat of a query token counts.
The index is an inverted one, so a query touches only the postings of its own terms.
"""

from __future__ import annotations

import math
import re
import sys
from array import array
from collections import Counter
from collections.abc import Callable, Hashable

import numpy as np

_WORD = re.compile(r"\w+")
# Subwords of an identifier: an acronym (the `HTTP` of `HTTPServer`), a word with an optional capital,
# or digits. Letters other than ASCII capitals count as lower case, so unicode identifiers stay whole.
_PART = re.compile(r"[A-Z]+(?![^\W\d_A-Z])|[A-Z]?[^\W\d_A-Z]+|\d+")
# A new term's arrays, shared: they are only ever replaced, never written to (each costs 112 bytes; a
# workspace has terms by the hundred thousand, most in one or two documents).
_NO_INTS = np.empty(0, np.int64)
_NO_FLOATS = np.empty(0, np.float64)


def tokenize(text: str) -> list[str]:
    """Identifiers and numbers, lowercased; an identifier made of several parts (snake_case, camelCase)
    also yields each part, so `toMeters` matches `to_meters`."""
    tokens: list[str] = []
    for word in _WORD.findall(text):
        whole = word.lower()
        tokens.append(whole)
        # Most words are a single lower- or upper-case part: skip the second regex for them.
        if ("_" not in word and (word.islower() or word.isupper())) or word[0].isdigit():
            continue
        parts = [part.lower() for part in _PART.findall(word)]
        if parts != [whole]:
            tokens.extend(parts)
    return tokens


class _Postings:
    """One term's documents. New entries wait in `pending`, and entries of removed documents stay until
    the term is next queried (or they outnumber the live ones); then both are folded into the arrays in
    one vectorized step."""

    __slots__ = ("df", "slots", "gens", "tfs", "pending", "stale")

    def __init__(self) -> None:
        self.df = 0  # live documents with the term
        self.slots = _NO_INTS
        self.gens = _NO_INTS  # the slot's generation when added: a reused slot's old entry is stale
        self.tfs = _NO_FLOATS
        # Flat (slot, generation, tf) triples. An array, not a list: the garbage collector does not walk
        # it (lists of all the postings made a full collection stop every thread for 0.8 s on pandas).
        self.pending = array("q")
        self.stale = False

    def settle(self, slot_gens: np.ndarray) -> None:
        if self.pending:
            added = np.array(self.pending, np.int64).reshape(-1, 3)
            self.slots = np.concatenate((self.slots, added[:, 0]))
            self.gens = np.concatenate((self.gens, added[:, 1]))
            self.tfs = np.concatenate((self.tfs, added[:, 2].astype(np.float64)))
            self.pending = array("q")
        if self.stale:
            live = slot_gens[self.slots] == self.gens
            self.slots, self.gens, self.tfs = self.slots[live], self.gens[live], self.tfs[live]
            self.stale = False


class BM25Index:
    """Documents (token lists) under hashable keys; add, replace and remove in any order."""

    def __init__(self, k1: float = 1.5, b: float = 0.75, epsilon: float = 0.25):
        self.k1, self.b, self.epsilon = k1, b, epsilon
        self._slot_of: dict[Hashable, int] = {}
        self._keys: list[Hashable | None] = []  # slot → key; None for a free slot
        self._terms: list[tuple[str, ...]] = []  # slot → its distinct terms
        self._free: list[int] = []
        self._doc_len = np.zeros(64, np.float64)
        self._gen = np.zeros(64, np.int64)
        self._total_len = 0
        self._postings: dict[str, _Postings] = {}
        # df → number of terms with that df: the mean idf over all terms needs only this, not every term.
        self._df_hist = [0]
        self._stale_stats = True
        self._eps_idf = 0.0
        self._norm = np.zeros(0)  # slot → k1 * (1 - b + b * len / avgdl)

    def __len__(self) -> int:
        return len(self._slot_of)

    def __contains__(self, key: object) -> bool:
        return key in self._slot_of

    def add(self, key: Hashable, tokens: list[str]) -> None:
        """Index `tokens` under `key`, replacing what the key held."""
        if key in self._slot_of:
            self.remove(key)
        slot = self._free.pop() if self._free else self._new_slot()
        gen = int(self._gen[slot])
        # Interned: each document's term tuple then shares the strings rather than holding copies (half
        # the index's memory, measured on pandas' 1,481 files).
        counts = Counter(map(sys.intern, tokens))
        hist, postings = self._df_hist, self._postings
        for term, tf in counts.items():
            p = postings.get(term)
            if p is None:
                p = postings[term] = _Postings()
            else:
                hist[p.df] -= 1
            p.df += 1
            if p.df == len(hist):
                hist.append(0)
            hist[p.df] += 1
            p.pending.extend((slot, gen, tf))
        self._slot_of[key] = slot
        self._keys[slot] = key
        self._terms[slot] = tuple(counts)
        self._doc_len[slot] = len(tokens)
        self._total_len += len(tokens)
        self._stale_stats = True

    def remove(self, key: Hashable) -> None:
        slot = self._slot_of.pop(key, None)
        if slot is None:
            return
        self._gen[slot] += 1  # first: settling below must see this slot's entries as stale
        hist, postings = self._df_hist, self._postings
        for term in self._terms[slot]:
            p = postings[term]
            hist[p.df] -= 1
            p.df -= 1
            if not p.df:
                del postings[term]
                continue
            hist[p.df] += 1
            p.stale = True
            if len(p.slots) + len(p.pending) // 3 > 2 * p.df + 8:  # bounds a term that is never queried
                p.settle(self._gen)
        self._total_len -= int(self._doc_len[slot])
        self._doc_len[slot] = 0
        self._keys[slot] = None
        self._terms[slot] = ()
        self._free.append(slot)
        self._stale_stats = True

    def scores(self, query: list[str]) -> dict[Hashable, float]:
        """Every document whose score is not 0, by key."""
        scores = self._score(query)
        return {self._keys[s]: float(scores[s]) for s in np.flatnonzero(scores)}

    def top(
        self, query: list[str], k: int, exclude: Callable[[Hashable], bool] | None = None
    ) -> list[tuple[Hashable, float]]:
        """The k best documents with a positive score, best first, skipping keys `exclude` rejects."""
        scores = self._score(query)
        candidates = np.flatnonzero(scores > 0)
        if k <= 0 or not len(candidates):
            return []
        negated = -scores[candidates]
        # Rank a few more than k at first, in case `exclude` rejects some; widen only when it must.
        width = min(len(candidates), 2 * k + 16)
        while True:
            best = candidates if width == len(candidates) else candidates[np.argpartition(negated, width - 1)[:width]]
            best = best[np.argsort(-scores[best], kind="stable")]
            found: list[tuple[Hashable, float]] = []
            for slot in best:
                key = self._keys[slot]
                if exclude is None or not exclude(key):
                    found.append((key, float(scores[slot])))
                    if len(found) == k:
                        return found
            if width == len(candidates):
                return found
            width = min(len(candidates), width * 4)

    # -- internals ----------------------------------------------------------------------------------
    def _new_slot(self) -> int:
        slot = len(self._keys)
        if slot == len(self._doc_len):
            self._doc_len = np.concatenate((self._doc_len, np.zeros(slot)))
            self._gen = np.concatenate((self._gen, np.zeros(slot, np.int64)))
        self._keys.append(None)
        self._terms.append(())
        return slot

    def _refresh_stats(self) -> None:
        """The epsilon idf and length norms, after documents changed (both depend on every document)."""
        n = len(self._slot_of)
        hist = np.array(self._df_hist, np.float64)
        df = np.flatnonzero(hist)
        idf = np.log(n - df + 0.5) - np.log(df + 0.5)
        self._eps_idf = self.epsilon * float(hist[df] @ idf) / len(self._postings)
        avgdl = self._total_len / n
        self._norm = self.k1 * (1 - self.b + self.b * self._doc_len / avgdl)
        self._stale_stats = False

    def _score(self, query: list[str]) -> np.ndarray:
        """Scores by slot (0 for free slots)."""
        n = len(self._slot_of)
        if not n or not self._total_len:
            return np.zeros(0)
        if self._stale_stats:
            self._refresh_stats()
        weights: list[float] = []
        slots: list[np.ndarray] = []
        tfs: list[np.ndarray] = []
        for term, count in Counter(query).items():
            p = self._postings.get(term)
            if p is None:
                continue
            idf = math.log(n - p.df + 0.5) - math.log(p.df + 0.5)
            if idf < 0:
                idf = self._eps_idf
            if idf == 0:
                continue
            if p.pending or p.stale:
                p.settle(self._gen)
            weights.append(count * idf * (self.k1 + 1))
            slots.append(p.slots)
            tfs.append(p.tfs)
        if not slots:
            return np.zeros(0)
        slot = np.concatenate(slots)
        tf = np.concatenate(tfs)
        # contribution = idf * (k1 + 1) * tf / (tf + norm), in place: the arrays are the query's postings
        contrib = self._norm[slot]
        contrib += tf
        np.divide(tf, contrib, out=contrib)
        contrib *= np.repeat(np.array(weights), [len(s) for s in slots])
        return np.bincount(slot, weights=contrib, minlength=len(self._keys))
