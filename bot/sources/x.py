"""X (Twitter) API v2 through tweepy: users, timelines, mentions and replies. The only module that talks to X.

    >>> from bot.common.config import load_settings
    >>> from bot.sources.x import XClient, download_archives
    >>> settings = load_settings()
    >>> archives = download_archives(["alice"], settings)     # through the cache in [x] cache_dir
    >>> archives["alice"].account.username
    'alice'
    >>> x = XClient.from_settings(settings)                   # credentials from the environment
    >>> x.get_user("alice").protected
    False
    >>> mentions = x.mentions_since(None)                      # oldest first; the caller keeps the cursor
    >>> x.reply(mentions[-1].id, fit_reply("@carol your model is ready", "https://huggingface.co/huggingtweets/alice"))
    '1900000000000000001'
    >>> x.usage                                                # what X bills: posts and users read, posts created
    Usage(posts_read=3201, users_read=2, posts_created=0, posts_created_with_link=1)

Credentials come from the environment: `X_BEARER_TOKEN` (app-only, for reads) and `X_API_KEY`,
`X_API_SECRET`, `X_ACCESS_TOKEN`, `X_ACCESS_TOKEN_SECRET` (OAuth 1.0a user context, for mentions and
replies; reads fall back to it when there is no bearer token). `X_API_BASE_URL` sends every request to
another host (a loopback X in tests): tweepy hard-codes its host, so the rewrite happens in the
`requests.Session` it exposes as `client.session`.

Failures: tweepy's own `wait_on_rate_limit` is off (it sleeps without bound and loops when the reset
header is missing). Instead every call is retried here: a 429 waits until `x-rate-limit-reset` (at most
`[x] rate_limit_max_wait_seconds`), a 5xx, a dropped connection, a timeout or a garbled body waits a
jittered, exponentially growing delay, and after `[x] max_retries` retries the call raises
`XUnavailableError`, which is transient: the bot tries again later.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
import unicodedata
from collections.abc import Callable
from pathlib import Path

import regex
import requests
import tweepy

from bot.sources.adapters import Account, Mention, Usage, XUser
from bot.data.archive import Archive, open_archive, user_sidecar
from bot.common.config import Settings, XSettings
from bot.common.errors import (AccountError, TransientError, UsageError, UserError, backoff_seconds, check_base_url, clip,
                        hide_in_logs, inert)
from bot.common.files import write_atomically
from bot.common.handles import normalize_handle
from bot.common.progress import progress as progress_display
from bot.data.text import SCHEME_URL_RE, link_candidates, shorten_keeping_links

log = logging.getLogger(__name__)

X_API_HOST = "https://api.twitter.com"  # what tweepy puts in front of every route
PAGE_SIZE = 100  # the most the timeline and mentions endpoints return per page
MIN_PAGE_SIZE = 5  # ... and the fewest they accept
MAX_PAGES = 1000  # a guard against a server that hands out next_token forever
# The bot's latest posts read to find a reply that may have gone out before a failure or a crash: replies
# are posted one at a time, so a lost one is among the last few. Each post read is billed.
REPLY_CHECK_POSTS = 20
# How long an account looked up stays the word on who a handle is, for the download that follows it.
LOOKUP_KEEP_SECONDS = 600.0
RATE_LIMIT_MARGIN_SECONDS = 0.5  # X's reset is a whole second: wait a little past it

# The fields the dataset and the model card use; X sends only id, text and edit_history_tweet_ids by default.
TWEET_FIELDS = ["created_at", "lang", "referenced_tweets", "note_tweet", "entities", "author_id",
                "in_reply_to_user_id", "conversation_id"]
USER_FIELDS = ["profile_image_url", "protected", "public_metrics"]
MENTION_FIELDS = ["created_at", "author_id", "in_reply_to_user_id", "referenced_tweets", "note_tweet",
                  "conversation_id", "lang"]

READ_ENV = "X_BEARER_TOKEN"
USER_CONTEXT_ENV = ("X_API_KEY", "X_API_SECRET", "X_ACCESS_TOKEN", "X_ACCESS_TOKEN_SECRET")
BASE_URL_ENV = "X_API_BASE_URL"
# The loggers of the HTTP libraries: tweepy logs the bearer header and oauthlib the OAuth parameters at DEBUG level.
LIBRARY_LOGGERS = ("tweepy", "oauthlib", "requests_oauthlib", "urllib3", "requests")

# --- errors ----------------------------------------------------------------------------------------


class UnknownUserError(AccountError):
    """No account with this handle on X."""

    def __init__(self, handle: str):
        super().__init__(handle, "unknown")


class SuspendedUserError(AccountError):
    """The account is suspended by X."""

    def __init__(self, handle: str):
        super().__init__(handle, "suspended")


class ProtectedUserError(AccountError):
    """The account's posts are protected: never downloaded."""

    def __init__(self, handle: str):
        super().__init__(handle, "protected")


