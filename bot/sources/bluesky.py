"""Bluesky through the atproto SDK: profiles, author feeds, notifications and replies. The only module
that talks to Bluesky.

    >>> from bot.common.config import load_settings
    >>> from bot.sources.bluesky import BlueskyClient
    >>> sky = BlueskyClient.from_settings(load_settings())     # BLUESKY_HANDLE, BLUESKY_APP_PASSWORD
    >>> archives = sky.download_archives(["alice.bsky.social"])  # through the cache in [bluesky] cache_dir
    >>> archives["alice.bsky.social"].account.user_id
    'did:plc:u5cwb2mwiv2bfq53cjufe6yn'
    >>> mentions = sky.mentions_since(None)                     # oldest first; keep mentions[-1].resume_from
    >>> sky.reply(mentions[-1].id, "Your model is ready: https://huggingface.co/huggingtweets/...")
    'at://did:plc:3tzvkhflkbyzlm6e2dbmbw6i/app.bsky.feed.post/3mbv4ryqpqk2s'

The bot logs in as its own account with an app password (Settings > Privacy and security > App
passwords: it can post and read, but not change the account or read direct messages). The SDK keeps
the session: a short-lived access token, refreshed with the refresh token before it expires. Neither
token nor the password is ever logged or shown. `BLUESKY_SERVICE_URL` (default https://bsky.social)
is where the bot logs in; the SDK then follows the account's own server (PDS) named in the session,
which answers every call, passing `app.bsky.*` reads through to Bluesky's AppView.

Identities: a handle (`alice.bsky.social`, or any domain its owner controls) can change and can pass to
another account; the DID (`did:plc:...`) is the account, forever. Mentions carry both; archives are
cached by handle but a cache written for another DID is never served.

What is read, and why:
- People's posts come from `app.bsky.feed.getAuthorFeed` (filter `posts_with_replies`, no pinned post):
  one host answers for every account whatever server hosts it; Bluesky's moderation applies (taken
  down accounts are refused, labels are shown); reposts come along, as X's retweets do, so the counts
  mean the same on both networks; it pages back through the whole history. Listing the person's
  `app.bsky.feed.post` records (`com.atproto.repo.listRecords`) would need their own server, found
  through their DID document, and would skip moderation.
- Mentions come from the bot's notifications with reason "mention" or "reply" (a reply to one of the
  bot's posts, so the grammar can tell a command from chatter), read newest first until the cursor.
- Replies are `app.bsky.feed.post` records created in the bot's repo (`com.atproto.repo.createRecord`)
  with `reply.parent` = the mention and `reply.root` = the root of the mention's thread (both URI and
  CID, read with `app.bsky.feed.getPosts`), and no facets: nothing in the text becomes a link or a
  mention (see docs/networks.md, "Reading from Bluesky").
- The bot's recent replies (to find one sent just before a failure) are its own `app.bsky.feed.post`
  records, newest first (`com.atproto.repo.listRecords` on its own repo).

Failures: 5xx, dropped connections, timeouts (`[bluesky] request_timeout_seconds`) and garbled answers
are retried `[bluesky] max_retries` times with jittered, growing waits, then raise
`BlueskyUnavailableError` (transient: the bot tries again later). A 429 waits for its `ratelimit-reset`
when that is within `rate_limit_max_wait_seconds`, else raises at once with `retry_after`. An expired
or revoked session is logged in again once. A refused app password, an unknown account and other
refusals are permanent, one-line errors.
"""

from __future__ import annotations

import json
import logging
import operator
import os
import threading
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import regex
from atproto_client import Client, models
from atproto_client.exceptions import (
    BadRequestError,
    InvokeTimeoutError,
    LoginRequiredError,
    ModelError,
    NetworkError,
    RateLimitExceededError,
    RequestException,
    UnauthorizedError,
)
from atproto_client.models.common import XrpcError
from atproto_client.request import Request

from bot.common import handles
from bot.sources.adapters import Account, Mention
from bot.data.archive import Archive, open_archive, user_sidecar
from bot.common.config import BlueskySettings, Settings
from bot.common.errors import (
    AccountError,
    TransientError,
    UsageError,
    UserError,
    backoff_seconds,
    check_base_url,
    clip,
    hide_in_logs,
    inert,
)
from bot.common.files import write_atomically
from bot.common.progress import progress as progress_display
from bot.data.text import shorten_keeping_links

