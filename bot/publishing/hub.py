"""Publishing a model folder to the Hugging Face Hub in one commit, and removing a person's repos.

    >>> from bot.common.config import load_settings
    >>> from bot.publishing.hub import delete_repos, find_repos_for, last_published, publish_folder
    >>> settings = load_settings()
    >>> result = publish_folder("models/alice", settings)          # -> huggingtweets/alice (from run.json)
    >>> result.model_url, result.commit_url
    ('https://huggingface.co/huggingtweets/alice', 'https://huggingface.co/huggingtweets/alice/commit/0f3c…')
    >>> last_published("huggingtweets/alice", settings)             # None when there is no such repo
    datetime.datetime(2025, 5, 1, 12, 0, 3, tzinfo=datetime.timezone.utc)
    >>> find_repos_for("alice", settings)                           # 'alice' and 'alice-bob', never 'malice'
    ['huggingtweets/alice', 'huggingtweets/alice-bob']
    >>> delete_repos(["huggingtweets/alice"], settings)

A publish makes the folder the whole current state of the repo: the folder's files are uploaded and the
files the repo had that the folder lacks are deleted, in the same commit, so no one ever downloads half an
old model and half a new one. The commit message says what it is ("Train on 2,339 posts from @alice"),
from the `run.json` that training writes into the folder (optional).

A publish for a request carries its key (`key=`) as the last line of the commit description,
`huggingtweets-request: KEY`. Before uploading, the repo's history is searched for that line: a job that
runs twice (a worker died after publishing, a message delivered twice) finds its own commit and makes no
second one. Two copies publishing at the same moment cannot both land either: each commits on top of the
head it searched, and the second is refused and searches again.

`[hub] backend = "hub"` goes through `huggingface_hub.HfApi`: `HF_ENDPOINT` and `HF_TOKEN` (or the login
saved by `hf auth login`) are read by the library itself, and uploads go through Xet when `hf_xet` is
installed. `backend = "local"` keeps repos as folders, `<local_dir>/<org>/<name>`, for the demo: each
version is written beside the old one and swapped in atomically, and `.history.jsonl` inside lists every
commit.

Failures are `HubError`s (a `bot.common.errors.UserError`, one line): `HubAccessError` (the token may not write to
the organisation), `RepoNameError`, and `HubUnavailableError` (still failing after the retries; its
`transient` is True: try again later).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from bot.common.progress import Progress
from bot.common.errors import UserError, backoff_seconds, clip
from bot.publishing.facts import COUNT_ROWS, FILE_NAME, RunFacts
from bot.common.handles import name_part
from bot.data.text import join_words

if TYPE_CHECKING:
    from bot.common.config import HubSettings, Settings

log = logging.getLogger(__name__)
T = TypeVar("T")

# Files the Hub keeps that a model folder never has: a publish does not delete them.
KEPT_ON_HUB = frozenset({".gitattributes"})
HISTORY_FILE = ".history.jsonl"
# The commit description's last line for a publish made for a request: its idempotency key.
KEY_PREFIX = "huggingtweets-request: "
# Statuses worth another try: the request timed out, we were rate limited, or the Hub had a passing problem.
TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
# Seconds to wait for a connection, and for each read or write once connected; huggingface_hub sets none,
# and a bot that runs for months must not hang on one request.
CONNECT_TIMEOUT_SECONDS = 10.0
IO_TIMEOUT_SECONDS = 120.0


class HubError(UserError):
    """Publishing or deleting failed; the message says why. `transient`: trying again later may work."""

    transient = False


class HubAccessError(HubError):
    """No token, or a token that may not write to the organisation (HTTP 401/403)."""


class RepoNameError(HubError):
    """A repo id that is not ORG/NAME, or that the Hub refuses."""


class HubUnavailableError(HubError):
    """The Hub kept failing (connection errors, 5xx, 429) after every retry."""

    transient = True


class RepoChangedError(HubError):
    """Someone else committed to the repo while we were publishing."""

    transient = True


# -- the edge where models go ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PublishResult:
    repo_id: str
    model_url: str
    commit_url: str
    commit_id: str



class Publisher(Protocol):
    """Where model repos live: the Hugging Face Hub, or a local folder standing in for it."""

    def publish(self, folder: Path, files: list[str], repo_id: str, message: str, description: str,
                progress: Progress) -> PublishResult:
        """Make `files` of `folder` the whole current state of `repo_id`, in one commit."""

    def list_repos(self, containing: str = "") -> list[str]:
        """The organisation's repo ids whose name contains `containing`."""

    def delete(self, repo_id: str) -> None:
        """Delete a repo; one that is already gone is no error."""

    def model_url(self, repo_id: str) -> str:
        """Where people find the model."""