class XUnavailableError(TransientError):
    """X did not answer usefully after the last retry (429, 5xx, network, garbled body). Try again later.

    `retry_after` is the number of seconds X asked us to wait, when it said (a rate limit), else None.
    """


class XRequestError(UserError):
    """X refused a request for a reason that will not pass by waiting (credentials, permissions, bad input)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class MissingCredentialError(UsageError):
    """An X credential is not set in the environment; the message names the variable."""


# --- posts' length, counted as X counts it (twitter-text v3) ---------------------------------------

MAX_WEIGHTED_LENGTH = 280
URL_WEIGHT = 23  # every link is shortened to a t.co link of this length
# Code points that weigh 1; every other code point weighs 2 (twitter-text v3 "ranges").
LIGHT_RANGES = ((0x0000, 0x10FF), (0x2000, 0x200D), (0x2010, 0x201F), (0x2032, 0x2037))
GRAPHEME_RE = regex.compile(r"\X")
# One emoji as X counts it (2): a flag, a keycap, a pictograph with its presentation selector or the skin
# tone its kind takes, or a subdivision flag with its tags. A sequence of pictographs joined by zero-width
# joiners is one emoji only when it is on Unicode's list (a family is, most pairs are not): not knowing the
# list, such a sequence counts as its parts, which is never less than X counts.
EMOJI_SEQUENCE_RE = regex.compile(
    r"\p{Regional_Indicator}{1,2}|[0-9#*]\ufe0f?\u20e3"
    r"|\p{Emoji_Modifier_Base}\ufe0f?[\U0001F3FB-\U0001F3FF]|\p{Extended_Pictographic}\ufe0f?[\U000E0020-\U000E007F]*")
EMOJI_CHAR_RE = regex.compile(r"[\p{Extended_Pictographic}\p{Regional_Indicator}]")


def weighted_length(text: str) -> int:
    """The length X counts for `text`, or more, never less: 280 is the most a post may have.

        >>> weighted_length("hello"), weighted_length("今日は"), weighted_length("https://huggingface.co/x")
        (5, 6, 23)

    Rules (twitter-text v3): text is NFC-normalised; a link counts 23; an emoji (a whole sequence, skin
    tone and joiners included) counts 2; CJK and most scripts past U+10FF count 2 per code point;
    Latin, Greek, Cyrillic, Hebrew, Arabic, Devanagari and the like count 1. Which words X makes links of
    depends on its list of top-level domains and on rules of where a link ends: a link it surely makes
    (`SURE_LINK_RE`) counts 23, and anything else that could be one counts as the most it could cost (its
    own length, plus what linking its shortest possible part would add), so a post counted as fitting fits.
    """
    text = unicodedata.normalize("NFC", text)
    return sum(_piece_weight(piece, kind) for piece, kind in _pieces(text))


def has_link(text: str) -> bool:
    """Whether X may see a link in `text` (it bills such a post at a higher price): when unsure, yes."""
    return any(kind != "text" for _, kind in _pieces(unicodedata.normalize("NFC", text)))


def fit_reply(text: str, url: str | None = None, limit: int = MAX_WEIGHTED_LENGTH) -> str:
    """`text`, then a space and `url`, within `limit` weighted characters: the text is shortened, never a link.

        >>> reply = fit_reply("@alice " + "words " * 100, "https://huggingface.co/huggingtweets/alice")
        >>> weighted_length(reply) <= 280, reply.endswith("https://huggingface.co/huggingtweets/alice")
        (True, True)

    Links inside `text` are kept whole too: the prose around them is cut (at a word boundary when one
    is near) and ends with "…".
    """
    text = unicodedata.normalize("NFC", text).strip()
    if url is not None and not re.match(r"https?://\S+$", url):
        raise ValueError(f"not a link: {url!r}")
    tail = f" {url}" if url else ""
    if weighted_length(text + tail) <= limit:
        return text + tail
    return _shorten(text, limit - weighted_length(tail)) + tail


# A link X surely makes, and that ends where X ends it: an ASCII host under a top-level domain on X's list,
# then characters X takes in a link's path and query, ending in one X ends a link with.
SURE_TLDS = ("com", "org", "net", "co", "io", "ai", "dev", "app", "me", "ly", "gl", "tv", "social", "uk", "de",
             "fr", "jp", "info", "xyz", "edu", "gov")
SURE_LINK_RE = re.compile(
    r"(?:https?://|www\.)(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)+(?:" + "|".join(SURE_TLDS) + r")(?![a-z0-9-])"
    r"(?::[0-9]{1,5})?(?:/(?:[a-z0-9\-._~/%#=&+@!*',;:$|?]*[a-z0-9=_#/+\-])?)?", re.IGNORECASE)
# What linking the shortest link a word could hold ("a.co", 4 characters counted 23) adds to its length.
MOST_A_LINK_ADDS = URL_WEIGHT - 4


def _pieces(text: str) -> list[tuple[str, str]]:
    """`text` cut into (piece, kind) runs: "link" (X surely links it), "maybe" (X may link some of it) or
    "text"."""
    pieces, pos = [], 0
    for start, end in link_candidates(text):
        if start > pos:
            pieces.append((text[pos:start], "text"))
        candidate = text[start:end]
        sure = SURE_LINK_RE.match(candidate) if SCHEME_URL_RE.match(text, start) else None
        if sure:
            pieces.append((candidate[:sure.end()], "link"))
            if sure.end() < end - start:
                pieces.append((candidate[sure.end():], "maybe"))
        else:
            pieces.append((candidate, "maybe"))
        pos = end
    if pos < len(text):
        pieces.append((text[pos:], "text"))
    return pieces


def _piece_weight(piece: str, kind: str) -> int:
    if kind == "link":
        return URL_WEIGHT
    if kind == "maybe":  # every link holds a dot: at most as many links as dots, each adding at most so much
        return _plain_weight(piece) + MOST_A_LINK_ADDS * piece.count(".")
    return _plain_weight(piece)


def _plain_weight(text: str) -> int:
    return sum(_grapheme_weight(g) for g in GRAPHEME_RE.findall(text))


def _grapheme_weight(g: str) -> int:
    if EMOJI_SEQUENCE_RE.fullmatch(g):  # one emoji, however many code points make it
        return 2
    # Anything else one code point at a time, an emoji's counting 2 (X takes "©" for an emoji, too).
    return sum(2 if EMOJI_CHAR_RE.match(ch) or not _is_light(ch) else 1 for ch in g)


def _is_light(ch: str) -> bool:
    cp = ord(ch)
    return any(lo <= cp <= hi for lo, hi in LIGHT_RANGES)


def _shorten(text: str, budget: int) -> str:
    """The start of `text` plus "…", then every link that was cut off, within `budget`."""
    units: list[tuple[str, bool]] = []  # graphemes of prose, whole links
    for piece, kind in _pieces(text):
        units.extend([(piece, True)] if kind != "text" else [(g, False) for g in GRAPHEME_RE.findall(piece)])

    return shorten_keeping_links(units, lambda candidate: weighted_length(candidate) <= budget)


# --- what we read ----------------------------------------------------------------------------------


# What X bills for (posts and users read, posts created), counted as the answers arrive.
XUsage = Usage


# --- the client ------------------------------------------------------------------------------------


class XSession(requests.Session):
    """The session tweepy sends through: points it at `base_url` (tweepy has no host option) and
    gives every request a timeout (tweepy sets none)."""

    def __init__(self, base_url: str | None, timeout: float):
        super().__init__()
        self.base_url = base_url
        self.timeout = timeout

    def request(self, method, url, *args, **kwargs):
        if self.base_url and isinstance(url, str) and url.startswith(X_API_HOST):
            url = self.base_url + url[len(X_API_HOST):]
        kwargs.setdefault("timeout", self.timeout)
        return super().request(method, url, *args, **kwargs)


class XClient:
    """The bot's calls to X. Thread-safe enough for one bot loop; the usage counters are shared.

    Build it with `XClient.from_settings(settings)`; pass credentials explicitly only in tests.
    """

    def __init__(self, settings: Settings, *, bearer_token: str | None = None, api_key: str | None = None,
                 api_secret: str | None = None, access_token: str | None = None,
                 access_token_secret: str | None = None, base_url: str | None = None):
        self.settings = settings
        self.config: XSettings = settings.x
        self._user_context = {"X_API_KEY": api_key, "X_API_SECRET": api_secret,
                              "X_ACCESS_TOKEN": access_token, "X_ACCESS_TOKEN_SECRET": access_token_secret}
        self._has_bearer = bool(bearer_token)
        self.client = tweepy.Client(bearer_token=bearer_token, consumer_key=api_key, consumer_secret=api_secret,
                                    access_token=access_token, access_token_secret=access_token_secret,
                                    return_type=dict, wait_on_rate_limit=False)
        self.client.session = XSession(check_base_url(base_url, BASE_URL_ENV, "http://127.0.0.1:8080"),
                                       self.config.request_timeout_seconds)
        hide_in_logs(LIBRARY_LOGGERS, [v for v in (bearer_token, api_key, api_secret, access_token, access_token_secret) if v])
        self.network = "x"
        self.usage = Usage()
        self._lock = threading.Lock()
        self._me: XUser | None = None
        # Accounts looked up a moment ago (`lookup_accounts`), by handle, with when: the download that follows
        # within LOOKUP_KEEP_SECONDS reads the timeline without paying for the same account twice.
        self._looked_up: dict[str, tuple[XUser, float]] = {}

    @classmethod
    def from_settings(cls, settings: Settings, environ: dict[str, str] | None = None) -> XClient:
        """Credentials and `X_API_BASE_URL` from the environment (or `environ`)."""
        env = os.environ if environ is None else environ
        return cls(settings, bearer_token=env.get(READ_ENV) or None, api_key=env.get("X_API_KEY") or None,
                   api_secret=env.get("X_API_SECRET") or None, access_token=env.get("X_ACCESS_TOKEN") or None,
                   access_token_secret=env.get("X_ACCESS_TOKEN_SECRET") or None,
                   base_url=env.get(BASE_URL_ENV) or None)

    def close(self) -> None:
        self.client.session.close()

    def __enter__(self) -> XClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- users ----------------------------------------------------------------------------------

    def me(self) -> XUser:
        """The bot's own account (user context). Read once, then remembered."""
        if self._me is None:
            self._require_user_context("read the bot's own account")
            body = self._call("reading the bot's account", self.client.get_me, user_auth=True,
                              user_fields=USER_FIELDS)
            if not isinstance(body.get("data"), dict):
                raise XRequestError(f"X did not return the bot's account: {_api_error_text(body)}")
            self._count(users=1)
            self._me = XUser.from_v2(body["data"])
        return self._me

    @property
    def bot_user_id(self) -> str:
        return self.me().id

    def get_user(self, handle: str) -> XUser:
        """The account behind `handle`. Raises UnknownUserError or SuspendedUserError; a protected
        account is returned (with `protected=True`): it is `download_timeline` that refuses it."""
        handle = normalize_handle(handle, "x")
        body = self._call(f"looking up @{handle}", self.client.get_user, username=handle,
                          user_fields=USER_FIELDS, user_auth=self._read_user_auth())
        data = body.get("data")
        if isinstance(data, dict):
            self._count(users=1)
            return XUser.from_v2(data)
        raise _account_error(handle, body)

    # --- timelines ------------------------------------------------------------------------------

    def download_timeline(self, user: XUser | str, *, since_id: str | None = None, limit: int | None = None,
                          on_page: Callable[[int], None] | None = None) -> list[dict]:
        """The user's posts as X API v2 tweet objects, newest first: up to `limit` (default
        `[x] max_tweets_per_user`), only those newer than `since_id` when given. `on_page(n)` is called
        with the number of posts of each page (for a progress bar). Retweets and replies are included:
        the dataset counts and filters them."""
        if isinstance(user, str):
            user = self.get_user(user)
        if user.protected:
            raise ProtectedUserError(user.username)
        limit = min(limit or self.config.max_tweets_per_user, self.config.max_tweets_per_user)
        posts: list[dict] = []
        token = None
        for _ in range(MAX_PAGES):
            page_size = max(MIN_PAGE_SIZE, min(PAGE_SIZE, limit - len(posts)))
            body = self._call(f"reading @{user.username}'s posts", self.client.get_users_tweets, user.id,
                              max_results=page_size, pagination_token=token, since_id=since_id,
                              tweet_fields=TWEET_FIELDS, user_auth=self._read_user_auth())
            data = body.get("data")
            if data is None and body.get("errors"):
                raise _account_error(user.username, body)
            data = data or []
            self._count(posts=len(data))
            posts.extend(data[: limit - len(posts)])
            if on_page:
                on_page(len(data))
            token = (body.get("meta") or {}).get("next_token")
            if not token or len(posts) >= limit or not data:
                break
        return posts

    # --- mentions and replies -------------------------------------------------------------------

    def mentions_since(self, since_id: str | None, limit: int | None = None) -> list[Mention]:
        """Posts that mention the bot, newer than `since_id` (all of the latest 800 when None), oldest first.

        `limit`: read at most this many (the budget's word; at least one page of MIN_PAGE_SIZE). X pages from
        the newest back, so a read cut short by the limit may miss older ones: the caller keeps its cursor."""
        self._require_user_context("read the bot's mentions")
        me = self.me()
        found: dict[str, Mention] = {}
        token = None
        read = 0
        for _ in range(MAX_PAGES):
            size = PAGE_SIZE if limit is None else min(PAGE_SIZE, limit - read)
            if size < MIN_PAGE_SIZE:
                break
            body = self._call("reading mentions", self.client.get_users_mentions, me.id, since_id=since_id,
                              max_results=size, pagination_token=token, expansions=["author_id"],
                              tweet_fields=MENTION_FIELDS, user_fields=["username"], user_auth=True)
            data = body.get("data") or []
            users = {u["id"]: u for u in (body.get("includes") or {}).get("users", [])}
            self._count(posts=len(data), users=len(users))
            read += len(data)
            for t in data:
                found[str(t["id"])] = _mention_from_v2(t, users)
            token = (body.get("meta") or {}).get("next_token")
            if not token or not data:
                break
        return sorted(found.values(), key=lambda m: int(m.id))

    @staticmethod
    def mention_usage(count: int) -> Usage:
        """The most reading `count` mentions can be billed: each post, and its author's account."""
        return Usage(posts_read=count, users_read=count)

    def reply(self, in_reply_to_tweet_id: str, text: str) -> str:
        """Post `text` (fitted to 280 weighted characters, links kept whole) as a reply; the new post's id.

        A reply whose fate is unknown (a 5xx, a timeout, a garbled answer) is looked for among the bot's
        recent replies before it is sent again, so one mention never gets two replies."""
        self._require_user_context("post replies")
        text = fit_reply(text)
        target = str(in_reply_to_tweet_id)

        def already_sent() -> str | None:
            return self.recent_replies(limit=REPLY_CHECK_POSTS).get(target)

        body = self._call(f"replying to {target}", self.client.create_tweet, text=text,
                          in_reply_to_tweet_id=target, user_auth=True, check_before_retry=already_sent)
        if isinstance(body, str):  # found among the recent replies: it had gone out
            return body
        data = body.get("data")
        if not isinstance(data, dict) or "id" not in data:
            raise XRequestError(f"X did not create the reply to {target}: {_api_error_text(body)}")
        if has_link(text):
            self._count(created_with_link=1)
        else:
            self._count(created=1)
        return str(data["id"])

    def reply_usage(self, text: str) -> Usage:
        """The most `reply(text)` can be billed: the post, and the bot's latest posts read once to look
        for it when its fate is unknown."""
        link = has_link(fit_reply(text))
        return Usage(posts_created=0 if link else 1, posts_created_with_link=1 if link else 0,
                     posts_read=REPLY_CHECK_POSTS)

    def recent_replies(self, limit: int = REPLY_CHECK_POSTS) -> dict[str, str]:
        """Mention id -> reply id for the bot's own latest posts (up to `limit`) that are replies."""
        self._require_user_context("read the bot's replies")
        me = self.me()
        replies: dict[str, str] = {}
        token = None
        read = 0
        while read < limit:
            body = self._call("reading the bot's replies", self.client.get_users_tweets, me.id,
                              max_results=max(MIN_PAGE_SIZE, min(PAGE_SIZE, limit - read)), pagination_token=token,
                              exclude=["retweets"], tweet_fields=["referenced_tweets", "in_reply_to_user_id"],
                              user_auth=True)
            data = body.get("data") or []
            self._count(posts=len(data))
            for t in data[: limit - read]:
                for ref in t.get("referenced_tweets") or []:
                    if ref.get("type") == "replied_to":
                        replies.setdefault(str(ref["id"]), str(t["id"]))
            read += len(data)
            token = (body.get("meta") or {}).get("next_token")
            if not token or not data:
                break
        return replies

    # --- the bot's adapter interface (same calls as bot.sources.local.LocalX) ----------------------------

    def lookup_accounts(self, handles: list[str]) -> dict[str, Account]:
        """Who each handle names now, asked of X (one billed user read each, cache or not: a handle can
        pass to another person at any time). Raises AccountError for an unknown, suspended or protected one."""
        found = {}
        for handle in handles:
            user = self.get_user(handle)
            if user.protected:
                raise ProtectedUserError(user.username)
            handle = normalize_handle(handle, "x")
            with self._lock:
                self._looked_up[handle] = (user, time.monotonic())
            found[handle] = Account("x", user.id, user.username.lower())
        return found

    def looked_up(self, handle: str) -> XUser | None:
        """The account `lookup_accounts` found for `handle` within the last LOOKUP_KEEP_SECONDS, or None."""
        with self._lock:
            user, at = self._looked_up.get(normalize_handle(handle, "x"), (None, 0.0))
        return user if user is not None and time.monotonic() - at < LOOKUP_KEEP_SECONDS else None

    @staticmethod
    def lookup_usage(handles: list[str]) -> Usage:
        return Usage(users_read=len(handles))

    def download_archives(self, handles: list[str], accounts: dict[str, Account] | None = None,
                          progress: bool = False) -> dict[str, Archive]:
        return download_archives(handles, self.settings, client=self, progress=progress, accounts=accounts)

    def download_usage(self, handles: list[str], accounts: dict[str, Account] | None = None) -> Usage:
        """The most `download_archives(handles, accounts)` can read: every account not fresh in the cache
        looked up and read in full (for the daily budget, before anything is paid for)."""
        cache = TimelineCache(self.config.cache_dir, self.config.cache_ttl_hours, self.config.max_tweets_per_user)
        stale = [h for h in handles if not cache.is_fresh(h, accounts[h].id if accounts and h in accounts else None)]
        return Usage(users_read=len(stale), posts_read=len(stale) * self.config.max_tweets_per_user)

    # --- plumbing -------------------------------------------------------------------------------

    def _count(self, posts: int = 0, users: int = 0, created: int = 0, created_with_link: int = 0) -> None:
        with self._lock:
            self.usage.posts_read += posts
            self.usage.users_read += users
            self.usage.posts_created += created
            self.usage.posts_created_with_link += created_with_link

    def _read_user_auth(self) -> bool:
        """Reads use the app's bearer token, or the user context when that is all there is."""
        if self._has_bearer:
            return False
        if all(self._user_context.values()):
            return True
        raise MissingCredentialError(f"{READ_ENV} is not set: reading from X needs the app's bearer token "
                                     "(or give --archive to read an X data export instead)")

    def _require_user_context(self, what: str) -> None:
        missing = [name for name, value in self._user_context.items() if not value]
        if missing:
            raise MissingCredentialError(f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set: "
                                         f"to {what} the bot needs OAuth 1.0a user credentials")

    def _call(self, what: str, fn: Callable[..., dict], *args,
              check_before_retry: Callable[[], str | None] | None = None, **kwargs) -> dict | str:
        """`fn(*args, **kwargs)` with our bounded retries; the decoded JSON body.

        `check_before_retry`, for calls that change something, is asked before a retry whose first try
        may have gone through; a non-None answer is returned instead of trying again."""
        attempts = self.config.max_retries + 1
        reason, retry_after = "no answer", None
        maybe_done = False  # whether the failed try may still have been carried out by X
        for attempt in range(attempts):
            if maybe_done and check_before_retry is not None:
                done = check_before_retry()
                if done is not None:
                    log.info("X: %s had gone through before the failure (%s)", what, done)
                    return done
            try:
                body = fn(*args, **kwargs)
                if not isinstance(body, dict):
                    raise _MalformedAnswer
                return body
            except tweepy.TooManyRequests as e:  # refused before anything was done
                wait = self._rate_limit_wait(e.reset_time)
                reason, retry_after, maybe_done = "rate limited (HTTP 429)", wait, False
                if wait > self.config.rate_limit_max_wait_seconds:
                    most = self.config.rate_limit_max_wait_seconds
                    raise XUnavailableError(f"X rate limit while {what}: it resets in {wait:.0f} s, longer than "
                                            f"[x] rate_limit_max_wait_seconds ({most:.0f} s); try again later",
                                            retry_after=wait) from None
            except tweepy.TwitterServerError as e:
                reason, wait, maybe_done = f"HTTP {_status(e)}", self._backoff(attempt), True
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
                    requests.exceptions.ContentDecodingError) as e:
                reason, wait = _connection_reason(e), self._backoff(attempt)
                maybe_done = reason != "could not connect"
            except (requests.JSONDecodeError, _MalformedAnswer):  # a garbled or truncated body
                reason, wait, maybe_done = "a malformed answer", self._backoff(attempt), True
            except tweepy.Unauthorized:
                raise XRequestError(f"X refused the credentials while {what} (HTTP 401): check {READ_ENV} "
                                    f"and {', '.join(USER_CONTEXT_ENV)}", status=401) from None
            except tweepy.HTTPException as e:
                raise XRequestError(f"X refused {what}: {_http_error_text(e)}", status=_status(e)) from None
            if attempt + 1 < attempts:
                log.warning("X: %s while %s; retrying in %.1f s (attempt %d of %d)", reason, what, wait,
                            attempt + 2, attempts)
                time.sleep(wait)
        raise XUnavailableError(f"X is unavailable: {reason} while {what}, {attempts} "
                                f"attempt{'s' if attempts != 1 else ''}; try again later", retry_after=retry_after)

    def _rate_limit_wait(self, reset_time: int | None) -> float:
        if reset_time is None:
            return self.config.rate_limit_default_wait_seconds
        return max(0.0, reset_time - time.time()) + RATE_LIMIT_MARGIN_SECONDS

    def _backoff(self, attempt: int) -> float:
        return backoff_seconds(attempt, self.config.retry_base_wait_seconds, self.config.retry_max_wait_seconds,
                               jitter=True)