log = logging.getLogger(__name__)

HANDLE_ENV = "BLUESKY_HANDLE"
PASSWORD_ENV = "BLUESKY_APP_PASSWORD"
SERVICE_URL_ENV = "BLUESKY_SERVICE_URL"
DEFAULT_SERVICE_URL = "https://bsky.social"

PAGE_SIZE = 100  # the most listNotifications, getAuthorFeed and listRecords return per page
MAX_PAGES = 1000  # a guard against a server that hands out cursors forever
# Without a cursor (a first start), the latest 800 notifications: as far back as X's mentions reach.
FIRST_READ_PAGES = 8
MENTION_REASONS = ("mention", "reply")
# How far before the cursor each read of mentions looks again (see `BlueskyClient.mentions_since`).
MENTION_OVERLAP = timedelta(minutes=10)
POST_COLLECTION = "app.bsky.feed.post"
# The loggers of the HTTP libraries and the SDK, which may log a token at DEBUG level.
LIBRARY_LOGGERS = ("httpx", "httpcore", "atproto", "atproto_client", "atproto_core")
RATE_LIMIT_MARGIN_SECONDS = 0.5  # ratelimit-reset is a whole second: wait a little past it

# Labels on a profile that stop a download. An account that asked not to be shown to logged-out
# people is treated as X's protected accounts are: the bot is logged in and could read it, but the
# person's wish is the same.
NO_UNAUTHENTICATED_LABEL = "!no-unauthenticated"
TAKEDOWN_LABELS = {"!takedown", "!suspend"}  # what Bluesky's AppView itself treats as taken down

# --- errors ----------------------------------------------------------------------------------------


class BlueskyUnavailableError(TransientError):
    """Bluesky did not answer usefully after the last retry (429, 5xx, network, garbled body).

    `retry_after` is the number of seconds Bluesky asked us to wait, when it said (a rate limit)."""


class BlueskyRequestError(UserError):
    """Bluesky refused a request for a reason that will not pass by waiting (credentials, bad input).

    `error` is the XRPC error name (`InvalidRequest`, `AuthenticationRequired`, ...), when one came."""

    def __init__(self, message: str, status: int | None = None, error: str | None = None):
        super().__init__(message)
        self.status = status
        self.error = error


class MissingCredentialError(UsageError):
    """A Bluesky credential is not set in the environment; the message names the variable."""


# --- handles and lengths ---------------------------------------------------------------------------


def normalize_handle(text: str) -> str:
    """A Bluesky handle, lowercased and without '@'. Raises HandleError for anything else.

        >>> normalize_handle("@Alice.bsky.social")
        'alice.bsky.social'

    This runs before a handle touches a path or a request.
    """
    return handles.normalize_handle(text, "bluesky")


MAX_GRAPHEMES = 300  # Bluesky's limit for a post's text, in grapheme clusters ...
MAX_BYTES = 3000  # ... and in UTF-8 bytes
GRAPHEME_RE = regex.compile(r"\X")
LINK_RE = regex.compile(r"https?://[^\s<>\"]+", regex.IGNORECASE)


def post_length(text: str) -> int:
    """The length Bluesky counts: grapheme clusters, so an emoji with its modifiers, or a letter with
    its accents, is one.

        >>> post_length("hello"), post_length("今日は"), post_length("👨‍👩‍👧")
        (5, 3, 1)
    """
    return len(GRAPHEME_RE.findall(text))


def fits(text: str) -> bool:
    return post_length(text) <= MAX_GRAPHEMES and len(text.encode("utf-8")) <= MAX_BYTES


def fit_post(text: str) -> str:
    """`text` within Bluesky's 300 graphemes (and 3,000 bytes): the prose is shortened and ends with
    "…"; links are kept whole, never cut.

        >>> reply = fit_post("Your model is ready: https://huggingface.co/huggingtweets/alice " + "word " * 100)
        >>> post_length(reply) <= 300, "https://huggingface.co/huggingtweets/alice" in reply
        (True, True)
    """
    text = unicodedata.normalize("NFC", text).strip()
    if fits(text):
        return text
    units: list[tuple[str, bool]] = []  # graphemes of prose, whole links
    pos = 0
    for m in LINK_RE.finditer(text):
        units += [(g, False) for g in GRAPHEME_RE.findall(text[pos:m.start()])] + [(m.group(), True)]
        pos = m.end()
    units += [(g, False) for g in GRAPHEME_RE.findall(text[pos:])]

    return shorten_keeping_links(units, fits)


