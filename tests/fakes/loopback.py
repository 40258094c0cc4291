"""The life cycle the loopback servers share: an HTTP server of ours on 127.0.0.1, on a port the system
picks, served from a daemon thread.

    >>> class FakeThing(LoopbackServer):
    ...     thread_name = "fake-thing"
    ...     def handler(self):
    ...         return _Handler              # a BaseHTTPRequestHandler; `self.fake` is the FakeThing
    >>> with FakeThing() as thing:
    ...     requests.get(thing.base_url + "/ping")
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class LoopbackServer:
    thread_name = "loopback"
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    def handler(self) -> type[BaseHTTPRequestHandler]:
        """The request handler class; each request's handler reaches this server object as `self.fake`."""
        raise NotImplementedError

    def start(self):
        handler = type("Handler", (self.handler(),), {"fake": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=self.thread_name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        assert self._server is not None, "start the server first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"


class LoopbackHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 with keep-alive (as the clients expect), no access log, and each method to `respond`."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def respond(self, method: str) -> None:
        raise NotImplementedError

    def do_GET(self) -> None:
        self.respond("GET")

    def do_POST(self) -> None:
        self.respond("POST")

    def do_DELETE(self) -> None:
        self.respond("DELETE")
