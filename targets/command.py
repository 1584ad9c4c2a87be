"""The one base of scenemake's doit commands (and of doit's own, as scenemake registers them).

Every command gets from :class:`CommandBase`:

- **options anywhere**: ``doit ledger ch001_sc001 --json`` as ``doit ledger --json
  ch001_sc001``, as argparse reads a command line (``--`` ends the options). ``run`` keeps
  doit's order (options, then tasks), because a task's own options follow its name there;
- **one line for a bad command line**: an unknown option is named as one (``doit ledger:
  unknown option --bogus``), an unknown task or command with the close matches among those
  doit knows; ``--help`` (or ``-h``) prints the command's help;
- **errors as one ``ERROR:`` line**: a :class:`UserError` or an sqlite error of the build DB
  becomes doit's one line (exit 3), never a traceback;
- **a quiet closed pipe**: ``doit history ... | head -1`` ends without a word
  (pipeline/core/pipes.py).

:class:`BookCommand` adds what a command over the book's build DB needs: the project check
(in a doit project that is not scenemake's, one line and nothing touched) and the DB opened
for the command's body and closed when it ends, however it ends.

Installing scenemake adds its commands to every doit project in that environment.
"""

from __future__ import annotations

import difflib
import getopt
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

from doit.cmd_base import Command, DoitCmdBase
from doit.cmdparse import CmdParse, CmdParseError
from doit.exceptions import InvalidCommand

from pipeline.core.builddb import SceneDB
from pipeline.core.errors import UserError
from pipeline.core.pipes import quiet_pipes

HELP = ("--help", "-h")


class _Parse(CmdParse):
    """doit's option parser, with options anywhere (``anywhere``) and errors in one line
    naming the option."""

    def __init__(self, options, command: str, anywhere: bool):
        super().__init__(options)
        self.command = command
        self.anywhere = anywhere

    def parse_only(self, in_args, params=None):
        params = params if params else {}
        split = getopt.gnu_getopt if self.anywhere else getopt.getopt
        try:
            opts, args = split(in_args, self.get_short(), self.get_long())
        except getopt.GetoptError as exc:
            raise CmdParseError(self._problem(exc)) from None
        for opt, val in opts:
            this, inverse = self.get_option(opt)
            if this.type is bool:
                params[this.name] = not inverse
            elif this.type is list:
                params[this.name].append(val)
            else:
                try:
                    params[this.name] = this.str2type(val)
                except (ValueError, CmdParseError):
                    kind = {int: "a number", float: "a number"}.get(this.type, "a value")
                    raise CmdParseError(f"doit {self.command}: option {opt} needs {kind}, "
                                        f"not '{val}'") from None
        return params, args

    def _problem(self, exc: getopt.GetoptError) -> str:
        opt = "-" * (1 if len(exc.opt) == 1 else 2) + exc.opt if exc.opt else ""
        where = "doit" if self.command == "run" else f"doit {self.command}"
        if "not recognized" in exc.msg:
            return (f"{where}: unknown option {opt} (doit help {self.command} lists its "
                    "options)")
        if "requires argument" in exc.msg:
            return f"{where}: option {opt} needs a value"
        if "must not have an argument" in exc.msg:
            return f"{where}: option {opt} takes no value"
        return f"{where}: {exc.msg}"


def close_matches(name: str, known: list[str], shown: int = 4) -> str:
    """`` (did you mean A, B?)`` for the names in ``known`` close to ``name``; for
    ``PHASE:X`` with no close match, some of that phase's own names; else ''."""
    close = difflib.get_close_matches(name, known, n=shown, cutoff=0.6)
    if close:
        return f"; did you mean {', '.join(close)}?"
    group, sep, _ = name.partition(":")
    same = sorted(k for k in known if sep and k.startswith(group + ":"))
    if same:
        more = f" and {len(same) - shown} more" if len(same) > shown else ""
        return f"; {group} has {', '.join(same[:shown])}{more}"
    return ""


