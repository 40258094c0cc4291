"""The bot's loop: read mentions, decide, download, train, publish, reply. One orchestrator owns the state.

    >>> from bot.scheduler import Bot
    >>> bot = Bot(settings, config_path="config.toml")
    >>> bot.run(once=True)       # one poll, then every request as far as it can go; or run() forever

Each step moves a request one state further in the store (see bot/store.py), so a restart picks every
request up where it stood. Training runs in a subprocess with a time limit: a crash or an out-of-memory
kill takes the job down, not the bot. Failures that may pass are retried with back-off up to
`[bot] max_attempts`; permanent ones (unknown, protected, suspended, too few posts) get a reply saying why.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from bot.config import Settings
from bot.errors import AccountError, NotEnoughDataError, UsageError, UserError, scrub
from bot.failpoints import failpoint
from bot.policy import decide, failure_reply, success_reply
from bot.store import Request, Store

log = logging.getLogger("huggingtweets.bot")

RETRY_MAX_SECONDS = 3600.0
# The bot account's OAuth 1.0a credentials: reading mentions and posting replies need them.
USER_CONTEXT_ENV = ("X_API_KEY", "X_API_SECRET", "X_ACCESS_TOKEN", "X_ACCESS_TOKEN_SECRET")


class Stopping(Exception):
    """The bot is shutting down: leave the request where it is, to resume after a restart."""


class TrainingFailed(Exception):
    """The training subprocess exited with an error, was killed, or ran out of time."""


def make_x(settings: Settings):
    """The adapter for X: the real API through tweepy, or the local stand-in."""
    if settings.bot.source == "local":
        from bot.local import LocalX

        return LocalX.from_settings(settings)
    from bot.x import XClient

    return XClient.from_settings(settings)


class Bot:
    def __init__(self, settings: Settings, config_path: str | Path | None = None, x=None, store: Store | None = None):
        self.settings = settings
        self.config_path = Path(config_path).resolve() if config_path else None
        self.store = store or Store(settings.bot.state_db)
        self.x = x if x is not None else make_x(settings)
        self.stopping = threading.Event()
        self.work_dir = Path(settings.bot.work_dir)

    # --- mentions in ----------------------------------------------------------------------------

    def poll(self) -> list[Request]:
        """Read new mentions and store each with its decision; the cursor moves in the same transaction."""
        mentions = self.x.mentions_since(self.store.cursor("mentions"))
        if not mentions:
            return []
        newest = max(mentions, key=lambda m: int(m.id)).id
        bot_id = getattr(self.x, "bot_user_id", None)
        return self.store.ingest(mentions, lambda m: decide(m, self.settings, self.store, bot_id),
                                 cursor_value=str(newest))

    # --- work -----------------------------------------------------------------------------------

    def work(self) -> bool:
        """Do the next due piece of work. False when nothing is due."""
        replies = [r for r in self.store.replies_due() if r.next_attempt_at <= self.store.clock()]
        sent = False
        for r in replies:
            if self.stopping.is_set():
                return False
            sent = self.send_reply(r) or sent
        if sent:
            return True
        # Every due reply failed: go on to other work rather than posting again at once (with a zero
        # retry wait that would spin, and `run --once` would never end while X refuses).
        request = self.store.next_due()
        if request is None or self.stopping.is_set():
            return False
        self.advance(request)
        return True

    def advance(self, r: Request) -> None:
        """Move one request one state further, or record why it cannot move."""
        try:
            if r.state == "queued":
                if r.kind == "opt_out":
                    self.delete_models(r)
                else:
                    self.store.transition(r.id, "downloading")
            elif r.state == "downloading":
                self.download(r)
            elif r.state == "training":
                self.train(r)
            elif r.state == "publishing":
                self.publish(r)
        except Stopping:
            log.info("request %d: stopped in %s; it resumes there after a restart", r.id, r.state)
        except AccountError as e:
            self.fail(r, e.reason, failure_reply(e.reason, [e.handle]))
        except NotEnoughDataError as e:
            self.fail(r, "too few posts", failure_reply("too_few", detail=_short(str(e))))
        except Exception as e:  # noqa: BLE001 - anything else may pass: retry, then give up with a reply
            reason = _short(scrub(f"{type(e).__name__}: {e}" if not isinstance(e, UserError) else str(e)))
            if r.attempts + 1 >= self.settings.bot.max_attempts:
                self.fail(r, reason, failure_reply("failed", detail="the job failed several times"))
            else:
                delay = self.backoff(r.attempts)
                self.store.retry_later(r.id, reason, delay)

    def backoff(self, attempts: int) -> float:
        """Seconds to wait after `attempts` failed tries: doubling from `retry_base_seconds`, at most an hour."""
        return min(self.settings.bot.retry_base_seconds * 2 ** attempts, RETRY_MAX_SECONDS)

    def fail(self, r: Request, reason: str, reply: str) -> None:
        self.store.transition(r.id, "failed", note=reason, reason=reason, reply_text=reply)

    def request_dir(self, r: Request) -> Path:
        return self.work_dir / f"request-{r.id}"

    def download(self, r: Request) -> None:
        from bot.dataset import build_dataset

        archives = self.x.download_archives(list(r.handles))
        # Clean once here so "too few posts" is known before a training job starts.
        dataset = build_dataset(archives, self.settings.data)
        folder = self.request_dir(r)
        folder.mkdir(parents=True, exist_ok=True)
        paths = {h: str(Path(a.path).resolve()) for h, a in archives.items()}
        (folder / "archives.json").write_text(json.dumps(paths), encoding="utf-8")
        kept = sum(u.counts.kept for u in dataset.users)
        self.store.transition(r.id, "training", note=f"{kept} posts kept")

    def train(self, r: Request) -> None:
        folder = self.request_dir(r)
        archives = json.loads((folder / "archives.json").read_text(encoding="utf-8"))
        model_dir = folder / "model"
        if model_dir.exists():
            shutil.rmtree(model_dir)  # a half-written folder from a crash
        command = [sys.executable, "-m", "bot"]
        if self.config_path:
            command += ["--config", str(self.config_path)]
        command += ["train", *r.handles, "--out", str(model_dir)]
        for handle in r.handles:
            command += ["--archive", archives[handle]]
        self.run_job(command, folder / "train.log")
        run = json.loads((model_dir / "run.json").read_text(encoding="utf-8"))
        self.store.transition(r.id, "publishing", note=f"validation perplexity {run.get('validation_perplexity', '?')}")

    def run_job(self, command: list[str], log_path: Path) -> None:
        """Run a job in its own process group with a time limit; stop it if the bot is stopping."""
        limit = self.settings.bot.job_timeout_seconds
        with open(log_path, "ab") as log_file:
            child = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
            started = time.monotonic()
            while True:
                try:
                    code = child.wait(timeout=0.5)
                    break
                except subprocess.TimeoutExpired:
                    pass
                if self.stopping.is_set() or time.monotonic() - started > limit:
                    _kill_group(child)
                    if self.stopping.is_set():
                        raise Stopping()
                    raise TrainingFailed(f"training ran out of time ({limit:.0f} s)")
        if code != 0:
            raise TrainingFailed(f"training exited with status {code}: {_last_line(log_path)}")

    def publish(self, r: Request) -> None:
        from bot.hub import publish_folder

        model_dir = self.request_dir(r) / "model"
        run = json.loads((model_dir / "run.json").read_text(encoding="utf-8"))
        result = publish_folder(model_dir, self.settings, repo_id=r.repo)
        sample = run.get("best_sample")
        self.store.record_published(r.repo, r.handles, result.model_url, sample)
        self.store.transition(r.id, "replying", note=result.commit_url, model_url=result.model_url,
                              sample=sample, reply_text=success_reply(result.model_url, sample))

    def delete_models(self, r: Request) -> None:
        from bot.hub import delete_repos, find_repos_for

        repos = find_repos_for(r.requester, self.settings)
        if repos:
            delete_repos(repos, self.settings)
        self.store.forget_published(repos)
        done = f"deleted {len(repos)} model{'s' if len(repos) != 1 else ''}" if repos else "there were no models of you"
        self.store.transition(r.id, "replying", note=done, reply_text=(
            f"Done: you have opted out, so I will not model your posts, and {done}."))

    # --- replies --------------------------------------------------------------------------------

    def send_reply(self, r: Request) -> bool:
        """Exactly one reply per mention, across crashes. False when it failed and waits for a retry."""
        try:
            if r.reply_status == "sending":
                # A reply may have gone out just before a crash: look before posting again.
                already = self.x.recent_replies().get(r.mention_id)
                if already:
                    log.info("request %d: reply %s was already sent", r.id, already)
                    self.store.mark_sent(r.id, already)
                    return True
            self.store.mark_sending(r.id)
            failpoint("before_reply")
            reply_id = self.x.reply(r.mention_id, reply_text(r))
            failpoint("reply_sent")
            self.store.mark_sent(r.id, reply_id)
            return True
        except Exception as e:  # noqa: BLE001 - X refused or is down: try again later, a few times
            reason = _short(scrub(f"reply failed: {e}"))
            if r.reply_attempts + 1 >= self.settings.bot.max_attempts:
                self.store.give_up_reply(r.id, reason)
                return False
            delay = self.backoff(r.reply_attempts)
            self.store.update(r.id, reply_attempts=r.reply_attempts + 1,
                              next_attempt_at=self.store.clock() + delay, reason=reason)
            log.warning("request %d: reply failed, retry in %.0fs: %s", r.id, delay, reason)
            return False

    # --- the loop -------------------------------------------------------------------------------

    def stop(self, *_args) -> None:
        if not self.stopping.is_set():
            log.info("stopping: finishing the current step")
        self.stopping.set()

    def drain(self) -> None:
        while not self.stopping.is_set() and self.work():
            pass

    def poll_and_log(self) -> None:
        try:
            new = self.poll()
            if new:
                log.info("poll: %d new mention%s", len(new), "s" if len(new) != 1 else "")
        except Exception as e:  # noqa: BLE001 - X down or rate-limited: the next poll tries again
            log.warning("poll failed: %s", _short(scrub(str(e))))

    def check_credentials(self) -> None:
        """Stop at start, with one clear line, on what no retry can fix: a credential that is not set."""
        missing = []
        if self.settings.bot.source == "x":
            missing += [name for name in USER_CONTEXT_ENV if not os.environ.get(name)]
        if self.settings.hub.backend == "hub":
            from huggingface_hub import get_token

            if not get_token():
                missing.append("HF_TOKEN")
        if missing:
            raise UsageError(f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set: the bot needs "
                             "X user credentials to read mentions and reply, and a Hub token to publish")

    def run(self, once: bool = False) -> None:
        """Poll and work until SIGTERM/SIGINT (or, with `once`, until nothing is left to do now)."""
        self.check_credentials()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self.stop)
        if once:
            self.poll_and_log()
            self.drain()
            return
        from apscheduler.schedulers.background import BackgroundScheduler

        # Generous misfire grace: a poll that is late because training held the CPU still runs.
        scheduler = BackgroundScheduler(job_defaults={"misfire_grace_time": 600, "coalesce": True, "max_instances": 1})
        scheduler.add_job(self.poll_and_log, "interval", seconds=self.settings.bot.poll_interval_seconds,
                          id="poll", next_run_time=_now())
        scheduler.add_job(self.drain, "interval", seconds=2, id="work", next_run_time=_now())
        scheduler.start()
        log.info("running: @%s, mode %s, source %s", self.settings.bot.handle, self.settings.bot.mode,
                 self.settings.bot.source)
        while not self.stopping.wait(0.5):
            pass
        scheduler.shutdown(wait=True)
        log.info("stopped")


def reply_text(r: Request) -> str:
    """The reply as posted. The request number makes every reply unique (X refuses a duplicate text,
    which a reused model or a second "help" would otherwise be) and lets the operator find it in `status`."""
    first, _, rest = r.reply_text.partition("\n")
    # On the first line, which fitting the text to 280 characters never cuts.
    return f"{first} (request #{r.id})" + (f"\n{rest}" if rest else "")


def _now():
    from datetime import datetime, timezone

    return datetime.now(timezone.utc)


def _kill_group(child: subprocess.Popen) -> None:
    try:
        os.killpg(child.pid, signal.SIGTERM)
        child.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(child.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        child.wait()


def _last_line(path: Path) -> str:
    try:
        lines = [line for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return _short(scrub(lines[-1])) if lines else ""


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
