"""The two types every layer of a completion passes along: the request (a document and a cursor) and a
snippet of cross-file context. Retrieval makes snippets, the engine puts them in prompts, the pipeline
and the log store both; none of them owns the types, so they live here, below all of them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable


@dataclass(frozen=True)
class Snippet:
    source: str  # path and line range the snippet came from ('a/b.py:10-24')
    text: str
    score: float = 0.0
    origin: str = ""  # how it was found: 'graph' (an imported definition) or 'bm25'


@dataclass
class CompletionRequest:
    uri: str
    text: str
    line: int
    character: int  # Python str index within the line
    language: str | None = None
    path: str = ""  # shown to the model in the prompt header
    repo: str = ""  # the workspace's name, for a model's repository format (hindsight/engine/profiles.py)
    context: list[Snippet] = field(default_factory=list)
    request_id: str | None = None
    cancelled: Callable[[], bool] = lambda: False
    # Asked once the context is known, before generation: False → no model call (the gate's stage 1).
    admit: Callable[[list[Snippet]], bool] | None = None
    lines: list[str] | None = None  # `text` split at newlines, when the caller has it (split once per request)

    def doc_lines(self) -> list[str]:
        if self.lines is None:
            self.lines = self.text.split("\n")
        return self.lines
