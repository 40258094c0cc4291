"""The bot's loop: read mentions, decide, download, train, publish, reply. One orchestrator owns the state.

    >>> from bot.requests.scheduler import Bot
    >>> bot = Bot(settings)
    >>> bot.run(once=True)       # one poll, then every request as far as it can go; or run() forever

Each step moves a request one state further in the store (see bot/requests/store.py), so a restart picks every
request up where it stood:

    queued ──> downloading ──> training ──> publishing ──> replying ──> done
               (the posts,     (a job, run   (one Hub       (one reply,
               cleaned, into   by the        commit)        exactly once)
               request-N/data) executor)

Training runs apart from the bot (`bot.workers.local`), from the request folder alone (`bot.training.job`). Failures
carry their retry policy (`bot.common.errors.retry_policy`): a permanent one (an unknown account, too few posts,
a refused token) fails the request at once with a reply saying why; a passing one is tried again after
`max(back-off, the wait the server asked for)`, up to `[bot] max_attempts`.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bot.training import job

from bot.requests import replies
from bot.sources.adapters import Account, Source, Usage
from bot.common.config import Settings, XPrices
from bot.common.errors import (AccountError, NotEnoughDataError, TransientError, UsageError, UserError, backoff_seconds, clip,
                        inert, retry_policy)
from bot.workers import Executor, JobStatus
from bot.workers.local import LocalExecutor
from bot.publishing.facts import RunFacts
from bot.common.failpoints import failpoint
from bot.common.files import write_atomically
from bot.common.logs import about, about_each
from bot.common.handles import is_account_entry, network_of
from bot.requests.monitoring import BotMonitor
from bot.requests.policy import DAY, Refusal, check_accounts, decide
from bot.requests.spend import FREE, priced
from bot.requests.store import BUDGET_WAIT, Request, Store, StoreError

log = logging.getLogger("huggingtweets.bot")

RETRY_MAX_SECONDS = 3600.0
# The bot account's OAuth 1.0a credentials: reading mentions and posting replies need them.
USER_CONTEXT_ENV = ("X_API_KEY", "X_API_SECRET", "X_ACCESS_TOKEN", "X_ACCESS_TOKEN_SECRET")
BLUESKY_ENV = ("BLUESKY_HANDLE", "BLUESKY_APP_PASSWORD")
# How long to wait before asking an executor again when it could not take a job.
BUSY_WAIT_SECONDS = 2.0


def make_source(settings: Settings, name: str) -> Source:
    """The adapter for a network the bot listens on: X or Bluesky through their APIs, or the local stand-in.
    (Imported when used: each client library takes a second or two to import.)"""
    if name == "local":
        from bot.sources.local import LocalX

        return LocalX.from_settings(settings)
    if name == "bluesky":
        from bot.sources.bluesky import BlueskyClient

        return BlueskyClient.from_settings(settings)
    from bot.sources.x import XClient

    return XClient.from_settings(settings)


def make_executor(settings: Settings) -> Executor:
    """The executor `[train] executor` names (Celery's and HF Jobs' are imported only when used)."""
    if settings.train.executor == "celery":
        from bot.workers.celery_app import CeleryExecutor

        return CeleryExecutor(settings)
    if settings.train.executor == "hf-jobs":
        from bot.workers.hf_jobs import HfJobsExecutor

        return HfJobsExecutor(settings)
    return LocalExecutor(settings.bot.work_dir, settings.bot.job_timeout_seconds)


def publish_key(r: Request) -> str:
    """The key a request's Hub commit carries (`bot.publishing.hub.KEY_PREFIX`): its id here, and the mention it
    answers, so that a state database started afresh never takes an old commit for a new request's."""
    return f"{r.id} ({r.source} mention {r.mention_id})"


