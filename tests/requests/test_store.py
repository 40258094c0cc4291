"""The request store: a real SQLite file, its state machine, the cursor and exactly-once replies."""

import sqlite3
from dataclasses import dataclass

import pytest

from bot.common.errors import UserError
from bot.requests.store import MIGRATIONS, NewRequest, Store, TransitionError


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


def test_consents_and_quotas_follow_the_account_not_the_handle(tmp_path):
    store = Store(tmp_path / "s.sqlite3")
    assert store.consent("x", "101", "alice") is None
    store.set_consent("x", "101", "Alice", "out")
    assert store.consent("x", "101") == "out"
    assert store.consent("x", "101", "alice_renamed") == "out"  # the account, whatever it is called now
    assert store.consent("bluesky", "101") is None  # another network's account 101 is another person
    store.saw_accounts("x", [("101", "alice"), ("101", "alice_renamed")])
    assert store.account_of("x", "alice_renamed") == "101" and store.handles_of("x", "101") == ["alice", "alice_renamed"]

    store.ingest([Mention("1"), Mention("2")], lambda m: NewRequest(**{**vars(queued(m)), "requester_id": "7"}))
    store.ingest([Mention("3", author_username="carol_new")],
                 lambda m: NewRequest(**{**vars(queued(m)), "requester_id": "7"}))
    assert store.requests_since("7", "whoever", 0) == 3  # one person's quota, under two handles
    assert store.requests_since("8", "carol", 0) == 0  # a handle someone else used is not this person
    assert store.queue_length() == 3


def test_a_publication_is_found_by_its_people_and_forgotten(tmp_path):
    now = [1000.0]
    store = Store(tmp_path / "s.sqlite3", clock=lambda: now[0])
    store.record_published("huggingtweets/alice-bob", ["alice", "bob"], "https://hub/alice-bob", "a sample",
                           accounts=[("2", "bob"), ("1", "alice")], network="x", request_key="5 (x mention 9)")
    found = store.recent_publication("x", [("1", "alice_new"), ("2", "bob")], 3600)  # handles do not matter
    assert (found.repo, found.sample, found.request_key) == ("huggingtweets/alice-bob", "a sample", "5 (x mention 9)")
    assert store.recent_publication("x", [("1", "alice")], 3600) is None  # not the same people
    assert store.recent_publication("bluesky", [("1", "a"), ("2", "b")], 3600) is None
    assert store.repos_of("x", "2") == ["huggingtweets/alice-bob"] and store.repos_of("x", "3") == []
    now[0] += 7200
    assert store.recent_publication("x", [("1", "alice"), ("2", "bob")], 3600) is None
    store.forget_published(["huggingtweets/alice-bob"])
    assert store.repos_of("x", "2") == []


def test_a_handle_keyed_consent_migrates_to_the_account_when_the_handle_is_next_seen(tmp_path):
    path = tmp_path / "bot.sqlite3"
    with sqlite3.connect(path) as db:  # schema 6: consents were keyed by handle
        for script in MIGRATIONS[:6]:
            db.executescript(script + ";")
        db.execute("PRAGMA user_version = 6")
        db.execute("INSERT INTO consents VALUES ('alice', 'out', 5)")
        db.execute("INSERT INTO published VALUES ('huggingtweets/alice', '[\"alice\"]', 'u', 's', 5)")
    store = Store(path)
    assert store.schema_version == len(MIGRATIONS)
    assert store.consent("x", "101", "alice") == "out"  # honoured by handle until the handle is seen
    assert store.unresolved_consents() == ["alice"] and store.repos_named_with(["alice"]) == ["huggingtweets/alice"]
    store.saw_accounts("x", [("101", "alice")])
    assert store.unresolved_consents() == []
    assert store.consent("x", "101", "alice_renamed") == "out"  # now the account's, under any handle
    assert store.consent("x", "202", "alice") is None  # whoever takes the name up later is someone else


def test_a_blocklisted_handle_pins_its_account(tmp_path):
    store = Store(tmp_path / "s.sqlite3")
    store.blocklist = ("spammer", "x:999")
    assert store.is_blocked("x", "5", "spammer", store.blocklist)
    store.saw_accounts("x", [("5", "spammer")])  # the blocked handle seen with its account
    assert store.is_blocked("x", "5", "innocent_name", store.blocklist)  # renamed: still blocked
    assert store.is_blocked("x", "999", "anyone", store.blocklist)  # listed by id
    assert not store.is_blocked("x", "6", "carol", store.blocklist)
    assert not store.is_blocked("x", "5", "innocent_name", ["other"])  # taken off the list: no longer pinned


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


