"""Where training jobs run: a subprocess beside the bot, Celery workers over Redis, or Hugging Face Jobs.

In: a request folder and `[train] executor`. Out: the job run to its end, and its `JobStatus` when the bot
asks. `local` runs `python -m bot.training.job` as a child that dies with the bot (`lifeline`);
`celery_app` hands a ticket to workers that publish under their own authority and beat while they work;
`hf_jobs` rents a GPU per job. Every executor answers to the same protocol, declared here.

    >>> executor.submit(Path("state/work/request-7"))   # the job's id, or None when none can start now
    >>> executor.check(job_id, Path("state/work/request-7"))
    JobStatus(state='running', error=None, published=None, where='huggingtweets-gpu0@box')
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from bot.training.job import JobFailed, Published


@dataclass(frozen=True)
class JobStatus:
    """`running`; `done` (the model folder is there, or `published` says where the worker published it);
    `failed` (with the error); `lost` (the executor no longer knows the job, say after the bot restarted:
    submit it again). `where`: the machine it runs on, when the executor knows."""

    state: Literal["running", "done", "failed", "lost"]
    error: JobFailed | None = None
    published: Published | None = None
    where: str | None = None


class Executor(Protocol):
    name: str  # what `huggingtweets status` shows as where a job runs
    slots: int  # most jobs under way at once
    remote: bool  # jobs run on other machines and go on while the bot is away

    def submit(self, request_dir: Path) -> str | None:
        """Start the job of a request folder; its id, or None when no job can start now (try later)."""

    def check(self, job_id: str, request_dir: Path) -> JobStatus:
        """How the job is doing."""

    def running(self) -> int:
        """Jobs this executor has under way."""

    def stop(self) -> None:
        """The bot is stopping: end what runs here (a remote job may go on, and is picked up again)."""
