"""Local stand-ins for X, so the whole loop runs offline: an inbox file, a folder of archives, an outbox file.

    >>> from bot.local import LocalX
    >>> x = LocalX(inbox="state/inbox.jsonl", outbox="state/outbox.jsonl", archives_dir="archives")
    >>> x.add_mention(author_username="carol", text="@huggingtweets train @dreamy_kettle")
    '1'
    >>> [m.text for m in x.mentions_since(None)]
    ['@huggingtweets train @dreamy_kettle']

The inbox holds one mention per line: `{"id": "1", "author_username": "carol", "text": "..."}`
(`author_id`, `created_at` and `in_reply_to_user_id` are optional). Ids are increasing numbers, as on X.
Replies are appended to the outbox as `{"id": ..., "in_reply_to_tweet_id": ..., "text": ...}`.
An archive named `<handle>.zip`, `<handle>.jsonl` or `<handle>/` in `archives_dir` stands for that
account's timeline; a `<handle>.user.json` with `"protected": true` stands for a protected account.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path

from bot.archive import Archive, find_archive
from bot.errors import AccountError, ArchiveError
from bot.adapters import Mention

BOT_USER_ID = "0"


class LocalX:
    """The same calls the bot makes on X, over local files."""

    def __init__(self, inbox: str | Path, outbox: str | Path, archives_dir: str | Path, bot_handle: str = "huggingtweets"):
        self.inbox = Path(inbox)
        self.outbox = Path(outbox)
        self.archives_dir = Path(archives_dir)
        self.bot_handle = bot_handle
        self.bot_user_id = BOT_USER_ID

    @classmethod
    def from_settings(cls, settings) -> LocalX:
        b = settings.bot
        return cls(b.inbox, b.outbox, b.archives_dir, b.handle)

    # --- mentions and replies -------------------------------------------------------------------

    def add_mention(self, author_username: str, text: str, **fields) -> str:
        """Append a mention to the inbox (for the demo and for trying the bot by hand)."""
        existing = list(self._read(self.inbox))
        mention_id = str(max((int(m["id"]) for m in existing), default=0) + 1)
        record = {"id": mention_id, "author_username": author_username, "text": text,
                  "created_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z"), **fields}
        _append_line(self.inbox, record)
        return mention_id

    def mentions_since(self, since_id: str | None) -> list[Mention]:
        """Mentions newer than `since_id`, oldest first."""
        after = int(since_id) if since_id else 0
        found = []
        for record in self._read(self.inbox):
            if int(record["id"]) > after:
                fields = {k: str(v) for k, v in record.items() if k in Mention.__dataclass_fields__ and v is not None}
                found.append(Mention(**{"author_id": "", **fields}))
        return sorted(found, key=lambda m: int(m.id))

    def reply(self, in_reply_to_tweet_id: str, text: str) -> str:
        replies = list(self._read(self.outbox))
        reply_id = f"r{len(replies) + 1}"
        _append_line(self.outbox, {"id": reply_id, "in_reply_to_tweet_id": str(in_reply_to_tweet_id), "text": text})
        return reply_id

    def recent_replies(self, limit: int = 100) -> dict[str, str]:
        """Mention id -> reply id, for the bot's most recent replies."""
        return {r["in_reply_to_tweet_id"]: r["id"] for r in list(self._read(self.outbox))[-limit:]}

    # --- accounts and posts ---------------------------------------------------------------------

    def download_archives(self, handles: list[str]) -> dict[str, Archive]:
        archives = {}
        for handle in handles:
            sidecar = self.archives_dir / f"{handle}.user.json"
            if sidecar.exists() and json.loads(sidecar.read_text(encoding="utf-8")).get("protected"):
                raise AccountError(handle, "protected")
            try:
                archive = find_archive(self.archives_dir, handle) if self.archives_dir.is_dir() else None
            except ArchiveError:
                archive = None
            if archive is None:
                raise AccountError(handle, "unknown")
            archives[handle] = archive
        return archives

    @staticmethod
    def _read(path: Path):
        if not path.exists():
            return
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    yield json.loads(line)


def _append_line(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())  # the outbox is the "X" of the offline bot: a reply written is a reply sent