class CommandBase:
    """Mixed in before a doit command class (see the module docstring)."""

    options_anywhere = True

    def __init__(self, *args, cmds=None, **kwargs):
        if kwargs.get("bin_name") == "-m":  # python -m doit: doit names itself "-m"
            kwargs["bin_name"] = "doit"
        self._known_commands = sorted(cmds.to_dict()) if cmds is not None else []
        if cmds is not None:
            kwargs["cmds"] = cmds
        super().__init__(*args, **kwargs)
        self.options: dict = {}

    @property
    def cmdparser(self):
        if not self._cmdparser:
            self._cmdparser = _Parse(self.get_options(), self.name, self.options_anywhere)
            self._cmdparser.overwrite_defaults(self.config_vals)
        return self._cmdparser

    def parse_execute(self, in_args):
        """``--help`` prints the command's help; otherwise doit's parse, then execute."""
        options = in_args[:in_args.index("--")] if "--" in in_args else in_args
        head = options if self.options_anywhere else options[:1]
        if any(a in HELP for a in head):
            with quiet_pipes():
                print(self.help())
            return 0
        return super().parse_execute(in_args)

    def execute(self, params, args):
        """The command with quiet pipes and its errors as one line."""
        self.options = {o["name"]: params.get(o["name"]) for o in self.cmd_options}
        with quiet_pipes() as out:
            if out is not None:
                if getattr(self, "outstream", None) is out._stream:
                    self.outstream = out
                if params.get("outfile") is out._stream:  # run: its reporter's stream
                    params["outfile"] = out
            try:
                return super().execute(params, args)
            except InvalidCommand as exc:
                if exc.not_found is not None:
                    raise InvalidCommand(self.unknown(exc.not_found)) from None
                lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
                if len(lines) < 2:
                    raise
                raise InvalidCommand(" ".join(lines)) from None  # doit's own: one line too
            except UserError as exc:
                raise InvalidCommand(str(exc)) from None
            except sqlite3.Error as exc:
                from targets.backend import _db_failure

                backend = getattr(getattr(self, "dep_manager", None), "backend", None)
                raise InvalidCommand(_db_failure(getattr(backend, "name", "the build DB"),
                                                 exc)) from None

    def unknown(self, name: str) -> str:
        """One line for a name that is no task (nor, for ``doit NAME``, a command)."""
        tasks = sorted(t.name for t in getattr(self, "task_list", None) or [])
        if self.name == "run" and ":" not in name:
            return (f"doit: '{name}' is neither a command nor a task"
                    f"{close_matches(name, self._known_commands + tasks)} (doit help lists "
                    "the commands, doit list the tasks)")
        where = "doit" if self.name == "run" else f"doit {self.name}"
        return f"{where}: no task '{name}'{close_matches(name, tasks)} (doit list shows the tasks)"

    # -- the book's build DB -------------------------------------------------------------
    def scene_db(self) -> SceneDB:
        """The book's build DB, or one line saying this is not a scenemake project (the DB
        doit opened is closed then)."""
        backend = getattr(self.dep_manager, "backend", None)
        if not isinstance(backend, SceneDB):
            self.dep_manager.close()
            raise InvalidCommand(f"doit {self.name}: this is not a scenemake project (its "
                                 "dodo.py does not use scenemake's build DB); run it where "
                                 "scenemake's dodo.py is")
        return backend

    @contextmanager
    def book_db(self) -> Iterator[SceneDB]:
        """The book's build DB for the body of a command, closed when the body ends."""
        db = self.scene_db()
        try:
            yield db
        finally:
            self.dep_manager.close()


class BookCommand(CommandBase, DoitCmdBase):
    """A scenemake command over the book's build DB: subclasses write :meth:`run`."""

    cmd_options = ()

    def _execute(self, pos_args=None):
        with self.book_db() as db:
            return self.run(db, list(pos_args or []), **self.options)

    def run(self, db: SceneDB, args: list[str], **options) -> int:  # pragma: no cover
        """The command's body: ``args`` are its positional arguments; returns the exit code."""
        raise NotImplementedError


class _Plain(Command):
    def execute(self, params, args):
        return self.run(list(args), **self.options)


class PlainCommand(CommandBase, _Plain):
    """A command that loads no dodo.py (``fleet``): subclasses write :meth:`run`."""

    def run(self, args: list[str], **options) -> int:  # pragma: no cover
        """The command's body: ``args`` are its positional arguments; returns the exit code."""
        raise NotImplementedError


def based(cls: type, anywhere: bool = True) -> type:
    """doit's own command class ``cls`` on the base (registered under its own name, a plugin
    command replaces the built-in one)."""
    return type(cls.__name__, (CommandBase, cls),
                {"__doc__": cls.__doc__, "__module__": __name__,
                 "options_anywhere": anywhere})


def _doit(module: str, name: str, anywhere: bool = True) -> type:
    import importlib

    return based(getattr(importlib.import_module(module), name), anywhere)


# doit's commands; `run` keeps its order: `doit TASK --opt` is an option of TASK there
Run = _doit("doit.cmd_run", "Run", anywhere=False)
List = _doit("doit.cmd_list", "List")
Info = _doit("doit.cmd_info", "Info")
Help = _doit("doit.cmd_help", "Help")
Clean = _doit("doit.cmd_clean", "Clean")
Forget = _doit("doit.cmd_forget", "Forget")
Ignore = _doit("doit.cmd_ignore", "Ignore")
DumpDB = _doit("doit.cmd_dumpdb", "DumpDB")


class DumpDB(DumpDB):  # type: ignore[no-redef]
    """doit's ``dumpdb`` reads dbm files only: scenemake's sqlite DB is one line, not a
    traceback."""

    def execute(self, params, args):
        import dbm

        try:
            return super().execute(params, args)
        except dbm.error:
            raise InvalidCommand(
                f"doit dumpdb: {params.get('dep_file')} is not a dbm file (dumpdb reads only "
                "those; scenemake's build DB is sqlite, workspace/.scenemake/books/BOOK.sqlite: "
                "doit ledger, info and why read it)") from None
Strace = _doit("doit.cmd_strace", "Strace")
ResetDep = _doit("doit.cmd_resetdep", "ResetDep")
TabCompletion = _doit("doit.cmd_completion", "TabCompletion")