# --- what an account looks like ---------------------------------------------------------------------


@dataclass(frozen=True)
class BlueskyProfile:
    """An account as Bluesky describes it. `sidecar()` is the `.user.json` of its JSONL archive."""

    did: str
    handle: str
    display_name: str | None = None
    avatar: str | None = None
    posts_count: int | None = None

    def sidecar(self) -> dict:
        return {"id": self.did, "username": self.handle, "name": self.display_name or self.handle,
                "profile_image_url": self.avatar, "protected": False}


# --- the client ------------------------------------------------------------------------------------


class BlueskyClient:
    """The bot's calls to Bluesky (a `bot.sources.adapters.Source`). One login per client, made at the first call.

    Build it with `BlueskyClient.from_settings(settings)`; pass credentials explicitly only in tests.
    """

    def __init__(self, settings: Settings, *, handle: str | None = None, app_password: str | None = None,
                 service_url: str | None = None):
        self.settings = settings
        self.config: BlueskySettings = settings.bluesky
        self._handle = handle
        self._password = app_password
        self._service_url = check_base_url(service_url, SERVICE_URL_ENV, "https://bsky.social") or DEFAULT_SERVICE_URL
        self._sdk: Client | None = None
        self._did: str | None = None
        self._lock = threading.RLock()
        hide_in_logs(LIBRARY_LOGGERS, [app_password] if app_password else [])

    @classmethod
    def from_settings(cls, settings: Settings, environ: dict[str, str] | None = None) -> BlueskyClient:
        """Credentials and `BLUESKY_SERVICE_URL` from the environment (or `environ`)."""
        env = os.environ if environ is None else environ
        return cls(settings, handle=env.get(HANDLE_ENV) or None, app_password=env.get(PASSWORD_ENV) or None,
                   service_url=env.get(SERVICE_URL_ENV) or None)

    def close(self) -> None:
        self._forget_session()

    def __enter__(self) -> BlueskyClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- the session ----------------------------------------------------------------------------

    network = "bluesky"

    @property
    def bot_handle(self) -> str:
        """The bot's own handle, as mentions address it (lowercased, no "@")."""
        return normalize_handle(self._handle) if self._handle else ""

    @property
    def bot_user_id(self) -> str:
        """The bot's DID (known once logged in: the first call logs in)."""
        if self._did is None:
            self._call("logging in", lambda sky: None)
        assert self._did is not None
        return self._did

    def _session(self) -> Client:
        """The logged-in SDK client, logging in first when there is none."""
        with self._lock:
            if self._sdk is not None:
                return self._sdk
            missing = [name for name, value in ((HANDLE_ENV, self._handle), (PASSWORD_ENV, self._password))
                       if not value]
            if missing:
                raise MissingCredentialError(f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not "
                                             "set: the bot logs in to Bluesky with its handle and an app password")
            sky = Client(base_url=self._service_url,
                         request=Request(timeout=httpx.Timeout(self.config.request_timeout_seconds)))
            sky.on_session_change(self._on_session)
            try:
                # The bot's own profile is not needed: the session names its DID.
                sky.login(login=self._handle, password=self._password, fetch_bsky_profile=False)
            except UnauthorizedError as e:  # refused before anything was done: no retry can help
                sky.request.close()
                raise BlueskyRequestError(f"Bluesky refused the login of {self._handle} ({_error_text(e)}): check "
                                          f"{HANDLE_ENV} and {PASSWORD_ENV} (an app password, not the account's)",
                                          status=_status(e), error=_error_name(e)) from None
            except BaseException:
                sky.request.close()
                raise
            log.info("Bluesky: logged in as %s (%s)", self._handle, self._did)
            self._sdk = sky
            return sky

    def _on_session(self, _event, session) -> None:
        """Called by the SDK with every new pair of tokens (login, refresh): they are masked in the logs
        before any request can carry them."""
        hide_in_logs(LIBRARY_LOGGERS, [session.access_jwt, session.refresh_jwt])
        self._did = session.did

    def _forget_session(self) -> None:
        with self._lock:
            if self._sdk is not None:
                self._sdk.request.close()
            self._sdk = None

    # --- accounts and posts ---------------------------------------------------------------------

    def get_profile(self, handle: str) -> BlueskyProfile:
        """The account behind `handle`. Raises AccountError: "unknown" (no such profile, or deactivated),
        "suspended" (taken down) or "protected" (it asked not to be shown to logged-out people)."""
        handle = normalize_handle(handle)
        try:
            profile = self._call(f"looking up @{handle}", "app.bsky.actor.get_profile",
                                 models.AppBskyActorGetProfile.Params(actor=handle))
        except BlueskyRequestError as e:
            if e.error == "AccountTakedown":
                raise AccountError(handle, "suspended") from None
            if e.error == "AccountDeactivated" or (e.error == "InvalidRequest" and "not found" in str(e).lower()):
                raise AccountError(handle, "unknown") from None  # "Profile not found"
            raise
        labels = _active_labels(profile.labels)
        if labels & TAKEDOWN_LABELS:
            raise AccountError(handle, "suspended")
        if NO_UNAUTHENTICATED_LABEL in labels:
            raise AccountError(handle, "protected")
        return BlueskyProfile(did=profile.did, handle=profile.handle.lower(),
                              display_name=inert(profile.display_name) if profile.display_name else None,
                              avatar=profile.avatar, posts_count=profile.posts_count)

    def download_posts(self, profile: BlueskyProfile, limit: int | None = None,
                       on_page: Callable[[int], None] | None = None) -> list[dict]:
        """The account's posts, reposts and replies, newest first, as X API v2-shaped post objects (see
        `post_from_feed_item`): up to `limit` (default `[bluesky] max_posts_per_user`). `on_page(n)` is
        called with the number of posts of each page (for a progress bar)."""
        limit = min(limit or self.config.max_posts_per_user, self.config.max_posts_per_user)
        posts: list[dict] = []
        cursor = None
        for _ in range(MAX_PAGES):
            page = self._call(f"reading @{profile.handle}'s posts", "app.bsky.feed.get_author_feed",
                              models.AppBskyFeedGetAuthorFeed.Params(
                                  actor=profile.did, filter="posts_with_replies", include_pins=False,
                                  limit=max(1, min(PAGE_SIZE, limit - len(posts))), cursor=cursor))
            posts.extend(post_from_feed_item(item) for item in page.feed[: limit - len(posts)])
            if on_page:
                on_page(len(page.feed))
            cursor = page.cursor
            if not cursor or not page.feed or len(posts) >= limit:
                break
        return posts

    def lookup_accounts(self, handles: list[str]) -> dict[str, Account]:
        """Who each handle names now: its DID, asked of Bluesky. Raises AccountError for an account that
        cannot be modelled (see `get_profile`)."""
        found = {}
        for handle in handles:
            profile = self.get_profile(handle)
            found[normalize_handle(handle)] = Account("bluesky", profile.did, profile.handle)
        return found

    def download_archives(self, handles: list[str], accounts: dict[str, Account] | None = None,
                          progress: bool = False, console=None) -> dict[str, Archive]:
        """Each person's posts through the cache in `[bluesky] cache_dir`, as archives keyed by lowercased handle.

        Every profile is looked up first, even for a fresh cache (reads are free on Bluesky): an account
        that was taken down, asked not to be shown, or whose handle now names another account is never
        served from an old copy, and one refused account fails the request before any posts are read.
        After `cache_ttl_hours` the whole feed is read again rather than only its new posts, so that
        posts deleted since are gone from the next model too.
        """
        handles = [normalize_handle(h) for h in handles]
        profiles = {h: self.get_profile(h) for h in handles}
        for handle, profile in profiles.items():
            if accounts and handle in accounts and profile.did != accounts[handle].id:
                raise AccountError(handle, "changed")
        cache = PostCache(self.config.cache_dir, self.config.cache_ttl_hours)
        stale = [h for h in handles if not cache.is_fresh(h, profiles[h].did)]
        if console is None and progress:
            from rich.console import Console

            console = Console(stderr=True, soft_wrap=True)
        read = 0
        with progress_display(progress, console, transient=False) as bar:
            for handle in stale:
                profile = profiles[handle]
                task = bar.add(f"@{handle} posts", min(profile.posts_count or 0, self.config.max_posts_per_user) or None)
                posts = self.download_posts(profile, on_page=lambda n, task=task: bar.advance(task, n))
                bar.finish(task)
                cache.write(handle, posts, profile)
                read += len(posts)
        if progress:
            cached = ", ".join(f"@{h}" for h in handles if h not in stale)
            console.print(f"Bluesky: read {read:,} post{'' if read == 1 else 's'}"
                          + (f" ({cached} from the cache)" if cached else ""), markup=False, highlight=False)
        return {h: open_archive(cache.path(h)) for h in handles}

    # --- mentions and replies -------------------------------------------------------------------

    def mentions_since(self, since: str | None) -> list[Mention]:
        """The bot's notifications of a mention or a reply since the cursor `since` (the latest 800 when
        None), oldest first. Each one's `cursor` (`Mention.resume_from`) is where the next call resumes:
        a notification time and a post URI, since post URIs do not grow.

        Notifications sort by the post's own creation time when that is earlier than the time Bluesky
        indexed it, so a post indexed late (a slow server, a client clock behind) can sort before one
        already read. Each call therefore reads back `MENTION_OVERLAP` before the cursor, and may give
        again mentions it gave before: the bot's store skips those it has.
        """
        after = _parse_cursor(since)
        if since and after is None:
            log.warning("Bluesky: the mentions cursor %r is not one of ours; reading the latest mentions", since)
        read_back_to = after[0] - MENTION_OVERLAP if after else None
        found: dict[str, tuple[tuple[datetime, str], Mention]] = {}
        cursor = None
        for _ in range(MAX_PAGES if after else FIRST_READ_PAGES):
            page = self._call("reading mentions", "app.bsky.notification.list_notifications",
                              models.AppBskyNotificationListNotifications.Params(
                                  limit=PAGE_SIZE, cursor=cursor, reasons=list(MENTION_REASONS)))
            reached = False
            for notification in page.notifications:
                key = _notification_key(notification)
                if read_back_to is not None and key[0] < read_back_to:
                    reached = True  # newest first: everything from here on is older still
                    continue
                # The cursor never goes back: a late post read now resumes from where we already were.
                resume = max(key, after) if after else key
                mention = _mention_from_notification(notification, resume)
                if mention is not None:
                    found.setdefault(mention.id, (key, mention))
            cursor = page.cursor
            if reached or not cursor or not page.notifications:
                break
        return [mention for _, mention in sorted(found.values(), key=lambda pair: pair[0])]

    def reply(self, mention_uri: str, text: str) -> str:
        """Post `text` (fitted to 300 graphemes, links kept whole, no facets) as a reply to the post
        `mention_uri`, in its thread; the new post's URI.

        A reply whose fate is unknown (a 5xx, a timeout, a garbled answer) is looked for among the bot's
        recent replies before it is sent again, so one mention never gets two replies."""
        text = fit_post(text)
        parent, root = self._thread_refs(mention_uri)
        record = models.AppBskyFeedPost.Record(
            text=text, created_at=_now_iso(), reply=models.AppBskyFeedPost.ReplyRef(parent=parent, root=root))

        def already_sent() -> str | None:
            return self.recent_replies().get(mention_uri)

        created = self._call(f"replying to {mention_uri}", "com.atproto.repo.create_record",
                             models.ComAtprotoRepoCreateRecord.Data(repo=self.bot_user_id, collection=POST_COLLECTION,
                                                                    record=record),
                             check_before_retry=already_sent)
        if isinstance(created, str):  # found among the recent replies: it had gone out
            return created
        return str(created.uri)

    def recent_replies(self, limit: int = PAGE_SIZE) -> dict[str, str]:
        """Mention URI -> reply URI for the bot's latest posts (up to `limit`) that are replies."""
        replies: dict[str, str] = {}
        cursor = None
        read = 0
        while read < limit:
            page = self._call("reading the bot's replies", "com.atproto.repo.list_records",
                              models.ComAtprotoRepoListRecords.Params(
                                  repo=self.bot_user_id, collection=POST_COLLECTION,
                                  limit=max(1, min(PAGE_SIZE, limit - read)), cursor=cursor))
            for record in page.records[: limit - read]:
                parent = _dig(record.value, "reply", "parent", "uri")
                if parent:
                    replies.setdefault(str(parent), str(record.uri))  # newest first: the latest reply wins
            read += len(page.records)
            cursor = page.cursor
            if not cursor or not page.records:
                break
        return replies

    def _thread_refs(self, uri: str) -> tuple[models.ComAtprotoRepoStrongRef.Main, models.ComAtprotoRepoStrongRef.Main]:
        """(parent, root) strong references for a reply to the post `uri`: a reply names the exact
        version (CID) of the post it answers and of its thread's first post."""
        if not uri.startswith("at://"):
            raise BlueskyRequestError(f"{uri!r} is not the AT URI of a Bluesky post")
        found = self._call(f"reading {uri}", "app.bsky.feed.get_posts", models.AppBskyFeedGetPosts.Params(uris=[uri]))
        post = next((p for p in found.posts if p.uri == uri), None)
        if post is None:
            raise BlueskyRequestError(f"Bluesky cannot reply to {uri}: the post was deleted or is not visible")
        parent = models.ComAtprotoRepoStrongRef.Main(uri=post.uri, cid=post.cid)
        root_uri, root_cid = _dig(post.record, "reply", "root", "uri"), _dig(post.record, "reply", "root", "cid")
        root = models.ComAtprotoRepoStrongRef.Main(uri=root_uri, cid=root_cid) if root_uri and root_cid else parent
        return parent, root

    # --- plumbing -------------------------------------------------------------------------------

    def _call(self, what: str, method: str | Callable[[Client], Any], params: Any = None, *,
              check_before_retry: Callable[[], str | None] | None = None) -> Any:
        """The SDK's `method` (a dotted name such as "app.bsky.feed.get_posts", or a function of the
        logged-in SDK client) with our bounded retries; its parsed answer.

        `check_before_retry`, for calls that change something, is asked before a retry whose first try
        may have gone through; a non-None answer is returned instead of trying again."""
        attempts = self.config.max_retries + 1
        reason, retry_after = "no answer", None
        maybe_done = False  # whether the failed try may still have been carried out
        logged_in_again = False
        attempt = 0
        while True:
            if maybe_done and check_before_retry is not None:
                done = check_before_retry()
                if done is not None:
                    log.info("Bluesky: %s had gone through before the failure (%s)", what, done)
                    return done
            wait = 0.0
            try:
                sky = self._session()
                if callable(method):
                    return method(sky)
                return operator.attrgetter(method)(sky)(params)
            except RateLimitExceededError as e:  # refused before anything was done
                wait = self._rate_limit_wait(e)
                reason, retry_after, maybe_done = "rate limited (HTTP 429)", wait, False
                if wait > self.config.rate_limit_max_wait_seconds:
                    most = self.config.rate_limit_max_wait_seconds
                    raise BlueskyUnavailableError(
                        f"Bluesky rate limit while {what}: it resets in {wait:.0f} s, longer than [bluesky] "
                        f"rate_limit_max_wait_seconds ({most:.0f} s); try again later", retry_after=wait) from None
            except (UnauthorizedError, BadRequestError, LoginRequiredError) as e:
                if _error_name(e) in ("ExpiredToken", "InvalidToken") or isinstance(e, LoginRequiredError):
                    if not logged_in_again:  # a session revoked or expired under us: log in once more,
                        log.info("Bluesky: the session ended (%s); logging in again", _error_name(e) or "expired")
                        self._forget_session()  # which is not one of the attempts
                        logged_in_again, maybe_done = True, False
                        continue
                raise self._refusal(what, e) from None
            except NetworkError as e:  # transport failures; the SDK also files 409, 413 and 502 here
                if _status(e) in (409, 413):
                    raise self._refusal(what, e) from None
                reason, wait = _network_reason(e), self._backoff(attempt)
                maybe_done = reason != "could not connect"
            except RequestException as e:
                if (_status(e) or 0) < 500:
                    raise self._refusal(what, e) from None
                reason, wait, maybe_done = f"HTTP {_status(e)}", self._backoff(attempt), True
            except httpx.TransportError as e:  # a connection closed without an answer, which the SDK passes on
                reason, wait, maybe_done = _network_reason(e), self._backoff(attempt), True
            except (ValueError, ModelError):  # a garbled or truncated body, or one of the wrong shape
                reason, wait, maybe_done = "a malformed answer", self._backoff(attempt), True
            attempt += 1
            if attempt >= attempts:
                break
            log.warning("Bluesky: %s while %s; retrying in %.1f s (attempt %d of %d)", reason, what, wait,
                        attempt + 1, attempts)
            time.sleep(wait)
        raise BlueskyUnavailableError(f"Bluesky is unavailable: {reason} while {what}, {attempts} "
                                      f"attempt{'s' if attempts != 1 else ''}; try again later",
                                      retry_after=retry_after)

    def _refusal(self, what: str, e: Exception) -> BlueskyRequestError:
        status = _status(e)
        if status in (401, 403) and _error_name(e) not in ("AccountTakedown",):
            return BlueskyRequestError(f"Bluesky refused the bot's session while {what} ({_error_text(e)}): check "
                                       f"{HANDLE_ENV} and {PASSWORD_ENV}", status=status, error=_error_name(e))
        return BlueskyRequestError(f"Bluesky refused {what}: {_error_text(e)}", status=status, error=_error_name(e))

    def _rate_limit_wait(self, e: RateLimitExceededError) -> float:
        if e.reset_at is not None:
            return max(0.0, e.reset_at.timestamp() - time.time()) + RATE_LIMIT_MARGIN_SECONDS
        if e.retry_after is not None:
            return e.retry_after
        return self.config.rate_limit_default_wait_seconds

    def _backoff(self, attempt: int) -> float:
        return backoff_seconds(attempt, self.config.retry_base_wait_seconds, self.config.retry_max_wait_seconds,
                               jitter=True)


