"""The one error type: what goes wrong in a way the user should read, as one line.

Every package's own error (StoreError, BackendError, PairsError, GateError, RefreshError, …) is a
`HindsightError`, so the `hindsight` command catches this one type, once, and prints `hindsight: <message>`.
Its exit status says whose the problem is:

- 2, `usage`: the command refused what it was given: an argument, a file or database the user named
  (missing, malformed, not a hindsight database, too little in it to work on), a library not installed.
  Running it again as it is will fail again.
- 1: the work itself failed: a model that does not load, a server that does not answer, a full disk.

A package whose errors are all of the first kind says so once (`usage = True` on its class); a raise that
is the other kind passes `usage=` itself.
"""

from __future__ import annotations


class HindsightError(Exception):
    """A problem the user should read: the message is one clear line."""

    usage = False  # True: the input was refused (exit status 2); False: the work failed (1)

    def __init__(self, message: str, *, usage: bool | None = None):
        super().__init__(message)
        if usage is not None:
            self.usage = usage


class UsageError(HindsightError):
    """The command refused what it was given (exit status 2)."""

    usage = True
