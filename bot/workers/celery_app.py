"""Training on Celery workers: the bot on a small box, models trained on as many GPU machines as there are workers.

    huggingtweets worker                     # on each GPU machine (CELERY_BROKER_URL, HF_TOKEN in its env)
    [train] executor = "celery"              # in the bot's config: jobs go to the queue, not a subprocess

The bot hands a request to the queue as one message, a `Ticket`: its `job.json` and the files of its
`data/` folder (the cleaned posts: a few MB at most). A worker needs no disk shared with the bot, and reads
nothing from X: it unpacks the ticket into a temporary folder, trains with `python -m bot.training.job`'s own code,
publishes the model to the Hub itself, and returns what it published (`bot.training.job.Published`).

Who decides what, since anyone who can write to the broker can put a message on the queue:
- the worker publishes only under its own [hub] organisation and backend, with its own HF_TOKEN, read from
  its own config and environment; a ticket names a model, never where or how to publish (`bot.training.job.authorize`);
- the bot believes the Hub, not the result: before it replies, it finds the commit keyed for the request in
  the request's own repo itself, and links the URL it builds (`bot.requests.scheduler.Bot.confirmed_on_hub`).
The bot's store stays the one owner of request state: the bot records the commit and replies.

Delivery is at least once, publishing exactly once:

- late acknowledgement (`task_acks_late`): a message is taken off the queue only when its job has ended;
  a worker whose training process dies (`task_reject_on_worker_lost`) hands the job back at once;
- a whole worker that vanishes (kill -9, a spot machine reclaimed) has its job handed to another within
  `[celery] worker_lost_seconds` (30 s by default) and a few seconds: every worker records itself, and
  each job it holds, in Redis every `HEARTBEAT_SECONDS` (`WorkerBeat`); the bot reads a job's record
  (`CeleryExecutor.check`) and, when the record has gone quiet, marks the job superseded and sends a new
  one, ahead of the jobs still waiting (`HANDED_OVER_PRIORITY`). The old message, when Redis hands it
  out again after `visibility_timeout_seconds` (the last resort), finds the mark and trains nothing.
  docs/recovery.md has why this and not Celery's own events;
- one job at a time per worker, and no job reserved ahead (`prefetch 1`, concurrency 1): a job waits in the
  queue, where any free worker can take it, not behind a busy one;
- each job has a time limit (`[bot] job_timeout_seconds`);
- the Hub commit carries the request's key (`bot.publishing.hub.KEY_PREFIX`): a worker that gets a job whose commit
  exists returns that commit, and two copies racing to publish make one commit (`bot.publishing.hub.publish_folder`);
- a job killed over and over (say, out of memory each time) is not handed out forever: after
  `MAX_DELIVERIES` it comes back as failed, and the bot's own retry policy decides.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, unquote, urlsplit

from bot.training import job
from bot.common.config import Settings
from bot.common.errors import UsageError, UserError, clip, hide_in_logs, mask
from bot.training.job import Ticket

if TYPE_CHECKING:
    from bot.common.monitoring import MonitoringServer

log = logging.getLogger("huggingtweets.celery")

TASK_NAME = "huggingtweets.train_and_publish"
QUEUE = "huggingtweets.train"
# A job handed out this many times without finishing comes back failed instead of a fifth time.
MAX_DELIVERIES = 4
# Redis hands out the jobs of the most urgent priority first (kombu keeps a list per step, 0, 3, 6 and 9,
# and a worker pops them in that order). A job whose worker vanished has waited already: it goes first.
PRIORITY, HANDED_OVER_PRIORITY = 6, 0
# Celery's states of a job not yet finished: a job in one of them may be held by a worker that vanished.
UNFINISHED_STATES = ("PENDING", "RECEIVED", "STARTED", "RETRY")
# The bot's record that a job was handed to the queue: a job still PENDING without it was lost with the
# broker's data (a Redis that restarted empty), and is handed over again.
SUBMITTED_KEY = "huggingtweets:submitted:"
DELIVERIES_KEY = "huggingtweets:deliveries:"
# Results, submission records and delivery counts are kept a week: longer than any stop of the bot.
KEEP_SECONDS = 7 * 86400
# Between the soft time limit (the job ends itself, with an error) and the hard one (its process is killed).
HARD_LIMIT_GRACE_SECONDS = 30
# How often a worker records itself and the jobs it holds (`WorkerBeat`). Not a setting: the bot judges
# the records against its own [celery] worker_lost_seconds (at least three beats), whatever the workers'
# configs say.
HEARTBEAT_SECONDS = 5.0
WORKER_KEY = "huggingtweets:worker:"  # a worker's record, JSON (`WorkerBeat.record`)
BEAT_KEY = "huggingtweets:beat:"  # a job's last sign of life: the name of the worker that holds it
# A job handed to another worker: a copy of its message delivered later returns at once.
SUPERSEDED_KEY = "huggingtweets:superseded:"
# Per request: how many times in a row its job's worker vanished (`MAX_DELIVERIES` of them fail the attempt).
HANDOVERS_KEY = "huggingtweets:handovers:"
# Records live a day after their last beat. Their age is read from the time they have left to live,
# which Redis counts on its own clock: no two machines' clocks are ever compared.
RECORD_KEEP_SECONDS = 86400


# Query parameters of a broker URL that carry a credential (kombu and redis-py read `password` there).
_SECRET_PARAM_WORDS = ("pass", "pwd", "secret", "token", "key", "auth", "credential")


def broker_secrets(url: str) -> list[str]:
    """Every credential a broker URL holds, in every place one can stand: the password after "user:", a
    lone user part (kombu passes `redis://SECRET@host` on as the password), and query parameters such as
    `?password=`. Several URLs joined by ";" (failover) are each read."""
    found: list[str] = []
    for one in url.split(";"):
        parts = urlsplit(one.strip())
        userinfo = parts.netloc.rpartition("@")[0]
        if userinfo:
            user, colon, password = userinfo.partition(":")
            found += [unquote(password)] if colon else [unquote(user)]
        found += [unquote(v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
                  if v and any(word in k.lower() for word in _SECRET_PARAM_WORDS)]
    return [f for f in found if f]


def shown_url(url: str) -> str:
    """The broker's URL with every credential it holds masked (see `broker_secrets`), for logs and messages.

        >>> shown_url("redis://:s3cret-pass@queue:6379/0?password=other")
        'redis://:***@queue:6379/0?password=***'
    """
    shown = []
    for one in url.split(";"):
        parts = urlsplit(one.strip())
        userinfo, at, host = parts.netloc.rpartition("@")
        if at:
            user, colon, _ = userinfo.partition(":")
            netloc = f"{user}:***@{host}" if colon else f"***@{host}"
            parts = parts._replace(netloc=netloc)
        if parts.query:
            query = "&".join(f"{k}=***" if v and any(w in k.lower() for w in _SECRET_PARAM_WORDS) else f"{k}={v}"
                             for k, v in parse_qsl(parts.query, keep_blank_values=True))
            parts = parts._replace(query=query)
        shown.append(mask(parts.geturl(), broker_secrets(one)))
    return ";".join(shown)


def make_app(settings: Settings):
    """The Celery app for the bot and the workers alike: Redis as broker and result store."""
    from celery import Celery

    url = settings.celery.broker
    hide_in_logs(["celery", "kombu", "redis", "huggingtweets"], broker_secrets(url))
    visibility = settings.celery.visibility_timeout_seconds
    transport = {
        "visibility_timeout": visibility,
        # How often a worker looks for jobs whose worker vanished; a Redis scan, cheap.
        "unacked_restore_interval": max(1, int(min(10.0, visibility / 4))),
        "unacked_restore_throttle": 1,
    }
    app = Celery("huggingtweets", broker=url, backend=url, set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_concurrency=1,
        task_default_queue=QUEUE,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_expires=KEEP_SECONDS,
        broker_transport_options=transport,
        result_backend_transport_options=transport,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,  # a worker waits out a broker restart, however long
        # A worker stores its result even when the broker is restarting at that moment.
        result_backend_always_retry=True,
        result_backend_max_retries=100,
        redis_socket_connect_timeout=5,
        redis_socket_timeout=30,
        redis_backend_health_check_interval=10,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
    )
    own = settings.bot.job_timeout_seconds
    limited = type("WorkerRequest", (_request_class(),), {"own_limits": (own + HARD_LIMIT_GRACE_SECONDS, own)})
    app.task(name=TASK_NAME, bind=True, Request=limited)(train_and_publish)
    app.huggingtweets_settings = settings  # the worker's own authority: where it publishes (see the docstring)
    return app


def _request_class():
    """Celery's request of a task, held to the worker's own time limits (`own_limits`: hard, soft) whatever
    the message asks: a message forged on the queue could ask for none, and hold a GPU for ever."""
    from celery.worker.request import Request

    class WorkerRequest(Request):
        own_limits: tuple[float, float] = (None, None)
        _asked_limits: tuple[float | None, float | None] = (None, None)

        @property
        def time_limits(self) -> tuple[float, float]:
            (hard, soft), (own_hard, own_soft) = self._asked_limits, self.own_limits
            return min(hard or own_hard, own_hard), min(soft or own_soft, own_soft)

        @time_limits.setter
        def time_limits(self, asked) -> None:  # set by Celery from the message's `timelimit`
            self._asked_limits = tuple(asked)

    return WorkerRequest


# --- the worker's side ------------------------------------------------------------------------------


def train_and_publish(task, ticket: dict) -> dict:
    """The task: train the ticket's job, publish the model, return what was published (or why not).

    Failures come back as a result (`{"error": JobError}`) rather than an exception, so that the bot
    reads the same retry policy a local job writes into error.json.
    """
    host = task.request.hostname or socket.gethostname()
    if task.app.backend.client.exists(SUPERSEDED_KEY + task.request.id):
        log.info("job %s was handed to another worker when its first worker vanished: nothing to do", task.request.id)
        return {"worker": host, "superseded": True}
    deliveries = task.app.backend.client.incr(DELIVERIES_KEY + task.request.id)
    task.app.backend.client.expire(DELIVERIES_KEY + task.request.id, KEEP_SECONDS)
    task.update_state(state="STARTED", meta={"hostname": host, "started_at": time.time(), "delivery": deliveries})
    try:
        if deliveries > MAX_DELIVERIES:
            raise job.JobFailed(f"the job was handed to workers {MAX_DELIVERIES} times and never finished "
                                "(each time its worker died or was killed: out of memory?)", transient=True)
        published = job.run_ticket(Ticket.parse(ticket), task.app.huggingtweets_settings)
    except Exception as e:  # noqa: BLE001 - every failure goes back to the bot with its retry policy
        record = job.error_record(e)
        log.warning("job %s failed: %s", task.request.id, record.message)
        return {"worker": host, "error": record.model_dump()}
    return {"worker": host, "published": published.model_dump()}


def run_worker(settings: Settings, name: str | None = None, banner: bool = True) -> None:
    """Run one worker in the foreground until SIGTERM: one job at a time (one GPU).

    Its name is `name` (`%h` is the host; a name without `@` gets `@HOST`), else `default_worker_name()`.
    Nothing of Celery starts, and no banner shows, until the broker answers (`wait_for_broker`). Without
    `banner`, Celery prints nothing of its own on stdout (JSON logs: every line of the worker's is a record).
    """
    from celery.signals import task_received, worker_shutdown
    from celery.utils.nodenames import host_format

    if settings.hub.backend == "hub":
        from huggingface_hub import get_token

        if not get_token():
            raise UsageError("HF_TOKEN is not set: a worker publishes the models it trains, and needs a Hub token "
                             "with write access to the organisation")
    if not name:
        name = default_worker_name()
    elif "@" not in name:  # Celery would take it for a host name
        name += "@%h"
    name = host_format(name)
    # /healthz answers from the start: 503 "cannot be reached" while the broker is still awaited.
    server = serve_monitoring(settings)
    try:
        client = wait_for_broker(settings.celery.broker, settings.celery.broker_wait_seconds)
        check_name_free(client, name, settings.celery.worker_lost_seconds)
        app = make_app(settings)
        beat = WorkerBeat(client, name)
        app.steps["consumer"].add(_beat_step(beat))
        task_received.connect(lambda sender=None, request=None, **_: beat.received(request.id), weak=False)
        # Sent once a warm shutdown has let the job under way finish (SIGTERM): it beats until then.
        worker_shutdown.connect(lambda **_: beat.stop(), weak=False)
        log.info("worker %s: jobs from %s", name, shown_url(settings.celery.broker))
        app.worker_main([*([] if banner else ["--quiet"]), "worker", "--loglevel=INFO", "--concurrency=1",
                         "--prefetch-multiplier=1", "--pool=prefork", f"--queues={QUEUE}", f"--hostname={name}",
                         "--without-gossip", "--without-mingle", "--without-heartbeat"])
    finally:
        if server is not None:
            server.close()


def serve_monitoring(settings: Settings) -> MonitoringServer | None:
    """/healthz (the broker answers) and /metrics of this worker, with `[monitoring] listen`; None without.

    Served from the worker's main process, which Celery tells of every job it hands to its pool. The
    pool's processes are forked from it: each closes its copy of the listening socket, so that none of
    them keeps the port after the worker is gone.
    """
    if not settings.monitoring.listen:
        return None
    from celery import signals

    from bot.workers.monitoring import WorkerMonitor

    server = WorkerMonitor(settings, shown_url(settings.celery.broker), TASK_NAME).serve()
    listening = server.server.socket

    def close_inherited_socket(**_) -> None:
        listening.close()

    signals.worker_process_init.connect(close_inherited_socket, weak=False)
    return server


def default_worker_name() -> str:
    """`huggingtweets-gpuN@%h` for a worker given one GPU (`CUDA_VISIBLE_DEVICES=N`), else
    `huggingtweets-PID@%h`: two workers on one machine never share a name, and a worker per GPU keeps its
    name across restarts.

        >>> os.environ["CUDA_VISIBLE_DEVICES"] = "1"; default_worker_name()
        'huggingtweets-gpu1@%h'
    """
    devices = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    if len(devices) == 1 and devices[0].isdigit():
        return f"huggingtweets-gpu{devices[0]}@%h"
    if len(devices) == 1 and devices[0].upper().startswith(("GPU-", "MIG-")):  # a device's UUID
        return f"huggingtweets-gpu-{devices[0][4:12].lower()}@%h"
    return f"huggingtweets-{os.getpid()}@%h"


def wait_for_broker(url: str, seconds: float):
    """A Redis client for the broker once it answers; a `UserError` naming the URL (password masked) and
    what to check when it does not within `seconds`, or refuses the password. One line on the way."""
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    shown, secrets = shown_url(url), broker_secrets(url)
    deadline, said = time.monotonic() + seconds, False
    while True:
        try:
            client.ping()
            return client
        except (redis.exceptions.AuthenticationError, redis.exceptions.ResponseError) as e:
            raise UserError(clip(f"the broker at {shown} refused this worker ({e}): check the password in "
                                 "CELERY_BROKER_URL or [celery] broker_url", secrets=secrets)) from None
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as e:
            reason = clip(str(e), 120, secrets) or type(e).__name__
            if time.monotonic() >= deadline:
                raise UserError(f"cannot reach the broker at {shown} ({reason}); check that Redis runs there and "
                                "that CELERY_BROKER_URL or [celery] broker_url names it") from None
            if not said:
                log.warning("cannot reach the broker at %s (%s); is Redis running there, and is CELERY_BROKER_URL "
                            "or [celery] broker_url right? Trying for %.0f s", shown, reason, seconds)
                said = True
            time.sleep(max(0.0, min(2.0, deadline - time.monotonic())))


def check_name_free(client, name: str, lost_seconds: float) -> None:
    """Refuse to start under the name of a worker that is still alive: `status` and `workers` tell workers
    apart by name. The record of this worker's own predecessor (same host, its process gone) is no bar."""
    raw, pttl = client.pipeline(transaction=False).get(WORKER_KEY + name).pttl(WORKER_KEY + name).execute()
    age = _age(pttl)
    if raw is None or age is None or age > lost_seconds:
        return
    try:
        record = json.loads(raw)
    except ValueError:
        return
    pid, host = record.get("pid"), record.get("host")
    if record.get("stopped") or (host == socket.gethostname() and (pid == os.getpid() or not _alive(pid))):
        return
    raise UsageError(f"a worker named {name} is already running (pid {pid} on {host}, heard from {age:.0f} s ago): "
                     "give each worker its own --name, or each its own GPU with CUDA_VISIBLE_DEVICES")


class WorkerBeat:
    """What a worker records in Redis, every `HEARTBEAT_SECONDS` and whenever it takes a job: its own record
    (`WORKER_KEY` + name: host, pid, GPU, the jobs it holds; what `huggingtweets workers` lists) and, for
    each job it holds, `BEAT_KEY` + job id = its name. The bot hands a job to another worker when that
    job's beat has been quiet for `[celery] worker_lost_seconds` (`CeleryExecutor.check`).

    It beats from a thread of the worker's main process, not from Celery's event loop: the loop stops for
    as long as Celery takes to reconnect to a broker that went away (up to 30 s between tries), while the
    training process goes on; the thread records again as soon as Redis answers. Its Redis client is its
    own, which the pool's forked processes never use.

        >>> beat = WorkerBeat(redis_client, "huggingtweets-gpu0@box")
        >>> beat.start()       # once the worker runs; beat.stop() as it stops
    """

    # Deletes a job's beat only if this worker wrote it: another worker may hold the job now.
    _RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"

    def __init__(self, client, name: str):
        self.client, self.name = client, name
        self.started_at = time.time()
        self._held: set[str] = set()  # the jobs whose beats this worker wrote last
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False
        self._release = client.register_script(self._RELEASE)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="huggingtweets-beat", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """The worker has stopped: say so in its record (a job it still held keeps its beat, which goes quiet)."""
        self._stopping.set()
        self.beat(stopped=True)

    def received(self, job_id: str) -> None:
        """A job was taken: its beat is written at once, before it trains."""
        self.beat(also=job_id)

    def _run(self) -> None:
        while not self._stopping.is_set():
            self.beat()
            self._stopping.wait(HEARTBEAT_SECONDS)

    def beat(self, also: str | None = None, stopped: bool = False) -> None:
        from celery.worker import state

        with self._lock:
            stopped = stopped or self._stopping.is_set()
            held = _request_ids(state.active_requests) | _request_ids(state.reserved_requests)
            if also:
                held.add(also)
            record = {"name": self.name, "host": socket.gethostname(), "pid": os.getpid(),
                      "gpu": os.environ.get("CUDA_VISIBLE_DEVICES") or None, "started_at": self.started_at,
                      "jobs": sorted(held), "stopped": stopped}
            keep = int(RECORD_KEEP_SECONDS * 1000)
            try:
                pipe = self.client.pipeline(transaction=False)
                pipe.set(WORKER_KEY + self.name, json.dumps(record), px=keep)
                for job_id in held:
                    pipe.set(BEAT_KEY + job_id, self.name, px=keep)
                for job_id in self._held - held:
                    self._release(keys=[BEAT_KEY + job_id], args=[self.name], client=pipe)
                pipe.execute()
            except Exception as e:  # noqa: BLE001 - Redis is away: the next beat tries again
                if not self._failing:
                    log.warning("worker %s cannot record itself in Redis (%s); trying every %.0f s",
                                self.name, type(e).__name__, HEARTBEAT_SECONDS)
                self._failing = True
                return
            if self._failing:
                log.info("worker %s records itself in Redis again", self.name)
            self._failing = False
            self._held = held


def _request_ids(requests) -> set[str]:
    """The ids of a set of Celery requests the event loop may change meanwhile (a WeakSet)."""
    for _ in range(10):
        try:
            return {r.id for r in tuple(requests)}
        except RuntimeError:  # changed size while being copied: copy again
            continue
    return set()


def _beat_step(beat: WorkerBeat):
    """A consumer bootstep that starts `beat` once the worker is first connected (the pool's processes
    are forked by then). It goes on through reconnections and until the worker has shut down."""
    from celery import bootsteps

    class Beat(bootsteps.StartStopStep):
        requires = ("celery.worker.consumer.connection:Connection",)

        def start(self, c):
            beat.start()

    return Beat


def _alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _age(pttl_ms) -> float | None:
    """Seconds since a record was written, from the milliseconds it has left to live; None when it has none."""
    if pttl_ms is None or pttl_ms < 0:
        return None
    return RECORD_KEEP_SECONDS - pttl_ms / 1000


# --- the bot's side ---------------------------------------------------------------------------------


class CeleryExecutor:
    """Training jobs as messages to Celery workers; see the module's docstring.

        >>> executor = CeleryExecutor(settings)
        >>> job_id = executor.submit(Path("state/work/request-7"))   # None while the broker is unreachable
        >>> executor.check(job_id, Path("state/work/request-7"))
        JobStatus(state='running', error=None, published=None, where='huggingtweets@gpu-2')
    """

    name = "celery"
    remote = True  # jobs go on while the bot is away

    def __init__(self, settings: Settings):
        self.settings = settings
        self.app = make_app(settings)
        self.slots = settings.celery.max_jobs_queued
        self.timeout = settings.bot.job_timeout_seconds
        self.lost_after = settings.celery.worker_lost_seconds
        self._submitted: set[str] = set()
        # When the bot last failed to reach Redis: the workers may have been cut off as well, and their
        # beats are not judged until they have had time to write again.
        self._cut_off_at = float("-inf")

    @property
    def _redis(self):
        return self.app.backend.client

    def running(self) -> int:
        return len(self._submitted)

    def submit(self, request_dir: Path) -> str | None:
        from uuid import uuid4

        ticket = Ticket.from_folder(request_dir).model_dump(mode="json")
        task_id = str(uuid4())
        try:
            handed_over = self._redis.exists(HANDOVERS_KEY + _request_key(request_dir))
            self._redis.set(SUBMITTED_KEY + task_id, str(time.time()), ex=KEEP_SECONDS)
            self.app.send_task(TASK_NAME, args=[ticket], task_id=task_id, queue=QUEUE,
                               priority=HANDED_OVER_PRIORITY if handed_over else PRIORITY,
                               soft_time_limit=self.timeout, time_limit=self.timeout + HARD_LIMIT_GRACE_SECONDS)
        except Exception as e:  # noqa: BLE001 - the broker is away: the job waits in the bot's queue
            if not _unreachable(e):
                raise
            log.warning("the job queue at %s cannot be reached (%s); trying again later",
                        shown_url(self.settings.celery.broker), type(e).__name__)
            return None
        self._submitted.add(task_id)
        return task_id

    def check(self, job_id: str, request_dir: Path):
        from bot.workers import JobStatus

        try:
            meta = self.app.backend.get_task_meta(job_id)
            state, result = meta["status"], meta.get("result")
            if state == "PENDING" and not self._redis.exists(SUBMITTED_KEY + job_id):
                self._submitted.discard(job_id)
                return JobStatus("lost")
            vanished = self._vanished(job_id) if state in UNFINISHED_STATES else None
            if vanished is not None:
                return self._hand_over(job_id, request_dir, *vanished)
        except Exception as e:  # noqa: BLE001 - the broker is away: ask again later
            if not _unreachable(e):
                raise
            self._cut_off_at = time.monotonic()
            return JobStatus("running")
        where = result.get("hostname") or result.get("worker") if isinstance(result, dict) else None
        if state in ("PENDING", "RECEIVED", "RETRY"):
            return JobStatus("running")
        if state == "STARTED":
            started = result.get("started_at") if isinstance(result, dict) else None
            limit = self.timeout + HARD_LIMIT_GRACE_SECONDS + self.settings.celery.visibility_timeout_seconds + 60
            if started and time.time() - started > limit:  # no worker has it any more, and none will
                self._submitted.discard(job_id)
                return JobStatus("lost")
            return JobStatus("running", where=where)
        self._submitted.discard(job_id)
        self._forget_handovers(request_dir)
        if state == "SUCCESS" and isinstance(result, dict) and "published" in result:
            return JobStatus("done", published=job.Published.model_validate(result["published"]), where=where)
        if state == "SUCCESS" and isinstance(result, dict) and "error" in result:
            record = job.JobError.model_validate(result["error"])
            return JobStatus("failed", job.JobFailed(record.message, record.transient, record.retry_after), where=where)
        if state == "SUCCESS" and isinstance(result, dict) and result.get("superseded"):
            return JobStatus("lost")  # a copy handed over earlier, which the store still named after a crash
        reason = f"{type(result).__name__}: {result}" if isinstance(result, BaseException) else f"{state}: {result}"
        return JobStatus("failed", job.JobFailed(clip(f"the job failed on a worker ({reason})"), transient=True),
                         where=where)

    def _forget_handovers(self, request_dir: Path) -> None:
        try:
            self._redis.delete(HANDOVERS_KEY + _request_key(request_dir))
        except Exception as e:  # noqa: BLE001 - the count expires on its own
            if not _unreachable(e):
                raise

    def _vanished(self, job_id: str) -> tuple[str, float] | None:
        """The worker that holds this job and how long it has been quiet, when that is longer than
        `[celery] worker_lost_seconds`; None while it beats, or while no worker has taken the job."""
        if time.monotonic() - self._cut_off_at < self.lost_after:
            return None  # the bot was cut off from Redis a moment ago: workers may only now be writing again
        worker, pttl = self._redis.pipeline(transaction=False).get(BEAT_KEY + job_id).pttl(BEAT_KEY + job_id).execute()
        age = _age(pttl)
        if worker is None or age is None or age <= self.lost_after:
            return None
        return worker.decode("utf-8", errors="replace"), age

    def _hand_over(self, job_id: str, request_dir: Path, worker: str, quiet: float):
        """The job's worker vanished: mark the job superseded (a copy of its message delivered later does
        nothing) and have the bot send it again, up to `MAX_DELIVERIES` times in a row for one request."""
        from bot.workers import JobStatus

        self._redis.set(SUPERSEDED_KEY + job_id, worker, ex=KEEP_SECONDS)
        self._submitted.discard(job_id)
        counter = HANDOVERS_KEY + _request_key(request_dir)
        times = self._redis.incr(counter)
        self._redis.expire(counter, KEEP_SECONDS)
        log.warning("job %s: its worker %s has not been heard from for %.0f s (killed, or its machine went away)",
                    job_id, worker, quiet)
        if times >= MAX_DELIVERIES:
            self._redis.delete(counter)  # the next attempt, if the retry policy allows one, starts afresh
            return JobStatus("failed", job.JobFailed(
                f"the workers that took this job vanished {times} times in a row (killed, their machines "
                "reclaimed, or out of memory?)", transient=True), where=worker)
        return JobStatus("lost", where=worker)

    def stop(self) -> None:
        """Jobs on workers go on while the bot is away; it picks them up again when it starts."""


def list_workers(settings: Settings) -> list[dict]:
    """The workers that recorded themselves in the last day (`WorkerBeat`), by name: each with its state
    ("alive"; "lost": quiet for longer than [celery] worker_lost_seconds; "stopped"), the seconds since its
    last heartbeat, its host, pid, GPU and the ids of the jobs it holds."""
    import redis

    url = settings.celery.broker
    client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=5)
    try:
        keys = sorted(client.scan_iter(match=WORKER_KEY + "*", count=500))
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.get(key)
            pipe.pttl(key)
        answers = pipe.execute()
    except (redis.exceptions.RedisError, OSError) as e:
        raise UserError(clip(f"cannot read the workers from the broker at {shown_url(url)} ({e}); check that "
                             "Redis runs there and that CELERY_BROKER_URL or [celery] broker_url names it",
                             secrets=broker_secrets(url))) from None
    finally:
        client.close()
    workers = []
    for raw, pttl in zip(answers[::2], answers[1::2]):
        age = _age(pttl)
        try:
            record = json.loads(raw) if raw is not None and age is not None else None
        except ValueError:
            record = None
        if not isinstance(record, dict) or not isinstance(record.get("name"), str):
            continue
        state = "stopped" if record.get("stopped") else "alive" if age <= settings.celery.worker_lost_seconds else "lost"
        workers.append({"name": record["name"], "state": state, "last_heartbeat_seconds": round(age, 1),
                        "host": record.get("host"), "pid": record.get("pid"), "gpu": record.get("gpu"),
                        "jobs": [j for j in record.get("jobs") or [] if isinstance(j, str)],
                        "started_at": record.get("started_at")})
    return workers


def _request_key(request_dir: Path) -> str:
    """The key of the request a folder holds (`bot.training.job.TrainJob.request_key`), else the folder's name."""
    try:
        spec = job.read_job(request_dir)
    except (OSError, UserError):
        return request_dir.name
    return spec.request_key or request_dir.name


def _unreachable(error: BaseException) -> bool:
    """Whether `error` says the broker cannot be reached now (a restart, a network cut)."""
    import kombu.exceptions
    import redis.exceptions

    return isinstance(error, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
                              kombu.exceptions.OperationalError, ConnectionError, TimeoutError, OSError))


__all__ = ["CeleryExecutor", "Ticket", "WorkerBeat", "default_worker_name", "list_workers", "make_app",
           "run_worker", "shown_url", "wait_for_broker"]
