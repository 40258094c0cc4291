"""What the bot's loop reports, and what its /healthz and /metrics make of it and of the state database.

The bot is healthy while every network it listens on has had a successful poll within `[monitoring]
missed_polls` poll intervals and its state database can be written. Numbers that the state database holds
(requests by state, mentions, replies, spend, jobs under way) are read from it at each scrape, so they
survive restarts and cannot drift from what `huggingtweets status` shows; events that leave no row (polls,
retries, finished jobs and their times and losses) are counted as they happen, from the process's start.
"""

from __future__ import annotations

import logging
import math
import sqlite3
import threading
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from bot.common.config import Settings
from bot.common.errors import clip
from bot.common.monitoring import PROBE_TIMEOUT_SECONDS, Health, MonitoringServer, registry as new_registry, serve
from bot.requests.store import ACTIVE_STATES, TRANSITIONS, Request, Store, StoreError

if TYPE_CHECKING:
    from bot.workers import JobStatus

log = logging.getLogger("huggingtweets.monitoring")

# A finished job's time, from its hand-over to the executor to the bot seeing it done: the tiny model
# takes seconds, GPT-2 minutes on a GPU and an hour or more on a CPU.
TRAINING_SECONDS_BUCKETS = (10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400)
# Held-out loss (nats per token) of a finished model: fine-tuned GPT-2 lands between 2 and 4.
VALIDATION_LOSS_BUCKETS = (1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 6.0, 8.0)

class BotMonitor:
    """What the bot's loop reports as it goes, and what /healthz and /metrics make of it and of the store.

        >>> monitor = BotMonitor(settings, store, ["x", "bluesky"])
        >>> monitor.polled("x"); monitor.poll_failed("bluesky", "HTTP 502")
        >>> monitor.health()
        Health(healthy=True, reason='ok: x polled 0 s ago, bluesky polled 0 s ago; the state database is writable')
    """

    def __init__(self, settings: Settings, store: Store, networks: Iterable[str],
                 clock: Callable[[], float] = time.monotonic):
        self.settings, self.store, self.clock = settings, store, clock
        self.interval = settings.bot.poll_interval_seconds
        self.stale_after = settings.monitoring.missed_polls * self.interval
        started = clock()
        self._lock = threading.Lock()
        # Before the first poll, the time since the start counts: a bot that never polls is not healthy.
        self._last_poll = {network: started for network in networks}
        self._poll_error: dict[str, str] = {}
        self._store_error: tuple[float, str] | None = None

        self.registry = registry = new_registry()
        self.polls = Counter("huggingtweets_polls", "Reads of a network's mentions, by outcome (ok, failed).",
                             ["network", "outcome"], registry=registry)
        self.retries = Counter("huggingtweets_retries", "Failed attempts that will be tried again, by the step "
                               "that failed (downloading, training, publishing, ...; reply for a reply).",
                               ["step"], registry=registry)
        self.jobs_finished = Counter("huggingtweets_jobs_finished", "Training jobs that ended, by executor, worker "
                                     "and outcome (done, failed, lost).", ["executor", "worker", "outcome"],
                                     registry=registry)
        self.training_seconds = Histogram("huggingtweets_training_seconds", "Seconds from handing a job to the "
                                          "executor to seeing it done (a remote job's wait for a worker included).",
                                          ["executor"], buckets=TRAINING_SECONDS_BUCKETS, registry=registry)
        self.validation_loss = Histogram("huggingtweets_validation_loss", "Held-out loss (nats per token) of each "
                                         "model a job finished.", ["executor"], buckets=VALIDATION_LOSS_BUCKETS,
                                         registry=registry)
        # Every series known ahead exists from the start: a rate over a series not yet there is empty.
        for network in self._last_poll:
            for outcome in ("ok", "failed"):
                self.polls.labels(network, outcome)
        for step in (*ACTIVE_STATES, "reply"):
            self.retries.labels(step)
        registry.register(_BotCollector(self))

    # --- what the loop reports ---------------------------------------------------------------------

    def polled(self, network: str) -> None:
        with self._lock:
            self._last_poll[network] = self.clock()
            self._poll_error.pop(network, None)
        self.polls.labels(network, "ok").inc()

    def poll_failed(self, network: str, error: str) -> None:
        with self._lock:
            self._poll_error[network] = clip(error, 200)
        self.polls.labels(network, "failed").inc()

    def store_failed(self, error: str) -> None:
        """The loop could not read or write the state database (a full disk, say)."""
        with self._lock:
            self._store_error = (self.clock(), clip(error, 200))

    def retried(self, step: str) -> None:
        self.retries.labels(step).inc()

    def job_finished(self, request: Request, status: JobStatus, validation_perplexity: float | None = None) -> None:
        """A request's job ended (a `bot.workers.local.JobStatus` other than running); when done, with the
        validation perplexity of its model."""
        executor, worker = request.executor or "", worker_label(status.where or request.job_host)
        self.jobs_finished.labels(executor, worker, status.state).inc()
        if status.state != "done":
            return
        if request.job_started_at is not None:
            self.training_seconds.labels(executor).observe(max(0.0, self.store.clock() - request.job_started_at))
        if validation_perplexity and validation_perplexity > 0 and math.isfinite(validation_perplexity):
            self.validation_loss.labels(executor).observe(math.log(validation_perplexity))

    # --- what /healthz says ------------------------------------------------------------------------

    def seconds_since_poll(self) -> dict[str, float]:
        """Seconds since each network's last successful poll (since the start, before the first)."""
        now = self.clock()
        with self._lock:
            return {network: max(0.0, now - at) for network, at in self._last_poll.items()}

    def health(self) -> Health:
        problem = database_problem(self.store.path)
        if problem:
            return Health(False, problem)
        with self._lock:
            store_error, poll_errors = self._store_error, dict(self._poll_error)
        if store_error and self.clock() - store_error[0] <= self.stale_after:
            return Health(False, f"the state database failed the bot {self.clock() - store_error[0]:.0f} s ago: "
                                 f"{store_error[1]}")
        ages = self.seconds_since_poll()
        for network, age in ages.items():
            if age > self.stale_after:
                why = f"; last error: {poll_errors[network]}" if network in poll_errors else ""
                return Health(False, f"no successful poll of {network} for {age:.0f} s (one every "
                                     f"{self.interval:g} s){why}")
        polled = ", ".join(f"{network} polled {age:.0f} s ago" for network, age in ages.items())
        return Health(True, f"ok: {polled}; the state database is writable")

    def serve(self, listen: str | None = None) -> MonitoringServer | None:
        """Serve /healthz and /metrics on `listen` (default: `[monitoring] listen`); None when that is unset."""
        return serve(listen if listen is not None else self.settings.monitoring.listen, self.registry, self.health)