def _status(e: Exception) -> int | None:
    response = getattr(e, "response", None)
    return getattr(response, "status_code", None)


def _error_name(e: Exception) -> str | None:
    content = getattr(getattr(e, "response", None), "content", None)
    return content.error if isinstance(content, XrpcError) else None


def _error_text(e: Exception) -> str:
    """'HTTP 400 InvalidRequest: Profile not found', masked and on one line."""
    content = getattr(getattr(e, "response", None), "content", None)
    detail = ""
    if isinstance(content, XrpcError):
        detail = f" {content.error}: {content.message}" if content.message else f" {content.error}"
    return clip(f"HTTP {_status(e)}{detail}")  # clip makes it inert: secrets masked


def _network_reason(e: Exception) -> str:
    if isinstance(e, InvokeTimeoutError):
        return "timed out"
    cause = e.__cause__ if isinstance(e, NetworkError) else e
    if isinstance(cause, (httpx.ConnectError, httpx.ConnectTimeout)):
        return "could not connect"
    if isinstance(cause, httpx.TimeoutException):
        return "timed out"
    if isinstance(e, NetworkError) and _status(e):
        return f"HTTP {_status(e)}"
    return "connection lost"


# --- reading the answers ---------------------------------------------------------------------------


def _dig(obj: Any, *names: str) -> Any:
    """`obj.a.b.c`, or None where any step is missing (SDK models and the SDK's DotDict alike)."""
    for name in names:
        if obj is None:
            return None
        obj = obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)
    return obj


