"""Training jobs in a subprocess beside the bot, the default executor (`[train] executor = "local"`).

    >>> executor = LocalExecutor(work_dir="state/work", timeout_seconds=3600)
    >>> job_id = executor.submit(Path("state/work/request-7"))     # None while another job holds the GPU
    >>> executor.check(job_id, Path("state/work/request-7"))
    JobStatus(state='running', error=None)

`[train] executor = "celery"` sends each job to Celery workers on other machines (`bot.workers.celery_app`);
`[train] executor = "hf-jobs"` runs each on a rented GPU on Hugging Face Jobs (`bot.workers.hf_jobs`).
`[train] executor = "local"` (the default) runs each job as a subprocess of the bot (`python -m bot.training.job
REQUEST_DIR`, started through `bot.workers.lifeline`), one at a time. The job dies with the bot from its first
instruction on, even when the bot dies while the job is still starting (`bot.workers.lifeline`), and a lock file
that the job holds keeps a second one from starting while an orphan of a killed bot is still on its way out.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from bot.common.errors import clip
from bot.training import job
from bot.workers import Executor, JobStatus

__all__ = ["Executor", "JobStatus", "LocalExecutor"]  # the protocol and its answer, where they were first

LOCK_FILE = ".training.lock"


class LocalExecutor:
    """Training jobs as subprocesses of the bot, one at a time, each with a time limit."""

    name = "local"
    slots = 1
    remote = False

    def __init__(self, work_dir: str | os.PathLike, timeout_seconds: float):
        self.work_dir = Path(work_dir)
        self.timeout = timeout_seconds
        self._child: subprocess.Popen | None = None
        self._job_id: str | None = None
        self._started = 0.0
        self._lock_fd: int | None = None
        self._lifeline: int | None = None  # the write end of the job's lifeline: held while the job runs

    def running(self) -> int:
        return 1 if self._child is not None and self._child.poll() is None else 0

    def submit(self, request_dir: Path) -> str | None:
        if self._child is not None:
            return None
        if not self._take_lock():
            return None  # a job of an earlier run of the bot is still ending
        (request_dir / job.ERROR_FILE).unlink(missing_ok=True)
        log = open(request_dir / "train.log", "ab")  # noqa: SIM115 - the child writes to it; closed below
        lifeline, self._lifeline = os.pipe()  # neither end is inherited by anything but this child
        try:
            self._child = subprocess.Popen(
                [sys.executable, "-m", "bot.workers.lifeline", str(lifeline), "bot.training.job", str(request_dir)], stdout=log,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                pass_fds=(self._lock_fd, lifeline))
        except BaseException:
            self._release_lock()
            raise
        finally:
            log.close()
            os.close(lifeline)
        self._started = time.monotonic()
        self._job_id = f"local:{self._child.pid}:{int(time.time())}"
        return self._job_id

    def check(self, job_id: str, request_dir: Path) -> JobStatus:
        if job_id != self._job_id or self._child is None:
            return _finished_or_lost(request_dir)
        code = self._child.poll()
        if code is None:
            if time.monotonic() - self._started <= self.timeout:
                return JobStatus("running")
            self._end()
            return JobStatus("failed", job.JobFailed(f"training ran out of time ({self.timeout:.0f} s)", transient=True))
        self._child, self._job_id = None, None
        self._release_lock()
        if code == 0:
            return JobStatus("done")
        return JobStatus("failed", _failure(request_dir, code))

    def stop(self) -> None:
        if self._child is not None:
            self._end()

    def _end(self) -> None:
        """Stop the job's whole process group: politely, then not."""
        child, self._child, self._job_id = self._child, None, None
        try:
            os.killpg(child.pid, signal.SIGTERM)
            child.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(child.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            child.wait()
        self._release_lock()

    def _take_lock(self) -> bool:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.work_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._lock_fd = fd
        return True

    def _release_lock(self) -> None:
        """The job has ended: let go of its lock and its lifeline."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # the lock goes when the child's copy goes too (it has ended)
            self._lock_fd = None
        if self._lifeline is not None:
            os.close(self._lifeline)
            self._lifeline = None


def _finished_or_lost(request_dir: Path) -> JobStatus:
    """A job this executor did not start (the bot restarted): a whole model folder means it finished."""
    if (request_dir / job.MODEL_DIR / "run.json").exists() and not (request_dir / job.ERROR_FILE).exists():
        return JobStatus("done")
    return JobStatus("lost")


def _failure(request_dir: Path, code: int) -> job.JobFailed:
    """The job's own account of its failure, or what its exit says (a signal: killed, likely out of memory)."""
    record = job.read_error(request_dir)
    if record is not None:
        return job.JobFailed(record.message, record.transient, record.retry_after)
    if code < 0:
        name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
        return job.JobFailed(f"training was killed ({name}; out of memory?)", transient=True)
    return job.JobFailed(clip(f"training exited with status {code}: {_last_line(request_dir / 'train.log')}"),
                         transient=True)


def _last_line(path: Path) -> str:
    try:
        lines = [line for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1] if lines else ""
