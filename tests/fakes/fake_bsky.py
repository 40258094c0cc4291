"""A loopback Bluesky (XRPC) server for tests: accounts, feeds, notifications, replies, and faults on demand.

    >>> from fake_bsky import FakeBluesky          # tests/ is on sys.path under pytest
    >>> with FakeBluesky() as fake:
    ...     env = fake.env()                       # BLUESKY_SERVICE_URL and the credentials this server accepts
    ...     uri = fake.add_mention("dave.bsky.social", "train alice.bsky.social")
    ...     fake.fail_next("app.bsky.feed.getAuthorFeed", 503)     # the next feed page fails once
    ...     ...                                    # run the code under test, in this process or a subprocess
    ...     fake.replies                           # [{"uri", "cid", "text", "parent", "root", "record"}]

It speaks what the real `atproto` client calls, in the lexicon's JSON shapes, so the SDK's models parse
its answers: `com.atproto.server.createSession` and `refreshSession` (JWT-shaped tokens whose `exp` the
client reads to refresh in time), `app.bsky.actor.getProfile`, `app.bsky.feed.getAuthorFeed` (reposts
with `reasonRepost`, replies, quotes), `app.bsky.feed.getPosts`, `app.bsky.notification.listNotifications`
(newest first, each at its post's creation time when that is earlier than its index time, a time
cursor, the `reasons` filter applied after paging as the AppView does, so a page may come back short
or empty; a post that both replies to the bot and names it is notified once, as a "mention"), `com.atproto.repo.listRecords` (newest record key first) and
`com.atproto.repo.createRecord` (posts only; the text is checked against the 300-grapheme and
3,000-byte limits). Every call but createSession needs `Authorization: Bearer <access token>`; an
expired or revoked one gets 400 ExpiredToken, as a PDS answers. Errors are XRPC's
`{"error": ..., "message": ...}`: "Profile not found" (400 InvalidRequest) for an unknown or
deactivated account (getProfile says AccountDeactivated), 400 AccountTakedown for a taken-down one; an
account labelled `!no-unauthenticated` is served to a logged-in client, as Bluesky does.

The server runs in a thread of the test process on 127.0.0.1, port 0; a process reaches it through
`fake.env()`, and the test reads what happened from the same object (`replies`, `requests`, `count`).
"""

from __future__ import annotations

import base64
import bisect
import functools
import hashlib
import hmac
import json
import re
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs, urlsplit

import regex
from loopback import LoopbackHandler, LoopbackServer

from bot.data.synthetic import FRIENDS, synthetic_tweets

# The credentials the server accepts (none of them real).
BOT_HANDLE = "huggingtweets.bsky.social"
APP_PASSWORD = "fake-app-pw-q7x2-9kd4-mn3c"

# The accounts every server starts with.
ALICE = "alice.bsky.social"  # 450 posts: several pages
HARU = "haru.bsky.social"  # mostly Japanese posts
CAROL = "carol.example.com"  # a handle on a domain of her own
PROTECTED = "hidden.bsky.social"  # asked not to be shown to logged-out people (!no-unauthenticated)
SUSPENDED = "gone.bsky.social"  # taken down by Bluesky's moderation
DEACTIVATED = "away.bsky.social"  # deactivated by its owner
UNKNOWN = "nobody.bsky.social"  # no such account
DEFAULT_USERS = {ALICE: (450, 0.05), HARU: (240, 0.7), CAROL: (150, 0.0)}  # handle -> (posts, Japanese share)

MAX_GRAPHEMES = 300
MAX_BYTES = 3000
SESSION_SECONDS = 2 * 3600  # a PDS's access token lives about two hours
HISTORY_START = datetime(2026, 11, 1, tzinfo=timezone.utc)  # bot.data.synthetic's newest post
GRAPHEME_RE = regex.compile(r"\X")
SORTABLE_BASE32 = "234567abcdefghijklmnopqrstuvwxyz"


