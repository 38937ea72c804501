"""`hindsight`: the language server and the offline commands around it.

    hindsight serve [--tcp PORT] [--model PATH]      the language server (stdio by default)
    hindsight complete FILE:LINE:COL [--json]        one completion at a position (1-based line and column)
    hindsight index [PATH] [--json]                  index a workspace (cached; the server does it on start)
    hindsight stats [--db PATH ...] [--json]         outcomes, acceptance rate and latency from the log
    hindsight forget (--since DATE | --all) [--db PATH] [--json]  delete the logged data, then VACUUM
    hindsight demo                                   a simulated developer typing through a sample workspace
    hindsight simulate REPO [--files N] [--json]     a simulated developer writes code back into a repository
    hindsight train-gate [--db PATH ...] [--json]    train the acceptance gate on the recorded outcomes
    hindsight cold-start [--json]                    the first gate, from simulated sessions on the standard library
    hindsight export-pairs [--db PATH ...] [--json]  DSAT preference pairs (prompt, chosen, rejected) for DPO
    hindsight refresh [--db PATH ... | --pairs FILE] [--json]  DPO LoRA adapter from the pairs; promoted if better
    hindsight refresh --rollback                     the adapter promoted before the current one
    hindsight build-fim-data [--files N] [--out FILE] [--json]  fill-in-the-middle training examples (JSONL)
    hindsight train-fim [--data FILE] [--steps N] [--resume] [--json]  a LoRA adapter that fills in the middle
    hindsight bench latency|infill|repo|bm25|gate|refresh|storm|redact  benchmarks (docs/BENCHMARKS.md)

Each command declares its options beside its code, in the module of its area: serve.py (serve, complete,
index), log.py (stats, forget), learn.py (the gate, the pairs, the refresh, FIM training), simulate.py
(demo, simulate), bench.py; `common.COMMANDS` names them, and a command's module is imported only when it
runs. They print what the packages return (output.py); every error the user should
read is a `hindsight.errors.HindsightError`, caught here, once: one line on stderr, and exit status 1 when
the work failed, 2 when the command refused what it was given (click's own usage errors are 2 as well).
"""

from __future__ import annotations

import importlib
import sys

import click

from hindsight import __version__
from hindsight.cli.common import COMMANDS, Group
from hindsight.errors import HindsightError


class Commands(Group):
    """The top group: each command's module (COMMANDS) is imported when that command runs, not before."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return super().get_command(ctx, name)  # one added with add_command (the tests')
        module = importlib.import_module(f"hindsight.cli.{COMMANDS[name][0]}")
        return getattr(module, name.replace("-", "_"))

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, help) for name, (_, help) in COMMANDS.items()])


@click.group(cls=Commands, context_settings={"show_default": True, "help_option_names": ["-h", "--help"], "max_content_width": 120},
             help="hindsight: a local code-completion language server that learns from what its user turns down.")
@click.version_option(__version__, prog_name="hindsight", message="%(prog)s %(version)s")
def cli() -> None:
    pass


def main(argv: list[str] | None = None) -> int:
    """Run the `hindsight` command; its exit status."""
    try:
        result = cli.main(args=argv, prog_name="hindsight", standalone_mode=False)
    except click.ClickException as exc:  # a usage error click found (exit status 2): click's message
        exc.show()
        return exc.exit_code
    except HindsightError as exc:
        print(f"hindsight: {exc}", file=sys.stderr)
        return 2 if exc.usage else 1
    except (KeyboardInterrupt, click.Abort):
        return 130
    return result if isinstance(result, int) else 0
