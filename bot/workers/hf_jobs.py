"""Training on Hugging Face Jobs: a rented GPU for each training job, the bot on a small box with none.

    [train] executor = "hf-jobs"      # in the bot's config; [hf_jobs] flavor, image, timeout_seconds, ...

    # what each job runs in its container (the bot writes this command; see `job_command`):
    python -m bot.workers.hf_jobs run --dataset huggingtweets/huggingtweets-jobs --revision 3f2a... \\
        --path requests/7-x-mention-1890/ticket.json --organization huggingtweets

How a job travels, and why:

- **The input goes through a private dataset repo.** `submit` packs the request folder's input into one
  `bot.training.job.Ticket` (`job.json` and the cleaned posts of `data/`: a few MB at most)
  and commits it as `requests/<request>/ticket.json` to `[hf_jobs] dataset` (created private when missing).
  A job container shares no disk with the bot and must not read X a second time (billed per post, and the
  card counts the posts the bot cleaned); the Hub is the one store both sides already reach with the same
  `HF_TOKEN`. The job reads the ticket at the commit the bot made, so what it trains on cannot change.
- **Then `run_job`**: the `[hf_jobs] image` with `pip install [hf_jobs] package` (huggingtweets at the bot's
  own version by default) and `python -m bot.workers.hf_jobs run ...`, on `[hf_jobs] flavor`, with the service's own
  time limit (`timeout_seconds`). `HF_TOKEN` goes in `secrets=` (the service hands it to the container as an
  environment variable and never shows it), never in the command or `env=`. Each job carries the label
  `huggingtweets-request=<request>`.
- **The job publishes** (`bot.training.job.run_ticket`): it trains, then makes the one Hub commit that carries the
  request's key (`bot.publishing.hub.KEY_PREFIX`), or finds the commit an earlier copy made. Where it may publish comes
  from its command (`--organization`, written by the bot), never from the ticket. It exits non-zero on
  failure, its last line the error and its retry policy (`ERROR_MARKER`).
- **The bot asks, now and then** (`inspect_job`, at most every `[hf_jobs] poll_seconds` a job): running;
  completed (the bot reads the keyed commit and its run facts from the model repo, records them and
  replies); failed (the tail of the job's log, secrets masked, becomes the error `huggingtweets status`
  shows, and the request is retried or answered as the job's own error says).
- **A job that ends without completing is submitted again, with the retry policy**: one that failed
  without saying why (its machine went away, out of memory), timed out, was cancelled or deleted by
  someone else, or is gone from the service (404) counts one attempt and is submitted again after the
  back-off, up to `[bot] max_attempts`; then the requester is told it failed. A cancel from outside is
  taken as "this machine, not this request": `max_attempts` bounds what it costs (docs/recovery.md).
  Never two jobs of one request at once: a job the bot gave up on (`_overdue`) counts as ended only once
  its cancel went through, and a submission takes up a job of the request still under way instead of
  starting another (`_unfinished_job_for`).
- **A restart submits nothing twice.** The store keeps each job's id (with its namespace); the bot asks the
  service about it again after a restart. A job submitted just before a crash, whose id never reached the
  store, is found by its label and taken up.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shlex
import sys
import time
from collections import deque
from datetime import datetime, timezone
from pathlib import Path

from bot.training import job
from bot.common.config import Settings
from bot.common.errors import UsageError, UserError, clip, inert
from bot.workers import JobStatus

log = logging.getLogger("huggingtweets.hf_jobs")

# The label each job carries: which request it trains for (a request folder's name in the dataset repo).
REQUEST_LABEL = "huggingtweets-request"
TICKET_FILE = "ticket.json"
# The job's last line when it fails: its `bot.training.job.JobError`, for the bot to read the retry policy from.
ERROR_MARKER = "huggingtweets-job-error: "
# After the service's own time limit, how long the bot waits for the service to end a job itself before it
# cancels the job (the service's clock and the bot's differ, and ending a container takes a moment).
CANCEL_GRACE_SECONDS = 120.0
# Characters of a failure's one line (300) kept for what happened; the log's last lines get the rest.
DETAIL_CHARS = 150
# Stages of `huggingface_hub.JobStage`: still going, and over.
UNDER_WAY_STAGES = ("SCHEDULING", "RUNNING")


def request_folder(key: str) -> str:
    """The folder name of a request in the dataset repo, and its job label: the key's letters and digits.

        >>> request_folder("7 (x mention 1890)")
        '7-x-mention-1890'
    """
    name = re.sub(r"[^A-Za-z0-9]+", "-", key).strip("-")[:80]
    if not name:
        raise UsageError(f"a request key gives no folder name: {key!r}")
    return name


def job_command(package: str, dataset: str, revision: str, path: str, organization: str) -> list[str]:
    """The container's command: install huggingtweets into the image, then run the job (`main`)."""
    run = ["python", "-m", "bot.workers.hf_jobs", "run", "--dataset", dataset, "--revision", revision, "--path", path,
           "--organization", organization]
    install = ["pip", "install", "--quiet", "--no-cache-dir", "--disable-pip-version-check", package]
    return ["sh", "-c", f"{shlex.join(install)} && exec {shlex.join(run)}"]


