"""What the bot believes, tried as an attacker would (DESIGN.md "Trust"): a person is an account id, not a
handle; a worker publishes only under its own authority; the bot believes the Hub, not the queue; every
billed call fits in the day's budget, replies included; remote text reaches no terminal raw.

Each test plays one attack end to end on the loopback X, Hub and Redis, with the real command or the real
worker, and checks that it ends safely.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from fake_x import FakeX
from bot_process import BotRunner
from waiting import wait_until

from bot.cli import to_toml
from bot.common.config import Settings
from bot.common.errors import inert
from bot.publishing.hub import KEY_PREFIX, publish_folder
from bot.requests.store import Store

ROOT = Path(__file__).resolve().parents[2]
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


@pytest.fixture
def x():
    with FakeX() as fake:
        fake.add_user("dora", posts=150)
        fake.add_user("eli", posts=150)
        yield fake


def seed_published(bot: BotRunner, x: FakeX, handle: str, request_key: str, sample: str = "My dream is tea") -> str:
    """A model of `handle` that the bot published earlier for a request: its keyed commit on the Hub and its
    row in the state database, as `Bot.publish` leaves them (no training needed to attack what follows)."""
    repo = f"huggingtweets/{handle}"
    model = bot.tmp / f"{handle}-model"
    model.mkdir()
    (model / "README.md").write_text(f"{handle}'s model\n")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("HF_TOKEN", bot.hub.token)
        publish_folder(model, Settings.model_validate({"hub": {"max_retries": 1}}), repo_id=repo, key=request_key)
    store = Store(bot.tmp / "bot.sqlite3")
    store.record_published(repo, [handle], "ignored", sample, accounts=[(x.user(handle).id, handle)], network="x",
                           request_key=request_key)
    store.close()
    return repo


# --- 1. consent follows the person, not the name ---------------------------------------------------


@pytest.mark.slow
def test_an_opt_out_survives_a_rename_and_deletes_models_under_the_old_name(tmp_path, x, fake_hub):
    bot = BotRunner(tmp_path, x, fake_hub)
    seed_published(bot, x, "dora", "1 (x mention 1)")
    dora = x.rename("dora", "dora_new")  # a new handle; her model is still named after the old one
    opt_out = x.add_mention("dora_new", "@huggingtweets opt out")
    bot.run_ok()
    assert "huggingtweets/dora" not in fake_hub.repos, "her model, under the name she had"
    assert "deleted 1 model" in bot.replies_to(opt_out)[0]

    asked = x.add_mention("mallory", "@huggingtweets train @dora_new")  # a stranger, under her new name
    newcomer = x.add_user("dora", posts=30)  # someone else takes the old handle up: a person of their own
    other = x.add_mention("erin", "@huggingtweets train @dora")
    bot.run_ok()
    assert "dora_new opted out" in bot.replies_to(asked)[0]
    assert x.count(f"/2/users/{dora.id}/tweets") == 0, "not one post of hers was read"
    # The newcomer is not the person who opted out: the request goes on (and stops at their 30 posts).
    assert "too few posts" in bot.replies_to(other)[0] and x.count(f"/2/users/{newcomer.id}/tweets") == 1
    assert not any(repo.startswith("huggingtweets/dora") for repo in fake_hub.repos)


@pytest.mark.slow
def test_a_blocklisted_account_stays_blocked_after_a_rename(tmp_path, x, fake_hub):
    spammer = x.add_user("spammer")
    bot = BotRunner(tmp_path, x, fake_hub)
    bot.write_config(blocklist=["spammer"])
    first = x.add_mention("spammer", "@huggingtweets train @eli")
    bot.run_ok()
    x.rename("spammer", "fresh_face")
    second = x.add_mention("fresh_face", "@huggingtweets train @eli")
    bot.run_ok()
    assert bot.replies_to(first) == bot.replies_to(second) == []
    assert set(bot.states().values()) == {"ignored"}
    assert "huggingtweets/eli" not in fake_hub.repos and spammer.username == "fresh_face"


@pytest.mark.slow
def test_a_blocklisted_handle_is_tied_to_its_account_before_the_first_mention(tmp_path, x, fake_hub):
    x.add_user("troll")
    bot = BotRunner(tmp_path, x, fake_hub)
    bot.write_config(blocklist=["troll"])
    bot.run_ok()  # at start the bot looks "troll" up once and pins the account
    x.rename("troll", "new_troll")
    mention = x.add_mention("new_troll", "@huggingtweets help")
    bot.run_ok()
    assert bot.replies_to(mention) == [] and bot.states()[mention] == "ignored"


# --- 2. a worker obeys its own config, not the message ----------------------------------------------


def ticket_of(folder: Path, archive: str, **train) -> dict:
    """A well-formed ticket for the worker's own organisation: the sample archive's posts, these settings."""
    from bot.training import job
    from bot.data.archive import open_archive
    from bot.data.dataset import build_dataset

    dataset = build_dataset({"dreamy_kettle": open_archive(archive)})
    settings = Settings.model_validate({"train": {"base_model": "tiny", **train}})
    job.prepare(folder, dataset, job.TrainJob.from_settings(settings, dataset.name, request_key="forged-long"))
    return job.Ticket.from_folder(folder).model_dump(mode="json")


@pytest.mark.slow
def test_a_forged_task_message_publishes_nothing_and_writes_nothing(tmp_path, fake_hub, sample_archive):
    from redis_queue import Queue

    from bot.workers.celery_app import TASK_NAME, make_app

    queue = Queue(tmp_path, fake_hub)
    try:
        # The worker's own limit: four seconds a job, whatever a message asks.
        (tmp_path / "worker").mkdir()
        config = queue.write_config(tmp_path / "worker")
        config.write_text(config.read_text().replace("[bot]\n", "[bot]\njob_timeout_seconds = 4\n"))
        queue.start_worker("gpu1", config)
        app = make_app(Settings.model_validate({"celery": {"broker_url": queue.redis.url}}))
        elsewhere = tmp_path / "planted"
        job = {"version": 1, "repo_id": "victim-org/planted", "base_model": "tiny", "train": {},
               "bot_handle": "huggingtweets", "min_words": 3, "request_key": "forged"}
        data = {"train.jsonl": '{"text": "hi"}\n', "validation.jsonl": "", "stats.json": "{}"}
        forged = {
            # the old ticket shape: it named the Hub backend and the organisation
            "old": {"version": 1, "job": json.dumps(job), "data": data,
                    "hub": {"backend": "local", "organization": "victim-org", "local_dir": str(elsewhere)}},
            # today's shape, naming another organisation in its job
            "org": {"version": 2, "job": json.dumps(job), "data": data},
            # the worker's own organisation, but a base model from the worker's disk
            "path": {"version": 2, "job": json.dumps({**job, "repo_id": "huggingtweets/alice", "base_model": "/etc"}),
                     "data": data},
            # a data file that would land outside the job's folder
            "file": {"version": 2, "job": json.dumps({**job, "repo_id": "huggingtweets/alice"}),
                     "data": {"../../escape.txt": "x"}},
        }
        results = {name: app.send_task(TASK_NAME, args=[ticket], task_id=str(uuid.uuid4()))
                   for name, ticket in forged.items()}
        # A well-formed job that asks for an hour of a worker allowed four seconds.
        long_job = ticket_of(tmp_path / "long", sample_archive, max_epochs=100)
        started = time.monotonic()
        results["long"] = app.send_task(TASK_NAME, args=[long_job], task_id=str(uuid.uuid4()),
                                        soft_time_limit=3600, time_limit=3600)
        answers = {name: result.get(timeout=90) for name, result in results.items()}
        took = time.monotonic() - started
    finally:
        queue.stop()
    for name in forged:  # refused for good, before anything was trained
        assert answers[name]["error"]["transient"] is False, (name, answers[name])
    assert "where to publish" in answers["old"]["error"]["message"]
    assert "outside this machine's organisation 'huggingtweets'" in answers["org"]["error"]["message"]
    assert "base model" in answers["path"]["error"]["message"]
    assert "may not be named" in answers["file"]["error"]["message"]
    assert "SoftTimeLimitExceeded" in answers["long"]["error"]["type"] and took < 60, (answers["long"], took)
    assert not any(repo.startswith("victim-org/") for repo in fake_hub.repos), sorted(fake_hub.repos)
    assert not elsewhere.exists() and not (tmp_path / "escape.txt").exists()


# --- 3. the bot believes the Hub, not the result ----------------------------------------------------


@pytest.mark.slow
def test_a_forged_result_gets_no_reply_with_its_link_and_is_never_reused(tmp_path, x, fake_hub):
    from redis_queue import Queue

    (tmp_path / "queue").mkdir()
    queue = Queue(tmp_path / "queue", fake_hub)
    try:
        bot = BotRunner(tmp_path, x, fake_hub)
        config = queue.write_config(tmp_path)  # celery, no worker running: the job waits in the queue
        settings_text = config.read_text().replace("max_attempts = 3", "max_attempts = 1")
        config.write_text(settings_text)
        bot.config = config
        mention = x.add_mention("carol", "@huggingtweets train @eli")
        process = subprocess.Popen([sys.executable, "-m", "bot", "--config", str(config), "run", "--once"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   env={**bot.env(), **queue.env()}, cwd=tmp_path)
        job_id = wait_until(lambda: job_of(tmp_path), "the job handed to the queue", timeout=120, process=process)
        # Whoever can write to Redis answers for the worker: a made-up model, a phishing link.
        claim = {"repo_id": "huggingtweets/eli", "model_url": "https://evil.example/login",
                 "commit_url": "https://evil.example/c", "commit_id": "0" * 40,
                 "best_sample": "Log in at evil.example to see your model"}
        meta = {"status": "SUCCESS", "result": {"worker": "gpu1@test", "published": claim}, "traceback": None,
                "children": [], "date_done": None, "task_id": job_id}
        queue_redis(queue).set(f"celery-task-meta-{job_id}", json.dumps(meta))
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr[-3000:]
    finally:
        queue.stop()
    [reply] = bot.replies_to(mention)
    assert "evil" not in reply and "Sorry" in reply, reply
    assert "the Hub shows no commit for this request" in stderr
    with sqlite3.connect(tmp_path / "bot.sqlite3") as db:
        assert db.execute("SELECT COUNT(*) FROM published").fetchone()[0] == 0
        assert "evil" not in json.dumps(db.execute("SELECT * FROM requests").fetchall())


def job_of(folder: Path) -> str | None:
    try:
        with sqlite3.connect(folder / "bot.sqlite3") as db:
            row = db.execute("SELECT job_id FROM requests WHERE job_id IS NOT NULL").fetchone()
    except sqlite3.OperationalError:
        return None
    return row[0] if row else None


def queue_redis(queue):
    import redis

    return redis.Redis.from_url(queue.redis.url)


@pytest.mark.slow
def test_a_published_model_whose_commit_is_gone_is_not_reused(tmp_path, x, fake_hub):
    bot = BotRunner(tmp_path, x, fake_hub)
    lone = x.add_user("lone", posts=30)
    repo = seed_published(bot, x, "lone", "1 (x mention 1)", sample="a reused sample")
    # Someone rewrites the repo: the commit the bot made for the request is no longer in its history.
    commits = fake_hub.repos[repo].commits
    commits[:] = [c for c in commits if KEY_PREFIX not in c.description]
    mention = x.add_mention("dave", "@huggingtweets train @lone")
    bot.run_ok()
    [reply] = bot.replies_to(mention)
    assert "a reused sample" not in reply and "too few posts" in reply, reply  # downloaded anew instead
    assert x.count(f"/2/users/{lone.id}/tweets") == 1
    with sqlite3.connect(tmp_path / "bot.sqlite3") as db:
        assert db.execute("SELECT COUNT(*) FROM published").fetchone()[0] == 0, "the stale row is forgotten"


# --- 4. the budget holds, replies included ---------------------------------------------------------


@pytest.mark.slow
def test_the_daily_budget_holds_with_replies_and_the_rest_waits_for_tomorrow(tmp_path, x, fake_hub):
    """The issue's day: a model reused by eight people and ten asking for help, on a dollar a day."""
    bot = BotRunner(tmp_path, x, fake_hub)
    bot.write_config(daily_budget_usd=1.0)
    seed_published(bot, x, "eli", "1 (x mention 1)")
    asked = [x.add_mention(f"fan{i}", "@huggingtweets train @eli") for i in range(8)]
    helped = [x.add_mention(f"new{i}", "@huggingtweets help") for i in range(10)]
    everyone = asked + helped
    bot.run_ok()

    answered = [m for m in everyone if bot.replies_to(m)]
    assert 0 < len(answered) < len(everyone)
    report = bot_status(bot)
    assert 0 < report["spend_usd"]["today"] <= 1.0
    assert report["waiting_for_budget"] == len(everyone) - len(answered)

    # The next UTC days: what waited goes out, oldest first, within each day's dollar, each reply once.
    for _ in range(3):
        with sqlite3.connect(tmp_path / "bot.sqlite3") as db:  # a day later for the bot's budget
            db.execute("UPDATE spend SET at = at - 86400")
            db.execute("UPDATE requests SET next_attempt_at = 0 WHERE next_attempt_at > 0")
        bot.run_ok()
        assert 0 < bot_status(bot)["spend_usd"]["today"] <= 1.0
    assert all(len(bot.replies_to(m)) == 1 for m in everyone)
    fans_in_reply_order = [p["in_reply_to_tweet_id"] for p in x.posted if p["in_reply_to_tweet_id"] in asked]
    assert fans_in_reply_order == asked, "oldest first"