@dataclass
class FakeAccount:
    did: str
    handle: str
    display_name: str
    labels: list[str] = field(default_factory=list)
    negated: list[str] = field(default_factory=list)  # labels the account set and then took back
    takendown: bool = False
    deactivated: bool = False
    feed: list[dict] = field(default_factory=list, repr=False)  # newest first: {"uri", "sort_at", "repost"}

    def basic(self) -> dict:
        """app.bsky.actor.defs#profileViewBasic"""
        return {"did": self.did, "handle": self.handle, "displayName": self.display_name,
                "avatar": f"https://cdn.bsky.app/img/avatar/plain/{self.did}/bafkreiavatar@jpeg",
                "labels": [self.label(v) for v in self.labels] + [self.label(v, negated=True) for v in self.negated],
                "createdAt": "2024-02-06T00:00:00.000Z"}

    def view(self) -> dict:
        """app.bsky.actor.defs#profileView"""
        return {**self.basic(), "description": f"Posts by {self.display_name}.", "indexedAt": "2024-02-06T00:00:00.000Z"}

    def label(self, value: str, negated: bool = False) -> dict:
        """A self-label as the AppView shows it: set by the account on its own profile record."""
        return {"src": self.did, "uri": f"at://{self.did}/app.bsky.actor.profile/self", "val": value,
                "cts": "2024-02-06T00:00:00.000Z", "ver": 1, **({"neg": True} if negated else {})}


@dataclass
class Fault:
    nsid_prefix: str
    status: int  # 0: close the connection without an answer
    headers: dict[str, str]
    body: bytes | None
    times: int
    after: bool  # carry the request out first, then answer with the fault
    delay: float


class XrpcError(Exception):
    def __init__(self, status: int, error: str, message: str):
        self.status, self.error, self.message = status, error, message


