"""A closed pipe ends a command quietly (``doit history ... | head -1``, ``scenemake-l7 --help
| head -1``), the way other command-line tools end.

Python ignores SIGPIPE, so a write to a pipe whose reader went away raises BrokenPipeError:
a traceback mid-command, or "Exception ignored ... BrokenPipeError" when the interpreter
flushes stdout at exit. :func:`quiet_pipes` guards stdout and stderr for the body of a
command: the first failed write points that stream at /dev/null and every later write
(the rest of the command, the flush at exit) goes there without a word. The command itself
goes on to its end, so a build whose reader went away still finishes and records its work.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager


def _to_devnull(stream) -> None:
    """Point ``stream``'s file descriptor at /dev/null (when it has a real one)."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):  # a captured stream (tests): nothing to do
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


class GuardedStream:
    """A text stream whose writes to a closed pipe are dropped once the pipe closes."""

    def __init__(self, stream):
        self._stream = stream
        self.pipe_closed = False

    def _closed(self) -> None:
        self.pipe_closed = True
        _to_devnull(self._stream)
        try:  # what is still buffered now goes to /dev/null, not to a failing flush at exit
            self._stream.flush()
        except (OSError, ValueError):
            pass

    def write(self, text: str) -> int:
        if not self.pipe_closed:
            try:
                return self._stream.write(text)
            except BrokenPipeError:
                self._closed()
        return len(text)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if not self.pipe_closed:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._closed()

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def _flush(stream) -> None:
    try:
        stream.flush()
    except (OSError, ValueError):
        pass


@contextmanager
def quiet_pipes() -> Iterator[GuardedStream | None]:
    """Guard ``sys.stdout`` and ``sys.stderr`` for the body (main thread only: the streams
    are the process's); yields the guarded stdout (None in another thread or when already
    guarded). A BrokenPipeError that escapes anyway (a write straight to the descriptor)
    ends the body quietly too; it is then re-raised as ``SystemExit(141)``, the shell's
    code for a closed pipe."""
    if (threading.current_thread() is not threading.main_thread()
            or isinstance(sys.stdout, GuardedStream)):
        yield None
        return
    out, err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = GuardedStream(out), GuardedStream(err)
    guarded = sys.stdout
    try:
        yield guarded
    except BrokenPipeError:
        _to_devnull(out)
        raise SystemExit(128 + 13) from None  # 141: SIGPIPE
    finally:
        _flush(sys.stdout)  # a pipe closed after the last write fails here, not at exit
        _flush(sys.stderr)
        sys.stdout, sys.stderr = out, err
