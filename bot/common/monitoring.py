"""Health and metrics on one small HTTP port: `/healthz` and Prometheus `/metrics`, for the bot and its workers.

    [monitoring]
    listen = "127.0.0.1:9464"

    $ curl -s 127.0.0.1:9464/healthz        # 200 "ok: ..." or 503 and one line saying what is wrong
    $ curl -s 127.0.0.1:9464/metrics        # huggingtweets_requests{network="x",state="done"} 41.0 ...
    $ huggingtweets health                  # exit 0 when healthy, 1 with the reason when not

This module serves and asks; what is measured is the bot's (`bot.requests.monitoring.BotMonitor`) and a
worker's (`bot.workers.monitoring.WorkerMonitor`). Every name is in docs/operating.md, "Metrics".
"""

from __future__ import annotations

import logging
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import (CollectorRegistry, GCCollector, Info, PlatformCollector, ProcessCollector,
                               disable_created_metrics, make_wsgi_app)

import bot
from bot.common.errors import UsageError, UserError, clip

log = logging.getLogger("huggingtweets.monitoring")

# No `*_created` series beside each counter and histogram: Prometheus's text format does not need them,
# and they double what an operator reads.
disable_created_metrics()

# How long a health check waits for the state database's write lock, or for the broker's answer.
PROBE_TIMEOUT_SECONDS = 2.0


@dataclass(frozen=True)
class Health:
    """What /healthz answers: 200 with `reason` "ok: ..." when healthy, else 503 with what is wrong."""

    healthy: bool
    reason: str  # one line


def registry() -> CollectorRegistry:
    """A registry of our own (not the library's global one), with the process's and Python's own metrics."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    Info("huggingtweets_build", "The version of huggingtweets running.", registry=registry).info(
        {"version": bot.__version__})
    return registry


# --- the HTTP side ---------------------------------------------------------------------------------------


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a scrape under way never holds up the process's exit


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args) -> None:  # a scrape every few seconds is not news for the log
        pass


class MonitoringServer:
    """/healthz and /metrics served from a thread of their own until `close()`."""

    def __init__(self, host: str, port: int, registry: CollectorRegistry, health: Callable[[], Health]):
        metrics = make_wsgi_app(registry)

        def app(environ, start_response):
            path = environ.get("PATH_INFO", "")
            if path == "/metrics":
                return metrics(environ, start_response)
            if path == "/healthz":
                try:
                    verdict = health()
                except Exception as e:  # noqa: BLE001 - a check that breaks says so, rather than dropping the line
                    verdict = Health(False, clip(f"the health check failed: {type(e).__name__}: {e}", 300))
                status = "200 OK" if verdict.healthy else "503 Service Unavailable"
                body = (verdict.reason + "\n").encode()
            else:
                status, body = "404 Not Found", b"huggingtweets: /healthz or /metrics\n"
            start_response(status, [("Content-Type", "text/plain; charset=utf-8"), ("Cache-Control", "no-store"),
                                    ("Content-Length", str(len(body)))])
            return [b"" if environ.get("REQUEST_METHOD") == "HEAD" else body]

        server_class = _Server
        if ":" in host:  # an IPv6 address
            server_class = type("_Server6", (_Server,), {"address_family": socket.AF_INET6})
        try:
            self.server = make_server(host, port, app, server_class=server_class, handler_class=_QuietHandler)
        except OSError as e:
            raise UsageError(f"[monitoring] listen = \"{_joined(host, port)}\": cannot listen there "
                             f"({e.strerror or e})") from None
        self.url = f"http://{_joined(host, port)}"
        self._thread = threading.Thread(target=self.server.serve_forever, name="monitoring", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)

    def fileno(self) -> int:
        return self.server.fileno()


def serve(listen: str, registry: CollectorRegistry, health: Callable[[], Health]) -> MonitoringServer | None:
    """Serve /healthz and /metrics at `listen` (HOST:PORT); None when `listen` is empty."""
    from bot.common.config import split_listen

    if not listen:
        return None
    try:
        host, port = split_listen(listen)
    except ValueError as e:
        raise UsageError(f"--listen: {e}") from None
    server = MonitoringServer(host, port, registry, health)
    log.info("monitoring: %s/healthz and %s/metrics", server.url, server.url)
    return server


def ask_health(listen: str, timeout: float = 10.0) -> Health:
    """What the /healthz at `listen` says; UserError when nothing answers there."""
    from bot.common.config import split_listen

    try:
        host, port = split_listen(listen)
    except ValueError as e:
        raise UsageError(f"--listen: {e}") from None
    url = f"http://{_joined(host, port)}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return Health(True, _first_line(answer.read()))
    except urllib.error.HTTPError as e:
        if e.code == 503:
            return Health(False, _first_line(e.read()))
        raise UserError(f"{url} answered HTTP {e.code}: is it huggingtweets that listens there?") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise UserError(f"nothing answers at {url} ({getattr(reason, 'strerror', None) or reason}): is "
                        "`huggingtweets run` (or `worker`) running with this [monitoring] listen?") from None


def _first_line(body: bytes) -> str:
    return clip(body.decode("utf-8", "replace").strip().splitlines()[0] if body.strip() else "(no reason given)")


def _joined(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


__all__ = ["Health", "MonitoringServer", "ask_health", "registry", "serve"]
