"""The request store: a real SQLite file, its state machine, the cursor and exactly-once replies."""

import sqlite3
from dataclasses import dataclass

import pytest

from bot.errors import UserError
from bot.store import MIGRATIONS, NewRequest, Store, TransitionError


@dataclass
class Mention:
    id: str
    text: str = "@huggingtweets train @alice"
    author_username: str = "carol"


def queued(mention):
    return NewRequest(mention_id=mention.id, requester=mention.author_username, text=mention.text, kind="train",
                      state="queued", handles=("alice",), repo="huggingtweets/alice")


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path / "bot.sqlite3")


def test_a_new_database_is_migrated_and_in_wal_mode(store):
    assert store.schema_version == len(MIGRATIONS)
    assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_newer_schema_than_known_is_refused(tmp_path):
    path = tmp_path / "bot.sqlite3"
    Store(path).close()
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    with pytest.raises(UserError, match="newer"):
        Store(path)


def test_a_file_that_is_not_a_database_is_a_clear_error(tmp_path):
    path = tmp_path / "bot.sqlite3"
    path.write_text("not a database, just text " * 100)
    with pytest.raises(UserError, match="not a huggingtweets state database"):
        Store(path)


def test_an_old_schema_migrates_forward_keeping_its_requests(tmp_path):
    path = tmp_path / "bot.sqlite3"
    with sqlite3.connect(path) as db:  # a database as the first version of the program left it
        db.executescript(MIGRATIONS[0] + "; PRAGMA user_version = 1;")
        db.execute("INSERT INTO requests (mention_id, requester, text, kind, state, created_at, updated_at)"
                   " VALUES ('9', 'carol', 'hi', 'train', 'queued', 0, 0)")
    store = Store(path)
    assert store.schema_version == len(MIGRATIONS)
    [r] = store.requests()
    assert (r.mention_id, r.state, r.reply_attempts) == ("9", "queued", 0)


def test_ingest_stores_mentions_and_moves_the_cursor_together(store):
    created = store.ingest([Mention("5"), Mention("7")], queued, cursor_value="7")
    assert [r.mention_id for r in created] == ["5", "7"]
    assert store.cursor("mentions") == "7"
    assert [h[2] for h in store.history(created[0].id)] == ["received", "queued"]


def test_a_mention_read_twice_is_stored_once(store):
    store.ingest([Mention("5")], queued, cursor_value="5")
    again = store.ingest([Mention("5"), Mention("6")], queued, cursor_value="6")
    assert [r.mention_id for r in again] == ["6"]
    assert len(store.requests()) == 2


def test_a_failed_decision_stores_nothing_and_keeps_the_cursor(store):
    def broken(mention):
        if mention.id == "2":
            raise RuntimeError("boom")
        return queued(mention)

    with pytest.raises(RuntimeError):
        store.ingest([Mention("1"), Mention("2")], broken, cursor_value="2")
    assert store.requests() == []
    assert store.cursor("mentions") is None


def test_transitions_follow_the_state_machine(store):
    r = store.ingest([Mention("1")], queued)[0]
    for state in ("downloading", "training", "publishing"):
        r = store.transition(r.id, state)
    r = store.transition(r.id, "replying", reply_text="Your model is ready", model_url="https://x/y")
    assert (r.state, r.reply_status, r.model_url) == ("replying", "pending", "https://x/y")
    with pytest.raises(TransitionError):
        store.transition(r.id, "training")


def test_reply_is_recorded_as_sending_before_it_is_sent(store):
    r = store.ingest([Mention("1")], queued)[0]
    for state in ("downloading", "training", "publishing"):
        store.transition(r.id, state)
    store.transition(r.id, "replying", reply_text="hi")
    assert [x.id for x in store.replies_due()] == [r.id]
    assert store.mark_sending(r.id).reply_status == "sending"
    assert [x.reply_status for x in store.replies_due()] == ["sending"]  # still due after a crash here
    done = store.mark_sent(r.id, "99")
    assert (done.state, done.reply_status, done.reply_id) == ("done", "sent", "99")
    assert store.replies_due() == []


def test_retry_later_counts_attempts_and_waits(tmp_path):
    now = [1000.0]
    store = Store(tmp_path / "s.sqlite3", clock=lambda: now[0])
    r = store.ingest([Mention("1")], queued)[0]
    store.retry_later(r.id, "Hub unavailable", 60)
    assert store.next_due() is None
    now[0] += 61
    due = store.next_due()
    assert (due.id, due.attempts, due.reason) == (r.id, 1, "Hub unavailable")


def test_consents_quotas_and_publications(tmp_path):
    now = [1000.0]
    store = Store(tmp_path / "s.sqlite3", clock=lambda: now[0])
    assert store.consent("Alice") is None
    store.set_consent("Alice", "out")
    assert store.consent("alice") == "out"
    store.ingest([Mention("1"), Mention("2")], queued)
    assert store.requests_since("carol", 0) == 2
    assert store.queue_length() == 2
    store.record_published("huggingtweets/alice", ["alice"], "https://hub/alice", "a sample")
    assert store.recent_publication("huggingtweets/alice", 3600) == ("https://hub/alice", "a sample")
    now[0] += 7200
    assert store.recent_publication("huggingtweets/alice", 3600) is None
    store.forget_published(["huggingtweets/alice"])
    assert store.recent_publication("huggingtweets/alice", 10**9) is None


def test_state_survives_reopening(tmp_path):
    path = tmp_path / "bot.sqlite3"
    store = Store(path)
    r = store.ingest([Mention("1")], queued, cursor_value="1")[0]
    store.transition(r.id, "downloading")
    store.close()
    reopened = Store(path)
    assert reopened.get(r.id).state == "downloading"
    assert reopened.cursor("mentions") == "1"
    assert reopened.next_due().id == r.id
