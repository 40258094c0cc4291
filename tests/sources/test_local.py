"""The offline source (`bot.sources.local.LocalX`): handles are checked before they touch a path or the store.

Real files for the inbox and the archives folder, the real SQLite store and the bot's own poll.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path

import pytest

from bot.cli import to_toml
from bot.common.config import load_settings
from bot.common.errors import AccountError, HandleError
from bot.sources.local import LocalX
from bot.requests.scheduler import Bot
from bot.data.synthetic import synthetic_tweets, write_export


@pytest.fixture
def root(tmp_path) -> Path:
    """A folder holding `archives/` (the local source's) and, beside it, files that must never be read."""
    (tmp_path / "archives").mkdir()
    write_export(tmp_path / "archives" / "dreamy_kettle.zip", synthetic_tweets(50, seed=1),
                 username="dreamy_kettle", display_name="Dreamy")
    # Outside the archives folder: a protected account's file and an archive, reachable as "../outside".
    (tmp_path / "outside.user.json").write_text(json.dumps({"protected": True}), encoding="utf-8")
    write_export(tmp_path / "outside.zip", synthetic_tweets(50, seed=2), username="outside", display_name="Outside")
    return tmp_path


def local_x(root: Path) -> LocalX:
    return LocalX(inbox=root / "inbox.jsonl", outbox=root / "outbox.jsonl", archives_dir=root / "archives")


@pytest.mark.parametrize("handle", ["../outside", "..", "/etc/passwd", "dreamy_kettle/../../outside", "a\nb"])
def test_a_handle_that_is_not_one_never_becomes_a_path(root, handle):
    """Before, "../outside" read ../outside.user.json and answered that the account is protected."""
    with pytest.raises(HandleError):
        local_x(root).download_archives([handle])


def test_archives_in_the_folder_are_still_found(root):
    archives = local_x(root).download_archives(["Dreamy_Kettle"])
    assert archives["dreamy_kettle"].account.username == "dreamy_kettle"
    with pytest.raises(AccountError, match="does not exist"):
        local_x(root).download_archives(["outside"])  # the one outside the folder is not its archive


@pytest.mark.parametrize("protected", [True, 1, "yes"])
def test_a_protected_account_is_never_downloaded(root, protected):
    (root / "archives" / "dreamy_kettle.user.json").write_text(json.dumps({"protected": protected}), encoding="utf-8")
    with pytest.raises(AccountError, match="protected"):
        local_x(root).download_archives(["dreamy_kettle"])


def test_a_user_file_nested_deep_is_no_crash(root):
    (root / "archives" / "dreamy_kettle.user.json").write_bytes(b"[" * 200_000)
    assert local_x(root).download_archives(["dreamy_kettle"])["dreamy_kettle"].account.username == "dreamy_kettle"


def test_a_mention_by_an_author_that_is_not_a_handle_cannot_be_added(root):
    x = local_x(root)
    with pytest.raises(HandleError):
        x.add_mention(author_username="../outside", text="@huggingtweets me")
    assert not x.inbox.exists()


def test_mentions_whose_author_is_not_a_handle_are_not_stored(root, caplog):
    inbox = root / "inbox.jsonl"
    lines = [
        json.dumps({"id": "1", "author_username": "../outside", "text": "@huggingtweets me"}),
        "this line is not JSON",
        json.dumps({"id": "x", "author_username": "carol", "text": "@huggingtweets me"}),
        json.dumps({"id": "3", "author_username": ["carol"], "text": "@huggingtweets me"}),
        json.dumps({"id": "4", "text": "@huggingtweets me"}),
        json.dumps(["not", "a", "mention"]),
        json.dumps({"id": "6", "author_username": "carol", "text": "@huggingtweets train @dreamy_kettle"}),
    ]
    inbox.write_text("\n".join(lines) + "\n", encoding="utf-8")
    settings_file = root / "config.toml"
    settings_file.write_text(to_toml({"bot": {
        "sources": ["local"], "state_db": str(root / "bot.sqlite3"), "inbox": str(inbox),
        "outbox": str(root / "outbox.jsonl"), "archives_dir": str(root / "archives"), "work_dir": str(root / "work")}}),
        encoding="utf-8")
    settings = load_settings(settings_file)
    bot = Bot(settings, source=LocalX.from_settings(settings))
    with caplog.at_level(logging.WARNING, logger="huggingtweets.local"):
        stored = bot.poll("local")
        assert bot.poll("local") == []  # read again: nothing new, and nothing said twice
    assert [(r.mention_id, r.requester, r.handles) for r in stored] == [("6", "carol", ("dreamy_kettle",))]
    with sqlite3.connect(root / "bot.sqlite3") as db:
        assert db.execute("SELECT mention_id, requester FROM requests").fetchall() == [("6", "carol")]
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == len(set(warnings)) == 6
    assert f"{inbox}: mention 1: the author '../outside' is not an X handle" in warnings[0]
    assert any("line 2 is not JSON" in w for w in warnings)
    assert any("mention 3: no author_username" in w for w in warnings)
