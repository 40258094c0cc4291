"""Waiting for a condition, with a bound, instead of sleeping a fixed time.

    >>> job = wait_until(lambda: queue.job_of(request), "a job for the request", timeout=60)
    >>> wait_until(lambda: reply_posted(), "the reply", process=bot_process)   # fails at once if the bot died
"""

from __future__ import annotations

import subprocess
import time


def wait_until(condition, what: str, timeout: float = 60, process: subprocess.Popen | None = None,
               every: float = 0.1):
    """Call `condition` until it returns something true, and return that. Fail, naming `what`, after
    `timeout` seconds, or as soon as `process` (if given) has ended, with the end of its stderr."""
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        if process is not None and process.poll() is not None:
            tail = process.stderr.read()[-3000:] if process.stderr else ""
            raise AssertionError(f"the process ended before {what}: {tail}")
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(every)
    return found
