"""The one ``main()`` wrapper of every scenemake command line (L7, scenario, stage, assistant).

A command's body returns its exit code; the wrapper turns what escapes it into the exit
codes every CLI documents, each with one line on stderr and never a traceback:

- bad input (:class:`UserError`)      -> ``<prefix>error: <message>``, exit 2;
- Ctrl-C, or SIGTERM (made the same)  -> ``<interrupted message>``, exit 130;
- anything else (a bug)               -> ``<prefix>internal error: <type>: <message>
  (traceback in <file>)``, exit 3 -- the traceback is written to a file, not the screen;
- a closed pipe (``| head -1``)        -> the rest of the output is dropped quietly
  (pipeline/core/pipes.py), the command goes on and keeps its exit code.

Each CLI keeps its own codes and prefix through :class:`Cli`'s fields (the L7 spec has
no code 3: its bug is a runtime error, 2). ``SystemExit`` (argparse's exit 2, ``--help``)
passes through untouched.
"""

from __future__ import annotations

import signal
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.core.errors import UserError
from pipeline.core.jsonio import display_path
from pipeline.core.pipes import quiet_pipes
from pipeline.core.store import atomic_write_text

BAD_INPUT, BUG, INTERRUPTED = 2, 3, 130


def _terminate(signum, frame):
    raise KeyboardInterrupt("SIGTERM")


@dataclass(frozen=True)
class Cli:
    """How one command line reports what escapes its body."""

    prefix: str = ""          # "scenemake-l7: " -> "scenemake-l7: error: ..."
    bad_input: int = BAD_INPUT
    bug: int = BUG
    interrupted: int = INTERRUPTED
    interrupted_message: str = "interrupted"
    traceback_dir: Path = Path("workspace/.scenemake")  # where a bug's traceback goes

    def main(self, parse: Callable[[], Any], body: Callable[[Any], int],
             traceback_dir: Callable[[Any], Path] | None = None) -> int:
        """``parse()`` the command line (argparse prints ``--help`` and its own usage errors,
        exit 2), then :meth:`run` ``body(args)``; both with quiet pipes, so ``--help | head
        -1`` ends quietly too."""
        with quiet_pipes():
            args = parse()
            where = traceback_dir(args) if traceback_dir is not None else None
            return self.run(lambda: body(args), traceback_dir=where)

    def run(self, body: Callable[[], int], *, traceback_dir: Path | None = None) -> int:
        """Run ``body`` (returns the exit code) with SIGTERM treated as Ctrl-C; returns the
        exit code. ``traceback_dir`` overrides the CLI's folder (e.g. from ``--workspace``)."""
        with quiet_pipes():
            return self._run(body, traceback_dir)

    def _run(self, body: Callable[[], int], traceback_dir: Path | None) -> int:
        main = threading.current_thread() is threading.main_thread()
        if main:
            # SIGTERM ends a run like Ctrl-C: finally blocks run, finished work stays
            previous = signal.signal(signal.SIGTERM, _terminate)
        try:
            return body()
        except UserError as exc:
            self._say(f"{self.prefix}error: {exc}")
            return self.bad_input
        except KeyboardInterrupt:
            self._say(self.interrupted_message)
            return self.interrupted
        except Exception as exc:  # noqa: BLE001 - a bug: one line here, the traceback in a file
            where = self._save_traceback(traceback_dir or self.traceback_dir)
            self._say(f"{self.prefix}internal error: {type(exc).__name__}: {exc}{where}")
            return self.bug
        finally:
            if main:  # None: a handler set outside Python, which means the default
                signal.signal(signal.SIGTERM, previous if previous is not None
                              else signal.SIG_DFL)

    @staticmethod
    def _say(line: str) -> None:
        print(" ".join(line.split("\n")), file=sys.stderr, flush=True)

    @staticmethod
    def _save_traceback(folder: Path) -> str:
        """`` (traceback in FILE)``, or nothing when the file cannot be written either."""
        path = Path(folder) / "last_error.txt"
        try:
            atomic_write_text(path, traceback.format_exc())
        except (OSError, UserError):  # WriteError is a UserError: the bug line still prints
            return ""
        return f" (traceback in {display_path(path)})"
