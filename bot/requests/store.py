"""The bot's state in SQLite: requests and their state machine, the mentions cursor, consents, publications.

    >>> from bot.requests.store import Store
    >>> store = Store("state/bot.sqlite3")            # created and migrated on first use
    >>> store.cursor("mentions")                      # None until the first poll
    >>> [r.state for r in store.requests()]

A request moves through

    received ─┬─> rejected                              (a reply says why)
              ├─> ignored                               (no reply: not a command, the bot's own post)
              ├─> replying ─> done                      (help, opt in, a recent model reused)
              └─> queued ─> downloading ─> training ─> publishing ─> replying ─> done
                     └──────────┴─────────────┴────────────┴─> failed   (a reply says why)

Every transition is one transaction and one log line. Replies are sent exactly once: `reply_status`
goes pending -> sending (committed before the post is sent) -> sent, and a request found `sending`
after a crash is checked against the bot's own recent replies before anything is sent again.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bot.common.errors import TransientError, UserError, inert
from bot.common.failpoints import failpoint

log = logging.getLogger("huggingtweets.store")

TRANSITIONS: dict[str, set[str]] = {
    "received": {"rejected", "ignored", "replying", "queued"},
    "queued": {"downloading", "replying", "failed"},
    "downloading": {"training", "failed"},
    "training": {"publishing", "failed"},
    "publishing": {"replying", "failed"},
    "replying": {"done"},
    "rejected": set(),
    "ignored": set(),
    "failed": set(),
    "done": set(),
}
ACTIVE_STATES = ("queued", "downloading", "training", "publishing")
# How a request's reason begins while the daily budget holds it (or its reply) back until the next UTC day.
BUDGET_WAIT = "waits for tomorrow's budget"
FINAL_STATES = ("rejected", "ignored", "failed", "done")

MIGRATIONS: list[str] = [
    # 1: the first schema
    """
    CREATE TABLE requests (
        id INTEGER PRIMARY KEY,
        mention_id TEXT NOT NULL UNIQUE,
        requester TEXT NOT NULL,
        requester_id TEXT,
        text TEXT NOT NULL,
        kind TEXT NOT NULL,
        handles TEXT NOT NULL DEFAULT '[]',
        repo TEXT,
        state TEXT NOT NULL,
        reason TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL DEFAULT 0,
        model_url TEXT,
        sample TEXT,
        reply_text TEXT,
        reply_status TEXT NOT NULL DEFAULT 'none' CHECK (reply_status IN ('none', 'pending', 'sending', 'sent')),
        reply_id TEXT,
        mention_created_at TEXT,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX requests_by_state ON requests(state, next_attempt_at);
    CREATE INDEX requests_by_requester ON requests(requester, created_at);
    CREATE INDEX requests_by_reply ON requests(reply_status);
    CREATE TABLE transitions (
        request_id INTEGER NOT NULL REFERENCES requests(id),
        at REAL NOT NULL,
        from_state TEXT,
        to_state TEXT NOT NULL,
        note TEXT
    );
    CREATE INDEX transitions_by_request ON transitions(request_id);
    CREATE TABLE cursors (name TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE consents (
        handle TEXT PRIMARY KEY,
        status TEXT NOT NULL CHECK (status IN ('in', 'out')),
        at REAL NOT NULL
    );
    CREATE TABLE published (
        repo TEXT PRIMARY KEY,
        handles TEXT NOT NULL,
        model_url TEXT NOT NULL,
        sample TEXT,
        published_at REAL NOT NULL
    );
    """,
    # 2: replies count their own attempts, so a reply that X keeps refusing is given up on
    """
    ALTER TABLE requests ADD COLUMN reply_attempts INTEGER NOT NULL DEFAULT 0
    """,
    # 3: a training job runs apart from the bot (a subprocess, a worker, a hosted job): which one, and since when
    """
    ALTER TABLE requests ADD COLUMN job_id TEXT;
    ALTER TABLE requests ADD COLUMN executor TEXT;
    ALTER TABLE requests ADD COLUMN job_started_at REAL
    """,
    # 4: what each step cost on the network it used (request_id NULL: reading mentions)
    """
    CREATE TABLE spend (
        request_id INTEGER REFERENCES requests(id),
        at REAL NOT NULL,
        network TEXT NOT NULL,
        item TEXT NOT NULL,
        units INTEGER NOT NULL,
        usd REAL NOT NULL
    );
    CREATE INDEX spend_by_time ON spend(at);
    CREATE INDEX spend_by_request ON spend(request_id)
    """,
    # 5: the network a request came from, and is answered on
    """
    ALTER TABLE requests ADD COLUMN source TEXT NOT NULL DEFAULT 'x'
    """,
    # 6: the machine a training job runs on, when the executor says (a Celery worker's name)
    """
    ALTER TABLE requests ADD COLUMN job_host TEXT
    """,
    # 7: a person is an account id on a network (an X user id, a Bluesky DID), never a handle: handles change
    # and are taken up by others. Every handle an account was seen with; consents and blocks by account;
    # the accounts a request models and a published model is of. The handle-keyed `consents` of schema 1
    # stay as they are and are honoured by handle until each handle is next seen, then move to the account.
    """
    CREATE TABLE accounts (
        network TEXT NOT NULL,
        account_id TEXT NOT NULL,
        handle TEXT NOT NULL,
        first_seen REAL NOT NULL,
        last_seen REAL NOT NULL,
        PRIMARY KEY (network, account_id, handle)
    );
    CREATE INDEX accounts_by_handle ON accounts(network, handle, last_seen);
    CREATE TABLE account_consents (
        network TEXT NOT NULL,
        account_id TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('in', 'out')),
        handle TEXT,
        at REAL NOT NULL,
        PRIMARY KEY (network, account_id)
    );
    CREATE TABLE blocked_accounts (
        entry TEXT NOT NULL,
        network TEXT NOT NULL,
        account_id TEXT NOT NULL,
        at REAL NOT NULL,
        PRIMARY KEY (entry, network, account_id)
    );
    ALTER TABLE published ADD COLUMN accounts TEXT NOT NULL DEFAULT '[]';
    ALTER TABLE published ADD COLUMN request_key TEXT;
    ALTER TABLE requests ADD COLUMN accounts TEXT NOT NULL DEFAULT '[]';
    CREATE INDEX requests_by_requester_id ON requests(requester_id, created_at)
    """,
]


@dataclass(frozen=True)
class Publication:
    """A model the bot published: the repo, the sample it replied with, the key its commit carries."""

    repo: str
    sample: str | None
    request_key: str | None


class TransitionError(RuntimeError):
    """A state change the state machine does not allow: a bug, never a user's doing."""


class StoreError(TransientError):
    """The state database cannot be read or written right now (a full disk, a read-only folder, a damaged
    file): nothing was changed, and the bot tries again later."""


@dataclass(frozen=True)
class Request:
    id: int
    mention_id: str
    requester: str
    requester_id: str | None
    text: str
    kind: str
    handles: tuple[str, ...]
    repo: str | None
    state: str
    reason: str | None
    attempts: int
    next_attempt_at: float
    model_url: str | None
    sample: str | None
    reply_text: str | None
    reply_status: str
    reply_id: str | None
    mention_created_at: str | None
    created_at: float
    updated_at: float
    reply_attempts: int = 0
    job_id: str | None = None  # the training job under way, while in "training"
    executor: str | None = None  # where the job runs: "local", "celery", "hf-jobs"
    job_started_at: float | None = None
    source: str = "x"  # the network the mention came from: "x", "bluesky" or "local"
    job_host: str | None = None  # the worker the job runs on, once the executor has said
    # The people modelled, once their handles were looked up on the network: (account id, handle) pairs.
    accounts: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Request:
        data = dict(row)
        data["handles"] = tuple(json.loads(data["handles"]))
        data["accounts"] = tuple(tuple(a) for a in json.loads(data.get("accounts") or "[]"))
        return cls(**data)

    @property
    def network(self) -> str:
        """The network whose accounts this request names: the one its mention came from."""
        return self.source


@dataclass(frozen=True)
class NewRequest:
    """What the policy decided for a mention, ready to store."""

    mention_id: str
    requester: str
    text: str
    kind: str
    state: str  # the first state after "received"
    handles: tuple[str, ...] = ()
    repo: str | None = None
    reason: str | None = None
    reply_text: str | None = None
    model_url: str | None = None
    sample: str | None = None
    requester_id: str | None = None
    mention_created_at: str | None = None
    consent: str | None = None  # "in" or "out": the requester's own change of consent, stored with the request
    source: str = "x"


class Store:
    """One SQLite database (WAL mode), safe to share between the scheduler's threads."""

    def __init__(self, path: str | Path, clock: Callable[[], float] = time.time):
        self.path = Path(path)
        self.clock = clock
        self._lock = threading.RLock()
        if self.path.is_dir():
            raise UserError(f"{self.path}: is a folder, not a state database file ([bot] state_db)")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across process crashes
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except StoreError as e:
            raise UserError(str(e)) from None
        except sqlite3.DatabaseError as e:
            if type(e) is sqlite3.DatabaseError:  # "file is not a database", "malformed"
                raise UserError(f"{self.path}: not a huggingtweets state database ({e})") from None
            raise UserError(f"{self.path}: cannot open the state database ({e})") from None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- schema ---------------------------------------------------------------------------------

    @property
    def schema_version(self) -> int:
        return self._db.execute("PRAGMA user_version").fetchone()[0]

    def _migrate(self) -> None:
        with self.transaction() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > len(MIGRATIONS):
                raise UserError(f"{self.path}: schema version {version} is newer than this program knows")
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                for statement in script.split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(f"PRAGMA user_version = {number}")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction: all of it lands, or none of it. Nested calls join the outer one.

        A database that cannot be written (a full disk, a read-only folder) raises StoreError, and nothing
        of the transaction is kept.
        """
        with self._lock:
            if self._db.in_transaction:
                yield self._db
                return
            with self._database_errors():
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                    self._db.execute("COMMIT")
                except BaseException:
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                    raise

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        with self._lock, self._database_errors():
            yield self._db

    @contextmanager
    def _database_errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.DatabaseError as e:
            raise StoreError(f"{self.path}: the state database cannot be used now ({e})") from None

    # --- mentions in ----------------------------------------------------------------------------

    def ingest(self, mentions: Iterable, decide: Callable[[object], NewRequest], cursor_name: str = "mentions",
               cursor_value: str | None = None) -> list[Request]:
        """Store new mentions with what `decide` made of each, and move the cursor, in one transaction.

        A mention already stored is skipped, so reading the same page twice after a crash is harmless.
        """
        created: list[Request] = []
        consents: list[NewRequest] = []
        with self.transaction() as db:
            for mention in mentions:
                if db.execute("SELECT 1 FROM requests WHERE mention_id = ?", (str(mention.id),)).fetchone():
                    continue
                new = decide(mention)
                created.append(self._insert(db, new))
                if new.consent:
                    consents.append(new)
            if cursor_value is not None:
                db.execute("INSERT INTO cursors(name, value) VALUES (?, ?) "
                           "ON CONFLICT(name) DO UPDATE SET value = excluded.value", (cursor_name, cursor_value))
        for r in created:
            log.info("request %d: received -> %s (%s%s, asked by @%s%s)", r.id, r.state, r.kind,
                     "".join(f" {h}" for h in r.handles) if r.kind == "train" else "", r.requester,
                     f": {r.reason}" if r.reason else "", extra={"request": r.id, "state": r.state, "network": r.source})
        for new in consents:
            log.info("consent: @%s opted %s", new.requester, new.consent)
        if created:
            failpoint("ingested")
        return created

    def _insert(self, db: sqlite3.Connection, new: NewRequest) -> Request:
        if new.state not in TRANSITIONS["received"]:
            raise TransitionError(f"a new request cannot start in {new.state!r}")
        now = self.clock()
        reply_status = "pending" if new.reply_text else "none"
        cur = db.execute(
            "INSERT INTO requests (mention_id, requester, requester_id, text, kind, handles, repo, state, reason,"
            " model_url, sample, reply_text, reply_status, mention_created_at, created_at, updated_at, source)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (str(new.mention_id), new.requester, new.requester_id, new.text, new.kind, json.dumps(list(new.handles)),
             new.repo, new.state, new.reason, new.model_url, new.sample, new.reply_text, reply_status,
             new.mention_created_at, now, now, new.source))
        rid = cur.lastrowid
        if new.requester_id:
            self._saw_account(db, new.source, new.requester_id, new.requester)
        if new.consent:
            self._set_consent(db, new.source, new.requester_id or "", new.requester, new.consent)
        db.execute("INSERT INTO transitions VALUES (?, ?, NULL, 'received', NULL)", (rid, now))
        db.execute("INSERT INTO transitions VALUES (?, ?, 'received', ?, ?)", (rid, now, new.state, new.reason))
        return self._get(db, rid)

    # --- state changes --------------------------------------------------------------------------

    def transition(self, request_id: int, to_state: str, note: str | None = None, **fields) -> Request:
        """Move a request to `to_state`, updating `fields` in the same transaction."""
        with self.transaction() as db:
            current = self._get(db, request_id)
            if to_state not in TRANSITIONS[current.state]:
                raise TransitionError(f"request {request_id}: {current.state} -> {to_state} is not allowed")
            if "reply_text" in fields and fields["reply_text"] and "reply_status" not in fields:
                fields["reply_status"] = "pending"
            self._update(db, request_id, state=to_state, **fields)
            note = inert(note) if note else note
            db.execute("INSERT INTO transitions VALUES (?, ?, ?, ?, ?)",
                       (request_id, self.clock(), current.state, to_state, note))
            updated = self._get(db, request_id)
        log.info("request %d: %s -> %s%s", request_id, current.state, to_state, f" ({note})" if note else "",
                 extra={"request": request_id, "state": to_state})
        failpoint(f"entered:{to_state}")
        return updated

    def retry_later(self, request_id: int, reason: str, delay_seconds: float) -> Request:
        """Count a failed attempt and wait before the next; the state stays where it is."""
        reason = inert(reason)
        with self.transaction() as db:
            current = self._get(db, request_id)
            self._update(db, request_id, attempts=current.attempts + 1, reason=reason, job_id=None,
                         next_attempt_at=self.clock() + delay_seconds)
            db.execute("INSERT INTO transitions VALUES (?, ?, ?, ?, ?)",
                       (request_id, self.clock(), current.state, current.state, f"retry in {delay_seconds:.0f}s: {reason}"))
            updated = self._get(db, request_id)
        log.info("request %d: %s, attempt %d failed, retry in %.0fs: %s", request_id, current.state,
                 updated.attempts, delay_seconds, reason)
        return updated

    def update(self, request_id: int, **fields) -> Request:
        with self.transaction() as db:
            self._update(db, request_id, **fields)
            return self._get(db, request_id)

    def _update(self, db: sqlite3.Connection, request_id: int, **fields) -> None:
        for name in ("reason", "job_host"):  # often a server's or a worker's words: stored inert whatever path they took
            if fields.get(name):
                fields[name] = inert(fields[name])
        if "handles" in fields:
            fields["handles"] = json.dumps(list(fields["handles"]))
        if "accounts" in fields:
            fields["accounts"] = json.dumps([list(a) for a in fields["accounts"]])
        fields["updated_at"] = self.clock()
        columns = ", ".join(f"{k} = ?" for k in fields)
        db.execute(f"UPDATE requests SET {columns} WHERE id = ?", (*fields.values(), request_id))

    # --- replies --------------------------------------------------------------------------------

    def mark_sending(self, request_id: int) -> Request:
        """Recorded before the reply is posted: after a crash, this says a reply may be out there."""
        return self.update(request_id, reply_status="sending")

    def mark_sent(self, request_id: int, reply_id: str) -> Request:
        with self.transaction() as db:
            current = self._get(db, request_id)
            self._update(db, request_id, reply_status="sent", reply_id=str(reply_id))
            if current.state == "replying":
                db.execute("INSERT INTO transitions VALUES (?, ?, 'replying', 'done', ?)",
                           (request_id, self.clock(), f"reply {reply_id}"))
                self._update(db, request_id, state="done")
            updated = self._get(db, request_id)
        log.info("request %d: reply %s sent%s", request_id, reply_id,
                 "; replying -> done" if current.state == "replying" else "",
                 extra={"request": request_id, "state": updated.state})
        return updated

    def give_up_reply(self, request_id: int, reason: str) -> Request:
        """No more tries for this reply: X keeps refusing it (say, the mention was deleted)."""
        with self.transaction() as db:
            current = self._get(db, request_id)
            self._update(db, request_id, reply_status="none", reason=reason)
            if current.state == "replying":
                db.execute("INSERT INTO transitions VALUES (?, ?, 'replying', 'done', ?)",
                           (request_id, self.clock(), reason))
                self._update(db, request_id, state="done")
            updated = self._get(db, request_id)
        log.warning("request %d: reply given up: %s", request_id, reason)
        return updated

    def replies_due(self) -> list[Request]:
        with self._reading() as db:
            rows = db.execute(
                "SELECT * FROM requests WHERE reply_status IN ('pending', 'sending') ORDER BY id").fetchall()
        return [Request.from_row(r) for r in rows]

    # --- reads ----------------------------------------------------------------------------------

    def _get(self, db: sqlite3.Connection, request_id: int) -> Request:
        row = db.execute("SELECT * FROM requests WHERE id = ?", (request_id,)).fetchone()
        if row is None:
            raise KeyError(f"no request {request_id}")
        return Request.from_row(row)

    def get(self, request_id: int) -> Request:
        with self._reading() as db:
            return self._get(db, request_id)

    def by_mention(self, mention_id: str) -> Request | None:
        with self._reading() as db:
            row = db.execute("SELECT * FROM requests WHERE mention_id = ?", (str(mention_id),)).fetchone()
        return Request.from_row(row) if row else None

    def requests(self, states: Iterable[str] | None = None, limit: int | None = None) -> list[Request]:
        sql, args = "SELECT * FROM requests", []
        if states is not None:
            states = list(states)
            sql += f" WHERE state IN ({','.join('?' * len(states))})"
            args += states
        sql += " ORDER BY id DESC"
        if limit:
            sql += f" LIMIT {int(limit)}"
        with self._reading() as db:
            return [Request.from_row(r) for r in db.execute(sql, args).fetchall()]

    def next_due(self, start_jobs: bool = True) -> Request | None:
        """The oldest request with work to do now (requests resume where they stood after a restart).

        A request whose training job is under way is not due (its job is checked instead); one waiting to
        start its job is due only when `start_jobs` (the executor can take one).
        """
        states = [s for s in ACTIVE_STATES if start_jobs or s != "training"]
        with self._reading() as db:
            row = db.execute(
                f"SELECT * FROM requests WHERE state IN ({','.join('?' * len(states))})"
                " AND next_attempt_at <= ? AND NOT (state = 'training' AND job_id IS NOT NULL)"
                " ORDER BY id LIMIT 1", (*states, self.clock())).fetchone()
        return Request.from_row(row) if row else None

    def jobs_under_way(self) -> list[Request]:
        """Requests whose training job has been handed to an executor, oldest first."""
        with self._reading() as db:
            rows = db.execute("SELECT * FROM requests WHERE state = 'training' AND job_id IS NOT NULL"
                                    " ORDER BY id").fetchall()
        return [Request.from_row(r) for r in rows]

    def job_started(self, request_id: int, job_id: str, executor: str) -> Request:
        with self.transaction() as db:
            self._update(db, request_id, job_id=job_id, executor=executor, job_started_at=self.clock(), job_host=None)
            db.execute("INSERT INTO transitions VALUES (?, ?, 'training', 'training', ?)",
                       (request_id, self.clock(), f"job {job_id} started ({executor})"))
            updated = self._get(db, request_id)
        log.info("request %d: training job %s started (%s)", request_id, job_id, executor)
        return updated

    def history(self, request_id: int) -> list[tuple[float, str | None, str, str | None]]:
        with self._reading() as db:
            return [tuple(r) for r in db.execute(
                "SELECT at, from_state, to_state, note FROM transitions WHERE request_id = ? ORDER BY rowid",
                (request_id,)).fetchall()]

    def queue_length(self) -> int:
        with self._reading() as db:
            return db.execute(
                f"SELECT COUNT(*) FROM requests WHERE state IN ({','.join('?' * len(ACTIVE_STATES))})",
                ACTIVE_STATES).fetchone()[0]

    def request_counts(self) -> list[tuple[str, str, int, int]]:
        """(network, state, requests, replies sent) for every pair that has requests: what the metrics show."""
        with self._reading() as db:
            return [tuple(r) for r in db.execute(
                "SELECT source, state, COUNT(*), SUM(reply_status = 'sent') FROM requests GROUP BY source, state")]

    def waiting_for_budget(self, now: float) -> int:
        """Requests (or their replies) held back until a later day by the budget."""
        with self._reading() as db:
            return db.execute("SELECT COUNT(*) FROM requests WHERE next_attempt_at > ? AND reason LIKE ?"
                              " AND (state IN ('queued', 'downloading', 'training', 'publishing')"
                              " OR reply_status IN ('pending', 'sending'))", (now, BUDGET_WAIT + "%")).fetchone()[0]

    def replies_promised(self, source: str, exclude: int | None = None) -> int:
        """Requests from `source` past their download whose reply (with the model's link) is still to come:
        the budget keeps room for each."""
        with self._reading() as db:
            return db.execute("SELECT COUNT(*) FROM requests WHERE source = ? AND id != ?"
                              " AND state IN ('training', 'publishing')", (source, exclude or -1)).fetchone()[0]

    def requests_since(self, requester_id: str | None, requester: str, since: float) -> int:
        """Model requests a person made since `since` (for the daily quota): by account id, whatever handle
        each was made under; by handle only for requests stored before ids were kept."""
        with self._reading() as db:
            return db.execute(
                "SELECT COUNT(*) FROM requests WHERE created_at >= ? AND kind = 'train'"
                " AND state NOT IN ('rejected', 'ignored')"
                " AND (requester_id = ? OR ((requester_id IS NULL OR requester_id = '') AND requester = ?))",
                (since, requester_id or "\x00", requester)).fetchone()[0]

    # --- spend --------------------------------------------------------------------------------------

    def add_spend(self, request_id: int | None, network: str, items: Iterable[tuple[str, int, float]]) -> None:
        """Record what a step cost: (item, units, dollars) for each kind of use."""
        rows = [(request_id, self.clock(), network, item, units, usd) for item, units, usd in items]
        if rows:
            with self.transaction() as db:
                db.executemany("INSERT INTO spend VALUES (?, ?, ?, ?, ?, ?)", rows)

    def spend_of(self, request_ids: Iterable[int]) -> dict[int, float]:
        """Dollars spent on each of these requests (0 for none)."""
        ids = list(request_ids)
        if not ids:
            return {}
        with self._reading() as db:
            rows = db.execute(f"SELECT request_id, SUM(usd) FROM spend WHERE request_id IN ({','.join('?' * len(ids))})"
                              " GROUP BY request_id", ids).fetchall()
        found = {row[0]: row[1] for row in rows}
        return {i: round(found.get(i, 0.0), 6) for i in ids}

    def spend_totals(self) -> dict[tuple[str, str], float]:
        """Dollars spent so far on each (network, item), reading mentions included: what the metrics show."""
        with self._reading() as db:
            return {(network, item): usd for network, item, usd in db.execute(
                "SELECT network, item, SUM(usd) FROM spend GROUP BY network, item")}

    def spend_since(self, since: float) -> float:
        """Dollars spent since the time `since`, everything included (reading mentions too)."""
        with self._reading() as db:
            return round(db.execute("SELECT COALESCE(SUM(usd), 0) FROM spend WHERE at >= ?", (since,)).fetchone()[0], 6)

    # --- cursors, consents, publications ----------------------------------------------------------

    def cursor(self, name: str) -> str | None:
        with self._reading() as db:
            row = db.execute("SELECT value FROM cursors WHERE name = ?", (name,)).fetchone()
        return row[0] if row else None

    # People are accounts: (network, account id). Handles are how they were seen, for display and names.

    def saw_accounts(self, network: str, accounts: Iterable[tuple[str, str]]) -> None:
        """Record that these (account id, handle) pairs were seen on `network` (a mention's author, an
        account looked up): a consent given under the handle before ids were kept moves to the account, and
        a handle on `blocklist` pins its account, so both hold after a rename."""
        with self.transaction() as db:
            for account_id, handle in accounts:
                self._saw_account(db, network, account_id, handle)

    def _saw_account(self, db: sqlite3.Connection, network: str, account_id: str, handle: str) -> None:
        account_id, handle, now = str(account_id), handle.lower(), self.clock()
        db.execute("INSERT INTO accounts VALUES (?, ?, ?, ?, ?) ON CONFLICT(network, account_id, handle) DO UPDATE"
                   " SET last_seen = excluded.last_seen", (network, account_id, handle, now, now))
        legacy = db.execute("SELECT status, at FROM consents WHERE handle = ?", (handle,)).fetchone()
        if legacy is not None:
            db.execute("INSERT INTO account_consents VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                       (network, account_id, legacy[0], handle, legacy[1]))
            db.execute("DELETE FROM consents WHERE handle = ?", (handle,))
            log.info("consent: @%s's opt-%s now holds for account %s on %s", handle, legacy[0], account_id, network)
        for entry in self.blocklist:
            if entry == handle:
                db.execute("INSERT INTO blocked_accounts VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                           (entry, network, account_id, now))

    blocklist: tuple[str, ...] = ()  # the operator's [bot] blocklist, lowercased (set by the bot)

    def is_blocked(self, network: str, account_id: str | None, handle: str, blocklist: Iterable[str]) -> bool:
        """Whether the operator's `blocklist` names this person: by the handle, by an id written in the list
        (`x:ID`, a DID), or by an account a listed handle was seen with (so a rename does not lift it)."""
        entries = {e.lower() for e in blocklist}
        if handle.lower() in entries or (account_id and (account_id in entries or f"{network}:{account_id}" in entries)):
            return True
        if not account_id or not entries:
            return False
        with self._reading() as db:
            rows = db.execute("SELECT entry FROM blocked_accounts WHERE network = ? AND account_id = ?",
                              (network, str(account_id))).fetchall()
        return any(row[0] in entries for row in rows)

    def set_consent(self, network: str, account_id: str, handle: str, status: str) -> None:
        with self.transaction() as db:
            self._set_consent(db, network, account_id, handle, status)

    def _set_consent(self, db: sqlite3.Connection, network: str, account_id: str, handle: str, status: str) -> None:
        if not account_id:  # a source that gave no id (never X or Bluesky): the handle is all there is
            db.execute("INSERT INTO consents VALUES (?, ?, ?) ON CONFLICT(handle) DO UPDATE SET "
                       "status = excluded.status, at = excluded.at", (handle.lower(), status, self.clock()))
            return
        db.execute("INSERT INTO account_consents VALUES (?, ?, ?, ?, ?) ON CONFLICT(network, account_id) DO UPDATE"
                   " SET status = excluded.status, handle = excluded.handle, at = excluded.at",
                   (network, str(account_id), status, handle.lower(), self.clock()))

    def consent(self, network: str, account_id: str | None, handle: str | None = None) -> str | None:
        """'in', 'out', or None when the person never said: by account, else (a consent given before ids
        were kept, its handle not seen since) by handle."""
        with self._reading() as db:
            if account_id:
                row = db.execute("SELECT status FROM account_consents WHERE network = ? AND account_id = ?",
                                 (network, str(account_id))).fetchone()
                if row:
                    return row[0]
            if handle:
                row = db.execute("SELECT status FROM consents WHERE handle = ?", (handle.lower(),)).fetchone()
                if row:
                    return row[0]
        return None

    def account_of(self, network: str, handle: str) -> str | None:
        """The account `handle` was last seen with on `network`, or None."""
        with self._reading() as db:
            row = db.execute("SELECT account_id FROM accounts WHERE network = ? AND handle = ?"
                             " ORDER BY last_seen DESC LIMIT 1", (network, handle.lower())).fetchone()
        return row[0] if row else None

    def handles_of(self, network: str, account_id: str) -> list[str]:
        """Every handle an account was seen with, oldest first."""
        with self._reading() as db:
            return [r[0] for r in db.execute("SELECT handle FROM accounts WHERE network = ? AND account_id = ?"
                                             " ORDER BY first_seen", (network, str(account_id))).fetchall()]

    def unresolved_consents(self) -> list[str]:
        """Handles whose consent was given before ids were kept and that have not been seen since."""
        with self._reading() as db:
            return [r[0] for r in db.execute("SELECT handle FROM consents ORDER BY at").fetchall()]

    def blocked_entries_resolved(self) -> set[str]:
        """Blocklist entries already pinned to an account."""
        with self._reading() as db:
            return {r[0] for r in db.execute("SELECT DISTINCT entry FROM blocked_accounts").fetchall()}

    def record_published(self, repo: str, handles: Iterable[str], model_url: str, sample: str | None,
                         accounts: Iterable[tuple[str, str]] = (), network: str = "x",
                         request_key: str | None = None) -> None:
        """A model published for a request: its repo, the people it is of (as accounts of `network`, so an
        opt-out finds it whatever its name says), and the key of the commit that holds it."""
        people = sorted([network, str(account_id)] for account_id, _ in accounts)
        with self.transaction() as db:
            db.execute("INSERT INTO published (repo, handles, model_url, sample, published_at, accounts, request_key)"
                       " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(repo) DO UPDATE SET "
                       "handles = excluded.handles, model_url = excluded.model_url, sample = excluded.sample, "
                       "published_at = excluded.published_at, accounts = excluded.accounts, "
                       "request_key = excluded.request_key",
                       (repo, json.dumps(sorted(handles)), model_url, sample, self.clock(), json.dumps(people),
                        request_key))

    def recent_publication(self, network: str, accounts: Iterable[tuple[str, str]],
                           max_age_seconds: float) -> Publication | None:
        """The newest model of exactly these people (accounts of `network`) published less than
        `max_age_seconds` ago, whatever handles its name was made of."""
        people = json.dumps(sorted([network, str(account_id)] for account_id, _ in accounts))
        with self._reading() as db:
            row = db.execute("SELECT repo, sample, request_key FROM published WHERE accounts = ? AND published_at >= ?"
                             " ORDER BY published_at DESC LIMIT 1",
                             (people, self.clock() - max_age_seconds)).fetchone()
        return Publication(*row) if row else None

    def repos_of(self, network: str, account_id: str) -> list[str]:
        """Repos the bot published of this account (alone or with others), under any name."""
        person = json.dumps([network, str(account_id)])
        with self._reading() as db:
            rows = db.execute("SELECT repo FROM published, json_each(published.accounts)"
                              " WHERE json_each.value = json(?)", (person,)).fetchall()
        return sorted({r[0] for r in rows})

    def repos_named_with(self, handles: Iterable[str]) -> list[str]:
        """Repos the bot published before it kept account ids, of any of these handles."""
        wanted = {h.lower() for h in handles}
        with self._reading() as db:
            rows = db.execute("SELECT repo, handles FROM published WHERE accounts = '[]'").fetchall()
        return sorted(r[0] for r in rows if wanted & set(json.loads(r[1])))

    def forget_published(self, repos: Iterable[str]) -> None:
        with self.transaction() as db:
            db.executemany("DELETE FROM published WHERE repo = ?", [(r,) for r in repos])
