"""A training job: a request folder in, a model folder out, on this machine or any other.

    python -m bot.training.job state/work/request-7          # what the bot runs for request 7 (through bot.workers.lifeline)

The request folder is the contract between the steps:

    request-7/
      job.json      what to train (`TrainJob`): the base model, the [train] settings, the repo's name
      data/         the exact posts, as the download step cleaned and split them (`bot.data.dataset.Dataset`)
      model/        written by the job: the Hub-ready model folder, with its run.json
      error.json    written by the job when it fails: what went wrong, and whether trying again may help
      published.json  written by the bot when a worker published the model itself (`Published`)

A job reads nothing else: no config file, no X cache, no state database, no credentials. So the folder can
travel to a worker, and the posts counted on the card are the posts trained on, whatever happened to the
X cache in between. `huggingtweets train` runs the same `train_job` on a dataset it has just built.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from bot.common.config import BotSettings, DataSettings, HubSettings, Settings, TrainSettings
from bot.data.dataset import Dataset
from bot.common.errors import HandleError, UsageError, UserError, clip, retry_policy
from bot.common.files import partial_folder, replace_folder, write_atomically
from bot.common.handles import handles_of

JOB_FILE, DATA_DIR, MODEL_DIR, ERROR_FILE = "job.json", "data", "model", "error.json"
PUBLISHED_FILE = "published.json"
DATA_FILES = ("train.jsonl", "validation.jsonl", "stats.json")  # what `bot.data.dataset.Dataset.save` writes
# A model on the Hub: "name" or "org/name" (https://huggingface.co/docs/hub/repositories).
HUB_ID_RE = re.compile(r"(?:[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/)?[A-Za-z0-9][A-Za-z0-9_.-]{0,95}")

log = logging.getLogger("huggingtweets.job")


class TrainJob(BaseModel):
    """Everything a training job needs besides the posts. Written as `job.json`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1] = 1
    repo_id: str  # organisation/name: the card's model id
    base_model: str  # a Hub id, a local folder or "tiny"
    train: TrainSettings
    bot_handle: str  # the card tells people to write to this account to opt out
    min_words: int  # the short-post rule the posts were cleaned with, for the card
    # Written into the Hub commit that publishes the model: a job delivered twice finds its own commit
    # and publishes once (`bot.publishing.hub.publish_folder(key=...)`). None for a model trained by hand.
    request_key: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings, name: str, base_model: str | None = None,
                      request_key: str | None = None) -> TrainJob:
        return cls(repo_id=f"{settings.hub.organization}/{name}", base_model=base_model or settings.train.base_model,
                   train=settings.train, bot_handle=settings.bot.handle, min_words=settings.data.min_words,
                   request_key=request_key)

    def settings(self) -> Settings:
        """The settings training reads, rebuilt from the job alone."""
        return Settings(train=self.train, hub=HubSettings(organization=self.repo_id.split("/")[0]),
                        bot=BotSettings(handle=self.bot_handle), data=DataSettings(min_words=self.min_words))


class JobError(BaseModel):
    """Why a job failed (`error.json`): the bot reads it to decide between a retry and a reply."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str
    message: str
    transient: bool
    retry_after: float | None = None


class Published(BaseModel):
    """A model a job published itself (on a worker): what the bot records and replies with."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    repo_id: str
    model_url: str
    commit_url: str
    commit_id: str
    best_sample: str | None = None
    validation_perplexity: float | None = None


def read_published(request_dir: str | os.PathLike) -> Published | None:
    """What a worker published for this request, when the bot recorded it."""
    try:
        return Published.model_validate_json((Path(request_dir) / PUBLISHED_FILE).read_bytes())
    except FileNotFoundError:
        return None