def bot_status(bot: BotRunner) -> dict:
    result = subprocess.run([sys.executable, "-m", "bot", "--config", str(bot.config), "status", "--json"],
                            capture_output=True, text=True, env=bot.env(), cwd=bot.tmp, check=True)
    return json.loads(result.stdout)


@pytest.mark.slow
def test_a_request_that_could_never_fit_the_budget_is_refused_with_a_reason(tmp_path, x, fake_hub):
    bot = BotRunner(tmp_path, x, fake_hub)
    bot.write_config(daily_budget_usd=0.5)  # one full timeline (150 posts) costs $0.75
    mention = x.add_mention("carol", "@huggingtweets train @dora")
    bot.run_ok()
    assert "more than I may spend in a day" in bot.replies_to(mention)[0]
    assert x.count(f"/2/users/{x.user('dora').id}/tweets") == 0


@pytest.mark.slow
@pytest.mark.parametrize("value", ["inf", "nan", "-1.0"])
def test_an_infinite_or_negative_budget_is_a_config_error(tmp_path, value):
    config = tmp_path / "config.toml"
    config.write_text(f"[bot]\ndaily_budget_usd = {value}\n[x.prices]\npost_read = 0.005\n")
    result = subprocess.run([sys.executable, "-m", "bot", "--config", str(config), "status", "--json"],
                            capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 2 and "daily_budget_usd" in result.stderr and "Traceback" not in result.stderr


# --- 5. remote text is inert -------------------------------------------------------------------------


HOSTILE_LOG = ("\x1b]0;pwned title\x07\x1b[2J\x1b[31mred alert\x1b[0m \x9b2J C1 \u202eevil\u202c\n"
               "token {head}\n{tail} rest\n")


@pytest.mark.slow
def test_a_hostile_job_log_reaches_no_terminal_store_or_file_raw(tmp_path, fake_hub, monkeypatch):
    from bot.workers.hf_jobs import HfJobsExecutor

    monkeypatch.setenv("HF_TOKEN", fake_hub.token)
    token = fake_hub.token
    log_text = HOSTILE_LOG.format(head=token[:13], tail=token[13:])
    script = f"import sys; sys.stdout.write({log_text!r}); sys.exit(3)"
    executor = HfJobsExecutor(Settings.model_validate({"hf_jobs": {"poll_seconds": 0}}))
    info = executor.api.run_job(image="python:3.12", command=["python", "-c", script], namespace="alice")
    deadline = time.monotonic() + 60
    while (status := executor.check(f"alice/{info.id}", tmp_path)).state == "running":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    message = str(status.error)
    job_log = (tmp_path / "job.log").read_text()
    for text in (message, job_log):
        assert not CONTROL.search(text.replace("\n", "").replace("\t", "")), repr(text)
        assert token[:8] not in text and token[13:21] not in text and token[-8:] not in text, repr(text)
        assert "red alert" in text

    # Stored as the bot stores a failure, then shown by `status` in a pipe and in a terminal.
    config = tmp_path / "config.toml"
    config.write_text(to_toml({"bot": {"state_db": str(tmp_path / "bot.sqlite3")}}))
    store = Store(tmp_path / "bot.sqlite3")
    from bot.requests.store import NewRequest

    [r] = store.ingest([type("M", (), {"id": "9"})()], lambda m: NewRequest(
        mention_id="9", requester="carol", text="t", kind="train", state="queued", handles=("eli",),
        repo="huggingtweets/eli"))
    store.retry_later(r.id, message + "\x1b]0;again\x07", 60)
    store.close()
    with sqlite3.connect(tmp_path / "bot.sqlite3") as db:
        stored = json.dumps(db.execute("SELECT * FROM requests").fetchall() + db.execute("SELECT * FROM transitions").fetchall())
    assert "\\u001b" not in stored and "\\u009b" not in stored and token[:8] not in stored

    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_TOKEN": token}
    piped = subprocess.run([sys.executable, "-m", "bot", "--config", str(config), "status"], capture_output=True,
                           text=True, env=env, cwd=tmp_path, check=True).stdout
    assert "red alert" in piped and not CONTROL.search(piped.replace("\n", "")), repr(piped)
    terminal = in_a_terminal([sys.executable, "-m", "bot", "--config", str(config), "status"], env, tmp_path)
    assert "red" in terminal
    for injected in ("\x1b]0;", "\x1b[2J", "\x9b", "\u202e", token[:8]):
        assert injected not in terminal, repr(terminal)


def in_a_terminal(command: list[str], env: dict, cwd: Path) -> str:
    """What a command writes to a terminal (a pseudo-terminal), as text."""
    import pty

    output = bytearray()

    def read(fd):
        data = os.read(fd, 65536)
        output.extend(data)
        return data

    pid, fd = pty.fork()
    if pid == 0:  # the child: the command, in the terminal
        os.chdir(cwd)
        os.execvpe(command[0], command, {**env, "COLUMNS": "200", "TERM": "xterm"})
    try:
        while True:
            try:
                if not read(fd):
                    break
            except OSError:
                break
    finally:
        os.waitpid(pid, 0)
    return output.decode("utf-8", "replace")


def test_inert_drops_every_kind_of_control_and_masks_a_split_token():
    token = "hf_" + "not-a-real-token-" + "0123456789abcde"
    text = HOSTILE_LOG.format(head=token[:10], tail=token[10:]) + "\x1bP1;2|dcs\x1b\\ \x1b(B \x00\x7f\x85 ok"
    cleaned = inert(text, [token])
    assert not CONTROL.search(cleaned.replace("\n", "")), repr(cleaned)
    assert "red alert" in cleaned and cleaned.endswith(" ok") and "pwned" not in cleaned and "dcs" not in cleaned
    assert token[:8] not in cleaned and token[10:18] not in cleaned


@pytest.mark.parametrize("url", [
    "redis://:s3cret-pass@127.0.0.1:1/0", "redis://s3cret-pass@127.0.0.1:1/0",
    "redis://127.0.0.1:1/0?password=s3cret-pass", "redis://user:s3cret%2Dpass@127.0.0.1:1/0"])
def test_an_unreachable_broker_is_named_without_its_password(tmp_path, url, caplog):
    from bot.workers.celery_app import CeleryExecutor, shown_url

    assert "s3cret" not in shown_url(url)
    settings = Settings.model_validate({"celery": {"broker_url": url}, "train": {"executor": "celery"}})
    request = tmp_path / "request-1"
    (request / "data").mkdir(parents=True)
    (request / "job.json").write_text("{}")
    with caplog.at_level("INFO"):
        assert CeleryExecutor(settings).submit(request) is None
    assert "cannot be reached" in caplog.text and "s3cret" not in caplog.text
