"""Requests per hour through each executor, and what the bot itself spends on a request besides training.

    python benchmarks/throughput.py                      # 20 requests: local, celery with 1 and 2 workers
    python benchmarks/throughput.py --requests 10 --setups local celery-2 --json
    python benchmarks/throughput.py --setups celery-2 celery-2-kill     # one of the 2 workers killed mid-burst

A queue of mentions (each a different person, `train @userNN`) is answered by `huggingtweets run --once`
against the loopback X and Hub of the tests, with the tiny base model; for `celery-N`, with a real
redis-server and N `huggingtweets worker` processes. `celery-N-kill` kills the first worker's whole
process group (kill -9: a spot machine reclaimed) once a quarter of the requests are answered and it
holds a job, with the shipped [celery] defaults. Reported for each setup:

- requests per hour: the number of requests over the wall time from the bot's start to its last reply;
  with a kill, also before it (answered before the kill, over the time to the kill) and after it;
- the longest wait: from a mention's arrival in the store to its reply (and, with a kill, the killed job's);
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
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "tests" / "fakes")]

import conftest  # noqa: E402,F401  (the loopback Hub, and HF_ENDPOINT pointing at it)
from conftest import LOOPBACK_HUB  # noqa: E402
from fake_x import FakeX  # noqa: E402
from redis_queue import Queue  # noqa: E402

from bot.cli import to_toml  # noqa: E402

BOT_STEPS = ("downloading", "publishing", "replying")


def bot_config(folder: Path, executor: str, broker: str | None) -> Path:
    config = folder / "config.toml"
    sections = {
        "train": {"base_model": "tiny", "max_epochs": 1, "num_samples": 2, "executor": executor},
        "x": {"cache_dir": str(folder / "x-cache")},
        "bot": {"sources": ["x"], "state_db": str(folder / "bot.sqlite3"), "work_dir": str(folder / "work"),
                "quota_per_day": 0, "max_queue": 1000},
        "celery": {"broker_url": broker or "redis://127.0.0.1:6379/0"},  # the shipped timeouts
    }
    config.write_text(to_toml(sections), encoding="utf-8")
    return config


def run_setup(setup: str, requests: int) -> dict:
    executor, workers = ("local", 0) if setup == "local" else ("celery", int(setup.split("-")[1]))
    kill = setup.endswith("-kill")
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
            started, started_clock = time.monotonic(), time.time()
            with tempfile.TemporaryFile("w+") as stderr:
                bot = subprocess.Popen([sys.executable, "-m", "bot", "--config", str(config), "run", "--once"],
                                       stdout=subprocess.DEVNULL, stderr=stderr, text=True, env=env, cwd=folder)
                killed = kill_mid_burst(queue, folder / "bot.sqlite3", bot, requests) if kill else None
                code = bot.wait()
                wall = time.monotonic() - started
                if code != 0:
                    stderr.seek(0)
                    raise SystemExit(f"{setup}: the bot failed:\n{stderr.read()[-3000:]}")
            figures = store_figures(folder / "bot.sqlite3")
            if killed:
                figures.update(kill_figures(folder / "bot.sqlite3", started_clock, *killed))
        finally:
            if queue:
                queue.stop()
    if figures["done"] != requests:
        raise SystemExit(f"{setup}: {figures['done']} of {requests} requests done")
    return {"setup": setup, "requests": requests, "wall_seconds": round(wall, 1),
            "requests_per_hour": round(requests / wall * 3600), **figures}


def kill_mid_burst(queue: Queue, db: Path, bot: subprocess.Popen, requests: int) -> tuple[float, int]:
    """kill -9 the first worker once a quarter of the requests are answered and it holds a job; when it
    was killed (the store's clock) and the request whose job it held."""
    victim = Queue.worker_name("gpu1")
    while bot.poll() is None:
        try:
            with sqlite3.connect(db) as con:
                done = con.execute("SELECT COUNT(*) FROM requests WHERE state = 'done'").fetchone()[0]
                held = con.execute("SELECT id FROM requests WHERE state = 'training' AND job_host = ?",
                                   (victim,)).fetchone()
        except sqlite3.OperationalError:  # the bot has not made its tables yet
            done, held = 0, None
        if done >= requests // 4 and held:
            queue.kill_worker("gpu1")
            return time.time(), held[0]
        time.sleep(0.1)
    raise SystemExit("the bot finished before the worker could be killed mid-job")


def kill_figures(db: Path, started: float, killed_at: float, request_id: int) -> dict:
    """Requests per hour before and after the kill, and how long the killed job's request waited."""
    with sqlite3.connect(db) as con:
        done_at = [at for (at,) in con.execute("SELECT at FROM transitions WHERE to_state = 'done' ORDER BY at")]
        created, finished = con.execute("SELECT r.created_at, MAX(t.at) FROM requests r JOIN transitions t"
                                        " ON t.request_id = r.id WHERE r.id = ?", (request_id,)).fetchone()
        handed_over = con.execute("SELECT MIN(at) FROM transitions WHERE request_id = ? AND at > ? AND note LIKE"
                                  " 'job % started%'", (request_id, killed_at)).fetchone()[0]
    before = sum(at <= killed_at for at in done_at)
    after = len(done_at) - before
    return {"killed_after_seconds": round(killed_at - started, 1),
            "requests_per_hour_before_kill": round(before / (killed_at - started) * 3600),
            "requests_per_hour_after_kill": round(after / (max(done_at) - killed_at) * 3600) if after else 0,
            "killed_job_handed_over_after_seconds": round(handed_over - killed_at, 1) if handed_over else None,
            "killed_request_wait_seconds": round(finished - created, 1)}


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
    waits = [steps[-1][0] - steps[0][0] for steps in by_request.values() if steps[-1][1] == "done"]
    return {"done": done, "bot_seconds_per_request": round(statistics.mean(own), 3),
            "longest_wait_seconds": round(max(waits), 1) if waits else None}


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
              f"the bot's own time {r['bot_seconds_per_request']:.3f} s a request; longest wait {r['longest_wait_seconds']} s")
        if "killed_after_seconds" in r:
            print(f"{'':>9}  a worker killed after {r['killed_after_seconds']:.0f} s: {r['requests_per_hour_before_kill']:,}"
                  f"/hour before, {r['requests_per_hour_after_kill']:,}/hour after; its job handed over "
                  f"{r['killed_job_handed_over_after_seconds']} s after the kill, its request answered "
                  f"{r['killed_request_wait_seconds']} s after it arrived")


if __name__ == "__main__":
    main()