def worker_label(where: str | None) -> str:
    """Where a job runs, as a label with few values: a Celery worker's name ("huggingtweets@gpu-2"), a
    Hugging Face job's flavor ("t4-small", not its URL, which is new for every job), "" before it is known."""
    return (where or "").split(" ")[0]


def database_problem(path) -> str | None:
    """Why the state database at `path` cannot be written now, or None when it can.

    A connection of its own, as a restarted bot would open, takes the write lock and lets it go: a file
    gone, a folder or file made read-only, a read-only filesystem and a lock held too long all show.
    (The bot's own connection may go on writing through files it opened earlier.)
    """
    try:
        uri = Path(path).absolute().as_uri() + "?mode=rw"  # as a URI: never created, unlike a plain path
        db = sqlite3.connect(uri, uri=True, timeout=PROBE_TIMEOUT_SECONDS, isolation_level=None)
        try:
            db.execute("BEGIN IMMEDIATE")
            db.execute("ROLLBACK")
        finally:
            db.close()
    except sqlite3.Error as e:
        return clip(f"the state database {path} cannot be written: {e}", 300)
    return None


class _BotCollector:
    """The numbers the state database holds, read at each scrape; and the polls' ages and health."""

    def __init__(self, monitor: BotMonitor):
        self.monitor = monitor

    def collect(self) -> Iterable[Metric]:
        monitor, store = self.monitor, self.monitor.store
        since = GaugeMetricFamily("huggingtweets_seconds_since_successful_poll", "Seconds since the last "
                                  "successful read of a network's mentions (since the start, before the first).",
                                  labels=["network"])
        for network, age in monitor.seconds_since_poll().items():
            since.add_metric([network], age)
        yield since
        yield GaugeMetricFamily("huggingtweets_healthy", "1 while /healthz answers 200, else 0.",
                                value=1.0 if monitor.health().healthy else 0.0)
        budget = monitor.settings.bot.daily_budget_usd
        yield GaugeMetricFamily("huggingtweets_daily_budget_usd", "[bot] daily_budget_usd (0: no limit).", value=budget)
        try:
            counts = store.request_counts()
            queue = store.queue_length()
            spend = store.spend_totals()
            now = store.clock()
            today = store.spend_since(now - now % 86400)
            under_way = store.jobs_under_way()
        except StoreError as e:  # /healthz says so; the other metrics are still worth having
            log.warning("metrics: %s", e)
            return
        requests = GaugeMetricFamily("huggingtweets_requests", "Requests in each state, by the network they came "
                                     "from (the state database, as `huggingtweets status` shows).",
                                     labels=["network", "state"])
        mentions = CounterMetricFamily("huggingtweets_mentions", "Mentions read and stored, each once, by network.",
                                       labels=["network"])
        replies = CounterMetricFamily("huggingtweets_replies_sent", "Replies posted, by network.", labels=["network"])
        found = {(network, state): (n, sent) for network, state, n, sent in counts}
        networks = sorted(set(monitor.seconds_since_poll()) | {network for network, _ in found})
        for network in networks:
            for state in TRANSITIONS:
                requests.add_metric([network, state], found.get((network, state), (0, 0))[0])
            mentions.add_metric([network], sum(n for (net, _), (n, _) in found.items() if net == network))
            replies.add_metric([network], sum(sent or 0 for (net, _), (_, sent) in found.items() if net == network))
        yield from (requests, mentions, replies)
        yield GaugeMetricFamily("huggingtweets_queue_length", "Requests waiting or in progress (queued, "
                                "downloading, training, publishing).", value=queue)
        usd = CounterMetricFamily("huggingtweets_spend_usd", "US dollars spent, by network and item (post_read, "
                                  "user_read, post_created, post_created_with_link), priced with [x.prices].",
                                  labels=["network", "item"])
        for (network, item), total in sorted(spend.items()):
            usd.add_metric([network, item], round(total, 6))
        yield usd
        yield GaugeMetricFamily("huggingtweets_spend_today_usd", "US dollars spent so far this UTC day (what the "
                                "daily budget is checked against).", value=today)
        running = GaugeMetricFamily("huggingtweets_jobs_running", "Training jobs handed to an executor and not "
                                    "finished, by executor and worker (a Celery worker's name, a Hugging Face Jobs flavor; "
                                    "\"\" until one has taken it).",
                                    labels=["executor", "worker"])
        for (executor, worker), n in sorted(Tally((r.executor or "", worker_label(r.job_host)) for r in under_way).items()):
            running.add_metric([executor, worker], n)
        yield running
