"""The coder of a repair: any external command, run without a shell, with a timeout.

Configuration (``--coder-config FILE``, or ``coder`` in a stage manifest)::

    {"command": ["python3", "workspace/scenarios/coders/rules_coder.py", "{repair_prompt}"],
     "timeout_s": 60, "cwd": null, "allowed_paths": ["workspace/scenarios/assistant_rules.json"]}

``command`` is an argument list; these tokens are replaced in each argument:
``{repair_prompt}`` (the prompt's path), ``{repair_prompt_text}`` (its text),
``{repair_plan}``, ``{repair_checklist}``, ``{repair_dir}``, ``{iteration}``. ``cwd`` is
relative to the configuration file's folder (default: the current folder). ``allowed_paths``
are glob patterns relative to ``cwd``: the files the coder may change (default: the plan's
candidate files). They are hashed (blake3) before and after the run:

- ``patched``: exit 0 and at least one allowed file changed, appeared or disappeared;
- ``no_change``: exit 0 and no allowed file changed;
- ``failed``: a non-zero exit, a timeout, or a command that cannot be started.

Written into the repair folder: ``repair_coder.command.txt``, ``repair_coder.stdout.txt``,
``repair_coder.stderr.txt`` and, last (the commit point), ``repair_coder_result.json``.
``repair_coder_started.json`` holds the hashes from before the first attempt, so a coder
interrupted with its parent (the loop killed) and run again is still judged against the
files as they were before the repair.
"""

from __future__ import annotations

import glob
import os
import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, Field, field_validator

from pipeline.core.clock import now_iso
from pipeline.core.hashing import hash_bytes
from pipeline.core.jsonio import display_path, read_json, read_json_or_none
from pipeline.core.models import StrictModel
from pipeline.core.store import atomic_write_json, atomic_write_text

from .contracts import parse

TOKENS = ("repair_prompt", "repair_prompt_text", "repair_plan", "repair_checklist",
          "repair_dir", "iteration")
_TOKEN_RE = re.compile(r"\{([a-z_]+)\}")
RESULT = "repair_coder_result.json"
STARTED = "repair_coder_started.json"
COMMAND = "repair_coder.command.txt"
STDOUT = "repair_coder.stdout.txt"
STDERR = "repair_coder.stderr.txt"
STATUSES = ("patched", "no_change", "failed")


class CoderConfig(StrictModel):
    """How to run the coder (see the module docstring)."""

    model_config = ConfigDict(populate_by_name=True)

    comment: str | list[str] = Field("", alias="$comment")
    command: list[str] = Field(min_length=1)
    timeout_s: float = Field(600, gt=0, le=86400)
    cwd: str | None = None
    allowed_paths: list[str] = []
    env: dict[str, str] = {}

    @field_validator("command")
    @classmethod
    def _tokens(cls, value: list[str]) -> list[str]:
        if not value[0].strip():
            raise ValueError("the program (command[0]) is empty")
        for arg in value:
            for name in _TOKEN_RE.findall(arg):
                if name not in TOKENS:
                    raise ValueError(f"unknown token {{{name}}} (known: "
                                     + ", ".join("{" + t + "}" for t in TOKENS) + ")")
        return value


def load_config(path: Path) -> tuple[CoderConfig, Path]:
    """The coder configuration in ``path`` and the folder its ``cwd`` is relative to."""
    return (parse(CoderConfig, read_json(path, "coder config"), path, schema="scenario_coder"),
            Path(path).parent)


def resolve_cwd(config: CoderConfig, base: Path | None) -> Path:
    """The folder the coder runs in."""
    if config.cwd is None:
        return Path.cwd()
    return ((base or Path.cwd()) / config.cwd).resolve()


def command_for(config: CoderConfig, folder: Path, iteration: int) -> list[str]:
    """The argument list with the repair's paths put in."""
    prompt = folder / "repair_prompt.md"
    values = {"repair_prompt": str(prompt),
              "repair_plan": str(folder / "repair_iteration_plan.json"),
              "repair_checklist": str(folder / "repair_checklist.md"), "repair_dir": str(folder),
              "iteration": str(iteration)}

    def sub(match: re.Match) -> str:
        name = match.group(1)
        if name == "repair_prompt_text":
            return prompt.read_text(encoding="utf-8") if prompt.exists() else ""
        return values.get(name, match.group(0))

    return [_TOKEN_RE.sub(sub, arg) for arg in config.command]


def watched_files(patterns: list[str], cwd: Path) -> list[str]:
    """The files the patterns name now (relative to ``cwd``), plus the literal ones."""
    out: set[str] = set()
    for pattern in patterns:
        if any(ch in pattern for ch in "*?["):
            for hit in glob.glob(pattern, root_dir=cwd, recursive=True):
                if (cwd / hit).is_file():
                    out.add(hit)
        else:
            out.add(pattern)  # watched even while absent: a created file is a change
    return sorted(out)


