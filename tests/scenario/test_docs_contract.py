"""The docs travel with the repo and keep up with the code: every command, flag, next
action, status and L7 policy rule the code knows is named in docs/, and no doc points
outside the repository (a clone has no ../shared/specs)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from pipeline.l7 import policies
from pipeline.scenario.layout import STATUSES
from pipeline.scenario.stage.state import NEXT_COMMAND, WHY
from targets.l7 import cli as l7_cli
from targets.scenario import cli as scenario_cli

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {o for a in parser._actions for o in a.option_strings
            if o.startswith("--") and o != "--help"}


def _named(flag: str, text: str) -> bool:
    """The flag itself, not a longer one that starts with it (--run-id, not --run-ids)."""
    return re.search(re.escape(flag) + r"(?![\w-])", text) is not None


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def test_scenario_doc_names_every_command_flag_status_and_next_action():
    text = (DOCS / "scenario.md").read_text()
    commands = _subparsers(scenario_cli.build_parser())
    missing = []
    for name, sub in commands.items():
        if f"`{name}" not in text:
            missing.append(name)
        missing += [f"{name} {o}" for o in _options(sub) if not _named(o, text)]
        for step, stage_sub in _subparsers(sub).items():
            if f"`{step}" not in text:
                missing.append(f"stage {step}")
            missing += [f"stage {step} {o}" for o in _options(stage_sub)
                        if not _named(o, text)]
    missing += [s for s in STATUSES if f"`{s}`" not in text]
    missing += [a for a in {*WHY, *NEXT_COMMAND} if f"`{a}`" not in text]
    assert not missing, f"docs/scenario.md does not name: {missing}"


def test_l7_doc_names_every_flag_and_policy_rule():
    text = (DOCS / "l7.md").read_text()
    missing = [o for o in _options(l7_cli.parser()) if not _named(o, text)]
    rules = re.findall(r'PolicyError\(\s*"(\w+)"', Path(policies.__file__).read_text())
    assert len(rules) >= 10
    missing += [r for r in rules if f"`{r}`" not in text]
    assert not missing, f"docs/l7.md does not name: {missing}"


def test_docs_point_inside_the_repository():
    pages = [REPO / "README.md", *sorted(DOCS.glob("*.md"))]
    index = (DOCS / "index.md").read_text()
    for page in pages:
        text = page.read_text()
        assert "shared/specs" not in text, page.name
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if "://" in target:
                continue
            assert (page.parent / target).exists(), f"{page.name}: broken link {target}"
        if page.parent == DOCS and page.name != "index.md":
            assert f"]({page.name})" in index, f"docs/index.md does not list {page.name}"