def default_package() -> str:
    """huggingtweets at the bot's own version: the job then reads the job.json this bot writes."""
    from bot import __version__

    return f"huggingtweets=={__version__}"


def log_tail_message(detail: str, lines: list[str], limit: int = 300) -> str:
    """One line for the store and `status`: what happened, then as many of the log's last lines as fit.

        >>> log_tail_message("exit code 1", ["loading", "training", "CUDA out of memory"], limit=50)
        'exit code 1; log: … training | CUDA out of memory'
    """
    lines = [" ".join(line.split()) for line in lines if line.strip()]
    if not lines:
        return detail
    head = f"{detail}; log: "
    room = limit - len(head) - len("… ")
    kept = [lines[-1] if len(lines[-1]) <= room else "…" + lines[-1][-(room - 1):]]
    used = len(kept[0])
    for line in reversed(lines[:-1]):
        if used + len(" | ") + len(line) > room:
            break
        kept.append(line)
        used += len(" | ") + len(line)
    shown = " | ".join(reversed(kept))
    return head + ("… " if len(kept) < len(lines) else "") + shown


def error_in_log(lines: list[str]) -> job.JobError | None:
    """The error a failed job wrote as its last marked line, if it wrote one."""
    for line in reversed(lines):
        if line.startswith(ERROR_MARKER):
            try:
                return job.JobError.model_validate_json(line[len(ERROR_MARKER):])
            except ValueError:
                return None
    return None


# --- the bot's side ---------------------------------------------------------------------------------


