"""Training on Celery workers: the bot on a small box, models trained on as many GPU machines as there are workers.

    huggingtweets worker                     # on each GPU machine (CELERY_BROKER_URL, HF_TOKEN in its env)
    [train] executor = "celery"              # in the bot's config: jobs go to the queue, not a subprocess

The bot hands a request to the queue as one message, a `Ticket`: its `job.json` and the files of its
`data/` folder (the cleaned posts: a few MB at most). A worker needs no disk shared with the bot, and reads
nothing from X: it unpacks the ticket into a temporary folder, trains with `python -m bot.job`'s own code,
publishes the model to the Hub itself, and returns what it published (`bot.job.Published`).

Who decides what, since anyone who can write to the broker can put a message on the queue:
- the worker publishes only under its own [hub] organisation and backend, with its own HF_TOKEN, read from
  its own config and environment; a ticket names a model, never where or how to publish (`bot.job.authorize`);
- the bot believes the Hub, not the result: before it replies, it finds the commit keyed for the request in
  the request's own repo itself, and links the URL it builds (`bot.scheduler.Bot.confirmed_on_hub`).
The bot's store stays the one owner of request state: the bot records the commit and replies.

Delivery is at least once, publishing exactly once:

- late acknowledgement (`task_acks_late`): a message is taken off the queue only when its job has ended;
  a worker whose training process dies (`task_reject_on_worker_lost`) hands the job back at once; a whole
  worker that vanishes has its job handed out again after `[celery] visibility_timeout_seconds`;
- one job at a time per worker, and no job reserved ahead (`prefetch 1`, concurrency 1): a job waits in the
  queue, where any free worker can take it, not behind a busy one;
- each job has a time limit (`[bot] job_timeout_seconds`);
- the Hub commit carries the request's key (`bot.hub.KEY_PREFIX`): a worker that gets a job whose commit
  exists returns that commit, and two copies racing to publish make one commit (`bot.hub.publish_folder`);
- a job killed over and over (say, out of memory each time) is not handed out forever: after
  `MAX_DELIVERIES` it comes back as failed, and the bot's own retry policy decides.
"""

from __future__ import annotations

import logging
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, unquote, urlsplit

from bot import job
from bot.config import Settings
from bot.errors import UsageError, clip, hide_in_logs, mask
from bot.job import Ticket

if TYPE_CHECKING:
    from bot.monitoring import MonitoringServer

log = logging.getLogger("huggingtweets.celery")

TASK_NAME = "huggingtweets.train_and_publish"
QUEUE = "huggingtweets.train"
# A job handed out this many times without finishing comes back failed instead of a fifth time.
MAX_DELIVERIES = 4
# The bot's record that a job was handed to the queue: a job still PENDING without it was lost with the
# broker's data (a Redis that restarted empty), and is handed over again.
SUBMITTED_KEY = "huggingtweets:submitted:"
DELIVERIES_KEY = "huggingtweets:deliveries:"
# Results, submission records and delivery counts are kept a week: longer than any stop of the bot.
KEEP_SECONDS = 7 * 86400
# Between the soft time limit (the job ends itself, with an error) and the hard one (its process is killed).
HARD_LIMIT_GRACE_SECONDS = 30


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
    """Run one worker in the foreground until SIGTERM: one job at a time (one GPU). Without `banner`,
    Celery prints nothing of its own on stdout (JSON logs: every line of the worker's is a log record)."""
    if settings.hub.backend == "hub":
        from huggingface_hub import get_token

        if not get_token():
            raise UsageError("HF_TOKEN is not set: a worker publishes the models it trains, and needs a Hub token "
                             "with write access to the organisation")
    app = make_app(settings)
    log.info("worker: jobs from %s", shown_url(settings.celery.broker))
    server = serve_monitoring(settings)
    try:
        app.worker_main([*([] if banner else ["--quiet"]), "worker", "--loglevel=INFO", "--concurrency=1",
                         "--prefetch-multiplier=1", "--pool=prefork", f"--queues={QUEUE}",
                         f"--hostname={name or 'huggingtweets@%h'}",
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

    from bot.monitoring import WorkerMonitor

    server = WorkerMonitor(settings, shown_url(settings.celery.broker)).serve()
    listening = server.server.socket

    def close_inherited_socket(**_) -> None:
        listening.close()

    signals.worker_process_init.connect(close_inherited_socket, weak=False)
    return server


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
        self._submitted: set[str] = set()

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
            self._redis.set(SUBMITTED_KEY + task_id, str(time.time()), ex=KEEP_SECONDS)
            self.app.send_task(TASK_NAME, args=[ticket], task_id=task_id, queue=QUEUE,
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
        from bot.executors import JobStatus

        try:
            meta = self.app.backend.get_task_meta(job_id)
            state, result = meta["status"], meta.get("result")
            if state == "PENDING" and not self._redis.exists(SUBMITTED_KEY + job_id):
                self._submitted.discard(job_id)
                return JobStatus("lost")
        except Exception as e:  # noqa: BLE001 - the broker is away: ask again later
            if not _unreachable(e):
                raise
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
        if state == "SUCCESS" and isinstance(result, dict) and "published" in result:
            return JobStatus("done", published=job.Published.model_validate(result["published"]), where=where)
        if state == "SUCCESS" and isinstance(result, dict) and "error" in result:
            record = job.JobError.model_validate(result["error"])
            return JobStatus("failed", job.JobFailed(record.message, record.transient, record.retry_after), where=where)
        reason = f"{type(result).__name__}: {result}" if isinstance(result, BaseException) else f"{state}: {result}"
        return JobStatus("failed", job.JobFailed(clip(f"the job failed on a worker ({reason})"), transient=True),
                         where=where)

    def stop(self) -> None:
        """Jobs on workers go on while the bot is away; it picks them up again when it starts."""


def _unreachable(error: BaseException) -> bool:
    """Whether `error` says the broker cannot be reached now (a restart, a network cut)."""
    import kombu.exceptions
    import redis.exceptions

    return isinstance(error, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
                              kombu.exceptions.OperationalError, ConnectionError, TimeoutError, OSError))


__all__ = ["CeleryExecutor", "Ticket", "make_app", "run_worker", "shown_url"]
