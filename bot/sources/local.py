"""Local stand-ins for X, so the whole loop runs offline: an inbox file, a folder of archives, an outbox file.

    >>> from bot.sources.local import LocalX
    >>> x = LocalX(inbox="state/inbox.jsonl", outbox="state/outbox.jsonl", archives_dir="archives")
    >>> x.add_mention(author_username="carol", text="@huggingtweets train @dreamy_kettle")
    '1'
    >>> [m.text for m in x.mentions_since(None)]
    ['@huggingtweets train @dreamy_kettle']

The inbox holds one mention per line: `{"id": "1", "author_username": "carol", "text": "..."}`
(`author_id`, `created_at` and `in_reply_to_user_id` are optional). Ids are increasing numbers, as on X.
An account's id is the one its archive names (an X export's `accountId`, a `.user.json`'s `id`), else
`local-<handle>`: the same for a mention's author as for a handle the bot looks up.
Replies are appended to the outbox as `{"id": ..., "in_reply_to_tweet_id": ..., "text": ...}`.
An archive named `<handle>.zip`, `<handle>.jsonl` or `<handle>/` in `archives_dir` stands for that
account's timeline; a `<handle>.user.json` with `"protected": true` stands for a protected account.

Handles are checked before anything else is done with them: a mention whose author is not a handle is
passed over (and logged once), never stored, and no path is made from a handle that is not one, so
nothing outside `archives_dir` is ever read.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime, timezone
from pathlib import Path

from bot.sources.adapters import Account, Mention
from bot.data.archive import Archive, find_archive, read_user_file
from bot.common.errors import AccountError, ArchiveError, HandleError
from bot.common.handles import normalize_handle

log = logging.getLogger("huggingtweets.local")

BOT_USER_ID = "0"


class LocalX:
    """The same calls the bot makes on X, over local files."""

    def __init__(self, inbox: str | Path, outbox: str | Path, archives_dir: str | Path, bot_handle: str = "huggingtweets"):
        self.inbox = Path(inbox)
        self.outbox = Path(outbox)
        self.archives_dir = Path(archives_dir)
        self.bot_handle = bot_handle
        self.bot_user_id = BOT_USER_ID
        self._passed_over: set[str] = set()  # inbox lines already logged as unusable

    @classmethod
    def from_settings(cls, settings) -> LocalX:
        b = settings.bot
        return cls(b.inbox, b.outbox, b.archives_dir, b.handle)

    # --- mentions and replies -------------------------------------------------------------------

    def add_mention(self, author_username: str, text: str, **fields) -> str:
        """Append a mention to the inbox (for the demo and for trying the bot by hand).
        Raises HandleError when the author is not a handle."""
        normalize_handle(author_username, "x")
        mention_id = str(max((int(m["id"]) for m in self._inbox_records()), default=0) + 1)
        record = {"id": mention_id, "author_username": author_username, "text": text,
                  "created_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z"), **fields}
        _append_line(self.inbox, record)
        return mention_id

    def mentions_since(self, since_id: str | None) -> list[Mention]:
        """Mentions newer than `since_id`, oldest first."""
        after = int(since_id) if since_id else 0
        found = []
        for record in self._inbox_records():
            if int(record["id"]) > after:
                if problem := _author_problem(record.get("author_username")):
                    self._pass_over(f"mention {record['id']}: {problem}")
                    continue
                fields = {k: str(v) for k, v in record.items() if k in Mention.__dataclass_fields__ and v is not None}
                if not fields.get("author_id"):
                    fields["author_id"] = self.account_id(record["author_username"])
                found.append(Mention(**fields))
        return sorted(found, key=lambda m: int(m.id))

    def _inbox_records(self):
        """The inbox's mentions; a line that is not one (not JSON, no whole-number id) is passed over."""
        for lineno, record in enumerate(self._read(self.inbox, strict=False), 1):
            if record is None:
                self._pass_over(f"line {lineno} is not JSON")
            elif not isinstance(record, dict) or not _is_number(record.get("id")):
                self._pass_over(f"line {lineno} is not a mention with a number for its id")
            else:
                yield record

    def _pass_over(self, reason: str) -> None:
        if reason not in self._passed_over:  # the inbox is read again at every poll: say it once
            self._passed_over.add(reason)
            log.warning("%s: %s; passed over", self.inbox, reason)

    def reply(self, in_reply_to_tweet_id: str, text: str) -> str:
        replies = list(self._read(self.outbox))
        reply_id = f"r{len(replies) + 1}"
        _append_line(self.outbox, {"id": reply_id, "in_reply_to_tweet_id": str(in_reply_to_tweet_id), "text": text})
        return reply_id

    def recent_replies(self, limit: int = 100) -> dict[str, str]:
        """Mention id -> reply id, for the bot's most recent replies."""
        return {r["in_reply_to_tweet_id"]: r["id"] for r in list(self._read(self.outbox))[-limit:]}

    # --- accounts and posts ---------------------------------------------------------------------

    def account_id(self, handle: str) -> str:
        """The id of the account behind `handle`: its archive's, else `local-<handle>`."""
        handle = normalize_handle(handle, "x")
        try:
            archive = self._archive(handle)
        except AccountError:
            archive = None
        return (archive.account.user_id if archive is not None else None) or f"local-{handle}"

    def lookup_accounts(self, handles: list[str]) -> dict[str, Account]:
        found = {}
        for handle in map(normalize_handle, handles):
            archive = self._archive(handle)  # AccountError for a protected or missing account
            found[handle] = Account("local", archive.account.user_id or f"local-{handle}", handle)
        return found

    def download_archives(self, handles: list[str], accounts: dict[str, Account] | None = None) -> dict[str, Archive]:
        archives = {}
        for handle in handles:
            handle = normalize_handle(handle)  # before it becomes part of a path
            archives[handle] = self._archive(handle)
            if accounts and handle in accounts and self.account_id(handle) != accounts[handle].id:
                raise AccountError(handle, "changed")
        return archives

    def _archive(self, handle: str) -> Archive:
        """The archive standing for `handle`'s timeline; AccountError when it is protected or missing."""
        try:
            user = read_user_file(self.archives_dir / f"{handle}.user.json")
        except ArchiveError:
            user = None
        if user and user.get("protected"):  # anything but false or absent: never model by mistake
            raise AccountError(handle, "protected")
        try:
            archive = find_archive(self.archives_dir, handle) if self.archives_dir.is_dir() else None
        except ArchiveError:
            archive = None
        if archive is None:
            raise AccountError(handle, "unknown")
        return archive

    @staticmethod
    def _read(path: Path, strict: bool = True):
        """The JSON records of a file, one a line; with `strict` off, None for a line that is not JSON."""
        if not path.exists():
            return
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.strip():
                    try:
                        yield json.loads(line)
                    except (json.JSONDecodeError, RecursionError):
                        if strict:
                            raise
                        yield None


def _author_problem(author: object) -> str | None:
    """Why a mention's author cannot be answered or modelled; None when it is a handle."""
    if not isinstance(author, str):
        return "no author_username"
    try:
        normalize_handle(author, "x")
    except HandleError as e:
        return f"the author {e}"
    return None


def _is_number(value: object) -> bool:
    """Whether an inbox id is a whole number ("12" or 12), as on X."""
    return isinstance(value, (int, str)) and not isinstance(value, bool) and str(value).isascii() and str(value).isdigit()


def _append_line(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())  # the outbox is the "X" of the offline bot: a reply written is a reply sent
