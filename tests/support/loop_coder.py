"""The test coder of the repair loops: the example rules coder, plus scripted misbehaviour.

    python loop_coder.py REPAIR_PROMPT [--noop] [--fail] [--sleep S] [--only RULE]
                         [--kill-parent-once MARKER]

Runs in the project copy (cwd) and applies the prompt's suggested rule changes to
``workspace/scenarios/assistant_rules.json`` through ``workspace/scenarios/coders/
rules_coder.py``. ``--noop`` changes nothing; ``--fail`` exits 3 after writing to stderr;
``--sleep`` waits first (for timeouts); ``--kill-parent-once MARKER`` SIGKILLs the loop that
started it after patching, once (the marker file remembers), as a crash mid-iteration.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import signal
import sys
import time
from pathlib import Path


def _rules_coder():
    path = Path("workspace/scenarios/coders/rules_coder.py")
    spec = importlib.util.spec_from_file_location("rules_coder", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("prompt", type=Path)
    p.add_argument("--noop", action="store_true")
    p.add_argument("--fail", action="store_true")
    p.add_argument("--sleep", type=float, default=0.0)
    p.add_argument("--only", action="append", default=None)
    p.add_argument("--kill-parent-once", type=Path, default=None)
    args = p.parse_args()
    if args.sleep:
        time.sleep(args.sleep)
    if args.fail:
        print("test coder: refusing on purpose", file=sys.stderr)
        return 3
    print(f"test coder: prompt {args.prompt.name}, {len(args.prompt.read_text())} chars")
    if not args.noop:
        rc = _rules_coder().main([str(args.prompt)] + [f"--only={r}" for r in args.only or []])
        if rc:
            return rc
    if args.kill_parent_once and not args.kill_parent_once.exists():
        args.kill_parent_once.write_text("killed once\n")
        os.kill(os.getppid(), signal.SIGKILL)
    return 0


if __name__ == "__main__":
    sys.exit(main())