class HfJobsExecutor:
    """Training jobs on Hugging Face Jobs; see the module's docstring.

        >>> executor = HfJobsExecutor(settings)
        >>> job_id = executor.submit(Path("state/work/request-7"))  # 'alice/68780d00...'; None while the Hub is away
        >>> executor.check(job_id, Path("state/work/request-7"))
        JobStatus(state='running', error=None, published=None, where='t4-small https://huggingface.co/jobs/alice/68780d00...')
    """

    name = "hf-jobs"
    remote = True  # jobs go on while the bot is away

    def __init__(self, settings: Settings):
        from bot.publishing.hub import HubRepos

        self.settings = settings
        self.options = settings.hf_jobs
        self.slots = self.options.max_jobs
        self.hub = HubRepos(settings.hub)
        self.api = self.hub.api
        dataset = self.options.dataset
        self.dataset_repo = dataset if "/" in dataset else f"{settings.hub.organization}/{dataset}"
        self._namespace: str | None = self.options.namespace or None
        self._under_way: set[str] = set()
        self._asked: dict[str, float] = {}  # job id -> when the service was last asked about it

    def running(self) -> int:
        return len(self._under_way)

    def stop(self) -> None:
        """Jobs on Hugging Face go on while the bot is away; it asks about them again when it starts."""

    # -- submit --

    def submit(self, request_dir: Path) -> str | None:
        from bot.publishing.hub import HubUnavailableError

        spec, _ = job.load(request_dir)
        folder = request_folder(spec.request_key or request_dir.name)
        token = self._token()
        try:
            self.hub.check_reachable()
            with self.hub.translate_errors(self.dataset_repo, writing=True):
                namespace = self.namespace()
                adopted = self._unfinished_job_for(namespace, folder)
                if adopted is not None:
                    log.info("%s: a job submitted before a restart is taken up again: %s", folder, adopted)
                    job_id = adopted
                else:
                    job_id = self._start(request_dir, spec, folder, namespace, token)
        except HubUnavailableError as e:  # the job waits in the bot's own queue
            log.warning("cannot submit the job of %s now (%s); trying again later", folder, e)
            return None
        self._under_way.add(job_id)
        return job_id

    def _start(self, request_dir: Path, spec: job.TrainJob, folder: str, namespace: str, token: str) -> str:
        from huggingface_hub import CommitOperationAdd

        ticket = job.Ticket.from_folder(request_dir)
        path = f"requests/{folder}/{TICKET_FILE}"
        repo = self.dataset_repo
        self.hub.retrying("create the jobs dataset", lambda: self.api.create_repo(
            repo, repo_type="dataset", private=True, exist_ok=True))
        commit = self.hub.retrying("upload the job's input", lambda: self.api.create_commit(
            repo, [CommitOperationAdd(path_in_repo=path, path_or_fileobj=ticket.model_dump_json().encode())],
            repo_type="dataset", commit_message=f"Input of the job for {spec.repo_id} ({folder})"))
        env = {"PYTHONUNBUFFERED": "1"}
        if os.environ.get("HF_ENDPOINT"):  # a bot on another Hub: the job reads and publishes there too
            env["HF_ENDPOINT"] = self.api.endpoint
        # Not retried: a submission whose answer was lost may have started a job; the next try finds it
        # by its label instead of starting a second.
        info = self.hub.retrying("start the job", lambda: self.api.run_job(
            image=self.options.image,
            command=job_command(self.options.package or default_package(), repo, commit.oid, path,
                                self.settings.hub.organization),
            env=env, secrets={"HF_TOKEN": token}, flavor=self.options.flavor,
            timeout=int(self.options.timeout_seconds), labels={REQUEST_LABEL: folder},
            name=f"huggingtweets-{folder}"[:60], namespace=namespace), tries=1)
        log.info("%s: job %s submitted (%s, %s)", folder, info.id, self.options.flavor, info.url)
        return f"{namespace}/{info.id}"

    def _unfinished_job_for(self, namespace: str, folder: str) -> str | None:
        """A job for this request that is under way or has completed (its model is published): one started
        just before a crash, whose id never reached the store. A failed one is not taken up again."""
        found = self.hub.retrying("list the jobs", lambda: [
            info.id for info in self.api.list_jobs(namespace=namespace, labels={REQUEST_LABEL: folder},
                                                   status=[*UNDER_WAY_STAGES, "COMPLETED"])])
        return f"{namespace}/{found[-1]}" if found else None

    def namespace(self) -> str:
        """Where jobs run: `[hf_jobs] namespace`, or the token's own user (asked once)."""
        if self._namespace is None:
            self._namespace = self.hub.retrying("read the token's user", lambda: self.api.whoami()["name"])
        return self._namespace

    def _token(self) -> str:
        from huggingface_hub import get_token

        self.hub.require_token()
        return get_token()

    # -- check --

    def check(self, job_id: str, request_dir: Path) -> JobStatus:
        from huggingface_hub.errors import HfHubHTTPError

        from bot.publishing.hub import http_status, transient_reason

        namespace, _, service_id = job_id.rpartition("/")
        asked = self._asked.get(job_id)
        if asked is not None and time.monotonic() - asked < self.options.poll_seconds:
            self._under_way.add(job_id)
            return JobStatus("running")
        self._asked[job_id] = time.monotonic()
        try:
            info = self.api.inspect_job(job_id=service_id, namespace=namespace or self.namespace())
        except Exception as e:  # noqa: BLE001 - sorted below: gone, away for now, or a refusal
            if isinstance(e, HfHubHTTPError) and http_status(e) == 404:
                self._forget(job_id)
                return JobStatus("failed", job.JobFailed(
                    f"the job {service_id} is no longer known to Hugging Face Jobs (deleted?)", transient=True))
            if transient_reason(e) is not None:
                return JobStatus("running")  # the Hub is away: ask again later
            with self.hub.translate_errors(f"{namespace}/jobs", writing=False):
                raise  # a refused token: one line that says so
        where = f"{info.flavor} {info.url}"
        stage = str(getattr(info.status.stage, "value", info.status.stage))
        if stage in UNDER_WAY_STAGES:
            self._under_way.add(job_id)
            overdue = self._overdue(info, stage)
            if overdue is None:
                return JobStatus("running", where=where)
            if not self._cancel(namespace, service_id):
                return JobStatus("running", where=where)  # ended only once it is: never two jobs of one request
            self._forget(job_id)
            return JobStatus("failed", job.JobFailed(overdue, transient=True), where=where)
        if stage == "COMPLETED":
            spec, _ = job.load(request_dir)
            try:
                published = job.published_earlier(spec, self.settings)
            except UserError as e:
                if not e.transient:
                    raise
                return JobStatus("running", where=where)  # the Hub is away: read the commit later
            self._forget(job_id)
            if published is not None:
                return JobStatus("done", published=published, where=where)
            return self._failed(info, namespace, request_dir, "the job ended without publishing the model",
                                transient=True)
        self._forget(job_id)
        if stage in ("CANCELED", "DELETED"):
            what = "cancelled" if stage == "CANCELED" else "deleted"
            return self._failed(info, namespace, request_dir,
                                f"the job {info.id} was {what} on Hugging Face Jobs, not by the bot", transient=True)
        if self._timed_out(info):
            return self._failed(info, namespace, request_dir,
                                f"the job ran out of time on Hugging Face Jobs ([hf_jobs] timeout_seconds = "
                                f"{self.options.timeout_seconds:.0f})", transient=True)
        reason = info.status.message or "it failed"
        return self._failed(info, namespace, request_dir, f"the job failed on Hugging Face Jobs ({reason})",
                            transient=True)

    def _overdue(self, info, stage: str) -> str | None:
        """Why a job under way is past the bot's own limits, or None."""
        if info.created_at is None:
            return None
        age = (datetime.now(timezone.utc) - info.created_at).total_seconds()
        start_limit = self.options.start_timeout_seconds
        if stage == "SCHEDULING" and age > start_limit:
            return (f"no {info.flavor or self.options.flavor} machine was free for {start_limit:.0f} s "
                    f"([hf_jobs] start_timeout_seconds); the job was cancelled")
        if age > start_limit + self.options.timeout_seconds + CANCEL_GRACE_SECONDS:
            return (f"the job ran past its time limit ([hf_jobs] timeout_seconds = "
                    f"{self.options.timeout_seconds:.0f}) and was cancelled")
        return None

    def _timed_out(self, info) -> bool:
        message = (info.status.message or "").lower()
        running = info.durations.running_secs if info.durations else None
        return "timeout" in message or "timed out" in message or (
            running is not None and running >= self.options.timeout_seconds)

    def _failed(self, info, namespace: str, request_dir: Path, detail: str, transient: bool) -> JobStatus:
        lines = self._log_tail(info.id, namespace)
        if lines:
            (request_dir / "job.log").write_text("\n".join(lines) + "\n", encoding="utf-8")
        record = error_in_log(lines)
        if record is not None:  # the job's own account: its message and its retry policy
            detail, transient = f"the job failed on Hugging Face Jobs: {record.message}", record.transient
            lines = [line for line in lines if not line.startswith(ERROR_MARKER) and record.message not in line]
        # Half the line at most for what happened: the rest shows the log's last lines.
        message = log_tail_message(clip(self._masked(detail), DETAIL_CHARS), lines)
        return JobStatus("failed", job.JobFailed(message, transient=transient,
                                                 retry_after=record.retry_after if record else None),
                         where=f"{info.flavor} {info.url}")

    def _log_tail(self, service_id: str, namespace: str) -> list[str]:
        """The job's last lines, made inert as one text (`bot.common.errors.inert`: terminal controls dropped,
        secrets masked, a token broken over two lines caught); a line saying why when the log cannot be read.
        Two lines more than are kept are read and masked with them, so a token cut at the window's edge is
        still seen whole."""
        window: deque[str] = deque(maxlen=self.options.log_tail_lines + 2)
        failure = None
        try:
            for line in self.api.fetch_job_logs(job_id=service_id, namespace=namespace):
                window.append(line.rstrip("\n"))
        except Exception as e:  # noqa: BLE001 - the failure is reported without its log
            failure = f"(the job's log could not be read: {type(e).__name__})"
        lines = self._masked("\n".join(window)).split("\n")[-self.options.log_tail_lines:] if window else []
        return [*lines[-(self.options.log_tail_lines - 1):], failure] if failure else lines

    def _masked(self, text: str) -> str:
        """`text` made inert: no terminal controls, none of the bot's secrets (the Hub token too, wherever
        it came from)."""
        return inert(text, [self._known_token()])

    @staticmethod
    def _known_token() -> str:
        from huggingface_hub import get_token

        return get_token() or ""

    def _cancel(self, namespace: str, service_id: str) -> bool:
        """Whether the job was cancelled (or had ended already); when not, the next check tries again."""
        from huggingface_hub.errors import HfHubHTTPError

        from bot.publishing.hub import http_status

        try:
            self.api.cancel_job(job_id=service_id, namespace=namespace)
        except Exception as e:  # noqa: BLE001 - asked again at the next check
            if isinstance(e, HfHubHTTPError) and http_status(e) == 404:
                return True  # gone already
            log.warning("could not cancel the job %s (trying again): %s", service_id, clip(str(e)))
            return False
        return True

    def _forget(self, job_id: str) -> None:
        self._under_way.discard(job_id)
        self._asked.pop(job_id, None)