class _MalformedAnswer(Exception):
    """The answer was JSON but not an object."""


def _status(e: tweepy.HTTPException) -> int | None:
    return getattr(e.response, "status_code", None)


def _connection_reason(e: Exception) -> str:
    if isinstance(e, requests.ConnectTimeout):
        return "could not connect"
    if isinstance(e, requests.Timeout):
        return "timed out"
    text = str(e)
    if "Connection refused" in text or "NewConnectionError" in text or "Failed to resolve" in text:
        return "could not connect"
    return "connection lost"


def _http_error_text(e: tweepy.HTTPException) -> str:
    detail = "; ".join(str(m) for m in e.api_messages if m) or getattr(e.response, "reason", "") or ""
    return clip(f"HTTP {_status(e)}{': ' + detail if detail else ''}")


def _api_error_text(body: dict) -> str:
    errors = body.get("errors") or []
    texts = [str(e.get("detail") or e.get("title") or e) for e in errors if isinstance(e, dict)]
    return clip("; ".join(texts) or "no data in the answer")


def _account_error(handle: str, body: dict) -> UserError:
    """The typed error for a user lookup or timeline that came back as HTTP 200 with an `errors` array."""
    for error in body.get("errors") or []:
        if not isinstance(error, dict):
            continue
        kind = str(error.get("type", ""))
        text = f"{error.get('title', '')} {error.get('detail', '')}".lower()
        if "suspended" in text:
            return SuspendedUserError(handle)
        if kind.endswith("/not-authorized-for-resource"):
            return ProtectedUserError(handle)
        if kind.endswith("/resource-not-found"):
            return UnknownUserError(handle)
    return XRequestError(f"X could not read @{handle}: {_api_error_text(body)}")


