"""What each log line is about, and log lines as JSON for an operator's log search.

    >>> with about(request=7, state="downloading", network="x"):
    ...     log.info("request 7: downloading -> training")   # the record carries request, state, network
    >>> handler.addFilter(AboutFilter()); handler.setFormatter(JsonFormatter())

`about` holds the request (its id, state and network) a step of the bot works on, for the thread it runs
in; `AboutFilter` puts those onto every record that passes a handler, unless the record says otherwise
(`log.info(..., extra={"state": "training"})`: the line of a transition names the state it enters).
`JsonFormatter` writes one object per line, secrets masked in every field:

    {"time": "2026-11-23T08:15:02.114Z", "level": "INFO", "logger": "huggingtweets.store",
     "message": "request 7: downloading -> training (412 posts kept)", "request": 7, "state": "training",
     "network": "x"}
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from bot.common.errors import inert

# The fields a record may carry about its request, in the order a JSON line shows them.
ABOUT_FIELDS = ("request", "state", "network")

_about: ContextVar[dict[str, object]] = ContextVar("huggingtweets_log_about", default={})


@contextmanager
def about(**fields: object) -> Iterator[None]:
    """Records logged in this block (in this thread) are about these fields, added to any around it."""
    token = _about.set({**_about.get(), **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _about.reset(token)


def about_each(requests: Iterable) -> Iterator:
    """Each request in turn, with the records logged while the loop's body works on it about that request.

        >>> for r in about_each(store.jobs_under_way()):
        ...     log.info("job %s runs on %s", r.job_id, host)      # request, state, network: r's
    """
    for r in requests:
        with about(request=r.id, state=r.state, network=r.source):
            yield r


class AboutFilter(logging.Filter):
    """Adds the fields of the enclosing `about` block to each record that does not set them itself.
    On a handler, so that records of every logger (the libraries' too) get them."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _about.get().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line, every field made inert (`bot.common.errors.inert`): no
    secret, and no control character that JSON would leave raw (C1, bidirectional controls)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": inert(record.getMessage()),
        }
        for key in ABOUT_FIELDS:
            value = getattr(record, key, None)
            if value is not None:
                entry[key] = value if isinstance(value, (int, float)) else inert(value)
        if record.exc_info:
            entry["exception"] = inert(self.formatException(record.exc_info))
        elif record.exc_text:
            entry["exception"] = inert(record.exc_text)
        # Made inert field by field rather than as a whole line: JSON escapes would hide a secret from `mask`.
        return json.dumps(entry, ensure_ascii=False)


__all__ = ["ABOUT_FIELDS", "AboutFilter", "JsonFormatter", "about", "about_each"]
