"""The typed-ahead cache: when the user types the first characters of the suggestion on screen, the rest
comes from here, with no model call."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class CacheEntry:
    prefix: str  # document text before the cursor when the suggestion was made
    line_rest: str  # the rest of the cursor line after the cursor
    text: str  # the suggestion
    request_id: str | None
    mode: str


@dataclass
class CacheHit:
    text: str  # what is left of the suggestion after what the user typed
    entry: CacheEntry


class TypedAheadCache:
    def __init__(self, max_docs: int = 64):
        self._entries: dict[str, CacheEntry] = {}
        self.max_docs = max_docs

    def put(self, uri: str, entry: CacheEntry) -> None:
        self._entries.pop(uri, None)
        self._entries[uri] = entry
        while len(self._entries) > self.max_docs:
            self._entries.pop(next(iter(self._entries)))

    def get(self, uri: str, prefix: str, line_rest: str) -> CacheHit | None:
        entry = self._entries.get(uri)
        if entry is None or line_rest != entry.line_rest or not prefix.startswith(entry.prefix):
            return None
        typed = prefix[len(entry.prefix) :]
        if not entry.text.startswith(typed) or len(typed) >= len(entry.text):
            return None
        return CacheHit(entry.text[len(typed) :], entry)

    def drop(self, uri: str) -> None:
        self._entries.pop(uri, None)
