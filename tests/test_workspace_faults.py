"""The workspace index against what a real workspace holds: binary, huge, minified and not-UTF-8 files,
symlink loops and links out of it, named pipes, sockets and devices, unreadable directories, git's
ignore rules (checked against git itself), a parse that would never end, 100,000 files; and a
completion's lookup while the index builds. Each file is skipped with a log line, or indexed, and the
build always ends."""

from __future__ import annotations

import gc
import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

import psutil
import pytest

from conftest import ROOT, WORKSPACE
from hindsight import syntax
from hindsight.request import CompletionRequest
from hindsight.retrieval.live import LiveIndex
from hindsight.retrieval.workspace import (
    BINARY_SNIFF_BYTES,
    MAX_FILES,
    PARSE_BUDGET_S,
    WorkspaceIndex,
    read_source,
    walk_files,
)

GIT = shutil.which("git")
# Unbalanced brackets and quotes: tree-sitter's error recovery makes this slow to parse (about 1 s for
# these 420 KB here, against 0.1 s for 700 KB of ordinary Python); no line is long, nothing marks it.
PATHOLOGICAL = b"def ( : ) [ { } ' \" \n" * 20_000


@pytest.fixture
def work(tmp_path):
    root = tmp_path / "ws"
    shutil.copytree(WORKSPACE, root)
    return root


@pytest.fixture
def logged(caplog):
    caplog.set_level("INFO", logger="hindsight.retrieval.workspace")
    return caplog


def build(root: Path, **kwargs) -> tuple[WorkspaceIndex, object]:
    index = WorkspaceIndex(root, **kwargs)
    return index, index.build()


# -- binary, huge, minified, not UTF-8 ----------------------------------------------------------------
def git_says_binary(path: Path) -> bool:
    """git's own verdict: `diff --numstat` counts no lines of a binary file ('-')."""
    out = subprocess.run(
        [GIT, "diff", "--no-index", "--numstat", os.devnull, str(path)], capture_output=True, text=True
    ).stdout
    return out.startswith("-\t-")


def test_a_nul_byte_in_the_first_8000_bytes_makes_a_file_binary_as_in_git(work, logged):
    inside = b"x = 1\n" * 1333 + b"#"  # 7,999 bytes, then the NUL: the last byte git looks at
    (work / "inside.py").write_bytes(inside + b"\0" + b"\ny = 2\n")
    (work / "past.py").write_bytes(inside + b"#" + b"\0" + b"\ny = 2\n")  # the NUL is byte 8,001
    assert len(inside) == BINARY_SNIFF_BYTES - 1
    index, stats = build(work)
    assert "inside.py" not in index.files and "inside.py: binary" in logged.text
    assert "past.py" in index.files
    if GIT:
        assert git_says_binary(work / "inside.py") and not git_says_binary(work / "past.py")


def test_huge_and_minified_files_are_skipped_with_the_reason(work, logged):
    (work / "huge.py").write_text("x = 1\n" * 200_000)  # 1.2 MB: past the default cap
    (work / "bundle.js").write_text("var a=1;" * 120_000)  # a 960 KB single-line bundle
    (work / "app.min.js").write_text("function a(){return 1}\n")
    blob = "DATA = '" + "A" * 20_000 + "'\n"
    (work / "blob.py").write_text("def useful():\n    return 1\n" * 50 + blob)  # one line of 20,000 characters
    (work / "long_line.py").write_text("def useful():\n    return 1\n" * 50 + "X = '" + "A" * 3_000 + "'\n")
    index, stats = build(work)
    assert not {"huge.py", "bundle.js", "app.min.js", "blob.py"} & set(index.files)
    assert "long_line.py" in index.files  # one long line is not a bundle
    text = logged.text
    assert "huge.py: huge (1200000 bytes)" in text
    assert "bundle.js: minified (960000 characters a line on average)" in text
    assert "blob.py: minified (a line of 20009 characters)" in text and "app.min.js: minified (by its name)" in text
    assert stats.skipped["huge"] == 1 and stats.skipped["minified"] == 3