# --- a database that cannot be used: one line, nothing lost ---------------------------------------


def test_a_folder_where_the_database_should_be_is_one_line(tmp_path):
    (tmp_path / "bot.sqlite3").mkdir()
    with pytest.raises(UserError, match="is a folder, not a state database file"):
        Store(tmp_path / "bot.sqlite3")


def test_a_read_only_folder_is_one_line(tmp_path):
    import os

    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    with pytest.raises(UserError, match="cannot open the state database"):
        Store(folder / "bot.sqlite3")


def test_the_cli_says_one_line_for_each_unusable_database(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    (tmp_path / "folder.sqlite3").mkdir()
    (tmp_path / "text.sqlite3").write_text("hello " * 200)
    for db, message in (("folder.sqlite3", "is a folder"), ("text.sqlite3", "not a huggingtweets state database")):
        (tmp_path / "config.toml").write_text(f'[bot]\nstate_db = "{tmp_path / db}"\n')
        result = subprocess.run([sys.executable, "-m", "bot", "--config", str(tmp_path / "config.toml"), "status"],
                                capture_output=True, text=True, env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})
        assert result.returncode == 1 and "Traceback" not in result.stderr
        [line] = result.stderr.strip().splitlines()
        assert message in line


@pytest.mark.slow
def test_a_full_disk_while_the_bot_runs_is_one_line_loses_nothing_and_passes(tmp_path):
    """The state database on a real file system that fills up (a 1 MB tmpfs in a private mount namespace)
    while the bot runs; then room is made again."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    if shutil.which("unshare") is None or subprocess.run(["unshare", "-r", "-m", "true"]).returncode != 0:
        pytest.skip("no private mount namespaces here")
    root = Path(__file__).resolve().parents[2]
    disk, inbox, outbox = tmp_path / "disk", tmp_path / "inbox.jsonl", tmp_path / "outbox.jsonl"
    disk.mkdir()
    inbox.write_text('{"id": "1", "author_username": "carol", "text": "@huggingtweets help"}\n')
    (tmp_path / "config.toml").write_text(
        f'[bot]\nsources = ["local"]\nstate_db = "{disk}/bot.sqlite3"\ninbox = "{inbox}"\npoll_interval_seconds = 1\n'
        f'outbox = "{outbox}"\narchives_dir = "{tmp_path}"\nwork_dir = "{tmp_path}/work"\n'
        f'[hub]\nbackend = "local"\nlocal_dir = "{tmp_path}/hub"\n')
    bot = f"{sys.executable} -m bot --config {tmp_path}/config.toml"
    wait_for = "for i in $(seq 300); do [ $(cat {0} 2>/dev/null | wc -l) -ge {1} ] && break; sleep 0.1; done"
    script = f"""
        set -e
        mount -t tmpfs -o size=1m tmpfs {disk}
        {bot} run 2> {tmp_path}/bot.log &
        BOT=$!
        {wait_for.format(outbox, 1)}
        dd if=/dev/zero of={disk}/filler bs=4k 2>/dev/null || true   # the disk is full now
        echo '{{"id": "2", "author_username": "dave", "text": "@huggingtweets help"}}' >> {inbox}
        for i in $(seq 300); do grep -q "database or disk is full" {tmp_path}/bot.log && break; sleep 0.1; done
        echo '--- freed' >> {tmp_path}/bot.log
        rm {disk}/filler
        {wait_for.format(outbox, 2)}
        kill -TERM $BOT
        wait $BOT
        cp {disk}/bot.sqlite3 {tmp_path}/after.sqlite3
        dd if=/dev/zero of={disk}/filler bs=4k 2>/dev/null || true
        {bot} run --once 2> {tmp_path}/start.log || echo "exit $?" >> {tmp_path}/start.log
    """
    result = subprocess.run(["unshare", "-r", "-m", "sh", "-c", script], capture_output=True, text=True,
                            timeout=120, env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stdout + result.stderr
    log = (tmp_path / "bot.log").read_text()
    assert "Traceback" not in log
    full = log.split("--- freed")[0]
    assert "database or disk is full" in full  # said in one line, and the bot went on
    assert len(outbox.read_text().splitlines()) == 2  # the second mention was answered once there was room
    with sqlite3.connect(tmp_path / "after.sqlite3") as db:
        assert db.execute("SELECT mention_id, state FROM requests ORDER BY id").fetchall() == [("1", "done"), ("2", "done")]
    # Starting on a full disk: one line and a failure exit, not a traceback.
    start = (tmp_path / "start.log").read_text().strip().splitlines()
    assert start[-1] == "exit 1" and start[-2].startswith("huggingtweets: error: ") and "Traceback" not in start[0]
