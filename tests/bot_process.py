"""The bot as a subprocess (`python -m bot --config ... run --once`) for tests of where training runs
(tests/test_celery.py, tests/test_hf_jobs.py), and what they read back: its state database, its replies and
the Hub commits it made.

    >>> bot = BotProcess(tmp_path, config_path, env)
    >>> process = bot.start()
    >>> bot.wait_for(lambda: bot.job_host() is not None, "a job started", process)
    >>> stderr = bot.finish(process)
    >>> [row["state"] for row in bot.rows()]
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from bot.hub import KEY_PREFIX


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