def test_invalid_utf8_is_replaced_and_mostly_invalid_text_is_skipped(work, logged):
    latin1 = "# café, naïve: written in Latin-1\ndef prix(x):\n    return x * 2\n".encode("latin-1")
    (work / "latin1.py").write_bytes(latin1)
    (work / "noise.py").write_bytes(bytes(range(128, 256)) * 40)  # no NUL, not text either
    index, stats = build(work)
    info = index.files["latin1.py"]
    assert [d.name for d in info.definitions] == ["prix"]
    assert "caf\ufffd" in info.chunks[0].text
    assert "latin1.py: 2 invalid UTF-8 sequences replaced" in logged.text
    assert "noise.py" not in index.files and "noise.py: binary (not UTF-8: 5120 invalid sequences)" in logged.text
    # Without replace_invalid (the FIM data and simulation readers), not UTF-8 is still skipped.
    assert read_source(work / "latin1.py", 10_000) == (None, "binary (not UTF-8)")


# -- links and special files ------------------------------------------------------------------------
def test_no_symlink_is_followed_and_none_raises(work, tmp_path, logged):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.py").write_text("def outside_secret():\n    pass\n")
    (work / "out_dir").symlink_to(outside, target_is_directory=True)
    (work / "out_file.py").symlink_to(outside / "secret.py")
    (work / "loop").symlink_to(work, target_is_directory=True)
    (work / "shapes" / "up").symlink_to(work / "shapes", target_is_directory=True)
    (work / "a.py").symlink_to(work / "b.py")
    (work / "b.py").symlink_to(work / "a.py")
    (work / "dangling.py").symlink_to(work / "missing.py")
    (work / "alias.py").symlink_to(work / "shapes" / "units.py")
    index, stats = build(work)
    assert set(index.files) == {
        "shapes/__init__.py", "shapes/geometry.py", "shapes/units.py", "web/format.js", "web/report.js",
    }
    assert "outside_secret" not in index.by_name
    text = logged.text
    assert f"{work / 'out_dir'}: a symlink out of the workspace" in text
    assert f"{work / 'out_file.py'}: a symlink out of the workspace" in text
    assert f"{work / 'a.py'}: unreadable (a symlink loop)" in text
    assert f"{work / 'dangling.py'}: unreadable (a dangling symlink)" in text
    assert f"{work / 'loop'}: a symlink (not followed" in text and f"{work / 'alias.py'}: a symlink (not followed" in text


def test_named_pipes_sockets_and_devices_are_never_opened(work, logged):
    fifo = work / "pipe.py"
    os.mkfifo(fifo)  # opening it to read would wait for a writer forever
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(work / "sock.py"))
    expected = {f"{fifo}: not a regular file (a named pipe)", f"{work / 'sock.py'}: not a regular file (a socket)"}
    try:
        os.mknod(work / "dev.py", 0o600 | stat.S_IFCHR, os.makedev(1, 3))  # /dev/null's numbers
        expected.add(f"{work / 'dev.py'}: not a regular file (a character device)")
    except PermissionError:
        pass  # not allowed to make a device here: the pipe and the socket still count
    result = {}
    worker = threading.Thread(target=lambda: result.update(stats=WorkspaceIndex(work).build()), daemon=True)
    worker.start()
    worker.join(60)
    try:
        assert not worker.is_alive(), "the build is stuck (on the named pipe?)"
        assert result["stats"].files == 5
        assert all(line in logged.text for line in expected), logged.text
        # A change on disk to the pipe (didChangeWatchedFiles) does not open it either.
        assert read_source(fifo, 1000) == (None, "not a regular file (a named pipe)")
        assert WorkspaceIndex(work).update_from_disk(fifo) is False
    finally:
        if worker.is_alive():  # let the stuck reader go
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        sock.close()