# -- what every backend shares -------------------------------------------------------------------------


def publish_folder(
    folder: str | os.PathLike,
    settings: Settings,
    repo_id: str | None = None,
    message: str | None = None,
    progress: Progress | None = None,
    key: str | None = None,
) -> PublishResult:
    """Make `folder` the current state of `repo_id` in one commit.

    `repo_id` defaults to `<[hub] organization>/<the name in run.json, or the folder's name>`; `message` to
    one made from run.json. `progress`, when given, is called with a short line before each step. With
    `key`, a commit that already carries it is returned instead of making another.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: not a folder (give the model folder written by `huggingtweets train`)")
    files = folder_files(folder)
    run = read_run_facts(folder)
    repo_id = repo_id or f"{settings.hub.organization}/{run.name if run else folder.name}"
    check_repo_id(repo_id)
    message = message or commit_message(run, repo_id.split("/")[1])
    description = commit_description(run)
    if key:
        description = f"{description}\n\n{KEY_PREFIX}{key}".lstrip("\n")
    backend = _backend(settings)
    try:
        return backend.publish(folder, files, repo_id, message, description, progress or _quiet, key=key)
    except RepoChangedError:
        found = backend.find_published(repo_id, key) if key else None
        if found is None:
            raise
        log.info("%s: another copy of this job published it first (%s)", repo_id, found.commit_url)
        return found


def find_published(repo_id: str, key: str, settings: Settings) -> PublishResult | None:
    """The commit of `repo_id` made for `key`, if there is one (None too when the repo does not exist)."""
    check_repo_id(repo_id)
    return _backend(settings).find_published(repo_id, key)


def carries_key(description: str | None, key: str) -> bool:
    return f"{KEY_PREFIX}{key}" in (description or "").splitlines()


def require_write_access(settings: Settings) -> None:
    """Raise HubAccessError at once when publishing or deleting could not work: no token at all."""
    backend = _backend(settings)
    if isinstance(backend, HubRepos):
        backend.require_token()


def find_repos_for(handle: str, settings: Settings) -> list[str]:
    """The organisation's repos whose name has `handle` (its name part) as one of its '-'-separated parts."""
    part = name_part(handle)
    found = _backend(settings).list_repos(containing=part)
    return sorted(r for r in found if part in r.split("/", 1)[1].lower().split("-"))


def delete_repos(repo_ids: list[str], settings: Settings, progress: Progress | None = None) -> None:
    """Delete these repos; one that is already gone is skipped."""
    for repo_id in repo_ids:
        check_repo_id(repo_id)
    backend = _backend(settings)
    for repo_id in repo_ids:
        (progress or _quiet)(f"Deleting {repo_id}")
        backend.delete(repo_id)


def last_published(repo_id: str, settings: Settings) -> datetime | None:
    """When the repo last changed (timezone-aware, UTC), or None when it does not exist."""
    check_repo_id(repo_id)
    return _backend(settings).last_published(repo_id)


def model_url(repo_id: str, settings: Settings) -> str:
    """Where people find the model: the Hub page, or a file:// URL for the local backend."""
    check_repo_id(repo_id)
    return _backend(settings).model_url(repo_id)


