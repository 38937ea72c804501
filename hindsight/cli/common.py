"""What every command shares: the command class (the global flags accepted after the command's name too,
logging set up before it runs), the options several commands take, and the check for an optional extra."""

from __future__ import annotations

import importlib.util
import logging
import os
import stat
import sys
from pathlib import Path

import click

from hindsight.errors import UsageError
from hindsight.paths import db_path

# The commands of `hindsight`, in the order `hindsight --help` lists them: the module of `hindsight.cli` that
# declares each (with its options), and what it does. The top group imports a command's module only when
# that command runs, so `hindsight --help` and `hindsight serve` do not pay for the trainers' and the
# benchmarks' imports.
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("serve", 'Run the language server (stdio unless --tcp).'),
    "complete": ("serve", 'One completion at FILE:LINE:COL (1-based), with per-stage timings.'),
    "index": ("serve", 'Index a workspace for cross-file context now (the server does it on start; cached).'),
    "stats": ("log", 'Outcome counts, acceptance rate and latency from the log.'),
    "report": ("log", 'What you gained, day by day and per model, adapter and gate: acceptance, characters kept, rejects shown, latency.'),
    "forget": ("log", 'Delete the logged data (all, or since a date), then VACUUM the database.'),
    "demo": ("simulate", 'Watch a simulated developer use hindsight over real LSP (what `make demo` runs).'),
    "simulate": ("simulate", 'A simulated developer removes code from the files of REPO (a directory) and types it back through the real server; the files are read, never written.'),
    "learn": ("learn", 'One run of the learning loop: the gate and the adapter again, when the log has enough new signal.'),
    "schedule": ("learn", 'Run the learning loop daily at a fixed time (a systemd user timer): install, remove or show.'),
    "train-gate": ("learn", 'Train the acceptance gate on the recorded outcomes; promote it if it is not worse.'),
    "cold-start": ("learn", 'The first acceptance gate: simulated sessions on the standard library, trained on.'),
    "export-pairs": ("learn", 'DSAT preference pairs (prompt, chosen, rejected) for DPO, with provenance.'),
    "refresh": ("learn", 'A DPO LoRA adapter from the dissatisfaction pairs; promoted if it measures better.'),
    "serve-adapter": ("learn", 'Make a running llama-server apply the promoted adapter (its LoRA hot-swap API).'),
    "build-fim-data": ("learn", 'Fill-in-the-middle training examples with cross-file context (JSONL).'),
    "train-fim": ("learn", 'LoRA SFT that teaches the model the fill-in-the-middle format.'),
    "bench": ("bench", 'Benchmarks (docs/BENCHMARKS.md).'),
}

# The optional extras (pyproject.toml) and what they install, in the words of the message that asks for one.
EXTRAS = {"train": "the training libraries", "bench": "the benchmark libraries"}
# What each kind of training imports, for `need`: the gate's, and the language model's.
GATE_LIBRARIES = ("lightgbm", "sklearn", "onnx", "onnxmltools")
TORCH_LIBRARIES = ("torch", "transformers", "peft", "gguf")


def _add_verbose(ctx: click.Context, param: click.Parameter, value: int) -> None:
    # ctx.meta is shared by the group's context and the command's: `-v serve -v` counts twice.
    ctx.meta["verbose"] = ctx.meta.get("verbose", 0) + value