class FakeBluesky(LoopbackServer):
    """The server and its state. Use as a context manager (or `start()` / `stop()`)."""

    thread_name = "fake-bsky"

    def __init__(self, default_users: bool = True, session_seconds: float = SESSION_SECONDS):
        self.lock = threading.RLock()
        self.session_seconds = session_seconds
        self.accounts: dict[str, FakeAccount] = {}  # by DID
        self.records: dict[str, dict] = {}  # every record by AT URI: {"cid", "value", "indexed_at"}
        self.notifications: list[dict] = []  # of the bot, in the order they were made
        self.replies: list[dict] = []  # what the bot posted
        self.requests: list[tuple[str, str, dict]] = []  # (method, NSID, query) of every request
        self.sessions_created = 0
        self.sessions_refreshed = 0
        self.issued_tokens: list[str] = []  # every access and refresh token handed out (for leak checks)
        self._access: dict[str, tuple[str, float]] = {}  # access token -> (DID, expiry)
        self._refresh: dict[str, str] = {}  # refresh token -> DID
        self._faults: list[Fault] = []
        self._last_tid = 0
        self._last_index_time = 0.0
        if default_users:  # built once per process, then copied: a few thousand records take a while
            world = _default_world()
            self.accounts = {did: replace(a, labels=list(a.labels), negated=list(a.negated), feed=list(a.feed))
                             for did, a in world.accounts.items()}
            self.records = dict(world.records)
            self._last_tid = world._last_tid
            self.bot = self.accounts[world.bot.did]
        else:
            self.bot = self.add_user(BOT_HANDLE, display_name="HuggingTweets")

    # --- life cycle -----------------------------------------------------------------------------

    def handler(self) -> type[LoopbackHandler]:
        return _Handler

    def env(self) -> dict[str, str]:
        """The environment a client needs to use this server (for a subprocess: `{**os.environ, **fake.env()}`)."""
        return {"BLUESKY_SERVICE_URL": self.base_url, "BLUESKY_HANDLE": BOT_HANDLE, "BLUESKY_APP_PASSWORD": APP_PASSWORD}

    # --- state ----------------------------------------------------------------------------------

    def add_user(self, handle: str, posts: int = 0, *, display_name: str | None = None, labels: list[str] | None = None,
                 takendown: bool = False, deactivated: bool = False, japanese_share: float = 0.0,
                 seed: int | None = None) -> FakeAccount:
        """An account with `posts` synthetic posts (newest first: posts, replies, quotes and reposts)."""
        with self.lock:
            did = "did:plc:" + _base32(hashlib.sha256(handle.encode()).digest())[:24]
            name = display_name or handle.split(".")[0].replace("-", " ").title()
            account = FakeAccount(did, handle, name, labels=list(labels or []), takendown=takendown,
                                  deactivated=deactivated)
            self.accounts[did] = account
            tweets = synthetic_tweets(posts, seed=seed if seed is not None else len(self.accounts),
                                      japanese_share=japanese_share)
            for i, t in enumerate(reversed(tweets)):  # oldest first, so record keys grow with time
                self._add_synthetic_post(account, t, i)
            return account

    def account(self, handle_or_did: str) -> FakeAccount | None:
        with self.lock:
            key = handle_or_did.lower()
            return self.accounts.get(key) or next((a for a in self.accounts.values() if a.handle == key), None)

    def add_post(self, handle: str, text: str, *, reply_to: str | None = None, facets: list | None = None,
                 created_at: datetime | None = None) -> str:
        """A new post at the top of an account's feed (the account is created if unknown); its URI."""
        with self.lock:
            author = self.account(handle) or self.add_user(handle)
            indexed = self._index_time()
            record = {"$type": "app.bsky.feed.post", "text": text, "createdAt": _iso(created_at) if created_at else indexed,
                      "langs": ["en"]}
            if reply_to:
                parent = self.records[reply_to]
                root = parent["value"].get("reply", {}).get("root") or {"uri": reply_to, "cid": parent["cid"]}
                record["reply"] = {"root": root, "parent": {"uri": reply_to, "cid": parent["cid"]}}
            if facets:
                record["facets"] = facets
            uri = self._put_record(author, "app.bsky.feed.post", record, indexed)
            author.feed.insert(0, {"uri": uri, "sort_at": indexed, "repost": None})
            return uri

    def add_mention(self, author: str, text: str, reply_to: str | None = None, *, mention: bool = True,
                    created_at: datetime | None = None) -> str:
        """A post by `author` that mentions the bot (with "@huggingtweets.bsky.social " put in front, and
        its mention facet) and the notification the bot gets for it. With `mention=False` the text is left
        alone: a reply under a post of the bot's that does not name it, notified as "reply" (a reply that
        names the bot is notified once, as "mention", as the AppView does). `created_at` is the time the
        author's client wrote in the post (default now). The post's URI."""
        with self.lock:
            facets = None
            if mention:
                if f"@{BOT_HANDLE}" not in text:
                    text = f"@{BOT_HANDLE} {text}"
                start = text.encode().index(f"@{BOT_HANDLE}".encode())
                facets = [{"index": {"byteStart": start, "byteEnd": start + len(BOT_HANDLE) + 1},
                           "features": [{"$type": "app.bsky.richtext.facet#mention", "did": self.bot.did}]}]
            uri = self.add_post(author, text, reply_to=reply_to, facets=facets, created_at=created_at)
            replies_to_bot = bool(reply_to) and _did_of(reply_to) == self.bot.did
            if mention or replies_to_bot:
                self._notify("mention" if mention else "reply", uri)
            return uri

    def add_like(self, author: str, subject: str) -> str:
        """Someone likes a post of the bot's: a notification the bot must not take for a mention."""
        with self.lock:
            liker = self.account(author) or self.add_user(author)
            record = {"$type": "app.bsky.feed.like", "createdAt": _iso(_now()),
                      "subject": {"uri": subject, "cid": self.records[subject]["cid"]}}
            uri = self._put_record(liker, "app.bsky.feed.like", record, self._index_time())
            self._notify("like", uri, reason_subject=subject)
            return uri

    def expire_sessions(self) -> None:
        """Every token given out so far stops working (as when a PDS revokes a session)."""
        with self.lock:
            self._access = {token: (did, 0.0) for token, (did, _) in self._access.items()}
            self._refresh.clear()

    def fail_next(self, nsid_prefix: str, status: int = 503, *, headers: dict[str, str] | None = None,
                  body: bytes | str | dict | None = None, times: int = 1, after: bool = False,
                  delay: float = 0.0) -> None:
        """The next `times` requests whose NSID starts with `nsid_prefix` get `status` (0: the connection is
        closed without an answer) with `headers` and `body` (default: XRPC's error JSON). With `after`,
        the request is carried out first (a post is created) and only the answer is lost. `delay` holds
        the answer back that many seconds (for client timeouts)."""
        if isinstance(body, dict):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        with self.lock:
            self._faults.append(Fault(nsid_prefix, status, dict(headers or {}), body, times, after, delay))

    @staticmethod
    def reset_in(seconds: int) -> dict[str, str]:
        """The rate-limit headers of a 429 whose window resets `seconds` from now (whole epoch seconds)."""
        return {"RateLimit-Limit": "3000", "RateLimit-Remaining": "0", "RateLimit-Policy": "3000;w=300",
                "RateLimit-Reset": str(int(time.time()) + seconds)}

    def count(self, nsid: str) -> int:
        """How many requests were made to `nsid`."""
        with self.lock:
            return sum(1 for _, n, _ in self.requests if n == nsid)

    def posts_of(self, handle: str) -> list[dict]:
        """An account's feed entries, newest first: {"uri", "sort_at", "repost"} (repost: the repost record's URI)."""
        return list(self.account(handle).feed)

    # --- internals ------------------------------------------------------------------------------

    def _add_synthetic_post(self, account: FakeAccount, t: dict, i: int) -> None:
        created = datetime.fromisoformat(t["created_at"].replace("Z", "+00:00"))
        indexed = _iso(created + timedelta(seconds=2))
        kind = next((r["type"] for r in t.get("referenced_tweets", [])), None)
        text = (t.get("note_tweet") or {}).get("text") or t["text"]
        if kind == "replied_to":  # Bluesky clients do not open a reply with the handles it answers
            text = re.sub(r"^(?:@\w+ )+", "", text)
        text = "".join(GRAPHEME_RE.findall(text)[:MAX_GRAPHEMES])  # no post on Bluesky is longer
        friend = self.account(_friend_handle(i)) or self.add_user(_friend_handle(i))
        if kind == "retweeted":  # a repost: the friend's post, shared
            original = text.split(": ", 1)[-1]
            subject = self._put_record(friend, "app.bsky.feed.post",
                                       {"$type": "app.bsky.feed.post", "text": original, "langs": ["en"],
                                        "createdAt": _iso(created - timedelta(hours=1))},
                                       _iso(created - timedelta(hours=1)), created - timedelta(hours=1))
            repost = self._put_record(account, "app.bsky.feed.repost",
                                      {"$type": "app.bsky.feed.repost", "createdAt": _iso(created),
                                       "subject": {"uri": subject, "cid": self.records[subject]["cid"]}},
                                      indexed, created)
            account.feed.insert(0, {"uri": subject, "sort_at": indexed, "repost": repost})
            return
        record: dict = {"$type": "app.bsky.feed.post", "text": text, "createdAt": t["created_at"]}
        lang = t.get("lang")
        if lang and lang != "und":
            record["langs"] = ["en-US" if lang == "en" and i % 7 == 0 else lang]  # some with a region
        if kind in ("replied_to", "quoted"):
            other = self._put_record(friend, "app.bsky.feed.post",
                                     {"$type": "app.bsky.feed.post", "text": "What a morning it has been",
                                      "createdAt": _iso(created - timedelta(minutes=5))},
                                     _iso(created - timedelta(minutes=5)), created - timedelta(minutes=5))
            ref = {"uri": other, "cid": self.records[other]["cid"]}
            if kind == "replied_to":
                record["reply"] = {"root": ref, "parent": ref}
            else:
                record["embed"] = {"$type": "app.bsky.embed.record", "record": ref}
        uri = self._put_record(account, "app.bsky.feed.post", record, indexed, created)
        account.feed.insert(0, {"uri": uri, "sort_at": indexed, "repost": None})

    def _put_record(self, account: FakeAccount, collection: str, value: dict, indexed_at: str,
                    created: datetime | None = None) -> str:
        rkey = self._tid(created or _now())
        uri = f"at://{account.did}/{collection}/{rkey}"
        self.records[uri] = {"cid": _cid(value), "value": value, "indexed_at": indexed_at}
        return uri

    def _tid(self, moment: datetime) -> str:
        """A record key (TID): microseconds since 1970 in sortable base32, unique on this server."""
        micros = max(int(moment.timestamp() * 1_000_000), self._last_tid + 1)
        self._last_tid = micros
        n, out = micros << 10, ""
        for _ in range(13):
            n, r = divmod(n, 32)
            out = SORTABLE_BASE32[r] + out
        return out

    def _index_time(self) -> str:
        """Now, a millisecond later than anything indexed before: notifications sort by this time."""
        now = max(time.time(), self._last_index_time + 0.001)
        self._last_index_time = now
        return _iso(datetime.fromtimestamp(now, timezone.utc))

    def _notify(self, reason: str, uri: str, reason_subject: str | None = None) -> None:
        # A notification sorts (and shows as indexedAt) at the post's creation time when that is earlier
        # than its index time, as the AppView does: a post indexed late sorts behind newer ones.
        stored = self.records[uri]
        sort_at = min(stored["indexed_at"], _iso(datetime.fromisoformat(stored["value"]["createdAt"].replace("Z", "+00:00"))))
        notification = {"uri": uri, "reason": reason, "indexed_at": sort_at}
        if reason_subject:
            notification["reasonSubject"] = reason_subject
        self.notifications.append(notification)

    def _issue_session(self, did: str) -> dict:
        account = self.accounts[did]
        now = time.time()
        access = _jwt({"scope": "com.atproto.appPass", "sub": did, "aud": "did:web:fake.pds", "iat": int(now),
                       "exp": int(now + self.session_seconds), "jti": _base32(hashlib.sha256(
                           f"a{now}{len(self._access)}".encode()).digest())[:20]})
        refresh = _jwt({"scope": "com.atproto.refresh", "sub": did, "aud": "did:web:fake.pds", "iat": int(now),
                        "exp": int(now + 90 * 86400), "jti": _base32(hashlib.sha256(
                            f"r{now}{len(self._refresh)}".encode()).digest())[:20]})
        self._access[access] = (did, now + self.session_seconds)
        self.issued_tokens += [access, refresh]
        self._refresh[refresh] = did
        return {"did": did, "handle": account.handle, "accessJwt": access, "refreshJwt": refresh, "active": True,
                "email": "bot@example.org", "emailConfirmed": True,
                "didDoc": {"@context": ["https://www.w3.org/ns/did/v1"], "id": did,
                           "alsoKnownAs": [f"at://{account.handle}"],
                           "service": [{"id": "#atproto_pds", "type": "AtprotoPersonalDataServer",
                                        "serviceEndpoint": self.base_url}]}}

    def _take_fault(self, nsid: str) -> Fault | None:
        with self.lock:
            for fault in self._faults:
                if nsid.startswith(fault.nsid_prefix):
                    fault.times -= 1
                    if fault.times <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    # --- views ----------------------------------------------------------------------------------

    def _post_view(self, uri: str) -> dict:
        """app.bsky.feed.defs#postView"""
        stored = self.records[uri]
        author = self.accounts[_did_of(uri)]
        view = {"uri": uri, "cid": stored["cid"], "author": author.basic(), "record": stored["value"],
                "indexedAt": stored["indexed_at"], "replyCount": 0, "repostCount": 0, "likeCount": 0,
                "quoteCount": 0, "bookmarkCount": 0, "labels": []}
        quoted = stored["value"].get("embed", {}).get("record", {}).get("uri")
        if quoted in self.records:
            q = self.records[quoted]
            view["embed"] = {"$type": "app.bsky.embed.record#view", "record": {
                "$type": "app.bsky.embed.record#viewRecord", "uri": quoted, "cid": q["cid"],
                "author": self.accounts[_did_of(quoted)].basic(), "value": q["value"], "indexedAt": q["indexed_at"]}}
        return view

    def _feed_item(self, entry: dict) -> dict:
        """app.bsky.feed.defs#feedViewPost"""
        item: dict = {"post": self._post_view(entry["uri"])}
        reply = self.records[entry["uri"]]["value"].get("reply")
        if reply:
            item["reply"] = {"root": self._post_or_missing(reply["root"]["uri"]),
                             "parent": self._post_or_missing(reply["parent"]["uri"])}
        if entry["repost"]:
            repost = self.records[entry["repost"]]
            item["reason"] = {"$type": "app.bsky.feed.defs#reasonRepost", "uri": entry["repost"],
                              "cid": repost["cid"], "by": self.accounts[_did_of(entry["repost"])].basic(),
                              "indexedAt": entry["sort_at"]}
        return item

    def _post_or_missing(self, uri: str) -> dict:
        if uri in self.records:
            return {"$type": "app.bsky.feed.defs#postView", **self._post_view(uri)}
        return {"$type": "app.bsky.feed.defs#notFoundPost", "uri": uri, "notFound": True}

    def _notification_view(self, n: dict) -> dict:
        """app.bsky.notification.listNotifications#notification"""
        stored = self.records[n["uri"]]
        view = {"uri": n["uri"], "cid": stored["cid"], "author": self.accounts[_did_of(n["uri"])].view(),
                "reason": n["reason"], "record": stored["value"], "isRead": False, "indexedAt": n["indexed_at"],
                "labels": []}
        if "reasonSubject" in n:
            view["reasonSubject"] = n["reasonSubject"]
        return view


