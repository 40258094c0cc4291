"""A loopback X API v2 server for tests: accounts, timelines, mentions, posting, and faults on demand.

    >>> from fake_x import FakeX                # tests/ is on sys.path under pytest
    >>> with FakeX() as fake:
    ...     env = fake.env()                    # X_API_BASE_URL and the credentials this server accepts
    ...     mention_id = fake.add_mention("carol", "@huggingtweets train @alice")
    ...     fake.fail_next("/2/users/by/username/", 503)      # the next lookup fails once
    ...     ...                                 # run the code under test, in this process or a subprocess
    ...     fake.posted                         # [{"id": ..., "text": ..., "in_reply_to_tweet_id": ...}]

It answers the way X does where the client can tell: HTTP 200 with an `errors` array (and no `data`)
for unknown, suspended and protected accounts; `meta.result_count` and `meta.next_token` pages;
`since_id`, `until_id`, `exclude` and `max_results` (5 to 100, else 400); unknown parameters and
fields are a 400; a timeline reaches back 3,200 posts (800 with replies excluded), mentions 800;
tweet objects carry only `id`, `text` and `edit_history_tweet_ids` unless `tweet.fields` asks for more.
Reads need `Authorization: Bearer <token>` or a valid OAuth 1.0a signature (401 otherwise); the bot's
own account, its mentions and posting need the OAuth 1.0a user context (403 with the bearer token).
Posting refuses a text over 280 weighted characters, a duplicate text, and a reply to a post that
does not mention the bot (403), as X does.

The server runs in a thread of the test process on 127.0.0.1, port 0; a bot in a subprocess reaches it
through `fake.env()`, and the test reads what happened from the same object (`posted`, `requests`,
`posts_served`).
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from urllib.parse import parse_qs, urlsplit

import twitter_rules
from loopback import LoopbackHandler, LoopbackServer
from oauthlib.common import Request as OAuthRequest
from oauthlib.oauth1.rfc5849 import signature as oauth_signature

from bot.data.synthetic import synthetic_tweets

# The credentials the server accepts (none of them real).
BEARER_TOKEN = "fake-bearer-AAAAAAAAAAAAAAAAAAAAAJ7xk"
API_KEY = "fake-consumer-key-6d1f9c"
API_SECRET = "fake-consumer-secret-0b84e2a7"
ACCESS_TOKEN = "1-fake-access-token-55c3d0"
ACCESS_TOKEN_SECRET = "fake-access-secret-9e72f1b4"

# The accounts every server starts with.
BOT_HANDLE, BOT_ID = "huggingtweets", "1"
BIG_USER = "alice"  # 3,500 posts, more than the API reaches
BIG_TIMELINE = 3500
NORMAL_USERS = {"alice": BIG_TIMELINE, "bob": 600, "carol": 300}  # handle -> posts
PROTECTED_USER = "locked_box"
SUSPENDED_USER = "gone_account"
UNKNOWN_USER = "nobody_here"  # no such account

TIMELINE_REACH = 3200
TIMELINE_REACH_WITHOUT_REPLIES = 800
MENTIONS_REACH = 800
FIRST_NEW_ID = 1_800_000_000_000_000_000  # posts made while the server runs are newer than any timeline

TWEET_FIELDS = {"article", "attachments", "author_id", "card_uri", "community_id", "context_annotations",
                "conversation_id", "created_at", "display_text_range", "edit_controls", "edit_history_tweet_ids",
                "entities", "geo", "id", "in_reply_to_user_id", "lang", "media_metadata", "non_public_metrics",
                "note_tweet", "organic_metrics", "possibly_sensitive", "promoted_metrics", "public_metrics",
                "referenced_tweets", "reply_settings", "scopes", "source", "text", "withheld"}
USER_FIELDS = {"affiliation", "connection_status", "created_at", "description", "entities", "id", "location",
               "most_recent_tweet_id", "name", "pinned_tweet_id", "profile_banner_url", "profile_image_url",
               "protected", "public_metrics", "receives_your_dm", "subscription_type", "url", "username",
               "verified", "verified_type", "withheld"}
TIMELINE_PARAMS = {"end_time", "exclude", "expansions", "max_results", "media.fields", "pagination_token",
                   "place.fields", "poll.fields", "since_id", "start_time", "tweet.fields", "until_id", "user.fields"}
USER_PARAMS = {"expansions", "tweet.fields", "user.fields"}
PROBLEMS = "https://api.twitter.com/2/problems/"


@dataclass
class FakeUser:
    id: str
    username: str
    name: str
    protected: bool = False
    suspended: bool = False
    tweets: list[dict] = field(default_factory=list, repr=False)  # newest first

    def v2(self, fields: set[str]) -> dict:
        full = {"id": self.id, "name": self.name, "username": self.username, "protected": self.protected,
                "profile_image_url": f"https://pbs.twimg.com/profile_images/{self.id}/{self.username}_normal.jpg",
                "created_at": "2012-01-01T00:00:00.000Z", "description": f"Posts by {self.name}.",
                "verified": False,
                "public_metrics": {"followers_count": 42, "following_count": 7, "tweet_count": len(self.tweets),
                                   "listed_count": 0, "like_count": 0}}
        return {k: v for k, v in full.items() if k in {"id", "name", "username"} | fields}


@dataclass
class Fault:
    path_prefix: str
    status: int  # 0: close the connection without an answer
    headers: dict[str, str]
    body: bytes | None
    times: int
    method: str | None
    after: bool  # carry the request out first, then answer with the fault
    delay: float


class ApiError(Exception):
    def __init__(self, status: int, body: dict):
        self.status, self.body = status, body


class FakeX(LoopbackServer):
    """The server and its state. Use as a context manager (or `start()` / `stop()`)."""

    thread_name = "fake-x"

    def __init__(self, default_users: bool = True):
        self.lock = threading.RLock()
        self.users: dict[str, FakeUser] = {}  # by lowercased username
        self.tweets: dict[str, dict] = {}  # every post, by id
        self.mentions: list[dict] = []  # of the bot, newest first
        self.posted: list[dict] = []  # what the bot created: {"id", "text", "in_reply_to_tweet_id"}
        self.requests: list[tuple[str, str, dict]] = []  # (method, path, query) of every request
        self.posts_served = 0  # tweet objects handed out in `data` (what X bills for)
        self.users_served = 0
        self._faults: list[Fault] = []
        self._next_id = FIRST_NEW_ID
        if default_users:
            self._add_default_users()

    # --- life cycle -----------------------------------------------------------------------------

    def handler(self) -> type[LoopbackHandler]:
        return _Handler

    def env(self) -> dict[str, str]:
        """The environment a client needs to use this server (for a subprocess: `{**os.environ, **fake.env()}`)."""
        return {"X_API_BASE_URL": self.base_url, "X_BEARER_TOKEN": BEARER_TOKEN, "X_API_KEY": API_KEY,
                "X_API_SECRET": API_SECRET, "X_ACCESS_TOKEN": ACCESS_TOKEN, "X_ACCESS_TOKEN_SECRET": ACCESS_TOKEN_SECRET}

    # --- state ----------------------------------------------------------------------------------

    def add_user(self, username: str, posts: int = 0, *, name: str | None = None, protected: bool = False,
                 suspended: bool = False, seed: int | None = None, japanese_share: float = 0.0,
                 user_id: str | None = None) -> FakeUser:
        """An account with `posts` synthetic posts (newest first, with retweets, replies, quotes, long posts)."""
        with self.lock:
            uid = user_id or str(2000 + len(self.users))
            start_id = 1_600_000_000_000_000_000 + int(uid) * 10_000_000
            tweets = synthetic_tweets(posts, seed=int(uid) if seed is None else seed, japanese_share=japanese_share,
                                      start_id=start_id, author_id=uid) if posts else []
            user = FakeUser(uid, username, name or username.replace("_", " ").title(), protected, suspended, tweets)
            self.users[username.lower()] = user
            for t in tweets:
                self.tweets[t["id"]] = t
            return user

    def rename(self, username: str, new_username: str) -> FakeUser:
        """The account takes another handle, as people do on X: same id and posts, and the old handle is free
        for anyone to take up (`add_user(old, ...)`)."""
        with self.lock:
            user = self.users.pop(username.lower())
            user.username = new_username
            self.users[new_username.lower()] = user
            return user

    def add_posts(self, username: str, texts: list[str] | int) -> list[str]:
        """New posts at the top of a user's timeline (newer than everything else); their ids."""
        with self.lock:
            user = self.users[username.lower()]
            if isinstance(texts, int):
                texts = [f"A brand new thought number {i} about the morning light" for i in range(texts)]
            ids = []
            for text in texts:
                tweet = self._new_tweet(user, text)
                user.tweets.insert(0, tweet)
                ids.append(tweet["id"])
            return ids

    def add_mention(self, author_username: str, text: str, in_reply_to_tweet_id: str | None = None) -> str:
        """A post by `author_username` (created if unknown) that mentions the bot; its id.
        `@huggingtweets ` is put in front when the text does not mention the bot already."""
        with self.lock:
            author = self.users.get(author_username.lower()) or self.add_user(author_username)
            if f"@{BOT_HANDLE}" not in text.lower():
                text = f"@{BOT_HANDLE} {text}"
            tweet = self._new_tweet(author, text)
            if in_reply_to_tweet_id:
                parent = self.tweets[str(in_reply_to_tweet_id)]
                tweet["referenced_tweets"] = [{"type": "replied_to", "id": parent["id"]}]
                tweet["in_reply_to_user_id"] = parent["author_id"]
                tweet["conversation_id"] = parent.get("conversation_id", parent["id"])
            author.tweets.insert(0, tweet)
            self.mentions.insert(0, tweet)
            return tweet["id"]

    def fail_next(self, path_prefix: str, status: int = 503, *, headers: dict[str, str] | None = None,
                  body: bytes | str | dict | None = None, times: int = 1, method: str | None = None,
                  after: bool = False, delay: float = 0.0) -> None:
        """The next `times` requests whose path starts with `path_prefix` get `status` (0: the connection
        is closed without an answer) with `headers` and `body` (default: X's problem JSON). With `after`,
        the request is carried out first (a post is created) and only the answer is lost. `delay`
        holds the answer back that many seconds (for client timeouts)."""
        if isinstance(body, dict):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        with self.lock:
            self._faults.append(Fault(path_prefix, status, dict(headers or {}), body, times, method, after, delay))

    def clear_faults(self) -> None:
        """Answer every request normally again (the faults of `fail_next` not yet used up are dropped)."""
        with self.lock:
            self._faults.clear()

    @staticmethod
    def reset_in(seconds: int) -> dict[str, str]:
        """An `x-rate-limit-reset` header `seconds` from now (X sends whole epoch seconds)."""
        return {"x-rate-limit-reset": str(int(time.time()) + seconds)}

    def count(self, path_prefix: str, method: str = "GET") -> int:
        """How many requests were made to paths starting with `path_prefix`."""
        with self.lock:
            return sum(1 for m, p, _ in self.requests if m == method and p.startswith(path_prefix))

    def user(self, username: str) -> FakeUser:
        return self.users[username.lower()]

    # --- internals ------------------------------------------------------------------------------

    def _add_default_users(self) -> None:
        self.add_user(BOT_HANDLE, name="HuggingTweets", user_id=BOT_ID)
        for i, (handle, posts) in enumerate(NORMAL_USERS.items()):
            self.add_user(handle, posts, user_id=str(1001 + i), japanese_share={"bob": 0.6}.get(handle, 0.05))
        self.add_user(PROTECTED_USER, 50, protected=True, user_id="1004")
        self.add_user(SUSPENDED_USER, 20, suspended=True, user_id="1005")

    def _new_tweet(self, author: FakeUser, text: str) -> dict:
        self._next_id += 1
        tid = str(self._next_id)
        tweet = {"id": tid, "text": text, "edit_history_tweet_ids": [tid], "author_id": author.id,
                 "created_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z"), "lang": "en",
                 "conversation_id": tid}
        self.tweets[tid] = tweet
        return tweet

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self.lock:
            for fault in self._faults:
                if path.startswith(fault.path_prefix) and fault.method in (None, method):
                    fault.times -= 1
                    if fault.times <= 0:
                        self._faults.remove(fault)
                    return fault
        return None