def _active_labels(labels) -> set[str]:
    """The label values in force: those set and not negated by the same labeller."""
    applied = {(label.src, label.val) for label in labels or [] if not label.neg}
    negated = {(label.src, label.val) for label in labels or [] if label.neg}
    return {val for src, val in applied - negated}


def _did_of(uri: str | None) -> str | None:
    """The repo (DID) of an AT URI: at://did:plc:abc/app.bsky.feed.post/3k... -> did:plc:abc."""
    if not uri or not uri.startswith("at://"):
        return None
    return uri[len("at://"):].split("/", 1)[0] or None


def _moment(value: str | None) -> datetime | None:
    """An ISO 8601 timestamp as an aware UTC datetime, or None when it cannot be read."""
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00")) if value else None
    except ValueError:
        return None
    if moment is not None and moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc) if moment else None


def _iso(value: str | None) -> str | None:
    """A timestamp as X writes them (UTC, milliseconds, "Z"), or None when it cannot be read."""
    moment = _moment(value)
    if moment is None:
        return None
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _now_iso() -> str:
    return _iso(datetime.now(timezone.utc).isoformat()) or ""


def _language(langs) -> str:
    """The first of a post's languages, as its primary subtag ("en-US" -> "en"); "und" when none."""
    first = (langs or [None])[0]
    return str(first).split("-")[0].lower() if first else "und"


