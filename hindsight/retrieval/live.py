"""The workspace index as the server uses it: built on its own thread, updated as files change, read by
the model worker when a request needs context. One lock guards it; an update or a lookup holds it for a
few milliseconds (a file that is slow to parse: as long as the parse budget, PARSE_BUDGET_S, and its
plain windows). The build holds no lock: a lookup meanwhile finds no index and returns at once.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from hindsight.paths import uri_to_path
from hindsight.request import CompletionRequest, Snippet

from hindsight.retrieval.context import ContextOptions, retrieve
from hindsight.retrieval.workspace import IndexStats, WorkspaceIndex

log = logging.getLogger(__name__)


class LiveIndex:
    def __init__(self, root: Path, cache_dir: Path | None, open_text: Callable[[str], str | None], options=None):
        self.root = root.resolve()
        self.cache_dir = cache_dir
        self.open_text = open_text  # uri → the open document's text (None when it is not open)
        self.options = options or ContextOptions()
        self.index: WorkspaceIndex | None = None  # None until the first build is done
        self.lock = threading.Lock()
        self.dirty: set[str] = set()  # open documents edited since they were last indexed
        self.version = 0  # counts the changes to the index
        # uri → ((prompt window start, index version), snippets). The context sits at the front of the
        # prompt: changing it costs the whole prompt's KV cache. So it is looked up again only when the
        # window's start moves (every anchor_lines lines, which costs the cache anyway) or the index
        # changed (another file was edited or changed on disk).
        self.sticky: dict[str, tuple[tuple[int, int], list[Snippet]]] = {}
        self.thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hindsight-index")

    def start(self, progress: Callable[[int, int], None], done: Callable[[IndexStats | None, str | None], None]):
        """Build in the background; `done(stats, error)` when finished."""

        def build():
            try:
                index = WorkspaceIndex(self.root, cache_dir=self.cache_dir)
                stats = index.build(progress)
            except Exception as exc:
                log.exception("index: build failed")
                done(None, f"{type(exc).__name__}: {exc}")
                return
            with self.lock:
                self.index = index
                self.version += 1
            done(stats, None)

        return self.thread.submit(build)

    def relative(self, uri: str) -> str | None:
        path = uri_to_path(uri)
        if not path:
            return None
        try:
            return Path(path).resolve().relative_to(self.root).as_posix()
        except ValueError:
            return None  # outside the workspace

    # -- changes --------------------------------------------------------------------------------------
    def edited(self, uri: str) -> None:
        """An open document changed: indexed again when a request next needs context (not per keystroke)."""
        self.dirty.add(uri)

    def opened(self, uri: str, text: str) -> None:
        """A document was opened: its syntax tree is made ready for its edits (on the index thread)."""
        rel = self.relative(uri)
        if rel is not None:
            self.thread.submit(self._opened, rel, text)

    def _opened(self, rel: str, text: str) -> None:
        with self.lock:
            if self.index is not None:
                self.index.opened(rel, text)

    def on_disk(self, uri: str) -> None:
        """A file changed on disk, or an open one was closed: index what the disk holds."""
        self.dirty.discard(uri)
        path = uri_to_path(uri)
        if path and self.relative(uri) is not None:
            self.thread.submit(self._from_disk, Path(path))

    def _from_disk(self, path: Path) -> None:
        with self.lock:
            if self.index is not None and self.index.update_from_disk(path):
                self.version += 1

    def _catch_up(self, skip: str) -> None:
        """Index the edited open documents (not the one being completed: its own text is in the prompt)."""
        for uri in list(self.dirty):
            if uri == skip:
                continue
            self.dirty.discard(uri)
            rel, text = self.relative(uri), self.open_text(uri)
            if rel is not None and text is not None and self.index.update(rel, text):
                self.version += 1

    # -- lookups (on the model worker) ----------------------------------------------------------------
    def retrieve(self, req: CompletionRequest, window_start: int) -> list[Snippet]:
        rel = self.relative(req.uri)
        with self.lock:
            if self.index is None or rel is None:
                return []
            self._catch_up(skip=req.uri)
            key = (window_start, self.version)
            kept = self.sticky.get(req.uri)
            if kept is not None and kept[0] == key:
                return kept[1]
            snippets = retrieve(self.index, rel, req.text, req.line, req.character, self.options)
            self.sticky[req.uri] = (key, snippets)
            return snippets

    def close(self) -> None:
        self.thread.shutdown(wait=False, cancel_futures=True)