# --- the HTTP side ---------------------------------------------------------------------------------


class _Handler(LoopbackHandler):
    fake: FakeX

    def respond(self, method: str) -> None:
        fake = self.fake
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        with fake.lock:
            fake.requests.append((method, url.path, query))
        fault = fake._take_fault(method, url.path)
        if fault and fault.delay:
            time.sleep(fault.delay)
        if fault and not fault.after:
            return self._send_fault(fault)
        try:
            status, answer = self._route(method, url.path, query, body)
        except ApiError as e:
            status, answer = e.status, e.body
        if fault:
            return self._send_fault(fault)
        self._send(status, json.dumps(answer).encode())

    def _send_fault(self, fault: Fault) -> None:
        if fault.status == 0:
            self.close_connection = True
            self.connection.close()
            return
        body = fault.body
        if body is None:
            title = {429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway",
                     503: "Service Unavailable", 504: "Gateway Timeout"}.get(fault.status, "Error")
            body = json.dumps({"title": title, "detail": title, "type": "about:blank", "status": fault.status}).encode()
        self._send(fault.status, body, fault.headers)  # only the headers asked for: a 429 may lack its reset

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        if headers is None:
            headers = {"x-rate-limit-limit": "900", "x-rate-limit-remaining": "899",
                       "x-rate-limit-reset": str(int(time.time()) + 900)}
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    # --- routes ---------------------------------------------------------------------------------

    def _route(self, method: str, path: str, query: dict, body: bytes) -> tuple[int, dict]:
        auth = self._auth(method, path, query)
        if method == "GET" and path == "/2/users/me":
            self._need_user_context(auth)
            _check_params(query, USER_PARAMS)
            user = self.fake.user(BOT_HANDLE)
            return 200, {"data": self._serve_user(user, query)}
        m = re.fullmatch(r"/2/users/by/username/([^/]+)", path)
        if method == "GET" and m:
            _check_params(query, USER_PARAMS)
            return 200, self._user_by_username(m.group(1), query)
        m = re.fullmatch(r"/2/users/(\d+)/(tweets|mentions)", path)
        if method == "GET" and m:
            if m.group(2) == "mentions":
                self._need_user_context(auth)  # (X also allows app-only here; the bot uses user context)
            return 200, self._timeline(m.group(1), m.group(2), query)
        if method == "POST" and path == "/2/tweets":
            self._need_user_context(auth)
            return 201, self._create_tweet(body)
        raise ApiError(404, {"title": "Not Found Error", "detail": f"no route {method} {path}", "type": "about:blank",
                             "status": 404})

    def _auth(self, method: str, path: str, query: dict) -> str:
        """'app' or 'user'; a 401 for anything else."""
        header = self.headers.get("Authorization", "")
        if header == f"Bearer {BEARER_TOKEN}":
            return "app"
        if header.startswith("OAuth ") and self._valid_oauth1(method):
            return "user"
        raise ApiError(401, {"title": "Unauthorized", "type": "about:blank", "status": 401, "detail": "Unauthorized"})

    def _valid_oauth1(self, method: str) -> bool:
        """Check the HMAC-SHA1 signature as X does (JSON bodies are not signed)."""
        uri = f"http://{self.headers['Host']}{self.path}"
        request = OAuthRequest(uri, method, "", dict(self.headers))
        params = oauth_signature.collect_parameters(uri_query=urlsplit(uri).query, headers=request.headers,
                                                    exclude_oauth_signature=False)
        oauth = dict(p for p in params if p[0].startswith("oauth_"))
        if oauth.get("oauth_consumer_key") != API_KEY or oauth.get("oauth_token") != ACCESS_TOKEN:
            return False
        request.params = [(k, v) for k, v in params if k != "oauth_signature"]
        request.signature = oauth.get("oauth_signature", "")
        return oauth_signature.verify_hmac_sha1(request, API_SECRET, ACCESS_TOKEN_SECRET)

    @staticmethod
    def _need_user_context(auth: str) -> None:
        if auth != "user":
            raise ApiError(403, {
                "title": "Unsupported Authentication", "status": 403,
                "detail": "Authenticating with OAuth 2.0 Application-Only is forbidden for this endpoint.  "
                          "Supported authentication types are [OAuth 1.0a User Context, OAuth 2.0 User Context].",
                "type": PROBLEMS + "unsupported-authentication"})

    def _serve_user(self, user: FakeUser, query: dict) -> dict:
        with self.fake.lock:
            self.fake.users_served += 1
        return user.v2(_fields(query, "user.fields", USER_FIELDS))

    def _user_by_username(self, username: str, query: dict) -> dict:
        if not re.fullmatch(r"[A-Za-z0-9_]{1,15}", username):
            raise ApiError(400, _invalid("username", username, f"The `username` query parameter value [{username}] "
                                         "does not match ^[A-Za-z0-9_]{1,15}$"))
        user = self.fake.users.get(username.lower())
        if user is None:
            return {"errors": [{"value": username, "detail": f"Could not find user with username: [{username}].",
                                "title": "Not Found Error", "resource_type": "user", "parameter": "username",
                                "resource_id": username, "type": PROBLEMS + "resource-not-found"}]}
        if user.suspended:
            return {"errors": [{"value": username, "detail": f"User has been suspended: [{username}].",
                                "title": "Forbidden", "resource_type": "user", "parameter": "username",
                                "resource_id": username, "type": PROBLEMS + "resource-not-found"}]}
        return {"data": self._serve_user(user, query)}  # a protected account is found; its posts are not

    def _timeline(self, user_id: str, kind: str, query: dict) -> dict:
        _check_params(query, TIMELINE_PARAMS)
        fake = self.fake
        max_results = _int_param(query, "max_results", 10, 5, 100)
        exclude = _list_param(query, "exclude", {"retweets", "replies"})
        if kind == "mentions" and exclude:
            raise ApiError(400, _invalid("exclude", query["exclude"], "The query parameter [exclude] is not one of "
                                         "[end_time,expansions,max_results,media.fields,pagination_token,place.fields,"
                                         "poll.fields,since_id,start_time,tweet.fields,until_id,user.fields]"))
        tweet_fields = _fields(query, "tweet.fields", TWEET_FIELDS)
        _fields(query, "user.fields", USER_FIELDS)  # checked here, applied in _serve_user
        expansions = _list_param(query, "expansions", {"author_id", "referenced_tweets.id", "attachments.media_keys",
                                                       "in_reply_to_user_id", "entities.mentions.username",
                                                       "referenced_tweets.id.author_id", "edit_history_tweet_ids",
                                                       "geo.place_id", "attachments.poll_ids"})
        with fake.lock:
            user = next((u for u in fake.users.values() if u.id == user_id), None)
            if user is None or user.suspended:
                detail = (f"User has been suspended: [{user_id}]." if user else f"Could not find user with id: [{user_id}].")
                return {"errors": [{"value": user_id, "detail": detail, "title": "Forbidden" if user else "Not Found Error",
                                    "resource_type": "user", "parameter": "id", "resource_id": user_id,
                                    "type": PROBLEMS + "resource-not-found"}]}
            if user.protected:
                return {"errors": [{"resource_id": user_id, "parameter": "id", "resource_type": "user",
                                    "section": "data", "title": "Authorization Error", "value": user_id,
                                    "detail": f"Sorry, you are not authorized to see the user with id: [{user_id}].",
                                    "type": PROBLEMS + "not-authorized-for-resource"}]}
            if kind == "mentions":
                posts = fake.mentions[:MENTIONS_REACH] if user.username == BOT_HANDLE else []
            else:
                reach = TIMELINE_REACH_WITHOUT_REPLIES if "replies" in exclude else TIMELINE_REACH
                posts = list(user.tweets[:reach])
        kinds = {"retweets": "retweeted", "replies": "replied_to"}
        posts = [t for t in posts if not any(r["type"] in {kinds[e] for e in exclude} for r in t.get("referenced_tweets", []))]
        for name, keep in (("since_id", lambda t, v: int(t["id"]) > v), ("until_id", lambda t, v: int(t["id"]) < v)):
            if name in query:
                value = _int_param(query, name, 0, 1, 2**63)
                posts = [t for t in posts if keep(t, value)]
        if "pagination_token" in query:
            try:
                last = int(query["pagination_token"], 36)
            except ValueError:
                raise ApiError(400, _invalid("pagination_token", query["pagination_token"],
                                             "The `pagination_token` query parameter value is not valid")) from None
            posts = [t for t in posts if int(t["id"]) < last]
        page, rest = posts[:max_results], posts[max_results:]
        answer: dict = {"meta": {"result_count": len(page)}}
        if page:
            answer["data"] = [_tweet_view(t, tweet_fields) for t in page]
            answer["meta"].update(newest_id=page[0]["id"], oldest_id=page[-1]["id"])
            if rest:
                answer["meta"]["next_token"] = _base36(int(page[-1]["id"]))
            if "author_id" in expansions:
                authors = {t["author_id"] for t in page}
                answer["includes"] = {"users": [self._serve_user(u, query) for u in fake.users.values() if u.id in authors]}
        with fake.lock:
            fake.posts_served += len(page)
        return answer

    def _create_tweet(self, raw: bytes) -> dict:
        fake = self.fake
        try:
            body = json.loads(raw or b"null")
            assert isinstance(body, dict)
        except (ValueError, AssertionError):
            raise ApiError(400, {"title": "Invalid Request", "status": 400, "type": PROBLEMS + "invalid-request",
                                 "detail": "The request body is not a JSON object."}) from None
        text = body.get("text")
        if not isinstance(text, str) or not text.strip():
            raise ApiError(400, {"title": "Invalid Request", "status": 400, "type": PROBLEMS + "invalid-request",
                                 "detail": "One or more parameters to your request was invalid.",
                                 "errors": [{"message": "$.text: must not be empty"}]})
        if weighted_length(text) > 280:
            raise ApiError(403, _forbidden("Your Tweet text is too long. For more information on how X determines "
                                           "text length see https://github.com/twitter/twitter-text."))
        with fake.lock:
            bot = fake.user(BOT_HANDLE)
            if any(t["text"] == text for t in bot.tweets):
                raise ApiError(403, _forbidden("You are not allowed to create a Tweet with duplicate content."))
            target_id = (body.get("reply") or {}).get("in_reply_to_tweet_id")
            tweet = fake._new_tweet(bot, text)
            if target_id is not None:
                target = fake.tweets.get(str(target_id))
                if target is None:
                    del fake.tweets[tweet["id"]]
                    raise ApiError(400, {"title": "Invalid Request", "status": 400, "type": PROBLEMS + "invalid-request",
                                         "detail": "One or more parameters to your request was invalid.",
                                         "errors": [{"message": "Your Tweet could not be sent because the Tweet "
                                                                "you are replying to was deleted or is not visible."}]})
                if f"@{BOT_HANDLE}" not in target["text"].lower() and target["author_id"] != BOT_ID:
                    del fake.tweets[tweet["id"]]
                    raise ApiError(403, _forbidden("Reply to this conversation is not allowed because you have not been "
                                                   "mentioned or otherwise engaged by the author of the post you are "
                                                   "replying to."))
                tweet["referenced_tweets"] = [{"type": "replied_to", "id": target["id"]}]
                tweet["in_reply_to_user_id"] = target["author_id"]
                tweet["conversation_id"] = target.get("conversation_id", target["id"])
            bot.tweets.insert(0, tweet)
            fake.posted.append({"id": tweet["id"], "text": text,
                                "in_reply_to_tweet_id": str(target_id) if target_id is not None else None})
        return {"data": {"id": tweet["id"], "text": text, "edit_history_tweet_ids": [tweet["id"]]}}