# --- the job's side, in the container ----------------------------------------------------------------


def run_in_container(dataset: str, revision: str, path: str, organization: str) -> int:
    """Read the ticket the bot committed, train, publish under `organization` on the Hub; on failure, the
    error as the last line."""
    from bot.common.config import HubSettings

    try:
        settings = Settings(hub=HubSettings(organization=organization))
        print(f"reading {path} of {dataset} at {revision[:12]}", flush=True)
        ticket = read_ticket(dataset, revision, path)
        spec = job.TrainJob.model_validate_json(ticket.job)
        print(f"training {spec.repo_id} on {spec.base_model}", flush=True)
        published = job.run_ticket(ticket, settings)
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # noqa: BLE001 - every failure goes back to the bot with its retry policy
        record = job.error_record(e)
        print(f"training failed: {record.message}", flush=True)
        print(ERROR_MARKER + record.model_dump_json(), flush=True)
        return 1
    print(f"published {published.model_url} ({published.commit_url})", flush=True)
    return 0


def read_ticket(dataset: str, revision: str, path: str) -> job.Ticket:
    """The ticket the bot committed; a Hub that refuses it is one line with the HTTP status and its policy."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    from bot.publishing.hub import HubError, server_message, http_status, transient_reason

    try:
        file = hf_hub_download(dataset, path, repo_type="dataset", revision=revision)
    except LocalEntryNotFoundError as e:  # the library's word for "the Hub answered with an error"
        cause = e.__cause__ or e.__context__ or e
        error = HubError(f"the job cannot read its ticket {path} of {dataset} (HTTP {http_status(cause) or '-'}: "
                         f"{server_message(cause)})")
        error.transient = transient_reason(cause) is not None or http_status(cause) is None
        raise error from None
    return job.Ticket.parse(Path(file).read_bytes())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot.workers.hf_jobs", description="Run one training job on "
                                     "Hugging Face Jobs (the bot writes this command; HF_TOKEN comes as a secret).")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="read a request's ticket from the dataset repo, train, publish")
    run.add_argument("--dataset", required=True, help="the dataset repo with the tickets (ORG/NAME)")
    run.add_argument("--revision", required=True, help="the commit the bot made with this ticket")
    run.add_argument("--path", required=True, help="the ticket's path in the repo")
    run.add_argument("--organization", required=True, help="the one organisation the job may publish under")
    args = parser.parse_args(argv)
    # The job's own steps in its log; the HTTP libraries' line per request only when something goes wrong.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stdout)
    for name in ("bot", "huggingtweets"):
        logging.getLogger(name).setLevel(logging.INFO)
    return run_in_container(args.dataset, args.revision, args.path, args.organization)


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["HfJobsExecutor", "job_command", "log_tail_message", "main", "request_folder"]
