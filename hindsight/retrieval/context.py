"""Cross-file context for one cursor: definitions the code near the cursor refers to, found through the
file's imports (the import graph), and the chunks of other files most like the code before the cursor
(BM25, as CrossCodeEval and SynthCoder retrieve).
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from hindsight.request import Snippet

from hindsight.retrieval.bm25 import tokenize
from hindsight.retrieval.parse import Definition, FileInfo, Import, enclosing_class, identifiers_near
from hindsight.retrieval.workspace import WorkspaceIndex

QUERY_LINES = 10  # CrossCodeEval's query: the last 10 non-empty lines before the cursor
BODY_LINES = 25  # a definition this short goes in whole; a longer one as signature and docstring
JS_EXTENSIONS = (".ts", ".tsx", ".js", ".jsx", ".mjs", ".cjs", ".d.ts")


@dataclass
class ContextOptions:
    bm25: bool = True
    graph: bool = True
    top_k: int = 6


def query_text(lines: list[str], line: int, character: int) -> str:
    """The last QUERY_LINES non-empty lines up to the cursor."""
    picked = [lines[line][:character]] if lines[line][:character].strip() else []
    for text in reversed(lines[max(0, line - 200) : line]):
        if len(picked) >= QUERY_LINES:
            break
        if text.strip():
            picked.append(text)
    return "\n".join(reversed(picked))


# -- the import graph ---------------------------------------------------------------------------------
def module_files(index: WorkspaceIndex, info: FileInfo, imp: Import) -> list[str]:
    """Workspace files an import refers to (none for third-party modules)."""
    here = posixpath.dirname(info.path)
    module = imp.module.strip()
    candidates: list[str] = []
    if info.language == "python":
        dots = len(module) - len(module.lstrip("."))
        parts = [p for p in module.lstrip(".").split(".") if p]
        if dots:
            base = here
            for _ in range(dots - 1):
                base = posixpath.dirname(base)
            heads = [posixpath.join(base, *parts)]
        else:  # absolute: from the workspace root, from src/, or (the workspace is the package) inside it
            heads = [posixpath.join(*parts)] if parts else []
            heads += [posixpath.join("src", *parts)] if parts else []
            root = index.root.parts
            heads += [posixpath.join("", *parts[k:]) for k in range(1, len(parts) + 1) if tuple(parts[:k]) == root[-k:]]
        for head in heads:
            candidates += [head + ".py", posixpath.join(head, "__init__.py")]
            # from package import submodule
            candidates += [posixpath.join(head, name + ".py") for name, _ in imp.names]
    elif info.language in ("javascript", "typescript", "tsx"):
        if module.startswith("."):
            head = posixpath.normpath(posixpath.join(here, module))
            candidates = [head] + [head + ext for ext in JS_EXTENSIONS]
            candidates += [posixpath.join(head, "index" + ext) for ext in JS_EXTENSIONS]
    elif info.language in ("c", "cpp"):
        name = module.strip('"<>')
        candidates = [posixpath.normpath(posixpath.join(here, name))]
        same_name = sorted(index.by_basename.get(posixpath.basename(name), ()))
        candidates += [rel for rel in same_name if rel == name or rel.endswith("/" + name)]
    elif info.language == "go":  # a package is a directory: match its last path element
        package = module.strip('"').rsplit("/", 1)[-1]
        dirs = sorted(d for d in index.by_dir if posixpath.basename(d) == package)
        candidates = [rel for d in dirs for rel in sorted(index.by_dir[d]) if rel.endswith(".go")]
    elif info.language == "rust":
        parts = [p for p in module.split("::") if p]
        if parts and parts[0] in ("crate", "self", "super"):
            base = {"crate": "src", "self": here, "super": posixpath.dirname(here)}[parts[0]]
            # `use crate::geo;` names a module; `use crate::geo::area;` an item in one.
            paths = [parts[1:] + [name] for name, _ in imp.names] + [parts[1:]]
            for rest in paths:
                if rest:
                    head = posixpath.join(base, *rest)
                    candidates += [head + ".rs", posixpath.join(head, "mod.rs")]
    elif info.language == "java":
        path = module.replace(".", "/") + ".java"
        candidates = [rel for rel in sorted(index.by_basename.get(posixpath.basename(path), ())) if rel.endswith(path)]
    return [c for c in dict.fromkeys(candidates) if c in index.files and c != info.path]


Resolved = list[tuple[Import, list[str]]]  # each import of a file, with the workspace files it names


def resolve_imports(index: WorkspaceIndex, info: FileInfo) -> Resolved:
    return [(imp, module_files(index, info, imp)) for imp in info.imports]


def scope_files(index: WorkspaceIndex, info: FileInfo, line: int, resolved: Resolved) -> list[str]:
    """The files whose definitions the code at `line` can name: imported ones, the same package's (Go,
    Java), and those defining the enclosing class's bases."""
    files: list[str] = []
    for _, imported in resolved:
        files += imported
    if info.language in ("go", "java"):
        here = posixpath.dirname(info.path)
        files += [rel for rel in sorted(index.by_dir.get(here, ())) if rel != info.path]
    cls = enclosing_class(info, line)
    if cls is not None:
        for base in cls.bases:
            files += [d.path for d in index.by_name.get(base, []) if d.kind in ("class", "type") and d.path != info.path]
    return list(dict.fromkeys(files))


