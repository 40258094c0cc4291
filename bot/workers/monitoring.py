"""A Celery worker's health (its broker answers) and metrics (the jobs it took, the one it runs now), read in
the worker's main process, where Celery keeps count of the jobs it hands to its pool."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from bot.common.config import Settings
from bot.common.errors import clip
from bot.common.monitoring import PROBE_TIMEOUT_SECONDS, Health, MonitoringServer, registry as new_registry, serve


class WorkerMonitor:
    """A Celery worker's health (its broker answers) and metrics (jobs it took, the one it runs now).

    Read in the worker's main process, where Celery keeps count of the jobs it hands to its pool.
    """

    def __init__(self, settings: Settings, shown_broker: str, task_name: str):
        import redis

        self.settings, self.shown_broker, self.task_name = settings, shown_broker, task_name  # the jobs' task
        self.client = redis.Redis.from_url(settings.celery.broker, socket_connect_timeout=PROBE_TIMEOUT_SECONDS,
                                           socket_timeout=PROBE_TIMEOUT_SECONDS)
        self.registry = new_registry()
        self.registry.register(_WorkerCollector(self))

    def health(self) -> Health:
        try:
            self.client.ping()
        except Exception as e:  # noqa: BLE001 - whatever stops the answer, the broker is not usable now
            return Health(False, f"the broker {self.shown_broker} cannot be reached: "
                                 f"{clip(f'{type(e).__name__}: {e}', 200)}")
        return Health(True, f"ok: the broker {self.shown_broker} answers")

    def serve(self, listen: str | None = None) -> MonitoringServer | None:
        return serve(listen if listen is not None else self.settings.monitoring.listen, self.registry, self.health)


class _WorkerCollector:
    def __init__(self, monitor: WorkerMonitor):
        self.monitor = monitor

    def collect(self) -> Iterable[Metric]:
        from celery.worker import state

        task = self.monitor.task_name
        up = self.monitor.health().healthy
        yield GaugeMetricFamily("huggingtweets_broker_up", "1 while the broker answers, else 0.", value=float(up))
        yield GaugeMetricFamily("huggingtweets_healthy", "1 while /healthz answers 200, else 0.", value=float(up))
        yield GaugeMetricFamily("huggingtweets_worker_jobs_running", "Training jobs this worker runs now (0 or 1).",
                                value=sum(1 for r in list(state.active_requests) if r.name == task))
        yield CounterMetricFamily("huggingtweets_worker_jobs_started", "Training jobs this worker has started since "
                                  "it started (a job handed out again counts again).",
                                  value=state.total_count.get(task, 0))