class Ticket(BaseModel):
    """A request folder's input, whole: what a job on another machine needs to train it.

    A Celery message carries one (`bot.workers.celery_app`); a job on Hugging Face Jobs reads one from a private
    dataset repo (`bot.workers.hf_jobs`). A ticket says what to train, never where or how to publish: the machine
    that runs it publishes under its own configured organisation and Hub backend (`run_ticket`), so a
    message forged on the queue cannot spend a worker's token on someone else's organisation.

        >>> ticket = Ticket.from_folder(Path("state/work/request-7"))
        >>> run_ticket(ticket, worker_settings)   # on the other machine: train, publish, return the `Published`
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[2] = 2
    job: str  # job.json, as the bot wrote it
    data: dict[str, str]  # data/'s files by name: train.jsonl, validation.jsonl, stats.json

    @classmethod
    def from_folder(cls, request_dir: Path) -> Ticket:
        data_dir = request_dir / DATA_DIR
        return cls(job=(request_dir / JOB_FILE).read_text(encoding="utf-8"),
                   data={p.name: p.read_text(encoding="utf-8") for p in sorted(data_dir.iterdir()) if p.is_file()})

    @classmethod
    def parse(cls, raw: object) -> Ticket:
        """A ticket from a message or a file (a dict, or JSON text/bytes); anything else, a ticket that names
        a place to publish included, is a `JobRefused` of one line."""
        try:
            if isinstance(raw, (str, bytes)):
                return cls.model_validate_json(raw)
            return cls.model_validate(raw)
        except ValidationError as e:
            if any(error["loc"][:1] == ("hub",) for error in e.errors()):
                raise JobRefused("the ticket names where to publish ([hub]); a worker publishes only under "
                                 "its own configured organisation") from None
            first = e.errors()[0]
            where = ".".join(map(str, first["loc"])) or "the ticket"
            raise JobRefused(f"not a job ticket of this version ({where}: {first['msg'].lower()})") from None

    def unpack(self, request_dir: Path) -> Path:
        """The request folder again, on the worker's disk."""
        (request_dir / DATA_DIR).mkdir(parents=True)
        for name, text in self.data.items():
            if Path(name).name != name or name.startswith(".") or name not in DATA_FILES:
                raise JobRefused(f"a job's data file may not be named {name!r}")
            (request_dir / DATA_DIR / name).write_text(text, encoding="utf-8")
        (request_dir / JOB_FILE).write_text(self.job, encoding="utf-8")
        return request_dir


class JobRefused(UserError):
    """A job this machine will not run: a malformed ticket, or one that would publish outside its own
    organisation. Permanent: the same ticket is refused every time."""


def authorize(spec: TrainJob, settings: Settings) -> None:
    """Raise `JobRefused` unless this machine may run `spec` under its own `settings`: the repo is in its
    own [hub] organisation and named as the bot names models, and the base model is a Hub id, "tiny", or
    the machine's own configured base (a path on the worker's disk is never taken from a message)."""
    from bot.publishing.hub import RepoNameError, check_repo_id

    org, _, name = spec.repo_id.partition("/")
    if org != settings.hub.organization:
        raise JobRefused(f"the job would publish {spec.repo_id!r}, outside this machine's organisation "
                         f"{settings.hub.organization!r}")
    try:
        check_repo_id(spec.repo_id)
        handles_of(name)
    except (RepoNameError, HandleError) as e:
        raise JobRefused(f"the job names a repo the bot would never make: {spec.repo_id!r} ({e})") from None
    base = spec.base_model
    if base not in ("tiny", settings.train.base_model) and (not HUB_ID_RE.fullmatch(base) or Path(base).exists()):
        raise JobRefused(f"the job's base model {base[:80]!r} is neither a Hub id nor this machine's own "
                         "[train] base_model")


class JobFailed(UserError):
    """A training job failed; `transient` says whether running it again may work."""

    def __init__(self, message: str, transient: bool, retry_after: float | None = None):
        super().__init__(message)
        self.transient = transient
        self.retry_after = retry_after


# --- the folder ---------------------------------------------------------------------------------


def prepare(request_dir: str | os.PathLike, dataset: Dataset, job: TrainJob) -> Path:
    """Write the job's input into `request_dir`: the dataset (whole, or not at all) and `job.json`."""
    request_dir = Path(request_dir)
    data = partial_folder(request_dir / DATA_DIR)
    try:
        dataset.save(data)
        replace_folder(data, request_dir / DATA_DIR)
    finally:
        shutil.rmtree(data, ignore_errors=True)
    write_atomically(request_dir / JOB_FILE, job.model_dump_json(indent=2) + "\n")
    return request_dir


def read_job(request_dir: str | os.PathLike) -> TrainJob:
    """The job `prepare` wrote into a request folder; a folder that is not one is a one-line error."""
    path = Path(request_dir) / JOB_FILE
    try:
        return TrainJob.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        raise UsageError(f"{request_dir}: not a request folder (no {JOB_FILE})") from None
    except ValidationError as e:
        first = e.errors()[0]
        raise UsageError(f"{path}: {'.'.join(map(str, first['loc'])) or 'the file'}: {first['msg'].lower()}") from None


def load(request_dir: str | os.PathLike) -> tuple[TrainJob, Dataset]:
    """The job and its dataset, as `prepare` wrote them; a folder that is not one is a one-line error."""
    return read_job(request_dir), Dataset.load(Path(request_dir) / DATA_DIR)


def read_error(request_dir: str | os.PathLike) -> JobError | None:
    """The error a failed job left, if it left one."""
    try:
        return JobError.model_validate_json((Path(request_dir) / ERROR_FILE).read_bytes())
    except (OSError, ValidationError):
        return None


# --- running it ---------------------------------------------------------------------------------