CHILD = """
import json, logging, os, pwd, sys
from pathlib import Path
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
from hindsight.syntax import LANGUAGES, parser_for
from hindsight.retrieval.workspace import WorkspaceIndex
if os.geteuid() == 0:  # root reads anything: become nobody, once all that is needed is loaded
    for language in LANGUAGES:
        parser_for(language)
    nobody = pwd.getpwnam("nobody")
    os.setgroups([])
    os.setgid(nobody.pw_gid)
    os.setuid(nobody.pw_uid)
index = WorkspaceIndex(Path(sys.argv[1]))
stats = index.build()
print(json.dumps({"files": sorted(index.files), "skipped": stats.skipped}))
"""


def test_unreadable_directories_and_files_are_skipped():
    """chmod 000 means nothing to root: as root, the build runs in a child process that becomes `nobody`."""
    root = Path(tempfile.mkdtemp(prefix="hindsight-unreadable-"))
    try:
        root.chmod(0o755)
        shutil.copytree(WORKSPACE, root / "ws")
        ws = root / "ws"
        (ws / "locked").mkdir()
        (ws / "locked" / "hidden.py").write_text("def locked_away():\n    pass\n")
        (ws / "closed.py").write_text("def closed():\n    pass\n")
        for path in ws.rglob("*"):
            path.chmod(0o755 if path.is_dir() else 0o644)
        (ws / "locked").chmod(0)
        (ws / "closed.py").chmod(0)
        env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONDONTWRITEBYTECODE="1")
        child = subprocess.run([sys.executable, "-c", CHILD, str(ws)], capture_output=True, text=True, env=env, timeout=120)
        if os.geteuid() == 0 and "Operation not permitted" in child.stderr:
            pytest.skip("root, and not allowed to become nobody")
        assert child.returncode == 0, child.stderr
        out = json.loads(child.stdout)
        assert out["files"] == ["shapes/__init__.py", "shapes/geometry.py", "shapes/units.py", "web/format.js", "web/report.js"]
        assert f"{ws / 'locked'}: unreadable directory (Permission denied)" in child.stderr
        assert f"{ws / 'closed.py'}: unreadable (Permission denied)" in child.stderr
        assert out["skipped"] == {"unreadable directory": 1, "unreadable": 1}
    finally:
        (root / "ws" / "locked").chmod(0o755)
        shutil.rmtree(root)


# -- git's ignore rules -----------------------------------------------------------------------------
GITIGNORE = {
    ".gitignore": "/build\n/generated\n!generated/keep.py\n*.log\n!keep.log\ndocs/**/*.tmp\nnotes/**/*.tmp\ncache/\n"
    "src/only_here.py\n**/scratch/\n\\#hash.py\nspaced.py   \n*.min.py\n",
    "src/.gitignore": "!*.log\n/local.py\n*.py[co]\n",  # a deeper file overrides: src/app.log is back
    "src/deep/.gitignore": "!only_here.py\nnot_here.py\n",
    "docs/guide/.gitignore": "!b.tmp\n",
}
FILES = [
    "main.py", "app.log", "keep.log", "#hash.py", "spaced.py", "x.min.py",
    "build/out.py", "src/build/kept.py", "generated/gen.py", "generated/keep.py", "src/generated/kept.py",
    "docs/a.tmp", "docs/guide/b.tmp", "docs/guide/c.tmp", "notes/n.tmp", "notes/x/y.tmp", "notes/n.md",
    "cache/c.py", "src/cache.py", "src/cache/inner.py",
    "src/app.log", "src/local.py", "src/sub/local.py", "src/mod.pyc", "src/only_here.py", "src/deep/only_here.py",
    "src/deep/not_here.py", "src/deep/here.py", "scratch/s.py", "src/deep/scratch/t.py",
    "excluded.py", "sub/excluded.py", "global.py", "src/global.py",
]


def git_repo(root: Path, home: Path) -> dict[str, str]:
    """A repository with the files above and its ignore files; the environment git and the walk see."""
    for rel in FILES:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(f"# {rel}\n")
    env = dict(os.environ, HOME=str(home), XDG_CONFIG_HOME=str(home / "config"), GIT_CONFIG_NOSYSTEM="1")
    subprocess.run([GIT, "init", "-q", str(root)], check=True, env=env)
    for rel, text in GITIGNORE.items():
        (root / rel).write_text(text)
    (root / ".git" / "info" / "exclude").write_text("/excluded.py\n")
    (home / "config" / "git").mkdir(parents=True)
    (home / "config" / "git" / "ignore").write_text("/global.py\n")
    return env


