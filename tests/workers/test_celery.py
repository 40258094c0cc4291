"""Training on Celery workers: a real Redis server, real `huggingtweets worker` processes, the bot as
`huggingtweets run --once`, the loopback X and Hub, the tiny model. Each test says what the operator sees:
one commit and one reply per mention, whatever dies on the way. The config the tests write keeps every
timeout of the queue at its default: what is measured is what an operator gets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from redis_queue import REDIS_SERVER, Queue, free_port
from bot_process import BotProcess, assert_each_answered_once, keyed_commits, mention_burst, replies_to
from fake_x import FakeX
from waiting import wait_until

from bot.workers.celery_app import HEARTBEAT_SECONDS, check_name_free, default_worker_name, list_workers, wait_for_broker
from bot.cli import to_toml
from bot.common.config import CelerySettings, Settings
from bot.common.errors import UsageError, UserError

ROOT = Path(__file__).resolve().parents[2]
# One Redis and one pair of workers for the module (the `queue` fixture), in one process under pytest-xdist too.
pytestmark = [pytest.mark.skipif(REDIS_SERVER is None, reason="no redis-server binary on this machine "
                                 "(apt-get install redis-server; .ci/run installs it)"),
              pytest.mark.xdist_group("celery")]
# The promise of docs/recovery.md: a job whose worker vanished is handed to another within this.
LOST_AFTER = CelerySettings().worker_lost_seconds
HANDOVER_BOUND = LOST_AFTER + 10


@pytest.fixture
def x():
    with FakeX() as fake:
        for name in ("dora", "eli", "finn", "gus"):
            fake.add_user(name, posts=150)
        yield fake


@pytest.fixture(scope="module")
def queue():
    from conftest import LOOPBACK_HUB

    from bot.training.tiny import tiny_model_dir

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


@pytest.mark.slow
def test_two_workers_train_a_burst_of_mentions_and_each_gets_one_reply(bot, x, fake_hub):
    # Both take jobs before the burst comes: with three jobs and two ready workers, each trains one at least.
    settings = Settings.model_validate({"celery": {"broker_url": bot.queue.redis.url}})
    ready = {Queue.worker_name("gpu1"), Queue.worker_name("gpu2")}
    wait_until(lambda: ready <= {w["name"] for w in list_workers(settings) if w["state"] == "alive"}, "both workers ready")
    mentions = mention_burst(x)
    stderr = bot.finish(bot.start())

    assert_each_answered_once(x, fake_hub, mentions, f"{stderr[-2000:]}\n{bot.worker_logs()}")
    rows = bot.rows()
    assert {r["state"] for r in rows} == {"done"}
    assert {r["executor"] for r in rows} == {"celery"}
    gpu1, gpu2 = Queue.worker_name("gpu1"), Queue.worker_name("gpu2")
    assert {r["job_host"] for r in rows} == {gpu1, gpu2}, "both workers trained, each under a name of its own"
    assert "training -> publishing" in stderr and fake_hub.token not in stderr

    status = bot.status()
    assert f"celery on {gpu1}" in status.stdout and f"celery on {gpu2}" in status.stdout, status.stdout


@pytest.mark.slow
def test_a_worker_killed_mid_job_hands_it_to_another_within_the_bound_and_it_is_published_once(bot, x, fake_hub):
    """kill -9 of a worker's whole process group (a spot machine reclaimed), with the shipped defaults."""
    mention = x.add_mention("carol", "@huggingtweets train @gus")
    process = bot.start()
    bot.wait_for(lambda: bot.job_host() is not None, "a worker took the job", process)
    first = bot.job_host()
    [first_job] = bot.job_ids()
    bot.queue.kill_worker(Queue.started_as(first))
    killed_at = time.time()
    stderr = bot.finish(process, timeout=HANDOVER_BOUND + 120)

    [reply] = replies_to(x, mention)
    assert "/huggingtweets/gus" in reply
    assert len(keyed_commits(fake_hub, "huggingtweets/gus")) == 1
    [row] = bot.rows()
    assert row["state"] == "done" and row["attempts"] == 0, stderr[-3000:]
    assert f"runs on {first}" in stderr and f"its worker {first} has not been heard from" in stderr, stderr[-3000:]
    [other] = {Queue.worker_name("gpu1"), Queue.worker_name("gpu2")} - {first}
    assert row["job_host"] == other, "the other worker finished it"
    handed_over = bot.job_started_at()[-1] - killed_at
    assert handed_over <= HANDOVER_BOUND, f"handed over {handed_over:.0f} s after the kill"

    def workers() -> dict:
        return {w["name"]: w for w in json.loads(bot.cli("workers", "--json").stdout)["workers"]}

    # A worker's record is as of its last heartbeat: the job it finished leaves it at the next one.
    listed = wait_until(lambda: (w := workers())[other]["jobs"] == [] and w, "the worker that finished is idle",
                        timeout=4 * HEARTBEAT_SECONDS)
    assert listed[first]["state"] == "lost" and listed[other]["state"] == "alive", listed
    assert listed[other]["last_heartbeat_seconds"] < 2 * HEARTBEAT_SECONDS

    # Redis hands the killed worker's message out again after visibility_timeout_seconds (two hours): made
    # to happen now, the copy finds its job superseded and trains nothing.
    restore_unacknowledged_now(bot.queue.redis.url)
    wait_until(lambda: task_result(bot.queue.redis.url, first_job), "the first copy was delivered again")
    assert task_result(bot.queue.redis.url, first_job)["superseded"] is True
    assert len(keyed_commits(fake_hub, "huggingtweets/gus")) == 1 and len(replies_to(x, mention)) == 1