@functools.cache
def _default_world() -> FakeBluesky:
    """The accounts every server starts with (never started itself: servers copy its state)."""
    world = FakeBluesky(default_users=False)
    for handle, (posts, japanese) in DEFAULT_USERS.items():
        world.add_user(handle, posts, japanese_share=japanese)
    world.add_user(PROTECTED, 60, labels=["!no-unauthenticated"])
    world.add_user(SUSPENDED, 20, takendown=True)
    world.add_user(DEACTIVATED, 20, deactivated=True)
    return world


# --- the HTTP side ---------------------------------------------------------------------------------

QUERIES = {"app.bsky.actor.getProfile", "app.bsky.feed.getAuthorFeed", "app.bsky.feed.getPosts",
           "app.bsky.notification.listNotifications", "com.atproto.repo.listRecords"}
PROCEDURES = {"com.atproto.server.createSession", "com.atproto.server.refreshSession",
              "com.atproto.repo.createRecord"}
FAULT_ERRORS = {429: ("RateLimitExceeded", "Rate Limit Exceeded"), 500: ("InternalServerError", "Internal Server Error"),
                502: ("UpstreamFailure", "Upstream Failure"), 503: ("NotEnoughResources", "Service Unavailable"),
                504: ("UpstreamTimeout", "Upstream Timeout")}