# --- helpers ---------------------------------------------------------------------------------------


def weighted_length(text: str) -> int:
    """The length X counts for a post, by X's own rules (twitter-text v3, `twitter_rules`), not by the bot's
    reading of them in bot/sources/x.py: a test can then catch the bot counting wrong."""
    return twitter_rules.weighted_length(text)


def _tweet_view(t: dict, fields: set[str]) -> dict:
    view = {"id": t["id"], "text": t["text"], "edit_history_tweet_ids": t["edit_history_tweet_ids"]}
    for name in fields:
        if name == "entities":
            entities = _entities(t["text"])
            if entities:
                view["entities"] = entities
        elif name in t:
            view[name] = t[name]
    return view


def _entities(text: str) -> dict:
    found: dict[str, list] = {}
    for m in re.finditer(r"@([A-Za-z0-9_]{1,15})", text):
        found.setdefault("mentions", []).append({"start": m.start(), "end": m.end(), "username": m.group(1)})
    for link in twitter_rules.extract_urls_with_indices(text):
        (start, end), url = link["indices"], link["url"]
        found.setdefault("urls", []).append({"start": start, "end": end, "url": url,
                                             "expanded_url": "https://example.org/page", "display_url": "example.org/page"})
    for m in re.finditer(r"#(\w+)", text):
        found.setdefault("hashtags", []).append({"start": m.start(), "end": m.end(), "tag": m.group(1)})
    return found


