"""The door every entry point goes through: expected errors become one line and exit status 2.

Kept apart from the `cnnbench` command so a stage script imports this and nothing else of the CLI.
"""

from __future__ import annotations

import sys
from typing import Callable, Sequence

from cnnbench.errors import CnnbenchError


def stage_main(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> None:
    """Run an entry point: expected errors become one message and exit 2, never a traceback."""
    try:
        code = main(argv)
    except CnnbenchError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:  # `cnnbench summary ... | head`: the reader left, nothing is wrong
        sys.stderr.close()
        sys.exit(0)
    sys.exit(code or 0)
