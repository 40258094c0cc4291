"""Names that people and scripts rely on keep working: every module's first name (before bot/ was laid
out by stage), `python -m bot.job` and `python -m bot.hf_jobs`, the Procfile's commands, and every
`bot.something` the README, docs/ and the benchmarks' README name."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

import bot
from bot.cli import app

PROJECT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("first", sorted(bot.MOVED))
def test_a_modules_first_name_is_the_module_at_its_home(first):
    home = importlib.import_module(f"bot.{bot.MOVED[first]}")
    assert importlib.import_module(f"bot.{first}") is home
    assert home.__spec__.name == home.__name__ == f"bot.{bot.MOVED[first]}"  # its own spec, not the alias's


def test_old_imports_of_names_work_as_before():
    from bot.config import Settings, load_settings
    from bot.errors import UserError
    from bot.hub import publish_folder
    from bot.job import TrainJob
    from bot.scheduler import Bot
    from bot.store import Store
    from bot.x import XClient

    from bot.publishing.hub import publish_folder as home
    assert publish_folder is home and Bot.__module__ == "bot.requests.scheduler"
    assert {Store.__module__, XClient.__module__, TrainJob.__module__} == {
        "bot.requests.store", "bot.sources.x", "bot.training.job"}
    assert (Settings.__module__, load_settings.__module__, UserError.__module__) == (
        "bot.common.config", "bot.common.config", "bot.common.errors")


@pytest.mark.parametrize("command", [["bot.job", "--help"], ["bot.hf_jobs", "run", "--help"],
                                     ["bot.training.job", "--help"], ["bot", "--help"]])
def test_the_modules_people_run_with_python_m_still_run(command):
    result = subprocess.run([sys.executable, "-m", *command], capture_output=True, text=True, cwd=PROJECT, timeout=120)
    assert result.returncode == 0 and "usage" in result.stdout.lower(), result.stderr[-2000:]


def test_the_procfile_runs_commands_that_exist():
    import typer

    commands = set(typer.main.get_command(app).commands)
    for line in (PROJECT / "Procfile").read_text().splitlines():
        process, _, command = line.partition(": ")
        words = command.split()
        assert words[0] == "huggingtweets" and words[1] in commands, line


DOCUMENTED = re.compile(r"`(bot(?:\.[A-Za-z_][A-Za-z0-9_]*)+)`")


def documented_names() -> list[str]:
    pages = [PROJECT / "README.md", PROJECT / "benchmarks" / "README.md", *sorted((PROJECT / "docs").glob("*.md"))]
    return sorted({name for page in pages for name in DOCUMENTED.findall(page.read_text(encoding="utf-8"))})


@pytest.mark.parametrize("name", documented_names())
def test_every_name_the_docs_give_exists(name):
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):  # the longest module the name starts with, then its attributes
        try:
            found = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attribute in parts[cut:]:
            found = getattr(found, attribute)
        return
    pytest.fail(f"{name}: no such module")