def post_from_feed_item(item) -> dict:
    """An X API v2-shaped post object from an author feed item, for the JSONL archive:
    `id` (the post's AT URI; a repost's own URI), `text`, `lang`, `created_at`, `author_id` (DID), and
    `referenced_tweets` with "retweeted" for a repost, "replied_to" for a reply, "quoted" for a quote."""
    post, reason = item.post, item.reason
    record = post.record
    is_repost = _dig(reason, "py_type") == "app.bsky.feed.defs#reasonRepost"
    refs = []
    if is_repost:
        refs.append({"type": "retweeted", "id": post.uri})
    parent = _dig(record, "reply", "parent", "uri")
    if parent:
        refs.append({"type": "replied_to", "id": parent})
    quoted = _dig(record, "embed", "record", "uri") or _dig(record, "embed", "record", "record", "uri")
    if quoted:
        refs.append({"type": "quoted", "id": quoted})
    if is_repost:
        post_id = _dig(reason, "uri") or f"{post.uri}#repost-{_dig(reason, 'indexed_at')}"
        created = _iso(_dig(reason, "indexed_at"))
        author = _dig(reason, "by", "did") or post.author.did
    else:
        post_id, created, author = post.uri, _iso(_dig(record, "created_at")) or _iso(post.indexed_at), post.author.did
    result = {"id": post_id, "text": _dig(record, "text") or "", "lang": _language(_dig(record, "langs")),
              "created_at": created, "author_id": author}
    if refs:
        result["referenced_tweets"] = refs
    if parent:
        result["in_reply_to_user_id"] = _did_of(parent)
    return result


EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _notification_key(notification) -> tuple[datetime, str]:
    """Where a notification stands in the list: its index time, then its URI (for equal times)."""
    return _moment(notification.indexed_at) or EPOCH, str(notification.uri)


def _parse_cursor(cursor: str | None) -> tuple[datetime, str] | None:
    """A mention cursor ("2026-11-22T10:00:00.123Z at://...") as a sortable key; None for anything else."""
    moment_text, _, uri = (cursor or "").partition(" ")
    moment = _moment(moment_text)
    if moment is None or not uri.startswith("at://"):
        return None
    return moment, uri


def _mention_from_notification(n, resume: tuple[datetime, str]) -> Mention | None:
    """A Mention from a notification of a mention or a reply (None for a like, a follow, ...)."""
    if n.reason not in MENTION_REASONS:
        return None
    record = n.record
    parent = _dig(record, "reply", "parent", "uri")
    moment, uri = resume
    return Mention(id=str(n.uri), author_id=str(n.author.did), author_username=str(n.author.handle).lower(),
                   text=inert(_dig(record, "text") or ""),
                   created_at=_iso(_dig(record, "created_at")) or _iso(n.indexed_at),
                   in_reply_to_user_id=_did_of(parent), in_reply_to_tweet_id=parent,
                   cursor=f"{_iso(moment.isoformat())} {uri}")