def git_lists(cwd: Path, env: dict[str, str]) -> set[str]:
    out = subprocess.run(
        [GIT, "ls-files", "--others", "--cached", "--exclude-standard"], cwd=cwd, env=env, capture_output=True,
        text=True, check=True,
    ).stdout
    return set(out.splitlines())


@pytest.mark.skipif(GIT is None, reason="git is not installed")
def test_the_walk_lists_what_git_lists(tmp_path, monkeypatch):
    repo, home = tmp_path / "repo", tmp_path / "home"
    home.mkdir()
    env = git_repo(repo, home)
    monkeypatch.setenv("HOME", env["HOME"])
    monkeypatch.setenv("XDG_CONFIG_HOME", env["XDG_CONFIG_HOME"])
    for root in (repo, repo / "src"):  # the repository, and a workspace inside it (the rules above apply)
        ours = {p.relative_to(root).as_posix() for p in walk_files(root)}
        # What the walk leaves out on top of git: dependency and build directories (SKIP_DIRS).
        theirs = {rel for rel in git_lists(root, env) if not rel.startswith("build/") and "/build/" not in f"/{rel}"}
        assert ours == theirs
    # The rules at work (so that a walk and a git that both ignored nothing would not pass):
    listed = {p.relative_to(repo).as_posix() for p in walk_files(repo)}
    assert {"keep.log", "src/app.log", "docs/guide/b.tmp", "notes/n.md", "src/cache.py"} <= listed
    assert not {"app.log", "docs/a.tmp", "docs/guide/c.tmp", "notes/n.tmp", "notes/x/y.tmp", "src/deep/scratch/t.py"} & listed
    assert not {"generated/gen.py", "generated/keep.py", "src/local.py", "src/cache/inner.py", "#hash.py"} & listed
    assert not {"excluded.py", "global.py", "spaced.py", "src/mod.pyc", "src/only_here.py"} & listed
    assert {"src/generated/kept.py", "src/sub/local.py", "src/global.py", "sub/excluded.py", "src/deep/only_here.py"} <= listed


def test_a_workspace_inside_an_ignored_directory_is_indexed(tmp_path, logged):
    (tmp_path / ".git").mkdir()  # a repository whose .gitignore ignores everything (a dotfiles repo)
    (tmp_path / ".gitignore").write_text("*\n")
    shutil.copytree(WORKSPACE, tmp_path / "projects" / "ws")
    (tmp_path / "projects" / "ws" / ".gitignore").write_text("web/\n")
    index, stats = build(tmp_path / "projects" / "ws")
    assert set(index.files) == {"shapes/__init__.py", "shapes/geometry.py", "shapes/units.py"}
    assert "is in a directory git ignores: only the .gitignore files inside it apply" in logged.text


# -- a parse that would not end ---------------------------------------------------------------------
def test_the_progress_callback_is_ignored_when_parsing_bytes():
    """Why the budget reads through a callback: given bytes, py-tree-sitter 0.26 ignores progress_callback
    (it warns), and a callback asking to stop at once stops nothing."""
    parser = syntax.parser_for("python")
    with pytest.warns(UserWarning, match="progress_callback is ignored"):
        tree = parser.parse(b"x = 1\n" * 1000, progress_callback=lambda offset, has_error: True)
    assert tree.root_node.child_count == 1000