def folder_files(folder: Path) -> list[str]:
    """The files to publish, as repo paths ('a/b.txt'): all of them but hidden files and folders."""
    files = [
        path.relative_to(folder).as_posix()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    ]
    if not files:
        raise UserError(f"{folder}: no files to publish")
    return files


def check_repo_id(repo_id: str) -> None:
    """Raise RepoNameError unless `repo_id` is ORG/NAME with names the Hub accepts."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not isinstance(repo_id, str) or repo_id.count("/") != 1:
        raise RepoNameError(f"{repo_id!r} is not a repo id: expected ORG/NAME")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise RepoNameError(f"{repo_id!r} is not a valid repo name: {e}") from None


def read_run_facts(folder: Path) -> RunFacts | None:
    """The run facts training wrote into the folder; None for a folder without a run.json (a model made
    some other way still publishes). A run.json that is there but not valid is an error."""
    return RunFacts.load(folder) if (folder / FILE_NAME).exists() else None


def commit_message(run: RunFacts | None, name: str) -> str:
    """'Train on 2,105 posts from @alice and @bob (234 held out)'; 'Publish NAME' without run facts."""
    if run and run.trained_posts:
        held_out = f" ({run.validation_posts:,} held out)" if run.validation_posts else ""
        return f"Train on {run.trained_posts:,} posts from {join_words([f'@{h}' for h in run.users])}{held_out}"
    return f"Publish {name}"


def commit_description(run: RunFacts | None) -> str:
    """The counts per user and the validation figures, as a few plain lines (empty without run facts)."""
    if run is None:
        return ""
    lines = []
    for handle, counts in run.users.items():
        shown = ", ".join(f"{getattr(counts, key):,} {key}" for key in COUNT_ROWS)
        lines.append(f"@{handle}: {shown}" + (f" (language: {counts.language})" if counts.language else ""))
    figures = [f"{label} {value:.3f}" for label, value in
               (("loss", run.validation_loss), ("perplexity", run.validation_perplexity)) if value is not None]
    if figures:
        lines.append("Validation " + ", ".join(figures))
    return "\n".join(lines)


def _quiet(_: str) -> None:
    pass


def _backend(settings: Settings) -> HubRepos | LocalRepos:
    return LocalRepos(settings.hub) if settings.hub.backend == "local" else HubRepos(settings.hub)


# -- the Hugging Face Hub ------------------------------------------------------------------------------


class HubRepos:
    """The organisation's repos on the Hub, through HfApi, with bounded retries and one-line errors."""

    def __init__(self, hub: HubSettings):
        from huggingface_hub import HfApi

        from bot import __version__

        import httpx2

        self.hub = hub
        self.api = HfApi(library_name="huggingtweets", library_version=__version__)
        self.timeouts = httpx2.Timeout(IO_TIMEOUT_SECONDS, connect=CONNECT_TIMEOUT_SECONDS)
        self._reachable = False

    def model_url(self, repo_id: str) -> str:
        return f"{self.api.endpoint}/{repo_id}"

    def publish(self, folder: Path, files: list[str], repo_id: str, message: str, description: str,
                progress: Progress, key: str | None = None) -> PublishResult:
        from huggingface_hub import CommitOperationAdd, CommitOperationDelete

        self.require_token()
        self.check_reachable()
        with self.translate_errors(repo_id, writing=True):
            progress(f"Creating {repo_id} if needed")
            created = self._create_repo(repo_id)
            parent = self.retrying("read the repo", lambda: self.api.repo_info(repo_id).sha)
            if key and not created:
                found = self._with_key(repo_id, key, parent)
                if found:
                    log.info("%s: already published for this request (%s)", repo_id, found.commit_url)
                    return found
            remote = self.api.list_repo_files(repo_id, revision=parent)  # retried by the library itself
            stale = sorted(set(remote) - set(files) - KEPT_ON_HUB)
            size = sum((folder / f).stat().st_size for f in files)
            progress(f"Uploading {len(files)} files ({size / 1e6:,.1f} MB) to {repo_id}")
            # Paths, not contents: the library streams each file while hashing and uploading it.
            operations = [CommitOperationAdd(path_in_repo=f, path_or_fileobj=str(folder / f)) for f in files]
            operations += [CommitOperationDelete(path_in_repo=f) for f in stale]
            try:
                commit_url, commit_id = self._commit(repo_id, operations, message, description, parent)
            except Exception:
                if created:  # no empty repo is left on the organisation's page
                    self._delete_quietly(repo_id)
                raise
        return PublishResult(repo_id, self.model_url(repo_id), commit_url, commit_id)

    def find_published(self, repo_id: str, key: str) -> PublishResult | None:
        from huggingface_hub.errors import RepositoryNotFoundError

        self.check_reachable()
        with self.translate_errors(repo_id, writing=False):
            try:
                return self._with_key(repo_id, key, "main")
            except RepositoryNotFoundError:
                return None

    def _with_key(self, repo_id: str, key: str, revision: str) -> PublishResult | None:
        """The commit up to `revision` whose description carries `key` (the newest first)."""
        commits = self.retrying("read the history", lambda: self.api.list_repo_commits(repo_id, revision=revision))
        for commit in commits:
            if carries_key(commit.message, key):
                return PublishResult(repo_id, self.model_url(repo_id),
                                     f"{self.api.endpoint}/{repo_id}/commit/{commit.commit_id}", commit.commit_id)
        return None

    def list_repos(self, containing: str = "") -> list[str]:
        """The organisation's repos whose id contains `containing` (the Hub filters: the org is large)."""
        org = self.hub.organization
        self.check_reachable()
        with self.translate_errors(org, writing=False):
            # Retried by the library itself (its pagination has its own back-off): not wrapped again here.
            return [m.id for m in self.api.list_models(author=org, search=containing or None)]

    def delete(self, repo_id: str) -> None:
        self.require_token()
        self.check_reachable()
        with self.translate_errors(repo_id, writing=True):
            self.retrying(f"delete {repo_id}", lambda: self.api.delete_repo(repo_id, missing_ok=True))

    def last_published(self, repo_id: str) -> datetime | None:
        from huggingface_hub.errors import RepositoryNotFoundError

        def modified() -> datetime | None:
            try:
                return self.api.model_info(repo_id).last_modified
            except RepositoryNotFoundError:
                return None

        self.check_reachable()
        with self.translate_errors(repo_id, writing=False):
            return self.retrying("read the repo", modified)

    # -- steps --

    def check_reachable(self) -> None:
        """One quick request, once, before the real work: an unreachable Hub is an error in seconds.

        The library retries some of its own requests (listing, uploads) for half a minute and more;
        without this, an offline machine would wait that long, for each of them, to learn what one
        connection attempt says at once.
        """
        if self._reachable:
            return
        from huggingface_hub.utils import get_session, hf_raise_for_status

        def ping() -> None:
            session = get_session()
            session.timeout = self.timeouts
            response = session.get(f"{self.api.endpoint}/api/models", params={"author": self.hub.organization,
                                                                               "limit": 1})
            if response.status_code >= 500 or response.status_code in TRANSIENT_STATUSES:
                hf_raise_for_status(response)

        self.retrying("reach the Hub", ping)
        self._reachable = True

    def _delete_quietly(self, repo_id: str) -> None:
        try:
            self.api.delete_repo(repo_id, missing_ok=True)
            log.info("deleted %s again: its first commit failed", repo_id)
        except Exception as e:  # noqa: BLE001 - the next attempt reuses the empty repo
            log.warning("could not delete the empty repo %s after its first commit failed: %s", repo_id, clip(str(e)))

    def require_token(self) -> None:
        from huggingface_hub import get_token

        if not get_token():
            raise HubAccessError(
                f"no Hugging Face token: set HF_TOKEN to a token with write access to "
                f"'{self.hub.organization}' (or log in with `hf auth login`)"
            )

    def _create_repo(self, repo_id: str) -> bool:
        """Create the repo unless it exists; True when it was created now."""
        from huggingface_hub.errors import HfHubHTTPError

        existed = self.retrying("read the repo", lambda: self.api.repo_exists(repo_id))
        if existed:
            return False
        try:
            self.retrying("create the repo",
                           lambda: self.api.create_repo(repo_id, private=self.hub.private, exist_ok=True))
        except HfHubHTTPError as e:
            if http_status(e) in (400, 422):
                raise RepoNameError(f"the Hub refused the repo name '{repo_id}': {server_message(e)}") from None
            raise
        return True

    def _commit(self, repo_id: str, operations: list, message: str, description: str,
                parent: str) -> tuple[str, str]:
        """One commit on top of `parent`; retried, and never twice: see the 412 case."""
        from huggingface_hub.errors import HfHubHTTPError

        attempts = 0

        def attempt() -> tuple[str, str]:
            nonlocal attempts
            attempts += 1
            try:
                # Operations are reusable across attempts until one succeeds; files already uploaded
                # by a failed attempt are not uploaded again.
                info = self.api.create_commit(repo_id, operations, commit_message=message,
                                              commit_description=description, parent_commit=parent)
                return info.commit_url, info.oid
            except HfHubHTTPError as e:
                if http_status(e) != 412:
                    raise
                # The branch moved past `parent`. After a failed attempt that may be our own commit,
                # which landed while its answer was lost: then it is done, and committing again would
                # make a second one.
                landed = self._landed(repo_id, parent, message) if attempts > 1 else None
                if landed:
                    return landed
                raise RepoChangedError(f"{repo_id} changed while publishing; publish again") from None

        return self.retrying("commit", attempt)

    def _landed(self, repo_id: str, parent: str, message: str) -> tuple[str, str] | None:
        commits = self.api.list_repo_commits(repo_id)
        if len(commits) >= 2 and commits[1].commit_id == parent and commits[0].title == message:
            return f"{self.api.endpoint}/{repo_id}/commit/{commits[0].commit_id}", commits[0].commit_id
        return None

    def retrying(self, what: str, call: Callable[[], T], tries: int | None = None) -> T:
        """`call()`, tried again after transient failures with exponential back-off, at most max_retries times
        (or `tries` in all: 1 for a call that must not run twice, such as starting a job).

        huggingface_hub already retries its upload requests (preupload, LFS batch, PUT, verify) with its
        own `http_backoff`; the commit and the repo calls it leaves to the caller, and they come here.
        """
        tries = tries or self.hub.max_retries + 1
        for number in range(1, tries + 1):
            try:
                return call()
            except Exception as e:
                reason = transient_reason(e)
                if reason is None:
                    raise
                if number == tries:
                    raise HubUnavailableError(
                        f"the Hub at {self.api.endpoint} is unavailable: could not {what} after {tries} "
                        f"attempt{'s' if tries > 1 else ''} ({reason}); try again later"
                    ) from None
                wait = backoff_seconds(number - 1, self.hub.retry_base_wait_seconds, self.hub.retry_max_wait_seconds)
                log.warning("could not %s (%s); retrying in %.1f s [%d/%d]", what, reason, wait, number, tries - 1)
                time.sleep(wait)
        raise AssertionError("unreachable")

    @contextmanager
    def translate_errors(self, target: str, writing: bool) -> Iterator[None]:
        """huggingface_hub's exceptions as one-line HubErrors that say what to do."""
        from huggingface_hub.errors import HfHubHTTPError

        org = target.split("/")[0]
        try:
            yield
        except HfHubHTTPError as e:
            status = http_status(e)
            if status in (401, 403):
                if writing:
                    raise HubAccessError(
                        f"the Hugging Face token cannot write to the organisation '{org}' (HTTP {status}: "
                        f"{server_message(e)}); set HF_TOKEN to a token with write access to it"
                    ) from None
                raise HubAccessError(f"the Hub refused the Hugging Face token (HTTP {status}: "
                                     f"{server_message(e)}); check HF_TOKEN") from None
            raise HubError(f"the Hub refused the request for {target} (HTTP {status}: {server_message(e)})") from None
        except ValueError as e:
            if "Invalid metadata in README.md" in str(e):
                details = " ".join(line.strip("- ") for line in str(e).splitlines()[1:])
                raise HubError(f"the Hub refused the model card metadata in README.md: {details}") from None
            raise HubUnavailableError(f"the Hub at {self.api.endpoint} gave an answer that cannot be read "
                                      f"({clip(str(e), 120)}); try again later") from None
        except (KeyError, TypeError, AttributeError) as e:
            if not _raised_in_library(e):
                raise  # ours: a bug to see, not the Hub's doing
            # JSON of another shape than the library expects.
            raise HubUnavailableError(f"the Hub at {self.api.endpoint} gave an answer of an unexpected shape "
                                      f"({type(e).__name__}: {clip(str(e), 120)}); try again later") from None