def module_names(resolved: Resolved) -> dict[str, list[str]]:
    """Local names bound to a workspace module (`import x.y as z`, `from pkg import mod`, `import * as m
    from './m'`, `const m = require('./m')`, a Go package) → the module's files."""
    names: dict[str, list[str]] = {}
    for imp, files in resolved:
        if imp.alias and files:
            names.setdefault(imp.alias, []).extend(files)
        for name, local in imp.names:
            names.setdefault(local, []).extend(f for f in files if posixpath.splitext(posixpath.basename(f))[0] == name)
    return {k: list(dict.fromkeys(v)) for k, v in names.items() if v}


def module_summary(index: WorkspaceIndex, rel: str, limit: int = 60) -> str:
    """A module's top-level definitions, one signature a line (the first `limit`)."""
    top = [d.signature.split("\n")[0] for d in index.files[rel].definitions if d.qualname == d.name]
    return "\n".join(top[:limit])


def render_definition(index: WorkspaceIndex, d: Definition) -> str:
    """The whole definition when short; else its signature and docstring, and for a class its methods'
    signatures."""
    if d.body.count("\n") < BODY_LINES:
        return d.body
    parts = [d.signature] + ([f"    {d.doc}"] if d.doc else [])
    if d.kind in ("class", "type"):
        members = index.files[d.path].definitions
        parts += [f"    {m.signature}" for m in members if m.qualname == f"{d.name}.{m.name}"]
    return "\n".join(parts)


IMPORTED = 8  # at most this many definitions of imported names not used near the cursor


def graph_snippets(index: WorkspaceIndex, info: FileInfo, text: str, line: int, character: int) -> list[Snippet]:
    """Definitions in other files of the identifiers used near the cursor, nearest identifier first;
    then of the names the file imports by name (the API the code at the cursor may be about to call)."""
    resolved = resolve_imports(index, info)
    scope = set(scope_files(index, info, line, resolved))
    if not scope:
        return []
    local = {d.name for d in info.definitions}
    near = [name for name in identifiers_near(text, line, character, info.language) if name not in local]
    imported = [name for imp in info.imports for name, _ in imp.names if name not in local and name not in near]
    modules = module_names(resolved)
    found: list[Snippet] = []
    seen: set[tuple[str, int]] = set()
    for rank, name in enumerate(near + imported):
        if rank >= len(near) + IMPORTED:
            break
        for rel in modules.get(name, []) if rank < len(near) else []:
            # `errors.` before the cursor: what the module offers, one signature a line.
            if (rel, -1) not in seen:
                seen.add((rel, -1))
                found.append(Snippet(f"{rel} (definitions)", module_summary(index, rel), 1.0 / (1 + rank), "graph"))
        for d in index.by_name.get(name, []):
            # Top-level definitions only: a method's name alone says too little (`get`, `append`); a class
            # brings its methods' signatures.
            if d.path in scope and d.qualname == d.name and (d.path, d.start_line) not in seen:
                seen.add((d.path, d.start_line))
                source = f"{d.path}:{d.start_line + 1}-{d.end_line}"
                found.append(Snippet(source, render_definition(index, d), 1.0 / (1 + rank), origin="graph"))
    return found


# -- BM25 ---------------------------------------------------------------------------------------------
def bm25_snippets(index: WorkspaceIndex, path: str, lines: list[str], line: int, character: int, k: int) -> list[Snippet]:
    """Chunks of other files most like the code before the cursor; each with the chunk after it when
    that exists (the hit matches what precedes the code we want; CrossCodeEval does the same)."""
    query = tokenize(query_text(lines, line, character))
    if not query:
        return []
    hits = index.bm25.top(query, k, exclude=lambda key: key[0] == path)
    snippets = []
    for key, score in hits:
        chunk = index.chunks.get(key)
        if chunk is None:
            continue
        rel, start = chunk.path, chunk.start_line
        text, end = chunk.text, chunk.end_line
        after = index.chunk_at(rel, chunk.end_line)
        if after is not None and chunk.text.count("\n") + after.text.count("\n") < 30:
            text, end = f"{chunk.text}\n{after.text}", after.end_line
        snippets.append(Snippet(f"{rel}:{start + 1}-{end}", text, float(score), origin="bm25"))
    return snippets


def retrieve(
    index: WorkspaceIndex, path: str, text: str, line: int, character: int, options: ContextOptions | None = None
) -> list[Snippet]:
    """Snippets for the prompt, best first: the graph's definitions and BM25's chunks (without the
    ones a definition already covers), alternately. `path` is workspace-relative; the file itself is never used
    (its own text is in the prompt already)."""
    options = options or ContextOptions()
    info = index.files.get(path)
    lines = text.split("\n")
    snippets: list[Snippet] = []
    if options.graph and info is not None:
        snippets += graph_snippets(index, info, text, line, character)
    if options.bm25:
        similar = [
            s
            for s in bm25_snippets(index, path, lines, line, character, options.top_k)
            if not any(_overlap(s.source, x.source) for x in snippets)
        ]
        # Alternate the two, so that neither crowds the other out of the prompt's budget.
        graph, snippets = snippets, []
        for i in range(max(len(graph), len(similar))):
            snippets += graph[i : i + 1] + similar[i : i + 1]
    return snippets


def _overlap(a: str, b: str) -> bool:
    """Whether two sources ('path:first-last', 1-based lines) share a line."""
    if ":" not in a or ":" not in b:  # a module's summary
        return False
    (path_a, range_a), (path_b, range_b) = a.rsplit(":", 1), b.rsplit(":", 1)
    (a0, a1), (b0, b1) = (map(int, range_a.split("-")), map(int, range_b.split("-")))
    return path_a == path_b and a0 <= b1 and b0 <= a1