def test_a_parse_past_its_budget_is_stopped_and_the_parser_starts_afresh():
    started = time.perf_counter()
    assert syntax.parser_for("python").parse(PATHOLOGICAL) is not None
    unbounded = time.perf_counter() - started
    assert unbounded > 0.3  # the input is slow to parse
    started = time.perf_counter()
    with pytest.raises(syntax.ParseTimeout, match=r"parse stopped after \d+ ms \(420000 bytes\)"):
        syntax.parse(PATHOLOGICAL, "python", timeout=0.05)
    assert time.perf_counter() - started < min(unbounded / 2, 0.05 + 0.25)
    # A stopped parser would resume the stopped parse on its next call; it was reset.
    tree = syntax.parse(b"y = 2\n", "python", timeout=1)
    assert tree.root_node.end_byte == 6 and str(tree.root_node) == str(syntax.parse(b"y = 2\n", "python").root_node)
    assert tree.root_node.children[0].text == b"y = 2"  # Node.text reads through the callback again


def test_budgeted_parses_do_not_keep_their_sources():
    """py-tree-sitter 0.26.1 keeps a reference to whatever the read callback returns: chunks of the source
    would stay in memory, every parse (an index build, every edit): 30 MB for these 30 parses of 1 MB."""
    def make(i: int) -> bytes:  # a new object each time, of one length
        return b'TEXT = """%04d\n' % i + b"a line of text\n" * 70_000 + b'"""\n'

    syntax.parse(make(0), "python", timeout=5)  # the buffer the sources are copied to: made once
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for i in range(30):
            source = make(i)
            tree = syntax.parse(source, "python", timeout=5)
            assert tree.root_node.end_byte == len(source)
            del tree, source
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert grown < 1_000_000, grown


def test_a_file_past_the_parse_budget_is_indexed_without_definitions(work, logged):
    (work / "a_slow.py").write_bytes(PATHOLOGICAL + b"def findable_marker():\n    pass\n")
    (work / "b_after.py").write_text("def right_after():\n    return 1\n")  # parsed next, by the same parser
    index, stats = build(work)
    assert stats.timed_out == 1 and index.files["a_slow.py"].definitions == ()
    assert "findable_marker" not in index.by_name
    assert any("findable_marker" in chunk.text for chunk in index.files["a_slow.py"].chunks)  # BM25 has it
    assert [d.name for d in index.files["b_after.py"].definitions] == ["right_after"]
    stopped = re.search(r"a_slow\.py: parse stopped after (\d+) ms \(\d+ bytes\); indexed without definitions", logged.text)
    assert stopped and int(stopped[1]) < PARSE_BUDGET_S * 1000 + 100  # the unbounded parse takes about 1 s
    # An edit from the editor goes through the same budget.
    assert index.update("a_slow.py", PATHOLOGICAL.decode() + "x = 1\n")
    assert index.files["a_slow.py"].definitions == ()


# -- bounded: files, bytes, 100,000 files -----------------------------------------------------------
def test_the_total_size_indexed_is_capped(work, logged):
    for i in range(10):
        (work / f"extra{i}.py").write_text(f"def extra{i}():\n    return {i}\n" * 40)
    index, stats = build(work, max_total_bytes=6000)
    assert 0 < stats.files < 15 and stats.left_out == 15 - stats.files
    assert "bytes of source:" in logged.text and f"the other {stats.left_out} left out" in logged.text


@pytest.fixture
def big(tmp_path):
    """100,000 files in 1,000 directories; in memory where there is a tmpfs (making and removing them on a
    busy disk took minutes once). Past the first 20,000 (MAX_FILES) they are empty: never read."""
    shm = Path("/dev/shm")
    root = Path(tempfile.mkdtemp(prefix="hindsight-100k-", dir=shm if shm.is_dir() and os.access(shm, os.W_OK) else tmp_path))
    body = "def func_{d}_{f}(x):\n    return x + {f}\n\n\nclass Thing{f}:\n    size = {d}\n"
    try:
        for d in range(1000):
            pkg = root / f"pkg{d:04d}"
            pkg.mkdir()
            for f in range(100):
                fd = os.open(pkg / f"mod{f:03d}.py", os.O_WRONLY | os.O_CREAT, 0o644)
                if d < 200:
                    os.write(fd, body.format(d=d, f=f).encode())
                os.close(fd)
        yield root
    finally:
        shutil.rmtree(root)


