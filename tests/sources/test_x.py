"""bot/sources/x.py through the real tweepy client, against the loopback X API in tests/fakes/fake_x.py."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import settings as settings_
from hypothesis import strategies as st

from bot.data.archive import open_archive, post_from_v2, user_sidecar
from bot.common.config import Settings, XSettings
from bot.common.errors import AccountError, TransientError, UsageError, UserError
from bot.sources.x import (
    MissingCredentialError,
    ProtectedUserError,
    SuspendedUserError,
    UnknownUserError,
    XClient,
    XRequestError,
    XUnavailableError,
    download_archives,
    fit_reply,
    weighted_length,
)
import fake_x  # tests/ is on sys.path (pytest puts a test's folder there)
from fake_x import BOT_ID, FakeX
from twitter_rules import weighted_length as x_weighted_length

ROOT = Path(__file__).resolve().parents[2]
LINK = "https://huggingface.co/huggingtweets/alice-bob-carol"
SECRETS = [fake_x.BEARER_TOKEN, fake_x.API_KEY, fake_x.API_SECRET, fake_x.ACCESS_TOKEN, fake_x.ACCESS_TOKEN_SECRET]


@pytest.fixture
def fake():
    with FakeX() as server:
        yield server


def make_settings(tmp_path: Path, **x) -> Settings:
    defaults = dict(cache_dir=tmp_path / "cache", retry_base_wait_seconds=0.01, retry_max_wait_seconds=0.05,
                    request_timeout_seconds=5.0, max_retries=3, rate_limit_default_wait_seconds=0.2)
    return Settings(x=XSettings(**{**defaults, **x}))


@pytest.fixture
def settings(tmp_path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
def client(fake, settings):
    with XClient.from_settings(settings, environ=fake.env()) as x:
        yield x


# --- counting like X ---------------------------------------------------------------------------------


@pytest.mark.parametrize("text, length", [
    ("hello", 5),
    ("今日は", 6),  # CJK: 2 each
    ("한국어", 6),
    (LINK, 23),  # any link: 23
    ("https://t.co/x", 23),
    ("see https://t.co/abc and www.example.org/x", 4 + 23 + 5 + 23),
    ("👍🏽", 2),  # an emoji with its skin tone is one emoji
    ("🇯🇵", 2),
    ("e\u0301", 1),  # NFC: one é
    ("a—b “c”", 7),  # dashes and curly quotes weigh 1
    ("…", 2),
    ("ab" * 140, 280),
])
def test_weighted_length_counts_like_x(text, length):
    assert weighted_length(text) == length == x_weighted_length(text)  # ours, and twitter-text's own


def test_a_sequence_joined_by_zero_width_joiners_counts_its_parts_never_less_than_x():
    family = "👨‍👩‍👧"  # one emoji on Unicode's list: X counts 2; a list we do not carry, so 2 + 1 + 2 + 1 + 2
    assert x_weighted_length(family) == 2 and weighted_length(family) == 8
    assert weighted_length("🈯\u200d🈲") == x_weighted_length("🈯\u200d🈲") == 5  # not on the list: parts for X too


@settings_(max_examples=400, deadline=None)
@given(st.lists(st.one_of(st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=30), st.sampled_from([
    LINK, "www.example.org/x", "example.com", "t.co/abc", "👨‍👩‍👧", "👍🏽", "🇯🇵", "e\u0301", "今日は", "…", " ", "\n"])),
    max_size=12))
def test_weighted_length_never_counts_less_than_x_does(pieces):
    """Where the rules are not known exactly (a bare domain whose ending may not be a real top-level domain),
    ours counts long: a reply it fits is one X accepts. (Replies hold no control characters: the bot makes
    every reply inert before it is counted and posted.)"""
    text = "".join(pieces)
    assert weighted_length(text) >= x_weighted_length(text)


def test_fit_reply_leaves_a_short_reply_alone():
    assert fit_reply("@carol your model is ready:", LINK) == f"@carol your model is ready: {LINK}"


@pytest.mark.parametrize("body", ["@carol here is your model, trained on lots of posts " + "really " * 60,
                                  "@carol " + "今日は本当にいい天気ですね" * 30])
def test_fit_reply_shortens_the_text_never_the_link(body):
    reply = fit_reply(body, LINK)
    assert reply.endswith(" " + LINK)
    assert weighted_length(reply) <= 280
    assert x_weighted_length(reply) <= 280  # X's own count (twitter-text) agrees
    assert reply.startswith("@carol ")
    assert "…" in reply
    assert weighted_length(reply) >= 270  # it shortens only as much as it must


def test_fit_reply_keeps_links_inside_the_text():
    text = f"@dave first {LINK} then " + "more words " * 40 + "and https://example.org/end"
    reply = fit_reply(text)
    assert weighted_length(reply) <= 280
    assert LINK in reply and reply.endswith("https://example.org/end")


@settings_(max_examples=200, deadline=None)
@given(st.text(min_size=0, max_size=400), st.sampled_from([None, LINK, "https://t.co/" + "x" * 200]))
def test_fit_reply_always_fits_and_keeps_the_link(text, url):
    reply = fit_reply(text, url)
    assert weighted_length(reply) <= 280
    if url:
        assert reply.endswith(url)


def test_cjk_reply_fits_x_counting_not_character_counting():
    reply = fit_reply("@carol " + "猫" * 300, LINK)
    assert len(reply) < 200  # 280 characters of CJK would be 2x too long for X
    assert weighted_length(reply) <= 280


# --- users -------------------------------------------------------------------------------------------


def test_get_user_and_me(client, fake):
    alice = client.get_user("@Alice")
    assert (alice.id, alice.username, alice.name, alice.protected) == ("1001", "alice", "Alice", False)
    assert alice.profile_image_url.startswith("https://pbs.twimg.com/")
    assert client.me().id == BOT_ID and client.bot_user_id == BOT_ID
    client.me()
    assert fake.count("/2/users/me") == 1  # read once
    assert client.usage.users_read == 2


@pytest.mark.parametrize("handle, error, reason", [
    (fake_x.UNKNOWN_USER, UnknownUserError, "unknown"),
    (fake_x.SUSPENDED_USER, SuspendedUserError, "suspended"),
    (fake_x.PROTECTED_USER, ProtectedUserError, "protected"),
])
def test_account_errors_name_the_handle(client, fake, handle, error, reason):
    with pytest.raises(error) as caught:
        client.download_timeline(handle)
    e = caught.value
    assert isinstance(e, AccountError) and isinstance(e, UserError) and not getattr(e, "transient", False)
    assert e.reason == reason and e.handle == handle
    assert f"@{handle}" in str(e)
    assert fake.count("/2/users/1004/tweets") == 0  # a protected account's posts are never asked for


def test_a_protected_account_is_found_but_not_downloaded(client):
    assert client.get_user(fake_x.PROTECTED_USER).protected is True


def test_an_account_that_turns_protected_between_calls(client, fake):
    user = client.get_user("carol")
    fake.user("carol").protected = True
    with pytest.raises(ProtectedUserError):
        client.download_timeline(user)  # X answers 200 with a not-authorized error


def test_a_bad_handle_is_refused_before_x_is_asked(client, fake):
    with pytest.raises(UsageError):
        client.get_user("not a handle!")
    assert fake.requests == []


# --- timelines ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_timeline_pages_stop_at_the_3200_reach(client, fake):
    posts = client.download_timeline(fake_x.BIG_USER)
    assert len(fake.user(fake_x.BIG_USER).tweets) == 3500
    assert len(posts) == 3200
    ids = [int(p["id"]) for p in posts]
    assert ids == sorted(set(ids), reverse=True)  # newest first, no repeats
    assert fake.count("/2/users/1001/tweets") == 32  # 100 a page
    assert client.usage.posts_read == fake.posts_served == 3200
    # the fields the dataset needs came along, and the posts read back as the archive reader sees them
    assert all({"created_at", "lang", "author_id"} <= p.keys() for p in posts)
    parsed = [post_from_v2(p) for p in posts]
    assert any(p.retweet for p in parsed) and any(p.reply for p in parsed) and any(p.quote for p in parsed)
    assert any("note_tweet" in p for p in posts) and {"en", "ja"} <= {p["lang"] for p in posts}
    assert any("entities" in p for p in posts)


def test_timeline_limit_and_setting(client, fake, tmp_path):
    assert len(client.download_timeline("carol", limit=7)) == 7
    assert fake.requests[-1][2]["max_results"] == "7"
    capped = XClient.from_settings(make_settings(tmp_path, max_tweets_per_user=250), environ=fake.env())
    assert len(capped.download_timeline("bob")) == 250
    assert [q["max_results"] for m, p, q in fake.requests if p == "/2/users/1002/tweets"] == ["100", "100", "50"]


# --- faults ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_429_waits_for_the_reset_then_succeeds(client, fake):
    fake.fail_next("/2/users/by/username/", 429, headers=fake.reset_in(1))
    start = time.monotonic()
    assert client.get_user("bob").username == "bob"
    assert 0.4 <= time.monotonic() - start < 3.0
    assert fake.count("/2/users/by/username/") == 2


def test_429_without_a_reset_header_waits_the_default(client, fake):
    fake.fail_next("/2/users/by/username/", 429)
    start = time.monotonic()
    client.get_user("bob")
    assert time.monotonic() - start >= 0.2  # rate_limit_default_wait_seconds


def test_429_with_a_reset_too_far_away_is_a_transient_error_at_once(client, fake):
    fake.fail_next("/2/users/by/username/", 429, headers=fake.reset_in(3600))
    start = time.monotonic()
    with pytest.raises(XUnavailableError) as caught:
        client.get_user("bob")
    assert time.monotonic() - start < 1.0
    assert caught.value.transient and caught.value.retry_after > 3000
    assert isinstance(caught.value, TransientError)


@pytest.mark.slow
@pytest.mark.parametrize("fault", [
    dict(status=503),
    dict(status=500),
    dict(status=200, body='{"data": {"id": "10'),  # cut off mid-answer
    dict(status=200, body="<html>Over capacity</html>"),
    dict(status=200, body="[]"),  # JSON, but not an answer
    dict(status=0),  # the connection closes without an answer
])
def test_a_fault_then_success(client, fake, fault):
    fake.fail_next("/2/users/by/username/", **fault)
    assert client.get_user("bob").id == "1002"
    assert fake.count("/2/users/by/username/") == 2


def test_a_timeout_then_success(fake, tmp_path):
    client = XClient.from_settings(make_settings(tmp_path, request_timeout_seconds=0.3), environ=fake.env())
    fake.fail_next("/2/users/by/username/", 200, delay=1.0, body='{"data": {}}')
    start = time.monotonic()
    assert client.get_user("bob").id == "1002"
    assert time.monotonic() - start < 1.0


def test_faults_on_a_later_page_are_retried_too(client, fake):
    fake.fail_next("/2/users/1003/tweets", 503, times=2)
    assert len(client.download_timeline("carol")) == 300


def test_the_last_retry_gives_a_transient_error(client, fake):
    fake.fail_next("/2/users/by/username/", 503, times=100)
    with pytest.raises(XUnavailableError) as caught:
        client.get_user("bob")
    assert fake.count("/2/users/by/username/") == 4  # max_retries = 3
    assert caught.value.transient
    assert str(caught.value).startswith("X is unavailable: HTTP 503")


def test_a_refusal_is_not_retried(client, fake):
    fake.fail_next("/2/users/by/username/", 400, body={"title": "Invalid Request", "detail": "bad"})
    with pytest.raises(XRequestError) as caught:
        client.get_user("bob")
    assert caught.value.status == 400 and not getattr(caught.value, "transient", False)
    assert fake.count("/2/users/by/username/") == 1


# --- mentions and replies ----------------------------------------------------------------------------


@pytest.mark.slow
def test_mentions_all_pages_oldest_first(client, fake):
    authors = ["dave", "erin", "frank"]
    ids = [fake.add_mention(authors[i % 3], f"@huggingtweets train @alice please ({i})") for i in range(250)]
    mentions = client.mentions_since(None)
    assert [m.id for m in mentions] == ids  # oldest first
    assert fake.count("/2/users/1/mentions") == 3
    assert [m.author_username for m in mentions[:3]] == authors
    assert mentions[0].text == "@huggingtweets train @alice please (0)" and mentions[0].created_at
    assert mentions[0].author_id == fake.user("dave").id
    newer = client.mentions_since(ids[99])
    assert [m.id for m in newer] == ids[100:]
    assert client.mentions_since(ids[-1]) == []


def test_a_mention_that_replies_to_the_bot(client, fake):
    first = fake.add_mention("dave", "train @alice")
    reply_id = client.reply(first, "@dave on it")
    second = fake.add_mention("dave", "@huggingtweets thanks!", in_reply_to_tweet_id=reply_id)
    mention = client.mentions_since(first)[0]
    assert mention.id == second
    assert mention.in_reply_to_user_id == BOT_ID and mention.in_reply_to_tweet_id == reply_id


def test_reply_body_and_length(client, fake):
    mention = fake.add_mention("carol", "train @alice")
    text = "@carol your model of @alice is ready, trained on her 3,200 posts: " + "a sample " * 40 + LINK
    reply_id = client.reply(mention, text)
    assert fake.posted == [{"id": reply_id, "text": fake.posted[0]["text"], "in_reply_to_tweet_id": mention}]
    sent = fake.posted[0]["text"]
    assert sent.endswith(LINK) and weighted_length(sent) <= 280 and sent.startswith("@carol your model")
    assert (client.usage.posts_created, client.usage.posts_created_with_link) == (0, 1)  # X bills a link apart
    assert client.recent_replies() == {mention: reply_id}
    client.reply(fake.add_mention("dave", "help"), "Ask me for a model: huggingtweets/alice on the Hub")
    assert (client.usage.posts_created, client.usage.posts_created_with_link) == (1, 1)


def test_a_reply_whose_answer_was_lost_is_not_sent_twice(client, fake):
    mention = fake.add_mention("carol", "train @alice")
    fake.fail_next("/2/tweets", 503, method="POST", after=True)  # created, then the answer is lost
    reply_id = client.reply(mention, "@carol done")
    assert len(fake.posted) == 1 and fake.posted[0]["id"] == reply_id
    assert fake.count("/2/tweets", "POST") == 1


def test_a_reply_refused_before_it_was_made_is_sent_again(client, fake):
    mention = fake.add_mention("carol", "train @alice")
    fake.fail_next("/2/tweets", 503, method="POST")
    reply_id = client.reply(mention, "@carol done")
    assert [p["id"] for p in fake.posted] == [reply_id]
    assert fake.count("/2/tweets", "POST") == 2


def test_replying_to_a_post_that_does_not_mention_the_bot_is_refused(client, fake):
    not_a_mention = fake.user("alice").tweets[0]["id"]
    with pytest.raises(XRequestError) as caught:
        client.reply(not_a_mention, "@alice hello")
    assert caught.value.status == 403 and "not allowed" in str(caught.value)
    assert fake.posted == []


# --- cache -------------------------------------------------------------------------------------------


def test_cache_then_since_id_refresh(client, fake, settings):
    first = download_archives(["Carol"], settings, client=client, progress=False)["carol"]
    assert first.account.username == "carol" and first.account.user_id == "1003"
    assert sum(1 for _ in first.posts()) == 300
    assert (client.usage.posts_read, client.usage.users_read) == (300, 1)
    sidecar = json.loads(user_sidecar(first.path).read_text())
    assert set(sidecar) == {"id", "username", "name", "profile_image_url", "protected"}

    requests_before = len(fake.requests)
    again = download_archives(["carol"], settings, client=client, progress=False)["carol"]
    assert len(fake.requests) == requests_before  # within cache_ttl_hours: nothing read from X
    assert again.path == first.path and client.usage.posts_read == 300

    newest = max(int(p.id) for p in first.posts())
    new_ids = fake.add_posts("carol", 5)
    stale = time.time() - 25 * 3600
    os.utime(user_sidecar(first.path), (stale, stale))
    refreshed = download_archives(["carol"], settings, client=client, progress=False)["carol"]
    assert (client.usage.posts_read, client.usage.users_read) == (305, 2)  # only the 5 new posts
    timeline_calls = [q for m, p, q in fake.requests if p == "/2/users/1003/tweets"]
    assert timeline_calls[-1]["since_id"] == str(newest)
    ids = [p.id for p in refreshed.posts()]
    assert len(ids) == 305 and ids[:5] == new_ids[::-1]  # merged, newest first


def test_a_handle_that_changed_hands_is_read_afresh(client, fake, settings):
    path = download_archives(["carol"], settings, client=client, progress=False)["carol"].path
    user_sidecar(path).write_text(json.dumps({"id": "999", "username": "carol"}))
    os.utime(user_sidecar(path), (0, 0))
    download_archives(["carol"], settings, client=client, progress=False)
    assert client.usage.posts_read == 600  # all of it again, not since the other account's posts


def test_every_account_is_checked_before_any_posts_are_read(client, fake, settings):
    with pytest.raises(ProtectedUserError):
        download_archives(["carol", fake_x.PROTECTED_USER], settings, client=client, progress=False)
    assert fake.count("/2/users/1003/tweets") == 0 and client.usage.posts_read == 0


# --- credentials and the base URL -------------------------------------------------------------------


def test_missing_credentials_name_the_variable(fake, settings):
    env = {"X_API_BASE_URL": fake.base_url}
    with pytest.raises(MissingCredentialError) as caught:
        XClient.from_settings(settings, environ=env).get_user("bob")
    assert "X_BEARER_TOKEN" in str(caught.value) and caught.value.exit_code == 2
    reader = XClient.from_settings(settings, environ={**env, "X_BEARER_TOKEN": fake_x.BEARER_TOKEN,
                                                      "X_API_KEY": fake_x.API_KEY})
    with pytest.raises(MissingCredentialError) as caught:
        reader.mentions_since(None)
    assert "X_API_SECRET, X_ACCESS_TOKEN, X_ACCESS_TOKEN_SECRET are not set" in str(caught.value)
    assert fake.requests == []


def test_reads_fall_back_to_the_user_context(fake, settings):
    env = {k: v for k, v in fake.env().items() if k != "X_BEARER_TOKEN"}
    assert XClient.from_settings(settings, environ=env).get_user("bob").id == "1002"


@pytest.mark.parametrize("variable", ["X_BEARER_TOKEN", "X_API_SECRET"])
def test_wrong_credentials_are_refused_without_showing_them(fake, settings, variable):
    env = {**fake.env(), variable: "wrong-value-1234"}
    if variable == "X_API_SECRET":
        env.pop("X_BEARER_TOKEN")  # reads go through the (wrongly signed) user context
    with pytest.raises(XRequestError) as caught:
        XClient.from_settings(settings, environ=env).get_user("bob")
    assert caught.value.status == 401 and "X_BEARER_TOKEN" in str(caught.value)
    assert "wrong-value-1234" not in str(caught.value)


def test_base_url_comes_from_the_environment(fake, settings, monkeypatch):
    for name, value in fake.env().items():
        monkeypatch.setenv(name, value)
    assert XClient.from_settings(settings).get_user("bob").id == "1002"
    monkeypatch.setenv("X_API_BASE_URL", "ftp://somewhere")
    with pytest.raises(UsageError, match="X_API_BASE_URL"):
        XClient.from_settings(settings)


@pytest.mark.slow
def test_no_credential_in_logs_or_errors(fake, settings, caplog):
    caplog.set_level(logging.DEBUG)
    client = XClient.from_settings(settings, environ=fake.env())
    mention = fake.add_mention("carol", "train @alice")
    fake.fail_next("/2/users/by/username/", 503)
    client.get_user("bob")
    client.download_timeline("carol", limit=5)
    client.mentions_since(None)
    client.reply(mention, "@carol done " + LINK)
    errors = []
    for env in ({**fake.env(), "X_BEARER_TOKEN": fake_x.BEARER_TOKEN[::-1]}, {"X_API_BASE_URL": fake.base_url}):
        try:
            XClient.from_settings(settings, environ=env).get_user("bob")
        except UserError as e:
            errors.append(str(e))
    fake.fail_next("/2/users/by/username/", 503, times=100)
    with pytest.raises(XUnavailableError) as caught:
        client.get_user("bob")
    errors.append(str(caught.value))
    assert "Making API request" in caplog.text and "oauth_signature" in caplog.text  # the libraries did log
    assert len(errors) == 3
    for secret in SECRETS:
        assert secret not in caplog.text
        assert all(secret not in e for e in errors)


# --- the command line --------------------------------------------------------------------------------


def run_cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    config = cwd / "config.toml"
    config.write_text('[x]\ncache_dir = "cache"\nmax_retries = 1\nretry_base_wait_seconds = 0.01\n')
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("X_")}
    full_env.update(env, PYTHONPATH=str(ROOT), COLUMNS="100")
    return subprocess.run([sys.executable, "-m", "bot", "--config", str(config), *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_cli_download(fake, tmp_path):
    result = run_cli(["download", "@Carol", "--out", "out/carol.jsonl"], fake.env(), tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "Wrote 300 posts of @carol to out/carol.jsonl"
    assert result.stderr.strip() == "X: read 300 posts and 1 user"  # no progress bar drawn into a pipe
    archive = open_archive(tmp_path / "out" / "carol.jsonl")
    assert archive.account.username == "carol" and sum(1 for _ in archive.posts()) == 300
    assert (tmp_path / "cache" / "carol.jsonl").exists()
    for secret in SECRETS:
        assert secret not in result.stdout + result.stderr


@pytest.mark.slow
def test_cli_dataset_downloads_without_archive(fake, tmp_path):
    result = run_cli(["dataset", "carol", "--json"], fake.env(), tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["users"]["carol"]["downloaded"] == 300


@pytest.mark.slow
@pytest.mark.parametrize("args, env_change, code, message", [
    (["download", "nobody_here"], {}, 1, "huggingtweets: error: @nobody_here does not exist"),
    (["download", "gone_account"], {}, 1, "huggingtweets: error: @gone_account is suspended"),
    (["download", "locked_box"], {}, 1, "huggingtweets: error: @locked_box has protected posts"),
    (["download", "bob", "--out", "bob.txt"], {}, 2, "huggingtweets: error: --out bob.txt: the file must end in .jsonl"),
    (["download", "not-a-handle"], {}, 2, "huggingtweets: error: 'not-a-handle' is not a handle: on X, 1 to 15 letters"),
    (["download", "bob"], {"X_BEARER_TOKEN": "", "X_API_KEY": ""}, 2, "huggingtweets: error: X_BEARER_TOKEN is not set"),
    (["download", "bob"], {"X_BEARER_TOKEN": "not-the-token-5678"}, 1, "huggingtweets: error: X refused the credentials"),
    (["download", "bob"], "down", 1, "huggingtweets: error: X is unavailable: HTTP 503 while looking up @bob, 2 attempts"),
])
def test_cli_download_errors_are_one_line(fake, tmp_path, args, env_change, code, message):
    if env_change == "down":
        fake.fail_next("/2/", 503, times=100)
        env_change = {}
    result = run_cli(args, {**fake.env(), **env_change}, tmp_path)
    assert result.returncode == code
    lines = result.stderr.splitlines()
    assert lines[-1].startswith(message), result.stderr
    assert all(line.startswith("X: ") for line in lines[:-1]), result.stderr  # only notes of retries before it
    assert "Traceback" not in result.stderr and result.stdout == ""
    for secret in SECRETS + ["not-the-token-5678"]:
        assert secret not in result.stderr
