"""The door every entry point goes through: expected errors become one line and exit status 2.

Kept apart from the `cnnbench` command so a stage script imports this and nothing else of the CLI.
Besides the project's own errors (CnnbenchError), the failures of the machine rather than of the
code are told in one line too: memory exhausted (Python's or torch's allocator), an OSError (disk
full, permission denied, a name too long), a structure nested too deep to process.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence

from cnnbench.core.errors import CnnbenchError, one_line

# What torch's allocators say when they fail (torch.OutOfMemoryError is a RuntimeError; the CPU
# allocator raises a plain RuntimeError): told by message, so that this module imports no torch.
_ALLOCATION_FAILURES = ("out of memory", "can't allocate memory", "not enough memory")


def stage_main(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None,
               die_with_parent: bool = False) -> None:
    """Run an entry point: expected errors become one message and exit 2, never a traceback.

    `die_with_parent` (the DVC stages): the process ends when the process that started it dies,
    so a `dvc repro` killed with SIGKILL leaves no stage training on, orphaned, beside the next one.
    A SIGTERM unwinds the stack (its `finally` blocks remove temporary files) and exits 143.
    """
    _handle_sigterm()
    if die_with_parent:
        _die_with_parent()
    try:
        code = main(argv)
    except CnnbenchError as err:
        _fail(str(err))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except _Terminated:
        print("terminated", file=sys.stderr)
        sys.exit(143)
    except BrokenPipeError:  # `cnnbench summary ... | head`: the reader left, nothing is wrong
        sys.stderr.close()
        sys.exit(0)
    except MemoryError:
        _fail("out of memory (Python's allocator failed). Lower the batch size or the image size, or free memory.")
    except RecursionError:
        _fail("a structure nested too deep to process (RecursionError): the input is not one cnnbench writes.")
    except OSError as err:
        where = f"{err.filename}: " if err.filename else ""
        _fail(f"{where}{err.strerror or one_line(err)}")
    except RuntimeError as err:
        if not any(words in str(err).lower() for words in _ALLOCATION_FAILURES):
            raise
        _fail(f"out of memory: {_first_line(err)}. Lower the batch size or the image size, or free memory.")
    sys.exit(code or 0)


class _Terminated(BaseException):
    """SIGTERM, raised where the process is, so that context managers clean up on the way out."""


def _terminate(signum, frame) -> None:
    raise _Terminated


def _handle_sigterm() -> None:
    """SIGTERM raises _Terminated in this process; a process forked from it (a multiprocessing pool's
    worker, a DataLoader's) gets the default action back before it runs any code, so it just ends.

    The handler is Python's: the kernel only sets a flag that the interpreter checks between bytecodes,
    and a fork clears the child's flags. A worker SIGTERMed between its fork and that reset lost the
    signal and waited forever on a lock its parent held (`with Pool()` terminates its workers on exit:
    the audit stage hung about once in 50 under load). SIGTERM is therefore blocked across the fork and,
    in the child, unblocked only once its action is the default one: a pending SIGTERM then kills it.
    """
    global _FORK_HOOKS
    signal.signal(signal.SIGTERM, _terminate)
    if not _FORK_HOOKS:
        os.register_at_fork(before=_block_sigterm, after_in_parent=_unblock_sigterm, after_in_child=_child_sigterm)
        _FORK_HOOKS = True


_FORK_HOOKS = False  # registered once per process, however many entry points it runs (the tests run many)
_MASK = threading.local()  # the forking thread's signal mask before the fork, restored after it


def _block_sigterm() -> None:
    _MASK.before = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})


def _unblock_sigterm() -> None:
    signal.pthread_sigmask(signal.SIG_SETMASK, _MASK.before)


def _child_sigterm() -> None:
    if signal.getsignal(signal.SIGTERM) is _terminate:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _unblock_sigterm()


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def _first_line(err: BaseException) -> str:
    return next(iter(str(err).strip().splitlines()), type(err).__name__)


def _die_with_parent() -> None:
    """Ask Linux for SIGTERM when the parent process dies (elsewhere: nothing to do, nothing done)."""
    if sys.platform != "linux":
        return
    import ctypes

    parent = os.getppid()
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # it died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)