def test_a_workspace_of_100000_files_is_indexed_in_bounded_time_and_memory(big, logged):
    root = big
    # The walk yields one file at a time: going through all 100,000 holds almost nothing. Measured in a
    # process of its own: tracemalloc counts every thread's allocations, and earlier tests leave threads.
    walk = (
        "import sys, tracemalloc\nfrom pathlib import Path\nfrom hindsight.retrieval.workspace import source_files\n"
        "tracemalloc.start()\ncount = sum(1 for _ in source_files(Path(sys.argv[1])))\n"
        "print(count, tracemalloc.get_traced_memory()[1])"
    )
    done = subprocess.run([sys.executable, "-c", walk, str(root)], cwd=ROOT, capture_output=True, text=True, check=True)
    count, peak = map(int, done.stdout.split())
    assert count == 100_000 and peak < 5_000_000, (count, peak)
    gc.collect()
    rss = psutil.Process().memory_info().rss
    started = time.perf_counter()
    index, stats = build(root)
    seconds = time.perf_counter() - started
    grown = psutil.Process().memory_info().rss - rss
    assert stats.files == MAX_FILES and stats.left_out == 100_000 - MAX_FILES
    assert f"indexing the first {MAX_FILES}, {100_000 - MAX_FILES} left out" in logged.text
    assert "func_0_0" in index.by_name and "func_199_99" in index.by_name and "func_200_0" not in index.by_name
    assert seconds < 75, seconds  # about 13 s on 2 busy cores
    assert grown < 600_000_000, grown  # about 80 MB


# -- never blocks a completion ----------------------------------------------------------------------
def request(root: Path, rel: str) -> CompletionRequest:
    text = (root / rel).read_text()
    line = text.count("\n")
    return CompletionRequest(uri=(root / rel).as_uri(), text=text, line=line, character=0, language="python")


def test_a_lookup_during_the_build_returns_at_once(work):
    """The build holds no lock, and gives up the GIL: a parse of bytes would hold it for a second on each
    slow file (every thread stopped: the event loop, the model worker)."""
    for i in range(4):
        (work / f"slow{i}.py").write_bytes(PATHOLOGICAL)
    for i in range(300):
        (work / "many" / f"m{i}.py").parent.mkdir(exist_ok=True)
        (work / "many" / f"m{i}.py").write_text(f"def many_{i}(x):\n    return x + {i}\n")
    live = LiveIndex(work, None, lambda uri: None)
    finished = threading.Event()
    live.start(lambda done, total: None, lambda stats, error: finished.set())
    req = request(work, "shapes/geometry.py")
    rounds = []  # a lookup and 10 ms of other work (a GIL held by the build stalls either)
    try:
        while not finished.is_set():
            started = time.perf_counter()
            found = live.retrieve(req, 0)
            # No index yet; the index is installed just before the done callback fires, so a lookup in
            # that gap may already find context.
            assert found == [] or live.index is not None
            time.sleep(0.01)
            rounds.append(time.perf_counter() - started)
        assert len(rounds) >= 20, "the build ended before the lookups could overlap it"
        assert max(rounds) < 0.5, max(rounds)
        # Built: the same lookup now finds context, so it was not empty for want of an index.
        assert any(s.source.startswith("shapes/units.py") for s in live.retrieve(req, 0))
        # A slow file changing on disk: the lookup waits for its update, which the parse budget bounds.
        bad = work / "slow_edit.py"
        bad.write_bytes(PATHOLOGICAL * 2)
        live.on_disk(bad.as_uri())
        deadline = time.monotonic() + 10
        while not live.lock.locked() and time.monotonic() < deadline:
            time.sleep(0.0005)
        started = time.perf_counter()
        live.retrieve(req, 100)
        assert time.perf_counter() - started < 1.5  # an unbounded parse of it takes about 4 s
        live.thread.submit(lambda: None).result(timeout=30)
        assert "slow_edit.py" in live.index.files and live.index.files["slow_edit.py"].definitions == ()
    finally:
        live.close()
