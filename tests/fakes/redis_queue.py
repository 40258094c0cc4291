"""A real redis-server on loopback, and real `huggingtweets worker` processes beside it, for the tests of
training on Celery workers (tests/workers/test_celery.py) and of what a worker serves or refuses.

    >>> queue = Queue(tmp_path, hub)                # redis-server started on a free port
    >>> queue.start_worker("gpu1")                  # `huggingtweets worker` with CUDA_VISIBLE_DEVICES=1
    >>> queue.kill_worker("gpu1")                   # the whole process group, kill -9: a machine gone
    >>> queue.stop()
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from bot.cli import to_toml

ROOT = Path(__file__).resolve().parents[2]
REDIS_SERVER = shutil.which("redis-server")


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
                    "quota_per_day": 5, "max_attempts": 3, "retry_base_seconds": 0},
            "celery": {"broker_url": self.redis.url},
        }), encoding="utf-8")
        return config

    def start_worker(self, name: str, config: Path | None = None) -> None:
        """A worker as an operator starts one per GPU: `huggingtweets worker` with CUDA_VISIBLE_DEVICES=N
        for "gpuN", named by default (`worker_name`); with its own config file, when given."""
        config = config or self.worker_config()
        self.logs[name] = self.folder / f"{name}.log"
        with open(self.logs[name], "ab") as log:
            self.workers[name] = subprocess.Popen(
                [sys.executable, "-m", "bot", "--config", str(config), "worker"], stdout=log, stderr=subprocess.STDOUT,
                env={**self.env(), "CUDA_VISIBLE_DEVICES": name.removeprefix("gpu")}, cwd=self.folder,
                start_new_session=True)

    @staticmethod
    def worker_name(name: str) -> str:
        """The name a worker started as `name` goes by (`bot.workers.celery_app.default_worker_name`)."""
        return f"huggingtweets-{name}@{socket.gethostname()}"

    @staticmethod
    def started_as(worker_name: str) -> str:
        return worker_name.split("@")[0].removeprefix("huggingtweets-")

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