def _raised_in_library(error: BaseException) -> bool:
    """Whether `error` was raised inside huggingface_hub (reading an answer), not in this module."""
    tb = error.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and f"{os.sep}huggingface_hub{os.sep}" in tb.tb_frame.f_code.co_filename


def http_status(error: Exception) -> int | None:
    response = getattr(error, "response", None)
    return getattr(response, "status_code", None)


def server_message(error: Exception) -> str:
    message = getattr(error, "server_message", None) or str(error)
    first = next((line.strip() for line in message.splitlines() if line.strip()), "no details")
    return clip(first, 200).rstrip(".")  # masked before it is cut: a server may echo the token


def transient_reason(error: BaseException) -> str | None:
    """Why this failure may pass ('HTTP 503', 'ConnectError'), or None when trying again cannot help.

    The library wraps some failures (an LFS upload raises RuntimeError from the HTTP error), so the
    causes are looked at too.
    """
    from huggingface_hub.errors import HfHubHTTPError

    try:  # the HTTP client huggingface_hub uses: httpx2 from 2.x, httpx before
        import httpx2 as httpx
    except ImportError:  # pragma: no cover
        import httpx  # type: ignore[no-redef]

    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, HfHubHTTPError) and http_status(seen) in TRANSIENT_STATUSES:
            return f"HTTP {http_status(seen)}"
        if isinstance(seen, (httpx.TransportError, ConnectionError, TimeoutError)):
            return type(seen).__name__
        seen = seen.__cause__ or seen.__context__
    return None