def _set_log_file(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.meta["log_file"] = value


def global_options() -> list[click.Option]:
    """-v and --log-file: on the group and on every command, so `hindsight -v serve` and `hindsight serve
    -v` (as an editor's configuration tends to write it) are the same."""
    return [
        click.Option(["-v", "--verbose"], count=True, expose_value=False, callback=_add_verbose, show_default=False,
                     help="log more (-v: info, -vv: debug); the log goes to stderr"),
        click.Option(["--log-file"], metavar="PATH", expose_value=False, callback=_set_log_file,
                     help="log to this file (created private, 0600) instead of stderr"),
    ]


def private_log(path: str) -> logging.Handler:
    """A handler on a log file only its owner can read (0600, like the database: the log names files and
    can hold code). The file is created 0600 before logging opens it, and an existing one is narrowed to
    0600; a device or a pipe (`--log-file /dev/stderr`) is left as it is."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            if stat.S_ISREG(os.fstat(fd).st_mode):
                os.fchmod(fd, 0o600)  # an existing file too; O_CREAT's mode is filtered by the umask
        finally:
            os.close(fd)
        return logging.FileHandler(path)
    except OSError as exc:
        raise UsageError(f"cannot write the log file {path}: {exc.strerror}") from None


def setup_logging(verbose: int, log_file: str | None) -> None:
    level = logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING
    handler = private_log(log_file) if log_file else logging.StreamHandler(sys.stderr)
    logging.basicConfig(level=level, handlers=[handler], format="%(asctime)s %(name)s %(levelname)s %(message)s")


class Command(click.Command):
    """A `hindsight` command: it takes the global flags after its name as well as before, and sets up
    logging from them before its body runs."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.params.extend(global_options())

    def invoke(self, ctx: click.Context):
        setup_logging(ctx.meta.get("verbose", 0), ctx.meta.get("log_file"))
        return super().invoke(ctx)


class Group(click.Group):
    """A group of `hindsight` commands (the top one, `bench`): its commands are `Command`s."""

    command_class = Command
    group_class = type  # a group inside it is a Group too

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.params.extend(global_options())


def command(name: str, **kwargs):
    """`@command("stats")`: the `Command` named `name`, with its line in COMMANDS as its help."""
    kwargs.setdefault("help", COMMANDS[name][1] if name in COMMANDS else None)
    return click.command(name, cls=Command, **kwargs)


def json_option(f):
    return click.option("--json", "as_json", is_flag=True, help="print one JSON object")(f)


def model_option(f):
    return click.option("--model", metavar="PATH", help="a GGUF model  [default: the embedded Gemma 3 270M]")(f)


def only_model_option(f):
    return click.option("--only-model", metavar="TEXT",
                         help="learn only from the suggestions of the model whose logged name contains TEXT "
                              "(a log several models wrote)")(f)


BACKENDS = ("embedded", "llama-server", "ollama", "openai")


def server_options(f):
    """--backend, --base-url, --model-name, --template: which model, where, and how to prompt it (the
    server's options of the same names)."""
    f = click.option("--template", help="how to prompt the model: a profile or a template with {prefix}  "
                     "[default: what the model's vocabulary, or a served model's name, says]")(f)
    f = click.option("--model-name", help="the model's name on the model server (an Ollama tag, a model id)")(f)
    f = click.option("--base-url", default="http://127.0.0.1:8080", show_default=True,
                     help="the model server, for any backend but embedded")(f)
    return click.option("--backend", type=click.Choice(BACKENDS), default="embedded", show_default=True,
                        help="the model in process, or a model server at --base-url")(f)


def db_option(help: str):
    """--db, repeatable, for the commands that read logs (several are read as one). `databases()` turns what
    was given into paths."""
    return click.option("--db", "dbs", multiple=True, metavar="PATH",
                        help=f"{help} (repeatable)  [default: $HINDSIGHT_DB or the data dir's hindsight.db]")


def databases(given: tuple[str, ...]) -> list[Path]:
    """The --db paths given, `~` expanded; the user's own database when none is."""
    return [Path(p).expanduser() for p in given] or [db_path()]


def need(extra: str, *modules: str) -> None:
    """Refuse, in one line (exit status 2), to run a command whose libraries only `extra` installs, when one
    of `modules` is missing: a server install (`pip install hindsight`) leaves training and benchmarks out.
    Only whether each module can be found is checked; nothing is imported."""
    if any(importlib.util.find_spec(module) is None for module in modules):
        command_path = click.get_current_context().command_path
        raise UsageError(f"{command_path} needs {EXTRAS[extra]}: pip install 'hindsight[{extra}]'")