# --- the per-person cache --------------------------------------------------------------------------


class PostCache:
    """Downloaded feeds, one `<handle>.jsonl` (newest first) and `<handle>.user.json` per person: the
    JSONL archive form that `bot.data.archive.open_archive` reads. A copy is fresh for `ttl_hours` after it
    was written, and only for the account (DID) it was written for."""

    def __init__(self, folder: str | Path, ttl_hours: float):
        self.folder = Path(folder)
        self.ttl_seconds = ttl_hours * 3600

    def path(self, handle: str) -> Path:
        return self.folder / f"{normalize_handle(handle)}.jsonl"

    def is_fresh(self, handle: str, did: str) -> bool:
        sidecar = user_sidecar(self.path(handle))  # written last: its time is the time of the download
        try:
            written_for = json.loads(sidecar.read_text(encoding="utf-8")).get("id")
            age = time.time() - sidecar.stat().st_mtime
        except (OSError, ValueError, AttributeError):
            return False
        return self.path(handle).exists() and written_for == did and age < self.ttl_seconds

    def write(self, handle: str, posts: list[dict], profile: BlueskyProfile) -> Path:
        path = self.path(handle)
        write_atomically(path, "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in posts))
        write_atomically(user_sidecar(path), json.dumps(profile.sidecar(), ensure_ascii=False))
        log.info("Bluesky: @%s: %d posts", handle, len(posts))
        return path