def hashes(files: list[str], cwd: Path) -> dict[str, str | None]:
    """blake3 of each file (None when absent). Read afresh: a coder may keep mtime and size."""
    out: dict[str, str | None] = {}
    for rel in files:
        try:
            out[rel] = hash_bytes((cwd / rel).read_bytes())
        except (FileNotFoundError, IsADirectoryError):
            out[rel] = None
    return out


def write_command(folder: Path, command: list[str], cwd: Path) -> str:
    """``repair_coder.command.txt``: the exact command line; returns it."""
    line = shlex.join(command)
    atomic_write_text(folder / COMMAND, f"cd {shlex.quote(str(cwd))} && {line}\n")
    return line


def _tail(path: Path, limit: int = 2000) -> str:
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    return data[-limit:].decode("utf-8", "replace")


def run(config: CoderConfig, base: Path | None, folder: Path, iteration: int,
        default_paths: list[str]) -> dict[str, Any]:
    """Run the coder for the repair in ``folder``; writes and returns the result record."""
    cwd = resolve_cwd(config, base)
    command = command_for(config, folder, iteration)
    write_command(folder, command, cwd)
    patterns = config.allowed_paths or default_paths
    started = read_json_or_none(folder / STARTED)
    if isinstance(started, dict) and isinstance(started.get("before"), dict):
        # an earlier attempt never reported (its parent died): judge against its "before"
        before = started["before"]
        attempt = int(started.get("attempt", 1)) + 1
    else:
        before = hashes(watched_files(patterns, cwd), cwd)
        attempt = 1
    atomic_write_json(folder / STARTED, {"kind": "repair_coder_started", "attempt": attempt,
                                         "command": command, "cwd": str(cwd),
                                         "allowed_paths": patterns, "before": before,
                                         "started_at": now_iso()})
    record: dict[str, Any] = {"kind": "repair_coder_result", "repair_iteration": iteration,
                              "command": command, "cwd": display_path(cwd),
                              "timeout_s": config.timeout_s, "allowed_paths": patterns,
                              "attempt": attempt, "started_at": now_iso()}
    env = {**os.environ, **config.env, "SCENEMAKE_REPAIR_PROMPT": str(folder / "repair_prompt.md"),
           "SCENEMAKE_REPAIR_DIR": str(folder)}
    exit_code: int | None = None
    error: str | None = None
    timed_out = False
    with open(folder / STDOUT, "wb") as out, open(folder / STDERR, "wb") as err:
        try:
            proc = subprocess.run(command, cwd=cwd, shell=False, timeout=config.timeout_s,
                                  stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env)
            exit_code = proc.returncode
        except subprocess.TimeoutExpired:
            timed_out = True
            error = f"timed out after {config.timeout_s:g}s"
        except OSError as exc:
            error = f"cannot start {command[0]!r}: {exc.strerror or exc}"
    after_files = sorted(set(before) | set(watched_files(patterns, cwd)))
    after = hashes(after_files, cwd)
    changed = [f for f in after_files if before.get(f) != after.get(f)]
    if error or exit_code != 0:
        status = "failed"
        reason = error or f"exit code {exit_code}"
    elif changed:
        status = "patched"
        reason = f"changed {', '.join(changed)}"
    else:
        status = "no_change"
        reason = "exit 0, no allowed file changed"
    record.update(status=status, reason=reason, exit_code=exit_code, timed_out=timed_out,
                  changed_files=changed, watched={f: [before.get(f), after.get(f)]
                                                  for f in after_files},
                  stdout=STDOUT, stderr=STDERR, stdout_tail=_tail(folder / STDOUT),
                  stderr_tail=_tail(folder / STDERR), finished_at=now_iso(),
                  at_ns=time.time_ns())
    atomic_write_json(folder / RESULT, record)  # last: the commit point
    return record


def result_of(folder: Path) -> dict | None:
    """The coder's recorded result in ``folder`` (None when it has not reported)."""
    data = read_json_or_none(folder / RESULT)
    return data if isinstance(data, dict) and data.get("status") in STATUSES else None


def archive_attempt(folder: Path) -> Path:
    """Keep a failed attempt under ``coder_attempts/<k>/`` before the coder runs again."""
    attempts = folder / "coder_attempts"
    k = 1 + (len([p for p in attempts.iterdir() if p.is_dir()]) if attempts.exists() else 0)
    dest = attempts / str(k)
    dest.mkdir(parents=True, exist_ok=True)
    for name in (RESULT, STDOUT, STDERR, STARTED, COMMAND):
        if (folder / name).exists():
            shutil.move(str(folder / name), str(dest / name))
    return dest