class Bot:
    def __init__(self, settings: Settings, sources: dict[str, Source] | None = None, store: Store | None = None,
                 executor: Executor | None = None, source: Source | None = None):
        """`sources` by network name (default: made from `[bot] sources`); `source`: the one source, when
        there is one (the demo's local stand-in)."""
        self.settings = settings
        self.store = store or Store(settings.bot.state_db)
        self.store.blocklist = tuple(settings.bot.blocklist)
        if source is not None:
            sources = {settings.bot.sources[0]: source}
        self.sources = sources or {name: make_source(settings, name) for name in settings.bot.sources}
        self.executor = executor or make_executor(settings)
        self.stopping = threading.Event()
        self._metering = threading.Lock()
        self._budget_noted: float | None = None  # the day the poll last said it waits for the budget
        self.work_dir = Path(settings.bot.work_dir)
        self.monitor = BotMonitor(settings, self.store, self.sources)

    # --- mentions in ----------------------------------------------------------------------------

    def poll(self, network: str) -> list[Request]:
        """Read new mentions on one network and store each with its decision; the network's cursor moves in
        the same transaction."""
        source = self.sources[network]
        cursor = "mentions" if network in ("x", "local") else f"mentions:{network}"
        with about(network=network), self.metered(None, network):
            limit = self.mentions_affordable(network)
            if limit == 0:
                return []
            since = self.store.cursor(cursor)
            mentions = source.mentions_since(since) if limit is None else source.mentions_since(since, limit)
        if not mentions:
            return []
        # A read cut short by the budget may have missed older mentions (X pages from the newest back): the
        # cursor stays, and the next read takes them all (those stored already are skipped).
        complete = limit is None or len(mentions) < limit
        bot_id = getattr(source, "bot_user_id", None)
        bot_handle = getattr(source, "bot_handle", None) if network == "bluesky" else None
        return self.store.ingest(mentions, lambda m: decide(m, self.settings, self.store, bot_id, network, bot_handle),
                                 cursor_name=cursor, cursor_value=mentions[-1].resume_from if complete else None)

    def source_of(self, r: Request) -> Source:
        try:
            return self.sources[r.source]
        except KeyError:
            raise UsageError(f"request {r.id} came from {r.source}, which is not in [bot] sources") from None

    # --- work -----------------------------------------------------------------------------------

    def work(self) -> bool:
        """Do what is due now: replies, then jobs that have finished, then one step of the oldest request.
        False when there was nothing to do."""
        done_something = False
        now = self.store.clock()
        for r in self.store.replies_due():
            if self.stopping.is_set():
                return False
            if r.next_attempt_at <= now:
                # A reply that fails waits for a later pass: with a zero retry wait, posting it again at
                # once would spin, and `run --once` would never end while X refuses.
                done_something = self.send_reply(r) or done_something
        done_something = self.check_jobs() or done_something
        under_way = max(self.executor.running(), len(self.store.jobs_under_way()))
        request = self.store.next_due(start_jobs=under_way < self.executor.slots)
        if request is not None and not self.stopping.is_set():
            self.advance(request)
            done_something = True
        return done_something

    def advance(self, r: Request) -> None:
        """Move one request one step further, or record why it cannot move."""
        with about(request=r.id, state=r.state, network=r.source):
            try:
                with self.metered(r.id, r.source):
                    self._advance(r)
            except Exception as e:  # noqa: BLE001 - every failure is either retried or answered
                self.failed_attempt(r, e)

    def _advance(self, r: Request) -> None:
        if r.state == "queued":
            if r.kind == "opt_out":
                self.delete_models(r)
            else:
                self.look_up(r)
        elif r.state == "downloading":
            self.download(r)
        elif r.state == "training":
            self.start_job(r)
        elif r.state == "publishing":
            self.publish(r)

    @contextmanager
    def metered(self, request_id: int | None, network: str) -> Iterator[None]:
        """Record what `network` billed for while this block ran, against the request (None: polling).

        One metered block at a time: the poll and the work run in different threads, and each must be
        charged only for its own reads.
        """
        usage = getattr(self.sources.get(network), "usage", None)
        if usage is None:  # a source that costs nothing
            yield
            return
        with self._metering:
            before = usage.copy()
            try:
                yield
            finally:
                try:
                    self.store.add_spend(request_id, network, priced(usage - before, self.prices(network)))
                except StoreError as e:
                    log.warning("spend not recorded: %s", e)

    def prices(self, network: str) -> XPrices:
        """What each kind of use costs on `network`: X's published prices; Bluesky is free to read."""
        return self.settings.x.prices if network == "x" else FREE

    # --- the budget -------------------------------------------------------------------------------
    # Every billed call is priced before it is made, within `metered` (one at a time, so two calls cannot
    # both fit in the same last dollar), and counted after. A call that does not fit today waits for the next
    # UTC day; one that could never fit ends its request.

    def cost(self, network: str, usage: Usage) -> float:
        return sum(usd for _, _, usd in priced(usage, self.prices(network)))

    def budget_left(self, request_id: int | None = None) -> float | None:
        """Dollars left today, less the link replies promised to the requests under way (other than
        `request_id`): each was let through on the promise of its reply. None: no budget is set."""
        budget = self.settings.bot.daily_budget_usd
        if not budget:
            return None
        promised = self.store.replies_promised("x", exclude=request_id)
        reserve = promised * self.settings.x.prices.post_created_with_link
        return budget - self.store.spend_since(_start_of_utc_day(self.store.clock())) - reserve

    def require_budget(self, r: Request, what: str, usage: Usage) -> None:
        """Raise `WaitForBudget` when `usage` on the request's network does not fit in today's budget, and
        `OverBudget` when it would not fit in any day's."""
        cost = self.cost(r.source, usage)
        left = self.budget_left(r.id)
        if left is None or not cost:
            return
        if cost > self.settings.bot.daily_budget_usd:
            raise OverBudget(f"{what} may cost ${cost:.2f}, more than the daily budget of "
                             f"${self.settings.bot.daily_budget_usd:.2f}")
        if cost > left + 1e-9:
            raise WaitForBudget(f"{what} may cost ${cost:.2f}; ${max(left, 0):.2f} of today's budget is left")

    def mentions_affordable(self, network: str) -> int | None:
        """How many mentions the budget lets a poll read (None: as many as there are)."""
        usage_of = getattr(self.sources[network], "mention_usage", None)
        left = self.budget_left()
        if usage_of is None or left is None:
            return None
        each = self.cost(network, usage_of(1))
        if not each:
            return None
        count = max(0, int((left - self.settings.x.prices.user_read) / each))  # and the bot's own account once
        if count == 0 and self._budget_noted != _start_of_utc_day(self.store.clock()):
            self._budget_noted = _start_of_utc_day(self.store.clock())
            log.warning("poll: mentions on %s wait for tomorrow's budget ($%.2f a day)", network,
                        self.settings.bot.daily_budget_usd)
        return count

    def reply_usage(self, r: Request, text: str) -> Usage:
        usage_of = getattr(self.source_of(r), "reply_usage", None)
        return usage_of(text) if usage_of else Usage()

    def failed_attempt(self, r: Request, error: BaseException) -> None:
        """A permanent failure ends the request with a reply; a passing one waits and counts an attempt."""
        policy = retry_policy(error)
        reason = clip(str(error) if isinstance(error, UserError) else f"{type(error).__name__}: {error}")
        if isinstance(error, WaitForBudget):  # not a failure: no attempt is counted
            self.wait_for_budget(r, reason)
        elif not policy.transient:
            self.fail(r, reason, failure_reply(error))
        elif r.attempts + 1 >= self.settings.bot.max_attempts:
            self.fail(r, reason, replies.GENERIC_FAILURE)
        else:
            self.store.retry_later(r.id, reason, max(self.backoff(r.attempts), policy.retry_after or 0.0))
            self.monitor.retried(r.state)

    def backoff(self, attempts: int) -> float:
        """Seconds to wait after `attempts` failed tries: doubling from `retry_base_seconds`, at most an hour."""
        return backoff_seconds(attempts, self.settings.bot.retry_base_seconds, RETRY_MAX_SECONDS)

    def wait_for_budget(self, r: Request, reason: str) -> None:
        tomorrow = _start_of_utc_day(self.store.clock()) + DAY
        self.store.update(r.id, next_attempt_at=tomorrow, reason=f"{BUDGET_WAIT}: {reason}")
        log.info("request %d: %s: %s", r.id, BUDGET_WAIT, reason)

    def fail(self, r: Request, reason: str, reply: str) -> None:
        self.store.transition(r.id, "failed", note=reason, reason=reason, reply_text=reply, job_id=None)

    def request_dir(self, r: Request) -> Path:
        return self.work_dir / f"request-{r.id}"

    def look_up(self, r: Request) -> dict[str, Account]:
        """Who the request's handles name now, asked of the network; then the policy again on those accounts,
        and a recent model of exactly these people reused (the Hub confirming it) instead of a new one."""
        accounts = self.accounts_of(r)
        reused = self.reusable(r, accounts)
        if reused is not None:
            url = self.model_url(reused.repo)
            self.store.transition(r.id, "replying", note=f"reused {reused.repo}", reason="reused a recent model",
                                  repo=reused.repo, model_url=url, sample=reused.sample,
                                  accounts=[(a.id, h) for h, a in accounts.items()],
                                  reply_text=replies.ready(url, reused.sample, reused.repo,
                                                           link=self.settings.bot.reply_link))
            return accounts
        self.store.transition(r.id, "downloading", accounts=[(a.id, h) for h, a in accounts.items()])
        return accounts

    def accounts_of(self, r: Request) -> dict[str, Account]:
        """The accounts behind the request's handles, looked up now (billed), recorded as seen, and checked
        by the policy (`Refusal` for an opted-out or not-consenting person)."""
        source = self.source_of(r)
        usage_of = getattr(source, "lookup_usage", None)
        self.require_budget(r, "looking up the accounts", usage_of(list(r.handles)) if usage_of else Usage())
        accounts = source.lookup_accounts(list(r.handles))
        self.store.saw_accounts(r.network, [(a.id, a.handle) for a in accounts.values()])
        check_accounts(r, {h: a.id for h, a in accounts.items()}, self.settings, self.store)
        return accounts

    def reusable(self, r: Request, accounts: dict[str, Account]):
        """A model of exactly these people published within `[bot] reuse_days` whose keyed commit the Hub
        still shows, or None. A row whose commit is gone is forgotten."""
        from bot.publishing.hub import find_published

        days = self.settings.bot.reuse_days
        found = self.store.recent_publication(r.network, [(a.id, h) for h, a in accounts.items()], days * DAY) \
            if days else None
        if found is None:
            return None
        if not found.request_key or find_published(found.repo, found.request_key, self.settings) is None:
            log.info("request %d: %s is no longer on the Hub as published; training anew", r.id, found.repo)
            self.store.forget_published([found.repo])
            return None
        return found

    def model_url(self, repo: str) -> str:
        """The link a reply gives: built here from the repo's name and the Hub's address, never taken from
        a worker's or a job's word."""
        from bot.publishing.hub import model_url

        return model_url(repo, self.settings)

    def download(self, r: Request) -> None:
        """The posts, cleaned and split once, into the request folder: the job trains on exactly these."""
        from bot.data.dataset import build_dataset

        source = self.source_of(r)
        if r.accounts:
            accounts = {h: Account(r.network, account_id, h) for account_id, h in r.accounts}
        else:  # a request that was downloading before accounts were kept: look them up and check them now
            accounts = self.accounts_of(r)
        usage_of = getattr(source, "download_usage", None)
        usage = usage_of(list(r.handles), accounts) if usage_of else Usage()
        self.require_budget(r, "this download and its reply",
                            usage + self.reply_usage(r, replies.ready(self.model_url(r.repo), None)))
        archives = source.download_archives(list(r.handles), accounts=accounts)
        dataset = build_dataset(archives, self.settings.data)
        job.prepare(self.request_dir(r), dataset,
                    job.TrainJob.from_settings(self.settings, dataset.name, request_key=publish_key(r)))
        kept = sum(u.counts.kept for u in dataset.users)
        self.store.transition(r.id, "training", note=f"{kept} posts kept")

    def start_job(self, r: Request) -> None:
        job_id = self.executor.submit(self.request_dir(r))
        if job_id is None:  # the executor cannot take it yet
            self.store.update(r.id, next_attempt_at=self.store.clock() + BUSY_WAIT_SECONDS)
            return
        failpoint("job_submitted")  # a crash here leaves a job the store does not know of
        self.store.job_started(r.id, job_id, self.executor.name)

    def check_jobs(self) -> bool:
        """Look at every job under way; True when one of them finished (well or not)."""
        finished = False
        for r in about_each(self.store.jobs_under_way()):
            status = self.executor.check(r.job_id, self.request_dir(r))
            if status.where and status.where != r.job_host:
                self.store.update(r.id, job_host=status.where)
                log.info("request %d: job %s runs on %s", r.id, r.job_id, status.where)
            if status.state == "running":
                continue
            if status.state == "done" and self.executor.remote:
                # A worker or a job says it published: a claim the Hub must confirm before anything is recorded.
                try:
                    published = self.confirmed_on_hub(r)
                except Exception as e:  # noqa: BLE001 - the Hub away: ask again later; a refusal: the policy
                    if retry_policy(e).transient:
                        log.warning("request %d: cannot read the Hub now (%s); asking again later", r.id,
                                    clip(str(e)))
                        continue
                    status = JobStatus("failed", e, where=status.where)
                else:
                    if published is None:
                        status = JobStatus("failed", job.JobFailed(
                            f"the job said it published {r.repo}, but the Hub shows no commit for this request",
                            transient=True), where=status.where)
                    else:  # recorded before the state moves: publishing replies with what the Hub showed
                        write_atomically(self.request_dir(r) / job.PUBLISHED_FILE, published.model_dump_json() + "\n")
            if status.state == "lost":  # not known to this executor (the bot restarted): start it again
                log.info("request %d: job %s is gone; starting it again", r.id, r.job_id)
                self.store.update(r.id, job_id=None)
                self.monitor.job_finished(r, status)
            elif status.state == "done":
                published = job.read_published(self.request_dir(r))
                perplexity = (published.validation_perplexity if published is not None
                              else RunFacts.load(self.request_dir(r) / job.MODEL_DIR).validation_perplexity)
                self.store.transition(r.id, "publishing", job_id=None, note=f"validation perplexity {perplexity}")
                self.monitor.job_finished(r, status, perplexity)
            else:
                self.monitor.job_finished(r, status)
                self.failed_attempt(r, status.error)
            finished = True
        return finished

    def confirmed_on_hub(self, r: Request) -> job.Published | None:
        """The commit keyed for this request in the request's own repo, as the Hub shows it (with the run
        facts of that commit), or None: what a worker or a job returned is never taken as it is."""
        spec = job.read_job(self.request_dir(r))
        if spec.repo_id != r.repo or spec.request_key != publish_key(r):
            raise UsageError(f"request {r.id}: its job.json names {spec.repo_id}, not {r.repo}")
        return job.published_earlier(spec, self.settings)

    def publish(self, r: Request) -> None:
        from bot.publishing.hub import publish_folder

        published = job.read_published(self.request_dir(r))
        if published is not None:  # a worker published it, and the Hub confirmed it (check_jobs)
            commit_url, sample = published.commit_url, published.best_sample
        else:
            model_dir = self.request_dir(r) / job.MODEL_DIR
            sample = RunFacts.load(model_dir).best_sample
            commit_url = publish_folder(model_dir, self.settings, repo_id=r.repo, key=publish_key(r)).commit_url
        model_url = self.model_url(r.repo)
        self.store.record_published(r.repo, r.handles, model_url, sample, accounts=r.accounts, network=r.network,
                                    request_key=publish_key(r))
        reply = replies.ready(model_url, sample, r.repo, link=self.settings.bot.reply_link)
        self.store.transition(r.id, "replying", note=commit_url, model_url=model_url, sample=sample, reply_text=reply)

    def delete_models(self, r: Request) -> None:
        """Every model of the person who opted out: those the bot published of their account under any
        handle, those published before ids were kept under a handle the account was seen with, and any repo
        of the organisation whose name has their handle now."""
        from bot.publishing.hub import delete_repos, find_repos_for

        repos = set(find_repos_for(r.requester, self.settings))
        if r.requester_id:
            repos |= set(self.store.repos_of(r.network, r.requester_id))
            repos |= set(self.store.repos_named_with(self.store.handles_of(r.network, r.requester_id)))
        repos = sorted(repos)
        if repos:
            delete_repos(repos, self.settings)
        self.store.forget_published(repos)
        note = f"deleted {len(repos)} model{'s' if len(repos) != 1 else ''}" if repos else "there were no models"
        self.store.transition(r.id, "replying", note=note, reply_text=replies.opted_out(len(repos)))

    # --- replies --------------------------------------------------------------------------------

    def reply_links(self) -> tuple[str, ...]:
        """Where a reply may link: the organisation's repos on the Hub (or in the local folder)."""
        return (self.model_url(f"{self.settings.hub.organization}/x").rsplit("/", 1)[0] + "/",)

    def send_reply(self, r: Request) -> bool:
        """Exactly one reply per mention, across crashes. False when it failed and waits for a retry."""
        with about(request=r.id, state=r.state, network=r.source), self.metered(r.id, r.source):
            return self._send_reply(r)

    def _send_reply(self, r: Request) -> bool:
        text = reply_text(r, self.reply_links())
        try:
            self.require_budget(r, "this reply", self.reply_usage(r, text))
        except WaitForBudget as e:
            self.wait_for_budget(r, str(e))
            return False
        except OverBudget as e:
            self.store.give_up_reply(r.id, clip(str(e)))
            return False
        try:
            if r.reply_status == "sending":
                # A reply may have gone out just before a crash: look before posting again.
                already = self.source_of(r).recent_replies().get(r.mention_id)
                if already:
                    log.info("request %d: reply %s was already sent", r.id, already)
                    self.store.mark_sent(r.id, already)
                    return True
            self.store.mark_sending(r.id)
            failpoint("before_reply")
            reply_id = self.source_of(r).reply(r.mention_id, text)
            failpoint("reply_sent")
            self.store.mark_sent(r.id, reply_id)
            return True
        except Exception as e:  # noqa: BLE001 - X refused or is down: try again later, a few times
            reason = clip(f"reply failed: {e}")
            if r.reply_attempts + 1 >= self.settings.bot.max_attempts:
                self.store.give_up_reply(r.id, reason)
                return False
            delay = max(self.backoff(r.reply_attempts), retry_policy(e).retry_after or 0.0)
            self.store.update(r.id, reply_attempts=r.reply_attempts + 1,
                              next_attempt_at=self.store.clock() + delay, reason=reason)
            self.monitor.retried("reply")
            log.warning("request %d: reply failed, retry in %.0fs: %s", r.id, delay, reason)
            return False

    # --- the loop -------------------------------------------------------------------------------

    def stop(self, *_args) -> None:
        if not self.stopping.is_set():
            log.info("stopping: finishing the current step")
        self.stopping.set()

    def drain(self) -> None:
        """Work until nothing is due, waiting for the jobs under way to finish.

        When the state database cannot be written (a full disk), nothing is changed: the bot says so in one
        line and tries again on the next round.
        """
        while not self.stopping.is_set():
            try:
                if self.work():
                    continue
                if not self.store.jobs_under_way():
                    return
            except StoreError as e:
                log.warning("%s; trying again later", e)
                self.monitor.store_failed(str(e))
                return
            self.stopping.wait(0.5)

    def poll_and_log(self) -> None:
        """Read every network's mentions; one that is down or rate-limited does not hold up the others."""
        for network in self.sources:
            try:
                new = self.poll(network)
                if new:
                    log.info("poll: %d new mention%s on %s", len(new), "s" if len(new) != 1 else "", network,
                             extra={"network": network})
                self.monitor.polled(network)
            except Exception as e:  # noqa: BLE001 - the next poll tries again
                log.warning("poll failed on %s: %s", network, clip(str(e)), extra={"network": network})
                self.monitor.poll_failed(network, str(e))
                if isinstance(e, StoreError):
                    self.monitor.store_failed(str(e))

    def check_credentials(self) -> None:
        """Stop at start, with one clear line, on what no retry can fix: a credential that is not set."""
        needed = {"x": USER_CONTEXT_ENV, "bluesky": BLUESKY_ENV}
        missing = [name for network in self.settings.bot.sources for name in needed.get(network, ())
                   if not os.environ.get(name)]
        if self.settings.hub.backend == "hub":
            from huggingface_hub import get_token

            if not get_token():
                missing.append("HF_TOKEN")
        if missing:
            raise UsageError(f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set: the bot needs "
                             "its account's credentials on each network in [bot] sources, and a Hub token to publish")

    def tie_names_to_accounts(self) -> None:
        """Look up, once at start, the handles the bot knows only by name: consents given before account ids
        were kept, and handles on the blocklist. Each found account is recorded as seen, which moves its
        consent to the account and pins the block to it, so both outlast a rename. Billed reads go within the
        budget; a handle not found stays honoured by name."""
        for network, source in self.sources.items():
            lookup = getattr(source, "lookup_accounts", None)
            if lookup is None:
                continue
            pinned = self.store.blocked_entries_resolved()
            names = self.store.unresolved_consents()
            names += [e for e in self.settings.bot.blocklist if e not in pinned and not is_account_entry(e)]
            for handle in dict.fromkeys(h for h in names if network_of(h) == ("bluesky" if network == "bluesky" else "x")):
                with self.metered(None, network):
                    usage_of = getattr(source, "lookup_usage", None)
                    left = self.budget_left()
                    if usage_of is not None and left is not None and self.cost(network, usage_of([handle])) > left:
                        log.info("names: %s waits for a day with budget left to be looked up", handle)
                        break
                    try:
                        found = lookup([handle])
                    except AccountError as e:
                        log.info("names: %s (kept by name)", e)
                        continue
                    except Exception as e:  # noqa: BLE001 - the network is away: the next start tries again
                        log.warning("names: could not look up %s on %s: %s", handle, network, clip(str(e)))
                        break
                self.store.saw_accounts(network, [(a.id, a.handle) for a in found.values()])

    def run(self, once: bool = False) -> None:
        """Poll and work until SIGTERM/SIGINT (or, with `once`, until nothing is left to do now)."""
        self.check_credentials()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self.stop)
        server = self.monitor.serve()  # /healthz and /metrics, with [monitoring] listen
        try:
            self.tie_names_to_accounts()
            if once:
                self.poll_and_log()
                self.drain()
            else:
                self._run_forever()
        finally:
            self.stop_jobs()
            if server is not None:
                server.close()

    def stop_jobs(self) -> None:
        """End the jobs that run on this machine; each starts again after a restart. Jobs on other
        machines go on, and are asked about again after a restart."""
        under_way = [r for r in self.store.jobs_under_way() if r.executor == self.executor.name]
        if under_way and self.executor.running() and not self.executor.remote:
            self.executor.stop()
            for r in under_way:
                log.info("request %d: stopped in training; its job starts again after a restart", r.id)

    def _run_forever(self) -> None:
        from apscheduler.schedulers.background import BackgroundScheduler

        # Generous misfire grace: a poll that is late because training held the CPU still runs.
        scheduler = BackgroundScheduler(job_defaults={"misfire_grace_time": 600, "coalesce": True, "max_instances": 1})
        scheduler.add_job(self.poll_and_log, "interval", seconds=self.settings.bot.poll_interval_seconds,
                          id="poll", next_run_time=_now())
        scheduler.add_job(self.drain, "interval", seconds=2, id="work", next_run_time=_now())
        scheduler.start()
        log.info("running: @%s, mode %s, sources %s", self.settings.bot.handle, self.settings.bot.mode,
                 ", ".join(self.sources))
        while not self.stopping.wait(0.5):
            pass
        scheduler.shutdown(wait=True)
        log.info("stopped")


def reply_text(r: Request, links: tuple[str, ...] = ()) -> str:
    """The reply as posted: numbered, inert (a sample or an echoed name holds no control characters), and
    guarded so that it mentions no one but the requester and links nowhere but under `links` (the
    organisation's own repos)."""
    return replies.guard(inert(replies.numbered(r.reply_text, r.id)), r.requester, links)


def failure_reply(error: BaseException) -> str:
    """What the requester is told when a request fails for good."""
    if isinstance(error, AccountError):
        return replies.failure(error.reason, [error.handle])
    if isinstance(error, NotEnoughDataError):
        return replies.failure("too_few", detail=str(error).split(" (")[0])
    if isinstance(error, OverBudget):
        return replies.OVER_BUDGET
    if isinstance(error, Refusal):
        return error.reply
    return replies.GENERIC_FAILURE


class OverBudget(UserError):
    """A call that costs more than a whole day's budget: the request ends with a polite reply."""


class WaitForBudget(TransientError):
    """A call that does not fit in what is left of today's budget: it waits for the next UTC day."""


def _start_of_utc_day(now: float) -> float:
    return now - now % 86400


def _now():
    from datetime import datetime, timezone

    return datetime.now(timezone.utc)
