"""golf's error classes, and one readable line for bad input instead of a traceback.

Here: ConfigError, TrainError, CheckpointError, InteropError, RunIOError, RunLockError,
EvalError, ShardError, TokenizerError, PrepareError, ByteLUTError (each also importable from
the module raising it) and RankFailed; the packing errors join them with golf/submission. All
but RankFailed are ValueErrors whose message names the file and the fix; the CLIs wrap their
work in `user_errors()` so users see that message alone. GOLF_DEBUG=1 shows the traceback.
"""
from __future__ import annotations

import errno
import os
import sys
from contextlib import contextmanager
from typing import Iterator, Sequence

from golf.run import settings


class RankFailed(RuntimeError):
    """Another rank of a torchrun job failed; the message is that rank's own."""


class ConfigError(ValueError):
    """Bad settings, all of them at once: one line per problem, each naming the variable and
    the fix. Raised before any data is read or anything is written."""

    def __init__(self, problems: Sequence[str]):
        self.problems = list(problems)
        n = len(self.problems)
        head = f"{n} bad setting{'s' if n != 1 else ''} (nothing was read or written):"
        super().__init__("\n  - ".join([head, *self.problems]))


class TrainError(ValueError):
    """Bad training input; the message names the file or variable and the fix."""


class CheckpointError(ValueError):
    """A run-directory torch file is missing, truncated or not what was expected."""


class InteropError(ValueError):
    """A checkpoint that does not fit a known layout, or an import that cannot proceed."""


class RunIOError(ValueError):
    """A write failed for lack of space or permission; the message names the path, the cause
    and what was kept (a ValueError so the CLIs print it as one line)."""


class RunLockError(ValueError):
    """Another command is writing the run directory; the message names its pid and command."""


class EvalError(ValueError):
    """Bad evaluation input; the message names the file and the fix."""


class ShardError(ValueError):
    """Bad shard file or pattern."""


class TokenizerError(ValueError):
    """Missing or mismatched tokenizer."""


class PrepareError(ValueError):
    """Bad preparation input or a failed download."""


class ByteLUTError(ValueError):
    """A tokenizer whose pieces the standard byte table would miscount."""


class PackError(ValueError):
    """Packing failed; the message names the file and the fix."""


class OverCapError(PackError):
    """Code + model bytes exceed the cap."""


class RoundTripError(PackError):
    """The packed train_gpt.py did not reproduce the run's scored val_bpb."""


# Space and permission errnos: each is one readable line, never a traceback (rundir rule 7).
IO_ERRNOS = {errno.ENOSPC: "the disk is full", errno.EROFS: "the file system is read-only",
             errno.EACCES: "permission denied", errno.EPERM: "operation not permitted",
             errno.EDQUOT: "the disk quota is exceeded"}


def io_message(exc: OSError, doing: str, kept: str) -> str:
    """One line: the path, what the errno means, what was being done and what was kept."""
    code = errno.errorcode.get(exc.errno or 0, str(exc.errno))
    what = IO_ERRNOS.get(exc.errno, exc.strerror or "I/O error")
    where = exc.filename or "(unknown path)"
    return f"{where}: {what} ({code}) while {doing}; kept: {kept}"


def _debug() -> bool:
    """GOLF_DEBUG: tracebacks instead of one line (a bad spelling counts as on: this runs while
    an error is already being reported)."""
    try:
        return bool(settings.read("GOLF_DEBUG", os.environ))
    except ValueError:
        return True


@contextmanager
def user_errors(exit_code: int = 2) -> Iterator[None]:
    try:
        yield
    except (ValueError, FileNotFoundError, RankFailed) as exc:
        if _debug():
            raise
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(exit_code) from None
    except OSError as exc:  # out of space or permission where no caller said what was kept
        if _debug() or exc.errno not in IO_ERRNOS:
            raise
        print(f"error: {io_message(exc, 'accessing it', 'every file completed before (writes are atomic)')}",
              file=sys.stderr)
        raise SystemExit(exit_code) from None
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None