class _Handler(LoopbackHandler):
    fake: FakeBluesky

    def respond(self, method: str) -> None:
        fake = self.fake
        url = urlsplit(self.path)
        nsid = url.path.removeprefix("/xrpc/")
        query = parse_qs(url.query, keep_blank_values=True)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        with fake.lock:
            fake.requests.append((method, nsid, query))
        fault = fake._take_fault(nsid)
        if fault and not fault.after:
            time.sleep(fault.delay)
            return self._send_fault(fault)
        try:
            with fake.lock:
                answer = self._route(method, nsid, query, body)
            status = 200
        except XrpcError as e:
            status, answer = e.status, {"error": e.error, "message": e.message}
        if fault:  # done, and then the answer is late, lost or wrong
            time.sleep(fault.delay)
            return self._send_fault(fault)
        self._send(status, json.dumps(answer).encode())

    def _send_fault(self, fault: Fault) -> None:
        if fault.status == 0:
            self.close_connection = True
            self.connection.close()
            return
        error, message = FAULT_ERRORS.get(fault.status, ("InternalServerError", "Internal Server Error"))
        body = fault.body if fault.body is not None else json.dumps({"error": error, "message": message}).encode()
        self._send(fault.status, body, fault.headers)

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up waiting (a timeout test)
            self.close_connection = True

    # --- routes ---------------------------------------------------------------------------------

    def _route(self, method: str, nsid: str, query: dict[str, list[str]], body: bytes) -> dict:
        if nsid not in QUERIES | PROCEDURES:
            raise XrpcError(501, "MethodNotImplemented", "Method Not Implemented")
        if method != ("GET" if nsid in QUERIES else "POST"):
            raise XrpcError(400, "InvalidRequest", f"Incorrect HTTP method ({method}) for {nsid}")
        if nsid == "com.atproto.server.createSession":
            return self._create_session(_json_body(body))
        if nsid == "com.atproto.server.refreshSession":
            return self._refresh_session()
        viewer = self._viewer()
        if nsid == "app.bsky.actor.getProfile":
            return self._get_profile(_one(query, "actor"))
        if nsid == "app.bsky.feed.getAuthorFeed":
            return self._author_feed(query)
        if nsid == "app.bsky.feed.getPosts":
            uris = query.get("uris") or []
            if not 1 <= len(uris) <= 25:
                raise XrpcError(400, "InvalidRequest", "uris must have between 1 and 25 items")
            return {"posts": [self.fake._post_view(u) for u in uris if u in self.fake.records
                              and u.split("/")[3] == "app.bsky.feed.post"]}
        if nsid == "app.bsky.notification.listNotifications":
            return self._list_notifications(viewer, query)
        if nsid == "com.atproto.repo.listRecords":
            return self._list_records(query)
        return self._create_record(viewer, _json_body(body))

    def _create_session(self, data: dict) -> dict:
        fake = self.fake
        identifier, password = str(data.get("identifier", "")).lower(), data.get("password")
        account = fake.account(identifier)
        if not isinstance(password, str) or account is None or account is not fake.bot or password != APP_PASSWORD:
            raise XrpcError(401, "AuthenticationRequired", "Invalid identifier or password")
        fake.sessions_created += 1
        return fake._issue_session(account.did)

    def _refresh_session(self) -> dict:
        fake = self.fake
        token = self._bearer()
        did = fake._refresh.pop(token, None)
        if did is None:
            raise XrpcError(400, "ExpiredToken", "Token has been revoked")
        fake.sessions_refreshed += 1
        return fake._issue_session(did)

    def _bearer(self) -> str:
        header = self.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            raise XrpcError(401, "AuthMissing", "Authentication Required")
        return header[len("Bearer "):]

    def _viewer(self) -> FakeAccount:
        """The account whose access token came with the request."""
        token = self._bearer()
        session = self.fake._access.get(token)
        if session is None:
            raise XrpcError(400, "InvalidToken", "Token could not be verified")
        did, expiry = session
        if expiry < time.time():
            raise XrpcError(400, "ExpiredToken", "Token has expired")
        return self.fake.accounts[did]

    def _actor(self, actor: str) -> FakeAccount:
        account = self.fake.account(actor)
        if account is None or account.takendown or account.deactivated:
            raise XrpcError(400, "InvalidRequest", "Profile not found")
        return account

    def _get_profile(self, actor: str) -> dict:
        account = self.fake.account(actor)
        if account is None:
            raise XrpcError(400, "InvalidRequest", "Profile not found")
        if account.takendown:
            raise XrpcError(400, "AccountTakedown", "Account has been suspended")
        if account.deactivated:
            raise XrpcError(400, "AccountDeactivated", "Account is deactivated")
        posts = sum(1 for e in account.feed if not e["repost"])
        return {**account.view(), "banner": f"https://cdn.bsky.app/img/banner/plain/{account.did}/bafkreibanner@jpeg",
                "followersCount": 42, "followsCount": 7, "postsCount": posts,
                "associated": {"lists": 0, "feedgens": 0, "starterPacks": 0, "labeler": False}}

    def _author_feed(self, query: dict) -> dict:
        account = self._actor(_one(query, "actor"))
        limit = _int_param(query, "limit", 50, 1, 100)
        filter_ = _one(query, "filter", "posts_with_replies")
        if filter_ not in ("posts_with_replies", "posts_no_replies", "posts_with_media", "posts_and_author_threads",
                           "posts_with_video"):
            raise XrpcError(400, "InvalidRequest", f"Invalid filter: {filter_}")
        entries = account.feed
        if filter_ == "posts_no_replies":
            entries = [e for e in entries if e["repost"] or "reply" not in self.fake.records[e["uri"]]["value"]]
        cursor = _one(query, "cursor", "")
        if cursor:  # the feed is newest first: skip to the first entry past the cursor
            entries = entries[bisect.bisect_left(entries, True, key=lambda e: _entry_key(self.fake, e) < cursor):]
        page, rest = entries[:limit], entries[limit:]
        answer: dict = {"feed": [self.fake._feed_item(e) for e in page]}
        if rest and page:
            answer["cursor"] = _entry_key(self.fake, page[-1])
        return answer

    def _list_notifications(self, viewer: FakeAccount, query: dict) -> dict:
        if "seenAt" in query:
            raise XrpcError(400, "InvalidRequest", "The seenAt parameter is unsupported")
        limit = _int_param(query, "limit", 50, 1, 100)
        reasons = query.get("reasons")
        notifications = sorted(self.fake.notifications, key=lambda n: n["indexed_at"], reverse=True) \
            if viewer is self.fake.bot else []
        cursor = _one(query, "cursor", "")
        if cursor:
            notifications = [n for n in notifications if n["indexed_at"] < cursor]
        page, rest = notifications[:limit], notifications[limit:]
        answer: dict = {"notifications": [self.fake._notification_view(n) for n in page
                                          if not reasons or n["reason"] in reasons],
                        "seenAt": "2024-02-06T00:00:00.000Z", "priority": False}
        if rest and page:
            answer["cursor"] = page[-1]["indexed_at"]
        return answer

    def _list_records(self, query: dict) -> dict:
        account = self._actor(_one(query, "repo"))
        collection = _one(query, "collection")
        limit = _int_param(query, "limit", 50, 1, 100)
        reverse = _one(query, "reverse", "false") == "true"
        prefix = f"at://{account.did}/{collection}/"
        keys = sorted((uri.rsplit("/", 1)[1] for uri in self.fake.records if uri.startswith(prefix)), reverse=not reverse)
        cursor = _one(query, "cursor", "")
        if cursor:
            keys = [k for k in keys if (k > cursor if reverse else k < cursor)]
        page = keys[:limit]
        answer: dict = {"records": [{"uri": prefix + k, "cid": self.fake.records[prefix + k]["cid"],
                                     "value": self.fake.records[prefix + k]["value"]} for k in page]}
        if page and len(keys) > limit:
            answer["cursor"] = page[-1]
        return answer

    def _create_record(self, viewer: FakeAccount, data: dict) -> dict:
        fake = self.fake
        repo = fake.account(str(data.get("repo", "")))
        if repo is not viewer:
            raise XrpcError(401, "AuthenticationRequired", "Authentication Required")
        if data.get("collection") != "app.bsky.feed.post":
            raise XrpcError(400, "InvalidRequest", "This server only takes posts")
        record = data.get("record")
        if not isinstance(record, dict) or record.get("$type") != "app.bsky.feed.post":
            raise XrpcError(400, "InvalidRequest", "Invalid app.bsky.feed.post record: Record/$type must be app.bsky.feed.post")
        text = record.get("text")
        if not isinstance(text, str):
            raise XrpcError(400, "InvalidRequest", "Invalid app.bsky.feed.post record: Record must have the property \"text\"")
        if len(GRAPHEME_RE.findall(text)) > MAX_GRAPHEMES or len(text.encode()) > MAX_BYTES:
            raise XrpcError(400, "InvalidRequest", "Invalid app.bsky.feed.post record: Record/text must not be "
                                                   "longer than 300 graphemes")
        if not isinstance(record.get("createdAt"), str):
            raise XrpcError(400, "InvalidRequest", "Invalid app.bsky.feed.post record: Record must have the property \"createdAt\"")
        reply = record.get("reply")
        if reply is not None:
            for part in ("root", "parent"):
                ref = reply.get(part) if isinstance(reply, dict) else None
                if not isinstance(ref, dict) or not ref.get("uri") or not ref.get("cid"):
                    raise XrpcError(400, "InvalidRequest", f"Invalid app.bsky.feed.post record: Record/reply/{part} "
                                                           "must have the properties \"uri\" and \"cid\"")
        uri = fake._put_record(viewer, "app.bsky.feed.post", record, fake._index_time())
        viewer.feed.insert(0, {"uri": uri, "sort_at": fake.records[uri]["indexed_at"], "repost": None})
        fake.replies.append({"uri": uri, "cid": fake.records[uri]["cid"], "text": text, "record": record,
                             "parent": (reply or {}).get("parent", {}).get("uri"),
                             "root": (reply or {}).get("root", {}).get("uri")})
        return {"uri": uri, "cid": fake.records[uri]["cid"],
                "commit": {"cid": _cid({"commit": uri}), "rev": uri.rsplit("/", 1)[1]}, "validationStatus": "valid"}