def _mention_from_v2(t: dict, users: dict[str, dict]) -> Mention:
    author_id = str(t.get("author_id", ""))
    note = t.get("note_tweet")
    text = note["text"] if isinstance(note, dict) and isinstance(note.get("text"), str) else t["text"]
    replied_to = next((str(r["id"]) for r in t.get("referenced_tweets") or [] if r.get("type") == "replied_to"), None)
    return Mention(id=str(t["id"]), author_id=author_id, author_username=users.get(author_id, {}).get("username", ""),
                   text=inert(text), created_at=t.get("created_at"),
                   in_reply_to_user_id=str(t["in_reply_to_user_id"]) if t.get("in_reply_to_user_id") else None,
                   in_reply_to_tweet_id=replied_to)


# --- the per-user cache and archives ----------------------------------------------------------------


class TimelineCache:
    """Downloaded timelines, one `<handle>.jsonl` (newest first) and `<handle>.user.json` per user.

    A user read less than `ttl_hours` ago is served from here without asking X; after that only the
    posts newer than the newest cached one are fetched (`since_id`) and merged in.
    """

    def __init__(self, folder: str | Path, ttl_hours: float, max_posts: int):
        self.folder = Path(folder)
        self.ttl_seconds = ttl_hours * 3600
        self.max_posts = max_posts

    def path(self, handle: str) -> Path:
        return self.folder / f"{normalize_handle(handle, 'x')}.jsonl"

    def is_fresh(self, handle: str, account_id: str | None = None) -> bool:
        """Whether the handle's posts were read within the cache's lifetime (and, given `account_id`, are
        that account's: a handle can pass to another person)."""
        if account_id is not None and self.cached_user_id(handle) != account_id:
            return False
        sidecar = user_sidecar(self.path(handle))  # written last: its time is the time of the download
        try:
            return self.path(handle).exists() and time.time() - sidecar.stat().st_mtime < self.ttl_seconds
        except FileNotFoundError:
            return False

    def cached_user_id(self, handle: str) -> str | None:
        try:
            return str(json.loads(user_sidecar(self.path(handle)).read_text(encoding="utf-8")).get("id"))
        except (OSError, ValueError, AttributeError):
            return None

    def read(self, handle: str) -> list[dict]:
        path = self.path(handle)
        if not path.exists():
            return []
        posts = []
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    posts.append(json.loads(line))
                except ValueError:  # a damaged cache is only a cache: read the user again
                    return []
        return posts

    def update(self, client: XClient, user: XUser, on_page: Callable[[int], None] | None = None) -> Path:
        """Bring the user's cache up to date from X and return its path."""
        handle = user.username.lower()
        old = self.read(handle) if self.cached_user_id(handle) == user.id else []  # a handle can change hands
        since_id = max((p["id"] for p in old), key=int, default=None)
        new = client.download_timeline(user, since_id=since_id, limit=self.max_posts, on_page=on_page)
        merged = {p["id"]: p for p in old}
        merged.update({p["id"]: p for p in new})
        posts = sorted(merged.values(), key=lambda p: int(p["id"]), reverse=True)[: self.max_posts]
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.path(handle)
        write_atomically(path, "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in posts))
        write_atomically(user_sidecar(path), json.dumps(user.to_v2(), ensure_ascii=False))
        log.info("X: @%s: %d new posts, %d cached", handle, len(new), len(posts))
        return path


def download_archives(handles: list[str], settings: Settings, *, client: XClient | None = None,
                      progress: bool = True, console=None, accounts: dict[str, Account] | None = None
                      ) -> dict[str, Archive]:
    """Each user's posts through the cache, as archives keyed by lowercased handle.

    Every account is looked up before any timeline is read, so an unknown, suspended or protected
    one fails the whole request before posts are paid for. With `progress`, a bar and a usage line
    (posts and users read) go to stderr, or to `console` (a rich Console: pass the caller's own so
    its status line and this bar share the screen). With `accounts` (handle -> the `Account` it was
    looked up as), a cache is used only for that account, and a handle that names another account by now
    is refused.
    """
    handles = [normalize_handle(h, "x") for h in handles]
    x = client or XClient.from_settings(settings)
    cache = TimelineCache(settings.x.cache_dir, settings.x.cache_ttl_hours, settings.x.max_tweets_per_user)
    expected = {h: accounts[h].id for h in handles if accounts and h in accounts}
    stale = [h for h in handles if not cache.is_fresh(h, expected.get(h))]
    users = {h: (x.looked_up(h) if h in expected else None) or x.get_user(h) for h in stale}
    for handle, user in users.items():
        if user.protected:
            raise ProtectedUserError(user.username)
        if handle in expected and user.id != expected[handle]:
            raise AccountError(handle, "changed")
    if console is None:
        from rich.console import Console

        console = Console(stderr=True, soft_wrap=True)
    with progress_display(progress, console, transient=False) as bar:
        for handle, user in users.items():
            old = len(cache.read(handle)) if cache.cached_user_id(handle) == user.id else 0
            total = None if old else min(user.tweet_count or 0, settings.x.max_tweets_per_user) or None
            task = bar.add(f"@{user.username} posts", total)
            cache.update(x, user, on_page=lambda n, task=task: bar.advance(task, n))
            bar.finish(task)
    if progress:
        cached = ", ".join(f"@{h}" for h in handles if h not in users)
        console.print(f"X: {x.usage}" + (f" ({cached} from the cache)" if cached else ""),
                      markup=False, highlight=False)
    return {h: open_archive(cache.path(h)) for h in handles}


def export_archive(archive: Archive, path: str | Path) -> int:
    """Copy a downloaded archive (JSONL and its `.user.json`) to `path`; the number of posts."""
    path = Path(path)
    if path.suffix.lower() not in (".jsonl", ".ndjson"):
        raise UsageError(f"{path}: the file must end in .jsonl (it is read back as JSONL of X API v2 posts)")
    text = Path(archive.path).read_text(encoding="utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, text)
    sidecar = user_sidecar(Path(archive.path))
    if sidecar.exists():
        write_atomically(user_sidecar(path), sidecar.read_text(encoding="utf-8"))
    return sum(1 for line in text.splitlines() if line.strip())