def test_two_workers_on_one_machine_never_share_a_name(queue, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert default_worker_name() == f"huggingtweets-{os.getpid()}@%h"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-5b3f1c2a-0000-1111-2222-333344445555")
    assert default_worker_name() == "huggingtweets-gpu-5b3f1c2a@%h"
    # A worker started under the name of one that is alive is refused, with one line.
    queue.ensure_workers("gpu1")
    client = wait_for_broker(queue.redis.url, 5)
    name = Queue.worker_name("gpu1")
    pid = queue.workers["gpu1"].pid
    wait_until(lambda: json.loads(client.get(f"huggingtweets:worker:{name}") or "{}").get("pid") == pid,
               "the worker recorded itself")
    with pytest.raises(UsageError, match=f"^a worker named {name} is already running \\(pid "):
        check_name_free(client, name, LOST_AFTER)
    check_name_free(client, "huggingtweets-gpu7@elsewhere", LOST_AFTER)


def test_a_job_handed_out_four_times_comes_back_failed_not_a_fifth_time(queue):
    """A job whose worker keeps dying (out of memory each time, say) is not handed out forever: the fifth
    delivery fails it, and the bot's own retry policy decides what next."""
    import uuid

    import redis

    from bot.workers.celery_app import DELIVERIES_KEY, MAX_DELIVERIES, TASK_NAME, make_app

    queue.ensure_workers("gpu1")
    task_id = str(uuid.uuid4())
    redis.Redis.from_url(queue.redis.url).set(DELIVERIES_KEY + task_id, MAX_DELIVERIES)  # four workers died on it
    app = make_app(Settings.model_validate({"celery": {"broker_url": queue.redis.url}}))
    answer = app.send_task(TASK_NAME, args=[{}], task_id=task_id).get(timeout=60)
    assert answer["error"]["transient"] is True
    assert f"handed to workers {MAX_DELIVERIES} times and never finished" in answer["error"]["message"]


@pytest.mark.slow
def test_a_worker_with_no_broker_says_so_in_one_line_and_exits(tmp_path):
    port = free_port()  # nothing listens there
    config = tmp_path / "config.toml"
    config.write_text(to_toml({"celery": {"broker_url": f"redis://:hunter2-secret@127.0.0.1:{port}/0",
                                          "broker_wait_seconds": 1}, "hub": {"backend": "local"}}))
    result = subprocess.run([sys.executable, "-m", "bot", "--config", str(config), "worker"], capture_output=True,
                            text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=tmp_path)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith(f"huggingtweets: error: cannot reach the broker at redis://:***@127.0.0.1:{port}/0 ("), lines
    assert lines[-1].endswith("Connection refused.); check that Redis runs there and that CELERY_BROKER_URL or "
                              "[celery] broker_url names it"), lines
    assert len(lines) == 2 and "cannot reach the broker" in lines[0] and "Trying for 1 s" in lines[0], result.stderr
    assert "hunter2" not in result.stderr + result.stdout and "celery@" not in result.stdout + result.stderr
    listing = subprocess.run([sys.executable, "-m", "bot", "--config", str(config), "workers"], capture_output=True,
                             text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=tmp_path)
    assert listing.returncode == 1 and listing.stderr.startswith(
        f"huggingtweets: error: cannot read the workers from the broker at redis://:***@127.0.0.1:{port}/0 ("), listing
    assert len(listing.stderr.strip().splitlines()) == 1 and "hunter2" not in listing.stderr
    with pytest.raises(UserError, match="cannot reach the broker"):
        wait_for_broker(f"redis://127.0.0.1:{port}/0", 0)


def restore_unacknowledged_now(url: str) -> None:
    """What Redis' transport does to a message taken and never acknowledged, once visibility_timeout has
    passed: put it back in its queue (kombu's own `QoS.restore_visible`, with no wait)."""
    from kombu import Connection

    with Connection(url, transport_options={"visibility_timeout": 0}) as connection:
        connection.default_channel.qos.restore_visible(num=100)


def task_result(url: str, task_id: str):
    import redis

    raw = redis.Redis.from_url(url).get(f"celery-task-meta-{task_id}")
    meta = json.loads(raw) if raw else {}
    return meta.get("result") if meta.get("status") == "SUCCESS" else None


@pytest.mark.slow
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