# --- helpers ---------------------------------------------------------------------------------------


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _iso(moment: datetime) -> str:
    moment = moment.astimezone(timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _base32(data: bytes) -> str:
    return base64.b32encode(data).decode().lower().rstrip("=")


def _cid(value: dict) -> str:
    """A CIDv1 (dag-cbor, sha-256) in base32, as records have; the digest is of the JSON form here."""
    digest = hashlib.sha256(json.dumps(value, sort_keys=True).encode()).digest()
    return "b" + _base32(bytes([0x01, 0x71, 0x12, 0x20]) + digest)


def _jwt(payload: dict) -> str:
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).decode().rstrip("=")
    head = b64(json.dumps({"typ": "at+jwt", "alg": "HS256"}).encode()) + "." + b64(json.dumps(payload).encode())
    return head + "." + b64(hmac.new(b"fake-pds-signing-key", head.encode(), hashlib.sha256).digest())


def _did_of(uri: str) -> str:
    return uri[len("at://"):].split("/", 1)[0]


def _friend_handle(i: int) -> str:
    return FRIENDS[i % len(FRIENDS)].replace("_", "-") + ".bsky.social"


def _entry_key(fake: FakeBluesky, entry: dict) -> str:
    """A feed cursor as the AppView makes them: the sort time, then the CID."""
    return f"{entry['sort_at']}::{fake.records[entry['repost'] or entry['uri']]['cid']}"


def _json_body(body: bytes) -> dict:
    try:
        data = json.loads(body or b"null")
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise XrpcError(400, "InvalidRequest", "Request body must be a JSON object")
    return data


def _one(query: dict[str, list[str]], name: str, default: str | None = None) -> str:
    values = query.get(name)
    if not values:
        if default is None:
            raise XrpcError(400, "InvalidRequest", f"Params must have the property \"{name}\"")
        return default
    return values[-1]


def _int_param(query: dict, name: str, default: int, lo: int, hi: int) -> int:
    text = _one(query, name, str(default))
    if not re.fullmatch(r"-?\d+", text) or not lo <= int(text) <= hi:
        raise XrpcError(400, "InvalidRequest", f"{name} must be an integer between {lo} and {hi}")
    return int(text)
