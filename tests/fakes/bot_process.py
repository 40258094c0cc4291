"""The bot as a subprocess (`python -m bot --config ... run --once`), and what the tests read back: its state
database, its replies and the Hub commits it made. `BotRunner` writes the config and the environment of a
bot on the loopback X and Hub (tests/requests/); `BotProcess` runs one given them (tests/workers/).

    >>> bot = BotRunner(tmp_path, fake_x, fake_hub)
    >>> bot.run_ok()                                    # `run --once`: every request as far as it can go
    >>> bot.replies_to(mention_id), bot.states()

    >>> bot = BotProcess(tmp_path, config_path, env)
    >>> process = bot.start()
    >>> bot.wait_for(lambda: bot.job_host() is not None, "a job started", process)
    >>> stderr = bot.finish(process)
    >>> [row["state"] for row in bot.rows()]
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from fake_x import FakeX

from bot.cli import to_toml
from bot.publishing.hub import KEY_PREFIX

ROOT = Path(__file__).resolve().parents[2]


class BotProcess:
    def __init__(self, tmp: Path, config: Path, env: dict[str, str], diagnostics: Callable[[], str] = lambda: ""):
        """`diagnostics`: more to show when the bot fails or waits in vain (the workers' logs, say)."""
        self.tmp, self.config, self.env, self.diagnostics = tmp, config, env, diagnostics

    def start(self) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "bot", "--config", str(self.config), "run", "--once"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=self.env,
                                cwd=self.tmp)

    def finish(self, process: subprocess.Popen, timeout: float = 150) -> str:
        try:
            _, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            _, stderr = process.communicate()
            pytest.fail(f"the bot did not finish: {stderr[-3000:]}\n{self.diagnostics()}")
        assert process.returncode == 0, f"{stderr[-3000:]}\n{self.diagnostics()}"
        return stderr

    def status(self, *args: str) -> subprocess.CompletedProcess:
        """`huggingtweets status` as an operator runs it."""
        return self.cli("status", *args)

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        """Another `huggingtweets` command with the bot's config (`workers --json`, say)."""
        return subprocess.run([sys.executable, "-m", "bot", "--config", str(self.config), *args],
                              capture_output=True, text=True, env=self.env, cwd=self.tmp)

    def rows(self) -> list[sqlite3.Row]:
        with sqlite3.connect(self.tmp / "bot.sqlite3") as db:
            db.row_factory = sqlite3.Row
            return db.execute("SELECT * FROM requests ORDER BY id").fetchall()

    def wait_for(self, condition, what: str, process: subprocess.Popen, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert process.poll() is None, f"the bot ended before {what}: {process.stderr.read()[-3000:]}"
            assert time.monotonic() < deadline, f"never: {what}\n{self.diagnostics()}"
            time.sleep(0.2)

    def jobs_submitted(self) -> int:
        """How many requests have had a job handed to the executor, finished or not."""
        try:
            with sqlite3.connect(self.tmp / "bot.sqlite3") as db:
                return db.execute("SELECT COUNT(DISTINCT request_id) FROM transitions"
                                  " WHERE note LIKE 'job % started%'").fetchone()[0]
        except sqlite3.OperationalError:  # the bot has not made its tables yet
            return 0

    def job_started_at(self) -> list[float]:
        """When each job was handed to the executor (the store's clock), oldest first."""
        with sqlite3.connect(self.tmp / "bot.sqlite3") as db:
            return [at for (at,) in db.execute("SELECT at FROM transitions WHERE note LIKE 'job % started%'"
                                               " ORDER BY rowid")]

    def job_host(self) -> str | None:
        try:
            return next((r["job_host"] for r in self.rows() if r["job_host"]), None)
        except sqlite3.OperationalError:  # the bot has not made its tables yet
            return None

    def job_ids(self) -> list[str]:
        try:
            return [r["job_id"] for r in self.rows() if r["job_id"]]
        except sqlite3.OperationalError:
            return []


def replies_to(x, mention: str) -> list[str]:
    """What the bot posted in reply to a mention on the loopback X."""
    return [p["text"] for p in x.posted if p.get("in_reply_to_tweet_id") == mention]


def keyed_commits(hub, repo: str) -> list:
    """The commits of a repo on the loopback Hub that a bot made for a request (carrying its key)."""
    return [c for c in hub.repos[repo].commits if KEY_PREFIX in c.description]


def mention_burst(x) -> dict[str, str]:
    """Three people ask at once for three different models: {mention id: handle to model}."""
    return {x.add_mention(who, f"@huggingtweets train @{handle}"): handle
            for who, handle in (("carol", "dora"), ("dave", "eli"), ("erin", "finn"))}


def assert_each_answered_once(x, hub, mentions: dict[str, str], context: str = "") -> None:
    """Every mention got exactly one reply linking its model, published in exactly one keyed commit."""
    for mention, handle in mentions.items():
        [reply] = replies_to(x, mention)
        assert f"/huggingtweets/{handle}" in reply, f"{reply}\n{context}"
        assert len(keyed_commits(hub, f"huggingtweets/{handle}")) == 1, handle


class BotRunner:
    """Runs the real command in a subprocess with a config and an environment of its own."""

    def __init__(self, tmp: Path, x: FakeX, hub, extra_env: dict[str, str] | None = None, **bot_settings):
        self.tmp, self.x, self.hub = tmp, x, hub
        self.extra_env = extra_env or {}  # another network's client settings (tests/requests/test_bot_networks.py)
        self.config = tmp / "config.toml"
        self.write_config()

    def write_config(self, x: dict | None = None, **bot) -> None:
        """The bot's config: the tiny model, loopback-friendly retries, and these [bot] (and [x]) settings."""
        bot_section = {"sources": ["x"], "state_db": str(self.tmp / "bot.sqlite3"), "work_dir": str(self.tmp / "work"),
                       "quota_per_day": 2, "max_attempts": 2, **bot}
        sections = {"train": {"base_model": "tiny", "max_epochs": 1, "num_samples": 3},
                    "x": {"cache_dir": str(self.tmp / "x-cache"), "max_retries": 1, **(x or {})},
                    "hub": {"max_retries": 1}, "bot": bot_section}
        self.config.write_text(to_toml(sections), encoding="utf-8")

    def env(self, **extra) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "HUGGINGTWEETS_FAILPOINT"}
        env.update(self.x.env())
        env.update(self.extra_env)
        env.update(HF_TOKEN=self.hub.token, PYTHONPATH=str(ROOT), **extra)
        return env

    def run(self, failpoint: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
        extra = {"HUGGINGTWEETS_FAILPOINT": failpoint} if failpoint else {}
        return subprocess.run([sys.executable, "-m", "bot", "--config", str(self.config), "run", "--once"],
                              capture_output=True, text=True, timeout=timeout, env=self.env(**extra), cwd=self.tmp)

    def run_ok(self) -> subprocess.CompletedProcess:
        result = self.run()
        assert result.returncode == 0, result.stderr[-3000:]
        return result

    def replies_to(self, mention_id: str) -> list[str]:
        return [p["text"] for p in self.x.posted if p.get("in_reply_to_tweet_id") == mention_id]

    def states(self) -> dict[str, str]:
        with sqlite3.connect(self.tmp / "bot.sqlite3") as db:
            return dict(db.execute("SELECT mention_id, state FROM requests").fetchall())


def status_json(bot) -> dict:
    result = subprocess.run([sys.executable, "-m", "bot", "--config", str(bot.config), "status", "--json"],
                            capture_output=True, text=True, env=bot.env(), cwd=bot.tmp)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)
