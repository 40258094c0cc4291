"""Requests per hour through each executor, and what the bot itself spends on a request besides training.

    python benchmarks/throughput.py                      # 20 requests: local, celery with 1 and 2 workers
    python benchmarks/throughput.py --requests 10 --setups local celery-2 --json

A queue of mentions (each a different person, `train @userNN`) is answered by `huggingtweets run --once`
against the loopback X and Hub of the tests, with the tiny base model; for `celery-N`, with a real
redis-server and N `huggingtweets worker` processes. Reported for each setup:

- requests per hour: the number of requests over the wall time from the bot's start to its last reply;
- the bot's own time per request: the time its requests spent in the bot's own steps, read from the
  store's transitions: downloading (read and clean the posts, write the request folder), publishing
  (the Hub upload with `local`; recording the worker's commit with `celery`), replying, plus the
  submission of the job. Training, and waiting for a worker, is not in it.

One bot process works its steps one after the other, so it can keep busy as many GPU workers as
(a GPU's training time per model) / (the bot's own time per request): see benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import conftest  # noqa: E402,F401  (the loopback Hub, and HF_ENDPOINT pointing at it)
from conftest import LOOPBACK_HUB  # noqa: E402
from fake_x import FakeX  # noqa: E402
from test_celery import Queue  # noqa: E402

from bot.cli import to_toml  # noqa: E402

BOT_STEPS = ("downloading", "publishing", "replying")


def bot_config(folder: Path, executor: str, broker: str | None) -> Path:
    config = folder / "config.toml"
    sections = {
        "train": {"base_model": "tiny", "max_epochs": 1, "num_samples": 2, "executor": executor},
        "x": {"cache_dir": str(folder / "x-cache")},
        "bot": {"sources": ["x"], "state_db": str(folder / "bot.sqlite3"), "work_dir": str(folder / "work"),
                "quota_per_day": 0, "max_queue": 1000, "job_timeout_seconds": 600},
        "celery": {"broker_url": broker or "redis://127.0.0.1:6379/0", "visibility_timeout_seconds": 700},
    }
    config.write_text(to_toml(sections), encoding="utf-8")
    return config


def run_setup(setup: str, requests: int) -> dict:
    executor, workers = ("local", 0) if setup == "local" else ("celery", int(setup.split("-")[1]))
    LOOPBACK_HUB.reset()
    with tempfile.TemporaryDirectory(prefix="throughput-") as tmp, FakeX() as x:
        folder = Path(tmp)
        (folder / "queue").mkdir()
        queue = Queue(folder / "queue", LOOPBACK_HUB) if workers else None
        try:
            if queue:
                for n in range(workers):
                    queue.start_worker(f"gpu{n + 1}")
            config = bot_config(folder, executor, queue.redis.url if queue else None)
            for n in range(requests):
                x.add_user(f"user{n:02d}", posts=150)
                x.add_mention(f"fan{n:02d}", f"@huggingtweets train @user{n:02d}")
            env = {**(queue.env() if queue else _plain_env()), **x.env(), "HF_TOKEN": LOOPBACK_HUB.token}
            started = time.monotonic()
            result = subprocess.run([sys.executable, "-m", "bot", "--config", str(config), "run", "--once"],
                                    capture_output=True, text=True, env=env, cwd=folder)
            wall = time.monotonic() - started
            if result.returncode != 0:
                raise SystemExit(f"{setup}: the bot failed:\n{result.stderr[-3000:]}")
            figures = store_figures(folder / "bot.sqlite3")
        finally:
            if queue:
                queue.stop()
    if figures["done"] != requests:
        raise SystemExit(f"{setup}: {figures['done']} of {requests} requests done")
    return {"setup": setup, "requests": requests, "wall_seconds": round(wall, 1),
            "requests_per_hour": round(requests / wall * 3600), **figures}


def _plain_env() -> dict[str, str]:
    import os

    return {**os.environ, "PYTHONPATH": str(ROOT)}


def store_figures(path: Path) -> dict:
    """The bot's own seconds per request, from the store's transitions: the time each request spent in a
    state the bot works in itself (not training, not waiting for a worker or for its turn)."""
    with sqlite3.connect(path) as db:
        done = db.execute("SELECT COUNT(*) FROM requests WHERE state = 'done'").fetchone()[0]
        rows = db.execute("SELECT request_id, at, to_state FROM transitions ORDER BY request_id, rowid").fetchall()
    by_request: dict[int, list[tuple[float, str]]] = {}
    for request_id, at, state in rows:
        by_request.setdefault(request_id, []).append((at, state))
    own = [sum(next_at - at for (at, state), (next_at, _) in zip(steps, steps[1:]) if state in BOT_STEPS)
           for steps in by_request.values()]
    return {"done": done, "bot_seconds_per_request": round(statistics.mean(own), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--setups", nargs="+", default=["local", "celery-1", "celery-2"])
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    if any(s != "local" for s in args.setups) and shutil.which("redis-server") is None:
        raise SystemExit("redis-server is needed for the celery setups (apt-get install redis-server)")
    results = [run_setup(setup, args.requests) for setup in args.setups]
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for r in results:
        print(f"{r['setup']:>9}: {r['requests']} requests in {r['wall_seconds']:.0f} s = {r['requests_per_hour']:,}/hour; "
              f"the bot's own time {r['bot_seconds_per_request']:.3f} s a request")


if __name__ == "__main__":
    main()