# -- the local stand-in --------------------------------------------------------------------------------


class LocalRepos:
    """Repos as folders: `<local_dir>/<org>/<name>` links to the current version in `.versions/<name>/`.

    A publish copies the folder into a new version beside the old one, then replaces the link in one
    atomic rename: a reader sees the old version or the new one, and a crash before the rename leaves the
    old one in place (the next publish clears what it left behind). `.history.jsonl` in each version lists
    the commits up to it, so the history always matches the files.
    """

    def __init__(self, hub: HubSettings):
        self.hub = hub
        self.local_dir = Path(hub.local_dir)
        self.root = self.local_dir / hub.organization  # the organisation's folder

    def model_url(self, repo_id: str) -> str:
        return self._link(repo_id).absolute().as_uri()

    def publish(self, folder: Path, files: list[str], repo_id: str, message: str, description: str,
                progress: Progress, key: str | None = None) -> PublishResult:
        found = self.find_published(repo_id, key) if key else None
        if found:
            return found
        link, versions = self._link(repo_id), self._versions(repo_id)
        if link.exists() and not link.is_symlink():
            raise UserError(f"{link} is a folder that huggingtweets did not publish; move it away first")
        versions.mkdir(parents=True, exist_ok=True)
        self._clear_leftovers(repo_id)
        history = self.history(repo_id)
        before = set(history[-1]["files"]) if history else set()
        entry = {
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "message": message,
            "description": description,
            "files": files,
            "deleted": sorted(before - set(files)),
            "parent": history[-1]["commit"] if history else None,
        }
        commit_id = hashlib.sha1(json.dumps(entry, sort_keys=True).encode()).hexdigest()
        entry = {"commit": commit_id, **entry}

        staging = versions / f"{commit_id}.partial"
        progress(f"Copying {len(files)} files into {link}")
        for name in files:
            target = staging / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(folder / name, target)  # streamed, never read whole
        with open(staging / HISTORY_FILE, "w", encoding="utf-8") as out:
            for line in [*history, entry]:
                out.write(json.dumps(line, ensure_ascii=False) + "\n")
        version = versions / commit_id
        os.replace(staging, version)
        _swap_in(link, version)
        self._clear_leftovers(repo_id)
        # The commit is named in the URL's fragment; `.history.jsonl` in the repo folder lists them all.
        return PublishResult(repo_id, self.model_url(repo_id), f"{self.model_url(repo_id)}#{commit_id[:12]}", commit_id)

    def find_published(self, repo_id: str, key: str) -> PublishResult | None:
        for entry in reversed(self.history(repo_id)):
            if carries_key(entry.get("description"), key):
                url = self.model_url(repo_id)
                return PublishResult(repo_id, url, f"{url}#{entry['commit'][:12]}", entry["commit"])
        return None

    def history(self, repo_id: str) -> list[dict[str, Any]]:
        """Every commit of the current version, oldest first ([] when the repo does not exist)."""
        path = self._link(repo_id) / HISTORY_FILE
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

    def list_repos(self, containing: str = "") -> list[str]:
        if not self.root.is_dir():
            return []
        return [f"{self.hub.organization}/{p.name}" for p in self.root.iterdir()
                if p.is_symlink() and not p.name.startswith(".") and containing in p.name]

    def delete(self, repo_id: str) -> None:
        link = self._link(repo_id)
        if link.is_symlink():
            link.unlink()  # the repo is gone the moment its link is; its versions go next
        shutil.rmtree(self._versions(repo_id), ignore_errors=True)

    def last_published(self, repo_id: str) -> datetime | None:
        history = self.history(repo_id)
        return datetime.fromisoformat(history[-1]["time"]) if history else None

    def _link(self, repo_id: str) -> Path:
        org, name = repo_id.split("/")
        return self.local_dir / org / name

    def _versions(self, repo_id: str) -> Path:
        org, name = repo_id.split("/")
        return self.local_dir / org / ".versions" / name

    def _clear_leftovers(self, repo_id: str) -> None:
        """Remove half-written versions and all but the current and the previous version."""
        link, versions = self._link(repo_id), self._versions(repo_id)
        current = Path(os.readlink(link)).name if link.is_symlink() else None
        history = self.history(repo_id)
        previous = history[-2]["commit"] if len(history) >= 2 else None
        for path in versions.iterdir():
            if path.name not in (current, previous):
                shutil.rmtree(path, ignore_errors=True)
        for stray in link.parent.glob(f".{link.name}.swap-*"):
            stray.unlink(missing_ok=True)


def _swap_in(link: Path, version: Path) -> None:
    """Point `link` at `version` in one atomic step: a new link, renamed over the old one."""
    swap = link.with_name(f".{link.name}.swap-{os.getpid()}")
    swap.unlink(missing_ok=True)
    os.symlink(os.path.relpath(version, link.parent), swap)
    os.replace(swap, link)


def local_history(repo_id: str, settings: Settings) -> list[dict[str, Any]]:
    """The commits of a repo of the local backend, oldest first: commit, time, message, files, deleted."""
    check_repo_id(repo_id)
    return LocalRepos(settings.hub).history(repo_id)


__all__ = [
    "HubAccessError", "HubError", "HubUnavailableError", "PublishResult", "RepoChangedError", "RepoNameError",
    "commit_description", "commit_message", "delete_repos", "find_published", "find_repos_for", "last_published", "local_history",
    "model_url", "publish_folder",
]
