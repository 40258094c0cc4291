"""The bot end to end: `huggingtweets run --once` in a subprocess, against the loopback X API and Hub,
training the tiny model. Each test reads like a conversation: mentions in, repos and replies out."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from bot_process import BotRunner, keyed_commits, status_json  # noqa: F401
from fake_x import FakeX


ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def x():
    with FakeX() as fake:
        fake.add_user("dora", posts=180)
        fake.add_user("eli", posts=160)
        yield fake


@pytest.fixture
def bot(tmp_path, x, fake_hub):
    return BotRunner(tmp_path, x, fake_hub)


@pytest.mark.slow
def test_a_mention_becomes_a_published_model_and_a_reply_with_its_link(bot, x, fake_hub):
    mention = x.add_mention("carol", "@huggingtweets train @dora")
    result = bot.run_ok()

    repo = fake_hub.repos["huggingtweets/dora"]
    assert {"model.safetensors", "README.md", "predictions.png", "run.json"} <= set(repo.files)
    [reply] = bot.replies_to(mention)
    assert "/huggingtweets/dora" in reply and "My dream is" in reply
    assert reply.splitlines()[0].endswith("(request #1)")  # the number `huggingtweets status` shows
    assert "@dora" not in reply  # the person modelled is not pinged
    assert bot.states() == {mention: "done"}
    assert "request 1: training -> publishing" in result.stderr
    assert fake_hub.token not in result.stderr and x.env()["X_BEARER_TOKEN"] not in result.stderr
    # The person is recorded by account, so an opt-out finds the model whatever the handle becomes.
    dora = x.user("dora").id
    assert json.loads(fake_hub.read("huggingtweets/dora", "run.json"))["accounts"]["dora"]["account_id"] == dora
    with sqlite3.connect(bot.tmp / "bot.sqlite3") as db:
        assert json.loads(db.execute("SELECT accounts FROM published").fetchone()[0]) == [["x", dora]]


@pytest.mark.slow
def test_requests_that_cannot_be_served_get_a_reply_that_says_why(bot, x):
    help_ = x.add_mention("carol", "@huggingtweets help")
    too_many = x.add_mention("carol", "@huggingtweets train @a @b @c @d")
    bad = x.add_mention("carol", "@huggingtweets train @no/pe")
    protected = x.add_mention("carol", "@huggingtweets train @locked_box")
    unknown = x.add_mention("dave", "@huggingtweets train @nobody_here")
    x.add_mention("dave", "@huggingtweets train @gone_account")
    over_quota = x.add_mention("dave", "@huggingtweets train @eli")  # dave's third today; the quota is 2
    chatter = x.add_mention("carol", "I like what @huggingtweets does")
    bot.run_ok()

    assert "train alice bob" in bot.replies_to(help_)[0]
    assert "at most 3" in bot.replies_to(too_many)[0]
    assert "is not a handle" in bot.replies_to(bad)[0]
    assert "protected" in bot.replies_to(protected)[0]
    assert "could not find" in bot.replies_to(unknown)[0]
    assert "limit of 2" in bot.replies_to(over_quota)[0]
    assert bot.replies_to(chatter) == []
    assert x.count("/2/users/") >= 1
    assert len(x.posted) == 7  # one reply each, none for the chatter


@pytest.mark.slow
def test_opting_out_deletes_the_persons_models_and_stops_new_ones(bot, x, fake_hub):
    for name in ("dora", "dora-eli", "adora"):
        fake_hub.create_repo(f"huggingtweets/{name}")
    opt_out = x.add_mention("dora", "@huggingtweets opt out")
    bot.run_ok()
    assert set(fake_hub.repos) == {"huggingtweets/adora"}
    assert "opted out" in bot.replies_to(opt_out)[0] and "deleted 2 models" in bot.replies_to(opt_out)[0]

    again = x.add_mention("carol", "@huggingtweets train @dora")
    bot.run_ok()
    assert "opted out" in bot.replies_to(again)[0]
    assert "huggingtweets/dora" not in fake_hub.repos


@pytest.mark.slow
def test_a_recent_model_is_reused_without_downloading_or_training(bot, x, fake_hub):
    first = x.add_mention("carol", "@huggingtweets @eli")
    bot.run_ok()
    commits = len(fake_hub.repos["huggingtweets/eli"].commits)
    timeline = f"/2/users/{x.user('eli').id}/tweets"
    timeline_reads, lookups = x.count(timeline), x.count("/2/users/by/username/eli")

    second = x.add_mention("dave", "@huggingtweets train @eli")
    bot.run_ok()
    link = re.search(r"https?://\S+", bot.replies_to(first)[0]).group()
    assert link.endswith("/huggingtweets/eli") and link in bot.replies_to(second)[0]
    assert len(fake_hub.repos["huggingtweets/eli"].commits) == commits
    # Who "eli" is now was asked (a handle can change hands), but no timeline was read.
    assert x.count(timeline) == timeline_reads and x.count("/2/users/by/username/eli") == lookups + 1


# Every point where a crash could lose or repeat something, in the order a request reaches them.
CRASH_POINTS = ["ingested", "entered:downloading", "entered:training", "entered:publishing", "entered:replying",
                "before_reply", "reply_sent"]


@pytest.mark.slow
@pytest.mark.parametrize("round_", [1, 2, 3])
def test_a_crash_at_every_step_loses_nothing_and_replies_once(bot, x, fake_hub, round_):
    """kill -9 the bot at each step in turn, restarting it after each crash; then let it finish."""
    help_first = round_ % 2 == 0  # the help reply goes out before or after the model's
    mentions = [x.add_mention("dave", "@huggingtweets help")] if help_first else []
    train = x.add_mention("carol", "@huggingtweets train @dora")
    if not help_first:
        mentions.append(x.add_mention("dave", "@huggingtweets help"))
    if round_ == 3:
        mentions.append(x.add_mention("erin", "@huggingtweets @eli"))

    for point in CRASH_POINTS:
        crashed = bot.run(failpoint=point)
        assert crashed.returncode == -9, f"no crash at {point}: {crashed.stderr[-2000:]}"
    bot.run_ok()

    for mention in [train, *mentions]:
        assert len(bot.replies_to(mention)) == 1, mention
    assert set(bot.states().values()) == {"done"}
    assert len(bot.states()) == len(mentions) + 1
    # Published once for its request, whatever the crashes (the repo's first commit is the Hub's own).
    assert len(keyed_commits(fake_hub, "huggingtweets/dora")) == 1
    if round_ == 3:
        assert len(keyed_commits(fake_hub, "huggingtweets/eli")) == 1


@pytest.mark.slow
def test_sigterm_stops_cleanly_and_a_restart_resumes(bot, x, fake_hub):
    import signal
    import time

    bot.write_config(poll_interval_seconds=1)
    mention = x.add_mention("carol", "@huggingtweets train @dora")
    process = subprocess.Popen([sys.executable, "-m", "bot", "--config", str(bot.config), "run"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=bot.env(), cwd=bot.tmp)
    deadline = time.monotonic() + 120
    def state():
        try:
            return bot.states().get(mention)
        except sqlite3.OperationalError:  # the bot has not created its tables yet
            return None

    while state() != "training":
        assert process.poll() is None, process.stderr.read()[-2000:]
        assert time.monotonic() < deadline, "the request never reached training"
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr[-2000:]
    assert "stopped in training" in stderr
    assert bot.states() == {mention: "training"} and x.posted == []

    bot.run_ok()
    assert bot.states() == {mention: "done"}
    assert len(bot.replies_to(mention)) == 1


@pytest.mark.slow
def test_status_shows_the_queue(bot, x):
    x.add_mention("carol", "@huggingtweets train @locked_box")
    bot.run_ok()
    result = subprocess.run([sys.executable, "-m", "bot", "--config", str(bot.config), "status"],
                            capture_output=True, text=True, env=bot.env(), cwd=bot.tmp)
    assert result.returncode == 0, result.stderr
    assert "failed" in result.stdout and "@carol" in result.stdout and "@locked_box" in result.stdout
    assert "protected" in result.stdout


@pytest.mark.slow
def test_the_demo_answers_its_sample_mention_offline(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("X_", "HF_TOKEN"))}
    # Square brackets in a mention are text, not terminal markup.
    mention = "@huggingtweets train @dreamy_kettle [/] [bold]please"
    result = subprocess.run([sys.executable, "-m", "bot", "demo", "--dir", str(tmp_path / "demo"), "--mention", mention],
                            capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"A mention from @sleepy_reader: {mention}" in result.stdout
    assert "received -> queued -> downloading -> training -> publishing -> replying -> done" in result.stdout
    assert "It wrote: “My dream is" in result.stdout and "huggingtweets --config" in result.stdout
    assert "sample_archive.zip (--archive sample)" in result.stdout
    assert result.stderr == ""  # the bot's log goes to demo/bot.log; nothing is drawn into a pipe
    assert "request 1: training -> publishing" in (tmp_path / "demo" / "bot.log").read_text()
    [reply] = [json.loads(line) for line in (tmp_path / "demo" / "outbox.jsonl").read_text().splitlines()]
    assert "huggingtweets/dreamy_kettle" in reply["text"]
    published = tmp_path / "demo" / "hub" / "huggingtweets" / "dreamy_kettle"
    assert (published / "model.safetensors").exists() and (published / "README.md").exists()
    # One set of numbers: what the demo says, the card says and run.json records.
    facts = json.loads((published / "run.json").read_text(encoding="utf-8"))
    trained, held_out = facts["distinct_train_posts"], facts["validation_posts"]
    assert trained + held_out == facts["users"]["dreamy_kettle"]["kept"] and facts["made_by_bot"] is True
    assert f"trained on {trained:,} posts of @dreamy_kettle; on {held_out:,} more, held out" in result.stdout
    card = (published / "README.md").read_text(encoding="utf-8").replace("\n", " ")
    assert f"fine-tuned on {trained:,} of their public posts ({held_out:,} more were held out" in card
    assert f"On {held_out:,} held-out posts" in card and 'post "@huggingtweets opt out" on X' in card
    assert "<img" not in card  # the sample's made-up account has no picture to show


@pytest.mark.slow
def test_a_passing_hub_failure_is_retried_and_a_lasting_one_gets_a_reply(bot, x, fake_hub):
    bot.write_config(retry_base_seconds=0, max_attempts=2)
    mention = x.add_mention("carol", "@huggingtweets train @dora")
    fake_hub.fail_next("/api/models/huggingtweets/dora/commit", 503, times=2)  # more than the Hub client retries
    bot.run_ok()
    assert bot.states() == {mention: "done"}  # the bot's own retry published it
    assert len(keyed_commits(fake_hub, "huggingtweets/dora")) == 1
    assert len(bot.replies_to(mention)) == 1

    second = x.add_mention("dave", "@huggingtweets train @eli")
    fake_hub.fail_next("/api/models/huggingtweets/eli/commit", 503, times=100)
    bot.run_ok()
    assert bot.states()[second] == "failed"
    assert "something went wrong" in bot.replies_to(second)[0]


@pytest.mark.slow
def test_a_missing_credential_stops_the_bot_at_once_with_one_line(bot):
    env = {k: v for k, v in bot.env().items() if k not in ("X_API_SECRET", "HF_TOKEN")}
    result = subprocess.run([sys.executable, "-m", "bot", "--config", str(bot.config), "run"],
                            capture_output=True, text=True, timeout=60, env={**env, "HF_HOME": str(bot.tmp / "hf")})
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert "X_API_SECRET" in line and "HF_TOKEN" in line and "Traceback" not in result.stderr


@pytest.mark.slow
def test_a_reply_x_keeps_refusing_waits_for_a_later_run_instead_of_spinning(bot, x):
    bot.write_config(retry_base_seconds=0)
    mention = x.add_mention("carol", "@huggingtweets help")
    x.fail_next("/2/tweets", 403, times=10_000, method="POST")
    result = bot.run(timeout=60)  # before the fix: the zero retry wait posted again and again, never exiting
    assert result.returncode == 0, result.stderr[-2000:]
    assert bot.states() == {mention: "replying"} and x.posted == []
    assert "reply failed" in result.stderr

    # max_attempts = 2: the second refusal is the last; the request ends instead of trying forever.
    result = bot.run(timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert bot.states() == {mention: "done"} and "reply given up" in result.stderr
    assert x.count("/2/tweets", "POST") == 2


@pytest.mark.slow
def test_a_training_job_over_its_time_limit_is_killed_not_the_bot(bot, x):
    bot.write_config(job_timeout_seconds=1, retry_base_seconds=0, max_attempts=2)
    mention = x.add_mention("carol", "@huggingtweets train @dora")
    result = bot.run_ok()
    assert "ran out of time" in result.stderr
    assert bot.states() == {mention: "failed"}
    assert "something went wrong" in bot.replies_to(mention)[0]


# --- the pipeline's contract: what each step hands the next, and failures that say whether to retry ---


@pytest.mark.slow
def test_the_job_trains_on_the_dataset_the_download_saved_even_when_x_changes_in_between(bot, x):
    bot.write_config(max_attempts=2)
    mention = x.add_mention("carol", "@huggingtweets train @dora")
    assert bot.run(failpoint="entered:training").returncode == -9  # downloaded and saved, not trained
    data = bot.tmp / "work" / "request-1" / "data"
    saved = {name: (data / name).read_bytes() for name in ("train.jsonl", "validation.jsonl", "stats.json")}

    x.add_posts("dora", 40)  # dora posts more, and the X cache is refreshed by someone else's request
    (bot.tmp / "x-cache" / "dora.user.json").unlink()
    timeline_reads = x.count("/2/users/2000/tweets")
    bot.run_ok()

    assert bot.states() == {mention: "done"}
    assert x.count("/2/users/2000/tweets") == timeline_reads  # the job read no posts from X
    assert {name: (data / name).read_bytes() for name in saved} == saved
    facts = json.loads((bot.tmp / "work" / "request-1" / "model" / "run.json").read_text())
    stats = json.loads(saved["stats.json"])
    assert facts["users"] == stats["users"] and facts["users"]["dora"]["downloaded"] == 180
    assert facts["train_posts"] == len(saved["train.jsonl"].splitlines())


@pytest.mark.slow
def test_a_refused_hub_token_fails_the_request_after_one_attempt(bot, x, fake_hub):
    bot.write_config(retry_base_seconds=0, max_attempts=3)
    mention = x.add_mention("carol", "@huggingtweets train @dora")
    token = "hf_" + "not-a-real-token-refused"
    result = subprocess.run([sys.executable, "-m", "bot", "--config", str(bot.config), "run", "--once"],
                            capture_output=True, text=True, timeout=300, env={**bot.env(), "HF_TOKEN": token},
                            cwd=bot.tmp)
    assert result.returncode == 0, result.stderr[-2000:]
    assert bot.states() == {mention: "failed"}
    with sqlite3.connect(bot.tmp / "bot.sqlite3") as db:
        attempts, reason = db.execute("SELECT attempts, reason FROM requests").fetchone()
    assert attempts == 0 and "HTTP 401" in reason  # permanent: not tried again
    assert "something went wrong" in bot.replies_to(mention)[0]
    assert token not in result.stderr and token[:12] not in reason


@pytest.mark.slow
def test_a_rate_limit_is_waited_out_no_sooner_than_the_reset_x_gives(bot, x):
    # The client gives up on waits over a second; the back-off alone would retry at once.
    bot.write_config(x={"rate_limit_max_wait_seconds": 1}, retry_base_seconds=0)
    mention = x.add_mention("carol", "@huggingtweets train @dora")
    x.fail_next("/2/users/by/", 429, headers=FakeX.reset_in(90), times=5)
    before = time.time()
    bot.run_ok()

    with sqlite3.connect(bot.tmp / "bot.sqlite3") as db:
        state, attempts, next_at = db.execute("SELECT state, attempts, next_attempt_at FROM requests").fetchone()
    assert (state, attempts) == ("queued", 1)  # the lookup of @dora, before anything is downloaded
    assert next_at >= before + 89  # X's reset, not the zero back-off
    lookups = x.count("/2/users/by/")
    bot.run_ok()  # too early: nothing is tried
    assert x.count("/2/users/by/") == lookups and bot.states() == {mention: "queued"}


# --- what each request costs on X ------------------------------------------------------------------


@pytest.mark.slow
def test_status_shows_what_each_request_cost_on_x(bot, x):
    x.add_mention("carol", "@huggingtweets train @dora")
    bot.run_ok()
    x.add_mention("dave", "@huggingtweets train @dora")
    x.add_mention("dave", "@huggingtweets help")
    bot.run_ok()

    spend = {r["id"]: r["spend_usd"] for r in status_json(bot)["requests"]}
    # 1 account and 180 posts read ($0.01 + 180 x $0.005), a reply with a link ($0.20)
    assert spend[1] == pytest.approx(1.11)
    assert spend[2] == pytest.approx(0.21)  # reused: who "dora" is now ($0.01), and the reply with its link
    assert spend[3] == pytest.approx(0.015)  # the help: a reply without a link
    totals = status_json(bot)["spend_usd"]
    assert totals["today"] > sum(spend.values())  # reading the mentions costs too
    table = subprocess.run([sys.executable, "-m", "bot", "--config", str(bot.config), "status"],
                           capture_output=True, text=True, env=bot.env(), cwd=bot.tmp).stdout
    assert "$1.110" in table and "Spent today (UTC): $" in table


@pytest.mark.slow
def test_a_daily_budget_stops_new_downloads_with_a_polite_reply(bot, x):
    bot.write_config(daily_budget_usd=1.0)  # a whole timeline (3,200 posts) may cost $16
    mention = x.add_mention("carol", "@huggingtweets train @eli")
    bot.run_ok()
    assert bot.states() == {mention: "failed"}
    assert "more than I may spend in a day" in bot.replies_to(mention)[0]
    assert x.count("/2/users/2001/tweets") == 0  # no post of eli's was read (paid for)


@pytest.mark.slow
def test_replies_can_name_the_model_without_a_link(bot, x):
    bot.write_config(reply_link=False)
    mention = x.add_mention("carol", "@huggingtweets train @dora")
    bot.run_ok()
    [reply] = bot.replies_to(mention)
    assert "on the Hugging Face Hub as huggingtweets/dora" in reply and "http" not in reply
    assert status_json(bot)["requests"][0]["spend_usd"] == pytest.approx(0.01 + 0.9 + 0.015)
