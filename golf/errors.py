"""One readable line for bad input instead of a traceback.

Every module raises a ValueError subclass (ShardError, TokenizerError, BudgetError,
ArtifactError, ...) whose message names the file and the fix; the CLIs wrap their work
in `user_errors()` so users see that message alone. GOLF_DEBUG=1 shows the traceback.
"""
from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import Iterator


class RankFailed(RuntimeError):
    """Another rank of a torchrun job failed; the message is that rank's own."""


class PackError(ValueError):
    """Packing failed; the message names the file and the fix."""


class OverCapError(PackError):
    """Code + model bytes exceed the cap."""


class RoundTripError(PackError):
    """The packed train_gpt.py did not reproduce the run's post-quant val_bpb."""


@contextmanager
def user_errors(exit_code: int = 2) -> Iterator[None]:
    try:
        yield
    except (ValueError, FileNotFoundError, RankFailed) as exc:
        if os.environ.get("GOLF_DEBUG"):
            raise
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(exit_code) from None
    except OSError as exc:  # out of space or permission where no caller said what was kept
        from golf.rundir import IO_ERRNOS, io_message
        if os.environ.get("GOLF_DEBUG") or exc.errno not in IO_ERRNOS:
            raise
        print(f"error: {io_message(exc, 'accessing it', 'every file completed before (writes are atomic)')}",
              file=sys.stderr)
        raise SystemExit(exit_code) from None
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None
