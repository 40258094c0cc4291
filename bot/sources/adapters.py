"""The edge where mentions and posts come from, declared once (the other edge, where models go, is
`bot.publishing.hub.Publisher`).

    mention ──> request ──> posts ──> dataset ──> model folder ──> repo ──> reply
    └──── Source ────┘                                      └─ Publisher ─┘ └ Source ┘

A `Source` is a network the bot listens on and replies to (`bot.sources.x.XClient` for X,
`bot.sources.bluesky.BlueskyClient` for Bluesky, `bot.sources.local.LocalX` for the offline inbox and
outbox). The orchestrator (`bot.requests.scheduler.Bot`) talks to them only through these calls, and the
plain data types below are what crosses the edge.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from bot.data.archive import Archive


@dataclass(frozen=True)
class Mention:
    """A post that mentions the bot."""

    id: str
    author_id: str
    author_username: str
    text: str
    created_at: str | None = None
    in_reply_to_user_id: str | None = None
    in_reply_to_tweet_id: str | None = None  # the post this one replies to, when it is a reply
    # Where to go on reading after this mention, when that is not its id (a network whose ids do not
    # grow: Bluesky's post URIs); the next `mentions_since` gets it back.
    cursor: str | None = None

    @property
    def resume_from(self) -> str:
        return self.cursor or self.id


@dataclass(frozen=True)
class Account:
    """A person on a network: the id that stays theirs (an X user id, a Bluesky DID) and the handle they go
    by now, which may change or pass to someone else. Consent, blocks, quotas and reuse key on the id."""

    network: str
    id: str
    handle: str


@dataclass(frozen=True)
class XUser:
    """An account as X describes it. `to_v2()` is the sidecar of a JSONL archive (see bot/data/archive.py)."""

    id: str
    username: str
    name: str
    profile_image_url: str | None = None
    protected: bool = False
    tweet_count: int | None = None

    @classmethod
    def from_v2(cls, data: dict) -> XUser:
        from bot.common.errors import inert  # a display name is text from elsewhere: no terminal controls in it

        return cls(id=str(data["id"]), username=data["username"], name=inert(data.get("name") or "") or data["username"],
                   profile_image_url=data.get("profile_image_url"), protected=bool(data.get("protected")),
                   tweet_count=(data.get("public_metrics") or {}).get("tweet_count"))

    def to_v2(self) -> dict:
        return {"id": self.id, "username": self.username, "name": self.name,
                "profile_image_url": self.profile_image_url, "protected": self.protected}


@dataclass
class Usage:
    """What a network bills for, counted as the answers arrive: posts and users read, posts created
    (with and without a link, which X prices apart)."""

    posts_read: int = 0
    users_read: int = 0
    posts_created: int = 0
    posts_created_with_link: int = 0

    def __sub__(self, earlier: Usage) -> Usage:
        return Usage(*(getattr(self, f) - getattr(earlier, f) for f in USAGE_FIELDS))

    def __add__(self, more: Usage) -> Usage:
        return Usage(*(getattr(self, f) + getattr(more, f) for f in USAGE_FIELDS))

    def copy(self) -> Usage:
        return Usage(*(getattr(self, f) for f in USAGE_FIELDS))

    def __str__(self) -> str:
        def n(count: int, word: str) -> str:
            return f"{count:,} {word}{'' if count == 1 else 's'}"
        text = f"read {n(self.posts_read, 'post')} and {n(self.users_read, 'user')}"
        created = self.posts_created + self.posts_created_with_link
        return text + (f", created {n(created, 'post')}" if created else "")


USAGE_FIELDS = ("posts_read", "users_read", "posts_created", "posts_created_with_link")


class Source(Protocol):
    """A network the bot listens on: mentions in, posts of the people to model, replies out."""

    network: str  # "x" or "bluesky": whose prices apply to `usage`
    usage: Usage  # what this source has been billed for so far

    @property
    def bot_user_id(self) -> str | None:
        """The bot's own account id (to tell replies under its own posts), or None when unknown."""

    def mentions_since(self, since_id: str | None) -> list[Mention]:
        """Mentions after the cursor `since_id` (all recent ones when None), oldest first. The bot keeps
        the last one's `resume_from` as the next cursor."""

    def lookup_accounts(self, handles: list[str]) -> dict[str, Account]:
        """Who each handle names now, keyed by lowercased handle, asked of the network itself. Raises
        `AccountError` for an account that cannot be modelled (unknown, suspended, protected)."""

    def download_archives(self, handles: list[str], accounts: dict[str, Account] | None = None) -> dict[str, Archive]:
        """Each person's posts, keyed by lowercased handle. Raises `AccountError` for an account that
        cannot be modelled (unknown, suspended, protected). With `accounts` (from `lookup_accounts`), a
        handle that names another account by now is refused rather than downloaded."""

    def reply(self, in_reply_to_tweet_id: str, text: str) -> str:
        """Post `text` as a reply to a mention; the new post's id."""

    def recent_replies(self) -> dict[str, str]:
        """Mention id -> reply id for the bot's latest replies (to find a reply sent just before a crash)."""