def train_job(dataset: Dataset, job: TrainJob, out_dir: str | os.PathLike, progress: bool = False):
    """Fine-tune `job.base_model` on `dataset` and write the model folder to `out_dir` (a `TrainResult`)."""
    from bot.training.train import train_model

    return train_model(dataset, job.settings(), Path(out_dir), base_model=job.base_model, progress=progress,
                       made_by_bot=job.request_key is not None)  # only the bot's jobs carry a request's key


def run(request_dir: str | os.PathLike, progress: bool = False):
    """Run the job of a request folder: `data/` and `job.json` in, `model/` out."""
    request_dir = Path(request_dir)
    (request_dir / ERROR_FILE).unlink(missing_ok=True)
    job, dataset = load(request_dir)
    model_dir = request_dir / MODEL_DIR
    if model_dir.exists() and not (model_dir / "run.json").exists():
        shutil.rmtree(model_dir)  # half a folder from a job that was killed
    return train_job(dataset, job, model_dir, progress=progress)


def error_record(error: BaseException) -> JobError:
    """An exception as the bot reads it back: one masked line and its retry policy."""
    policy = retry_policy(error)
    message = str(error) if isinstance(error, UserError) else f"{type(error).__name__}: {error}"
    return JobError(type=type(error).__name__, message=clip(message), transient=policy.transient,
                    retry_after=policy.retry_after)


def write_error(request_dir: str | os.PathLike, error: BaseException) -> JobError:
    record = error_record(error)
    write_atomically(Path(request_dir) / ERROR_FILE, record.model_dump_json() + "\n")
    return record


def run_ticket(ticket: Ticket, settings: Settings) -> Published:
    """Train and publish one ticket in a temporary folder, with this machine's own `settings` (its [hub]
    organisation and backend: see `authorize`); a commit already made for it is returned as is."""
    from bot.publishing.facts import RunFacts
    from bot.publishing.hub import publish_folder

    try:
        spec = TrainJob.model_validate_json(ticket.job)
    except ValidationError as e:
        first = e.errors()[0]
        raise JobRefused(f"the ticket's job.json is not one ({'.'.join(map(str, first['loc']))}: "
                         f"{first['msg'].lower()})") from None
    authorize(spec, settings)
    settings = Settings(hub=settings.hub)
    found = published_earlier(spec, settings)
    if found is not None:
        return found
    with tempfile.TemporaryDirectory(prefix="huggingtweets-job-") as tmp:
        request_dir = ticket.unpack(Path(tmp) / "request")
        run(request_dir)
        model_dir = request_dir / MODEL_DIR
        facts = RunFacts.load(model_dir)
        result = publish_folder(model_dir, settings, repo_id=spec.repo_id, key=spec.request_key)
    return _published(result, facts)


def published_earlier(spec: TrainJob, settings: Settings) -> Published | None:
    """The model a copy of this job already published for its request (the commit carrying its key), or None."""
    from bot.publishing.hub import find_published

    if not spec.request_key:
        return None
    found = find_published(spec.repo_id, spec.request_key, settings)
    if found is None:
        return None
    log.info("%s was already published for this request: %s", spec.repo_id, found.commit_url)
    return _published(found, _published_facts(found, settings))


def _published(result, facts) -> Published:
    return Published(repo_id=result.repo_id, model_url=result.model_url, commit_url=result.commit_url,
                     commit_id=result.commit_id, best_sample=facts.best_sample if facts else None,
                     validation_perplexity=facts.validation_perplexity if facts else None)


def _published_facts(found, settings: Settings):
    """The run facts of a commit made earlier, for the reply's sample; None when they cannot be read."""
    from bot.publishing.facts import FILE_NAME, RunFacts

    try:
        if settings.hub.backend == "local":
            org, name = found.repo_id.split("/")
            return RunFacts.load(Path(settings.hub.local_dir) / org / name)
        from huggingface_hub import hf_hub_download

        path = hf_hub_download(found.repo_id, FILE_NAME, revision=found.commit_id)
        return RunFacts.load(Path(path).parent)
    except Exception as e:  # noqa: BLE001 - the reply goes without a sample
        log.warning("could not read the run facts of %s: %s", found.commit_url, e)
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot.training.job", description=__doc__.split("\n\n")[0])
    parser.add_argument("request_dir", type=Path, help="the request folder (with job.json and data/)")
    args = parser.parse_args(argv)
    try:
        result = run(args.request_dir)
    except KeyboardInterrupt:
        return 130
    except BaseException as e:  # noqa: BLE001 - every failure is reported to the bot in error.json
        record = write_error(args.request_dir, e)
        print(f"training failed: {record.message}", file=sys.stderr)
        return 1
    print(json.dumps({"model": str(result.folder), "validation_perplexity": result.perplexity,
                      "seconds": result.timings.get("total")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
