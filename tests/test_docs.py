"""The README and docs/ name only settings that exist: a reader who copies one gets no "unknown key".

A setting is named in three ways: `[section] key` (in prose, tables and code), a fenced ```toml block,
and a bare name in backticks (`reuse_days`, `reply_link = false`). Bare snake_case names that are not
settings are allowed only when they are fields of run.json or on OTHER_NAMES, each with its reason.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from bot.common.config import Settings, parse_settings
from bot.common.errors import ConfigError
from bot.publishing.facts import RunFacts
from bot.requests.store import MIGRATIONS

PROJECT = Path(__file__).resolve().parent.parent
PAGES = [PROJECT / "README.md", *sorted((PROJECT / "docs").glob("*.md"))]

# Names in backticks that are not settings, and what they are.
OTHER_NAMES = {
    "huggingface_hub", "hf_xet",  # Python packages
    "run_job", "inspect_job", "list_jobs", "fetch_job_logs", "cancel_job",  # huggingface_hub's Jobs API
    "save_pretrained",  # transformers' method
    "task_acks_late", "task_reject_on_worker_lost",  # Celery's own options, set by bot/workers/celery_app.py
    "library_name", "pipeline_tag", "sdk_version", "model_type",  # card, Space and config.json metadata
    "referenced_tweets",  # a field of X's post objects
    "hide_in_logs",  # bot/common/errors.py's function that masks credentials in the libraries' own log lines
    "job_host",  # a column of the state database's requests
    "ensure_connection", "visibility_timeout",  # kombu's own call and transport option
    "consumer_timeout",  # RabbitMQ's own setting
}


def metric_names() -> set[str]:
    """Every series name the bot's and a worker's /metrics serve (`huggingtweets_...`), as scraped."""
    import tempfile

    from bot.requests.monitoring import BotMonitor
    from bot.workers.monitoring import WorkerMonitor
    from bot.requests.store import Store

    settings = Settings.model_validate({"celery": {"broker_url": "redis://127.0.0.1:1/0"}})
    with tempfile.TemporaryDirectory() as folder:
        store = Store(Path(folder) / "bot.sqlite3")
        registries = [BotMonitor(settings, store, ["x"]).registry, WorkerMonitor(settings, "redis://127.0.0.1:1/0", "t").registry]
        # A family with no series yet (no job has finished) still has the names it will serve.
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "info": ("_info",)}
        names = {family.name + suffix for registry in registries for family in registry.collect()
                 for suffix in ("", *suffixes.get(family.type, ()))}
        store.close()
    return {n for n in names if n.startswith("huggingtweets_")}


# The state database's tables, which docs/trust.md names where it says what is keyed on what.
STORE_TABLES = set(re.findall(r"CREATE TABLE (\w+)", "".join(MIGRATIONS)))

SECTION_KEY_RE = re.compile(r"\[([a-z_]+(?:\.[a-z_]+)?)\]`?\s+`?([a-z][a-z0-9_]*)\b")
SECTION_RE = re.compile(r"`\[([a-z_]+(?:\.[a-z_]+)?)\]`")
ASSIGNMENT_RE = re.compile(r"`([a-z][a-z0-9_]*) = [^`]+`")
BARE_NAME_RE = re.compile(r"`([a-z][a-z0-9]*(?:_[a-z0-9]+)+)`")
TOML_BLOCK_RE = re.compile(r"^```toml\n(.*?)^```", re.M | re.S)


def sections() -> dict[str, set[str]]:
    """Every table of the settings ("bot", "x.prices", ...) and its keys."""
    found: dict[str, set[str]] = {}

    def walk(prefix: str, model) -> None:
        for name, field in model.model_fields.items():
            if hasattr(field.annotation, "model_fields"):
                found[f"{prefix}{name}"] = set(field.annotation.model_fields)
                walk(f"{prefix}{name}.", field.annotation)

    walk("", Settings)
    return found


def problems(text: str) -> list[str]:
    """What in `text` names a setting that does not exist."""
    tables = sections()
    every_key = set().union(*tables.values())
    known = every_key | set(RunFacts.model_fields) | OTHER_NAMES | STORE_TABLES
    if "`huggingtweets_" in text:
        known |= metric_names()
    found = []
    for section, key in SECTION_KEY_RE.findall(text):
        if section not in tables:
            found.append(f"[{section}]: no such section")
        elif key not in tables[section] and key not in tables:  # "[x] prices" is a table of its own
            # Prose may follow a section that stands alone ("the [hub] settings"): only a key-like word counts.
            if "_" in key or key in every_key:
                found.append(f"[{section}] {key}: no such key")
    found += [f"[{s}]: no such section" for s in SECTION_RE.findall(text) if s not in tables]
    found += [f"{k} = ...: no such key" for k in ASSIGNMENT_RE.findall(text) if k not in every_key]
    found += [f"{name}: no such key" for name in BARE_NAME_RE.findall(text) if name not in known]
    for block in TOML_BLOCK_RE.findall(text):
        try:
            parse_settings(tomllib.loads(block), source="a toml block")
        except (ConfigError, tomllib.TOMLDecodeError) as e:
            found.append(str(e))
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(PROJECT)))
def test_every_setting_a_page_names_exists(page):
    assert problems(page.read_text(encoding="utf-8")) == []


def test_the_check_finds_a_wrong_name_in_each_form():
    assert problems("within `reuse_model_days`") == ["reuse_model_days: no such key"]
    assert problems("graph `huggingtweets_requests` and `huggingtweets_request`") == ["huggingtweets_request: no such key"]
    assert problems("set `[bot] reuse_model_days`") == ["[bot] reuse_model_days: no such key"]
    assert problems("see [bots] mode") == ["[bots]: no such section"]
    assert problems("`reply_links = false`") == ["reply_links = ...: no such key"]
    assert problems("```toml\n[train]\nexecuter = \"celery\"\n```\n")[0].startswith("a toml block: unknown key 'train.executer'")
    assert problems("`[bot] reuse_days`, `[x.prices] post_read`, the `[hub]` settings, `reply_link = false`") == []


def test_the_readme_is_a_path_a_newcomer_reads_in_minutes():
    text = (PROJECT / "README.md").read_text(encoding="utf-8")
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    assert headings[:4] == ["## Try it", "## What a mention can say", "## Commands", "## A model of your own posts, by hand"]
    assert "## Running it for real" in headings
    assert len(text.splitlines()) <= 220
    for page in re.findall(r"\]\(((?:docs|benchmarks)/[^)#]+)\)", text):
        assert (PROJECT / page).is_file(), f"README links to {page}, which does not exist"


def test_ci_runs_the_readmes_first_two_commands():
    """`.ci/run` installs what the README's install line installs (the playground's extra too, so its tests
    run for someone following the README) and runs exactly the README's test command."""
    readme = (PROJECT / "README.md").read_text(encoding="utf-8")
    install, test = re.search(r"## Try it\n\n```bash\n(.+)\n(.+)\n```", readme).groups()
    assert "pip install torch==2.13.0 -e '.[test,space]'" in install and install.endswith("&& huggingtweets demo")
    assert test == ". .venv/bin/activate && pytest -q"
    ci = (PROJECT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert "pip install --quiet torch==2.13.0 -e '.[test,space]'" in ci and ci[-1] == "pytest -q"
