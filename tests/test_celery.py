"""Training on Celery workers: a real Redis server, real `huggingtweets worker` processes, the bot as
`huggingtweets run --once`, the loopback X and Hub, the tiny model. Each test says what the operator sees:
one commit and one reply per mention, whatever dies on the way."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from bot_process import BotProcess, assert_each_answered_once, keyed_commits, mention_burst, replies_to
from fake_x import FakeX

from bot.cli import to_toml

ROOT = Path(__file__).resolve().parent.parent
REDIS_SERVER = shutil.which("redis-server")
pytestmark = pytest.mark.skipif(REDIS_SERVER is None, reason="no redis-server binary on this machine "
                                "(apt-get install redis-server; .ci/run installs it)")
# The time limit of a job, and when a job whose worker vanished is handed out again (just after it).
JOB_TIMEOUT, VISIBILITY_TIMEOUT = 20, 22


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """redis-server on a free loopback port, in a folder of its own, keeping nothing on disk: a restart
    starts it empty, as a broker that lost its data."""

    def __init__(self, folder: Path):
        self.folder, self.port = folder, free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> RedisServer:
        self.process = subprocess.Popen([REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--dir",
                                         str(self.folder), "--save", "", "--appendonly", "no"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                pass
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


class Queue:
    """The broker and the workers, with the config file they and the bot share."""

    def __init__(self, folder: Path, hub):
        self.folder, self.hub = folder, hub
        self.redis = RedisServer(folder).start()
        self.workers: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, Path] = {}

    def env(self) -> dict[str, str]:
        """A worker's environment: the Hub token, nothing of X (a worker never reads it)."""
        env = {k: v for k, v in os.environ.items()
               if k not in ("HUGGINGTWEETS_FAILPOINT", "CELERY_BROKER_URL") and not k.startswith("X_")}
        return {**env, "HF_TOKEN": self.hub.token, "PYTHONPATH": str(ROOT)}

    def write_config(self, tmp: Path) -> Path:
        config = tmp / "config.toml"
        config.write_text(to_toml({
            "train": {"base_model": "tiny", "max_epochs": 1, "num_samples": 2, "executor": "celery"},
            "x": {"cache_dir": str(tmp / "x-cache"), "max_retries": 1},
            "hub": {"max_retries": 1},
            "bot": {"sources": ["x"], "state_db": str(tmp / "bot.sqlite3"), "work_dir": str(tmp / "work"),
                    "quota_per_day": 5, "max_attempts": 3, "retry_base_seconds": 0, "job_timeout_seconds": JOB_TIMEOUT},
            "celery": {"broker_url": self.redis.url, "visibility_timeout_seconds": VISIBILITY_TIMEOUT},
        }), encoding="utf-8")
        return config

    def start_worker(self, name: str, config: Path | None = None) -> None:
        config = config or self.worker_config()
        self.logs[name] = self.folder / f"{name}.log"
        with open(self.logs[name], "ab") as log:
            self.workers[name] = subprocess.Popen(
                [sys.executable, "-m", "bot", "--config", str(config), "worker", "--name", f"{name}@test"],
                stdout=log, stderr=subprocess.STDOUT, env=self.env(), cwd=self.folder, start_new_session=True)

    def worker_config(self) -> Path:
        folder = self.folder / "worker"
        folder.mkdir(exist_ok=True)
        return self.write_config(folder)

    def kill_worker(self, name: str) -> None:
        """kill -9 the worker and its training process at once: a machine that went away."""
        process = self.workers.pop(name)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def ensure_workers(self, *names: str) -> None:
        for name in names:
            if name not in self.workers or self.workers[name].poll() is not None:
                self.start_worker(name)

    def stop(self) -> None:
        for process in self.workers.values():
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
        for process in self.workers.values():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self.redis.stop()


@pytest.fixture
def x():
    with FakeX() as fake:
        for name in ("dora", "eli", "finn", "gus"):
            fake.add_user(name, posts=150)
        yield fake


@pytest.fixture(scope="module")
def queue():
    from conftest import LOOPBACK_HUB

    from bot.tiny import tiny_model_dir

    tiny_model_dir()  # the session's tiny base, built before a job's time limit starts counting

    with tempfile.TemporaryDirectory(prefix="celery-") as folder:
        started = Queue(Path(folder), LOOPBACK_HUB)
        try:
            yield started
        finally:
            started.stop()


@pytest.fixture
def bot(tmp_path, queue, fake_hub, x):
    queue.ensure_workers("gpu1", "gpu2")
    return BotOnQueue(tmp_path, queue, x)


class BotOnQueue(BotProcess):
    def __init__(self, tmp: Path, queue: Queue, x: FakeX):
        self.queue, self.x = queue, x
        super().__init__(tmp, queue.write_config(tmp), {**queue.env(), **x.env()}, self.worker_logs)

    def worker_logs(self) -> str:
        return "\n".join(f"--- {name}\n{path.read_text(errors='replace')[-2000:]}" for name, path in self.queue.logs.items())


def test_two_workers_train_a_burst_of_mentions_and_each_gets_one_reply(bot, x, fake_hub):
    mentions = mention_burst(x)
    stderr = bot.finish(bot.start())

    assert_each_answered_once(x, fake_hub, mentions, f"{stderr[-2000:]}\n{bot.worker_logs()}")
    rows = bot.rows()
    assert {r["state"] for r in rows} == {"done"}
    assert {r["executor"] for r in rows} == {"celery"}
    assert {r["job_host"] for r in rows} == {"gpu1@test", "gpu2@test"}, "both workers trained"
    assert "training -> publishing" in stderr and fake_hub.token not in stderr

    status = bot.status()
    assert "celery on gpu1@test" in status.stdout and "celery on gpu2@test" in status.stdout, status.stdout


def test_a_worker_killed_mid_job_hands_it_to_another_and_it_is_published_once(bot, x, fake_hub):
    mention = x.add_mention("carol", "@huggingtweets train @gus")
    process = bot.start()
    bot.wait_for(lambda: bot.job_host() is not None, "a worker took the job", process)
    first = bot.job_host()
    bot.queue.kill_worker(first.split("@")[0])
    stderr = bot.finish(process)

    [reply] = replies_to(x, mention)
    assert "/huggingtweets/gus" in reply
    assert len(keyed_commits(fake_hub, "huggingtweets/gus")) == 1
    [row] = bot.rows()
    assert row["state"] == "done" and row["attempts"] == 0, stderr[-3000:]
    assert f"runs on {first}" in stderr
    assert {"gpu1@test", "gpu2@test"} - {first} == {row["job_host"]}, "the other worker finished it"


def test_a_broker_restarted_empty_mid_run_loses_nothing(bot, x, fake_hub):
    mentions = mention_burst(x)
    # One worker, so that when the broker goes, at least one job is still waiting in it and not yet taken.
    bot.queue.kill_worker("gpu2")
    process = bot.start()
    bot.wait_for(lambda: bot.jobs_submitted() == len(mentions), "every job handed to the queue", process)
    bot.queue.redis.stop()
    time.sleep(2)
    bot.queue.redis.start()
    stderr = bot.finish(process)

    assert_each_answered_once(x, fake_hub, mentions, stderr[-2000:])
    assert {r["state"] for r in bot.rows()} == {"done"}
    assert "is gone; starting it again" in stderr  # the queued jobs went with the broker's data