def _base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while n:
        n, r = divmod(n, 36)
        out = digits[r] + out
    return out or "0"


def _invalid(parameter: str, value: str, message: str) -> dict:
    return {"errors": [{"parameters": {parameter: [value]}, "message": message}], "title": "Invalid Request",
            "detail": "One or more parameters to your request was invalid.", "type": PROBLEMS + "invalid-request"}


def _forbidden(detail: str) -> dict:
    return {"detail": detail, "type": "about:blank", "title": "Forbidden", "status": 403}


def _check_params(query: dict, allowed: set[str]) -> None:
    for name in query:
        if name not in allowed:
            raise ApiError(400, _invalid(name, query[name], f"The query parameter [{name}] is not one of "
                                         f"[{','.join(sorted(allowed))}]"))


def _int_param(query: dict, name: str, default: int, lo: int, hi: int) -> int:
    if name not in query:
        return default
    try:
        value = int(query[name])
    except ValueError:
        value = None
    if value is None or not lo <= value <= hi:
        raise ApiError(400, _invalid(name, query[name], f"The `{name}` query parameter value [{query[name]}] "
                                     f"is not between {lo} and {hi}"))
    return value


def _list_param(query: dict, name: str, allowed: set[str]) -> set[str]:
    values = {v for v in query.get(name, "").split(",") if v}
    bad = values - allowed
    if bad:
        raise ApiError(400, _invalid(name, query[name], f"The `{name}` query parameter value [{sorted(bad)[0]}] "
                                     f"is not one of [{','.join(sorted(allowed))}]"))
    return values


def _fields(query: dict, name: str, allowed: set[str]) -> set[str]:
    return _list_param(query, name, allowed)
