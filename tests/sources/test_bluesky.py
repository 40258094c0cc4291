"""bot/sources/bluesky.py through the real atproto client, against the loopback XRPC server in tests/fakes/fake_bsky.py."""

from __future__ import annotations

import json
import logging
import os
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import settings as settings_
from hypothesis import strategies as st

import fake_bsky  # tests/ is on sys.path (pytest puts a test's folder there)
from bot.data.archive import open_archive, user_sidecar
from bot.sources.bluesky import (
    MAX_BYTES,
    MAX_GRAPHEMES,
    BlueskyClient,
    BlueskyRequestError,
    BlueskyUnavailableError,
    MissingCredentialError,
    fit_post,
    normalize_handle,
    post_length,
)
from bot.common.config import BlueskySettings, Settings, load_settings, parse_settings
from bot.data.dataset import build_dataset
from bot.common.errors import AccountError, ConfigError, HandleError, TransientError, UsageError, UserError
from fake_bsky import ALICE, APP_PASSWORD, CAROL, HARU, FakeBluesky

ROOT = Path(__file__).resolve().parents[2]
LINK = "https://huggingface.co/huggingtweets/alice-bsky-social"


@pytest.fixture
def fake():
    with FakeBluesky() as server:
        yield server


def make_settings(tmp_path: Path, **bluesky) -> Settings:
    defaults = dict(cache_dir=tmp_path / "cache", retry_base_wait_seconds=0.01, retry_max_wait_seconds=0.05,
                    request_timeout_seconds=5.0, max_retries=3, rate_limit_default_wait_seconds=0.2)
    return Settings(bluesky=BlueskySettings(**{**defaults, **bluesky}))


@pytest.fixture
def settings(tmp_path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
def client(fake, settings):
    with BlueskyClient.from_settings(settings, environ=fake.env()) as sky:
        yield sky


# --- login and credentials ---------------------------------------------------------------------------


def test_login_once_and_the_bots_did(client, fake):
    assert client.bot_user_id == fake.bot.did
    client.get_profile(ALICE)
    client.mentions_since(None)
    assert fake.sessions_created == 1 and fake.count("com.atproto.server.createSession") == 1
    # every call after the login carried the session's access token (the fake refuses the others)
    assert fake.count("app.bsky.actor.getProfile") == 1


@pytest.mark.parametrize("unset, named", [
    (["BLUESKY_HANDLE"], "BLUESKY_HANDLE is not set"),
    (["BLUESKY_APP_PASSWORD"], "BLUESKY_APP_PASSWORD is not set"),
    (["BLUESKY_HANDLE", "BLUESKY_APP_PASSWORD"], "BLUESKY_HANDLE and BLUESKY_APP_PASSWORD are not set"),
])
def test_a_missing_credential_is_one_line_naming_it(fake, settings, unset, named):
    env = {k: v for k, v in fake.env().items() if k not in unset}
    with pytest.raises(MissingCredentialError) as caught:
        BlueskyClient.from_settings(settings, environ=env).mentions_since(None)
    assert isinstance(caught.value, UsageError) and caught.value.exit_code == 2
    assert str(caught.value).startswith(named) and "\n" not in str(caught.value)
    assert fake.requests == []


def test_a_refused_app_password_is_permanent_and_not_shown(fake, settings):
    env = {**fake.env(), "BLUESKY_APP_PASSWORD": "wrong-pass-word-1234"}
    with pytest.raises(BlueskyRequestError) as caught:
        BlueskyClient.from_settings(settings, environ=env).get_profile(ALICE)
    e = caught.value
    assert e.status == 401 and not e.transient and "\n" not in str(e)
    assert "Bluesky refused the login of huggingtweets.bsky.social" in str(e)
    assert "BLUESKY_APP_PASSWORD" in str(e) and "wrong-pass-word-1234" not in str(e)
    assert fake.count("com.atproto.server.createSession") == 1  # not retried
    assert fake.count("app.bsky.actor.getProfile") == 0


def test_the_service_url_comes_from_the_environment(fake, settings, monkeypatch):
    for name, value in fake.env().items():
        monkeypatch.setenv(name, value)
    assert BlueskyClient.from_settings(settings).bot_user_id == fake.bot.did
    monkeypatch.setenv("BLUESKY_SERVICE_URL", "ftp://somewhere")
    with pytest.raises(UsageError, match="BLUESKY_SERVICE_URL"):
        BlueskyClient.from_settings(settings)


def test_a_short_lived_session_is_refreshed_not_logged_in_again(tmp_path):
    # An access token with less than 15 minutes left is refreshed by the SDK before the next call.
    with FakeBluesky(session_seconds=60) as fake:
        sky = BlueskyClient.from_settings(make_settings(tmp_path), environ=fake.env())
        sky.get_profile(ALICE)
        sky.mentions_since(None)
        assert fake.sessions_created == 1 and fake.sessions_refreshed >= 2


@pytest.mark.parametrize("max_retries", [3, 0])  # logging in again is not one of the attempts
def test_a_revoked_session_is_logged_in_again_once(fake, tmp_path, max_retries):
    client = BlueskyClient.from_settings(make_settings(tmp_path, max_retries=max_retries), environ=fake.env())
    client.get_profile(ALICE)
    fake.expire_sessions()
    assert client.get_profile(HARU).handle == HARU
    assert fake.sessions_created == 2
    assert fake.count("app.bsky.actor.getProfile") == 3  # one refused, then again
    fake.expire_sessions()
    fake.fail_next("com.atproto.server.createSession", 401, body={"error": "AuthenticationRequired",
                                                                  "message": "Invalid identifier or password"})
    with pytest.raises(BlueskyRequestError, match="refused the login"):  # the password was changed meanwhile
        client.get_profile(HARU)


# --- mentions ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_mentions_all_pages_oldest_first_and_resume(client, fake):
    authors = ["dave.bsky.social", "erin.bsky.social", "frank.example.org"]
    bot_post = fake.add_post(fake_bsky.BOT_HANDLE, "Hello, I make models of posts")
    start = datetime.now(timezone.utc) - timedelta(hours=2)
    uris = []
    for i in range(250):  # one every 20 seconds, two hours ago
        uris.append(fake.add_mention(authors[i % 3], f"train {ALICE} please ({i})",
                                     created_at=start + timedelta(seconds=20 * i)))
        if i % 5 == 0:
            fake.add_like(authors[i % 3], bot_post)  # notifications that are not mentions
    mentions = client.mentions_since(None)
    assert [m.id for m in mentions] == uris  # oldest first, no like among them
    assert fake.count("app.bsky.notification.listNotifications") == 3  # 250 mentions and 50 likes, 100 a page
    first = mentions[0]
    assert first.author_username == "dave.bsky.social" and first.author_id == fake.account("dave.bsky.social").did
    assert first.text == f"@{fake_bsky.BOT_HANDLE} train {ALICE} please (0)"
    assert first.created_at == fake.records[uris[0]]["value"]["createdAt"] and first.in_reply_to_user_id is None
    assert first.resume_from != first.id  # ids do not grow: the cursor is a time and a URI

    # From a cursor: what came after it, and the 10 minutes before it again (the store skips those).
    calls = fake.count("app.bsky.notification.listNotifications")
    newer = client.mentions_since(mentions[199].resume_from)
    assert [m.id for m in newer] == uris[199 - 600 // 20:]
    assert fake.count("app.bsky.notification.listNotifications") - calls == 2  # stops where it had read before
    later = fake.add_mention("erin.bsky.social", "me")
    assert [m.id for m in client.mentions_since(mentions[-1].resume_from)] == uris[249 - 600 // 20:] + [later]


def test_a_mention_indexed_late_is_still_read(client, fake):
    now = datetime.now(timezone.utc)
    fake.add_mention("dave.bsky.social", "help")
    cursor = client.mentions_since(None)[-1].resume_from
    # Written two minutes ago but indexed only now (a slow server, a client clock behind): it sorts
    # before the mention already read.
    late = fake.add_mention("erin.bsky.social", f"train {ALICE}", created_at=now - timedelta(minutes=2))
    again = client.mentions_since(cursor)
    assert late in [m.id for m in again]
    assert min(m.resume_from for m in again) >= cursor  # the cursor never goes back
    # One written an hour before the cursor is past the overlap.
    old = fake.add_mention("frank.bsky.social", "help", created_at=now - timedelta(hours=1))
    assert old not in [m.id for m in client.mentions_since(cursor)]


@pytest.mark.slow
def test_a_first_read_takes_the_latest_800(client, fake):
    uris = [fake.add_mention("dave.bsky.social", f"help {i}") for i in range(850)]
    mentions = client.mentions_since(None)
    assert [m.id for m in mentions] == uris[50:]
    assert fake.count("app.bsky.notification.listNotifications") == 8


def test_replies_under_the_bots_posts_name_the_bot_as_the_parent_author(client, fake):
    first = fake.add_mention("dave.bsky.social", f"train {ALICE}")
    reply = client.reply(first, "On it")
    thanks = fake.add_mention("dave.bsky.social", "thank you!", reply_to=reply, mention=False)  # no @ at all
    again = fake.add_mention("dave.bsky.social", "@huggingtweets.bsky.social help", reply_to=reply)
    mentions = [m for m in client.mentions_since(client.mentions_since(None)[0].resume_from) if m.id != first]
    assert [m.id for m in mentions] == [thanks, again]
    for m in mentions:
        assert m.in_reply_to_user_id == fake.bot.did == client.bot_user_id
        assert m.in_reply_to_tweet_id == reply


def test_a_cursor_from_another_network_reads_the_latest(client, fake, caplog):
    uri = fake.add_mention("dave.bsky.social", "help")
    with caplog.at_level(logging.WARNING, logger="bot.sources.bluesky"):
        assert [m.id for m in client.mentions_since("1800000000000000001")] == [uri]
    assert "is not one of ours" in caplog.text


# --- posts, archives and the dataset -----------------------------------------------------------------


def test_a_download_is_an_archive_the_dataset_reads(client, fake):
    archives = client.download_archives([ALICE, "@Haru.BSKY.social"])
    assert list(archives) == [ALICE, HARU]
    alice = archives[ALICE]
    account = fake.account(ALICE)
    assert (alice.account.username, alice.account.user_id, alice.account.display_name) == (ALICE, account.did, "Alice")
    assert alice.account.avatar_url.startswith("https://cdn.bsky.app/img/avatar/")
    assert json.loads(user_sidecar(alice.path).read_text())["id"] == account.did
    assert open_archive(alice.path).account == alice.account  # the file alone reads back the same

    feed = fake.posts_of(ALICE)
    records = [fake.records[e["uri"]]["value"] for e in feed if not e["repost"]]
    posts = list(alice.posts())
    assert len(posts) == len(feed) == 450
    assert [p.id for p in posts] == [e["repost"] or e["uri"] for e in feed]  # newest first, ids are AT URIs
    assert sum(p.retweet for p in posts) == sum(1 for e in feed if e["repost"]) > 0
    assert sum(p.reply for p in posts) == sum(1 for r in records if "reply" in r) > 0
    assert sum(p.quote for p in posts) == sum(1 for r in records if "embed" in r) > 0
    assert all(p.created_at.endswith("Z") for p in posts)
    assert {p.lang for p in posts} <= {"en", "ja", "und"}  # "en-US" comes as its language, "en"

    # the dataset step reads both archives (model names for Bluesky handles are decided elsewhere)
    dataset = build_dataset({"alice": alice, "haru": archives[HARU]})
    by_user = {u.handle: u.counts for u in dataset.users}
    assert by_user["alice"].downloaded == 450 and by_user["alice"].retweets == sum(p.retweet for p in posts)
    assert by_user["alice"].short > 0 and by_user["alice"].kept > 300
    assert by_user["alice"].language == "en" and by_user["haru"].language == "ja"
    assert by_user["haru"].downloaded == 240


def test_max_posts_per_user_bounds_a_download(fake, tmp_path):
    sky = BlueskyClient.from_settings(make_settings(tmp_path, max_posts_per_user=250), environ=fake.env())
    archive = sky.download_archives([ALICE])[ALICE]
    assert sum(1 for _ in archive.posts()) == 250
    pages = [q for m, n, q in fake.requests if n == "app.bsky.feed.getAuthorFeed"]
    assert [q["limit"] for q in pages] == [["100"], ["100"], ["50"]]
    assert all(q["filter"] == ["posts_with_replies"] and q["includePins"] == ["false"] for q in pages)


def test_the_cache_is_served_only_while_fresh_and_for_the_same_account(client, fake, settings):
    path = client.download_archives([CAROL])[CAROL].path
    feeds = fake.count("app.bsky.feed.getAuthorFeed")
    assert feeds == 2  # 150 posts

    client.download_archives([CAROL])  # within cache_ttl_hours: the profile is checked, the feed is not read
    assert fake.count("app.bsky.feed.getAuthorFeed") == feeds and fake.count("app.bsky.actor.getProfile") == 2

    stale = time.time() - 25 * 3600
    os.utime(user_sidecar(path), (stale, stale))
    client.download_archives([CAROL])  # stale: the whole feed again
    assert fake.count("app.bsky.feed.getAuthorFeed") == 2 * feeds

    sidecar = json.loads(user_sidecar(path).read_text())
    user_sidecar(path).write_text(json.dumps({**sidecar, "id": "did:plc:someoneelse"}))  # the handle changed hands
    client.download_archives([CAROL])
    assert fake.count("app.bsky.feed.getAuthorFeed") == 3 * feeds


@pytest.mark.parametrize("handle, reason", [
    (fake_bsky.UNKNOWN, "unknown"),
    (fake_bsky.DEACTIVATED, "unknown"),
    (fake_bsky.SUSPENDED, "suspended"),
    (fake_bsky.PROTECTED, "protected"),
])
def test_account_errors_name_the_handle_and_nothing_is_read(client, fake, handle, reason):
    with pytest.raises(AccountError) as caught:
        client.download_archives([ALICE, handle])
    e = caught.value
    assert e.reason == reason and e.handle == handle and f"@{handle}" in str(e)
    assert not e.transient
    assert fake.count("app.bsky.feed.getAuthorFeed") == 0  # every account is checked before any posts are read


def test_another_refusal_of_a_profile_is_not_taken_for_an_unknown_account(client, fake):
    client.bot_user_id
    fake.fail_next("app.bsky.actor.getProfile", 400, body={"error": "InvalidRequest", "message": "Invalid actor"})
    with pytest.raises(BlueskyRequestError, match="HTTP 400 InvalidRequest: Invalid actor") as caught:
        client.get_profile(ALICE)
    assert not isinstance(caught.value, AccountError)


def test_a_label_set_and_then_negated_does_not_stop_a_download(client, fake):
    carol = fake.account(CAROL)
    carol.labels.append("!no-unauthenticated")
    with pytest.raises(AccountError):
        client.get_profile(CAROL)
    carol.negated.append("!no-unauthenticated")  # the same labeller takes it back
    assert client.get_profile(CAROL).did == carol.did


@pytest.mark.parametrize("text", ["not a handle!", "alice", "handle.invalid", "a..b.social", "-a.bsky.social",
                                  "x" * 250 + ".social", "alice.bsky.social/../x", ""])
def test_a_bad_handle_is_refused_before_bluesky_is_asked(client, fake, text):
    with pytest.raises(HandleError):
        client.download_archives([text])
    assert fake.requests == []


def test_handles_are_domains_lowercased():
    assert normalize_handle("@Alice.BSKY.Social") == "alice.bsky.social"
    assert normalize_handle("carol.example.com") == "carol.example.com"
    assert normalize_handle("＠dave.test") == "dave.test"


# --- replies -----------------------------------------------------------------------------------------


def test_a_reply_is_threaded_to_the_mention_and_its_root(client, fake):
    root = fake.add_post(CAROL, "What would a model of me even say")
    middle = fake.add_post("erin.bsky.social", "Let us find out", reply_to=root)
    mention = fake.add_mention("dave.bsky.social", f"train {CAROL}", reply_to=middle)
    reply = client.reply(mention, f"Your model is ready: {LINK}")
    [sent] = fake.replies
    assert sent["uri"] == reply and sent["parent"] == mention and sent["root"] == root
    refs = sent["record"]["reply"]
    assert refs["parent"]["cid"] == fake.records[mention]["cid"] and refs["root"]["cid"] == fake.records[root]["cid"]
    assert "facets" not in sent["record"]  # nothing in the text becomes a link or a mention

    top = fake.add_mention("erin.bsky.social", "help")  # a mention that starts a thread is its own root
    client.reply(top, "How to use me: ...")
    assert fake.replies[-1]["parent"] == fake.replies[-1]["root"] == top
    assert client.recent_replies() == {mention: reply, top: fake.replies[-1]["uri"]}


@pytest.mark.parametrize("body", [
    "Your model is ready: " + LINK + "\n\nWritten by the model, not by a person: “" + "a dream of tea " * 40 + "”",
    "Your model is ready: " + LINK + "\n\n" + "今日は本当にいい天気ですね" * 40,
    "👨‍👩‍👧🇯🇵👍🏽 " * 120 + LINK,
    "e\u0301" * 400 + " " + LINK,  # accents made of combining marks
])
def test_a_reply_is_fitted_to_300_graphemes_keeping_the_link(client, fake, body):
    mention = fake.add_mention("dave.bsky.social", "train me")
    client.reply(mention, body)
    sent = fake.replies[0]["text"]  # the loopback server counted it too, and took it
    assert LINK in sent and "…" in sent
    assert post_length(sent) <= MAX_GRAPHEMES and len(sent.encode()) <= MAX_BYTES
    assert post_length(sent) >= 250  # it shortens only as much as it must


@pytest.mark.slow
@settings_(max_examples=200, deadline=None)
@given(st.text(min_size=0, max_size=700), st.sampled_from(["", " " + LINK, " https://example.org/" + "x" * 400]))
def test_fit_post_always_fits_and_keeps_a_link_that_fits(text, link):
    fitted = fit_post(text + link)
    assert post_length(fitted) <= MAX_GRAPHEMES and len(fitted.encode()) <= MAX_BYTES
    if link == " " + LINK:
        assert LINK in fitted


def test_a_reply_whose_answer_was_lost_is_not_posted_twice(client, fake):
    mention = fake.add_mention("dave.bsky.social", "train me")
    fake.fail_next("com.atproto.repo.createRecord", 503, after=True)  # created, then the answer is lost
    reply = client.reply(mention, "Your model is ready")
    assert [r["uri"] for r in fake.replies] == [reply]
    assert fake.count("com.atproto.repo.createRecord") == 1 and fake.count("com.atproto.repo.listRecords") == 1


def test_a_reply_that_timed_out_after_it_was_made_is_not_posted_twice(fake, tmp_path):
    sky = BlueskyClient.from_settings(make_settings(tmp_path, request_timeout_seconds=0.3), environ=fake.env())
    mention = fake.add_mention("dave.bsky.social", "train me")
    fake.fail_next("com.atproto.repo.createRecord", 200, after=True, delay=1.0)
    reply = sky.reply(mention, "Your model is ready")
    assert [r["uri"] for r in fake.replies] == [reply]


def test_a_reply_refused_before_it_was_made_is_sent_again(client, fake):
    mention = fake.add_mention("dave.bsky.social", "train me")
    fake.fail_next("com.atproto.repo.createRecord", 503)
    reply = client.reply(mention, "Your model is ready")
    assert [r["uri"] for r in fake.replies] == [reply]
    assert fake.count("com.atproto.repo.createRecord") == 2


def test_replying_to_a_deleted_post_is_a_permanent_error(client, fake):
    mention = fake.add_mention("dave.bsky.social", "train me")
    del fake.records[mention]
    with pytest.raises(BlueskyRequestError, match="deleted or is not visible") as caught:
        client.reply(mention, "Your model is ready")
    assert not caught.value.transient and fake.replies == []


# --- faults ------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("fault", [
    dict(status=503),
    dict(status=500),
    dict(status=502),
    dict(status=0),  # the connection closes without an answer
    dict(status=200, body='{"did": "did:plc:'),  # cut off mid-answer
    dict(status=200, body="<html>Over capacity</html>"),
    dict(status=200, body="[]"),  # JSON, but not an answer
])
def test_a_fault_then_success(client, fake, fault):
    fake.fail_next("app.bsky.actor.getProfile", **fault)
    assert client.get_profile(ALICE).handle == ALICE
    assert fake.count("app.bsky.actor.getProfile") == 2


def test_a_timeout_then_success(fake, tmp_path):
    sky = BlueskyClient.from_settings(make_settings(tmp_path, request_timeout_seconds=0.3), environ=fake.env())
    sky.bot_user_id
    fake.fail_next("app.bsky.actor.getProfile", 503, delay=1.0)
    start = time.monotonic()
    assert sky.get_profile(ALICE).handle == ALICE
    assert time.monotonic() - start < 1.0


def test_faults_on_a_later_page_are_retried_too(client, fake):
    client.get_profile(ALICE)
    fake.fail_next("app.bsky.feed.getAuthorFeed", 503, times=2)
    assert len(client.download_posts(client.get_profile(CAROL))) == 150


def test_429_with_a_near_reset_waits_for_it(client, fake):
    client.bot_user_id
    fake.fail_next("app.bsky.actor.getProfile", 429, headers=fake.reset_in(1))
    start = time.monotonic()
    assert client.get_profile(ALICE).handle == ALICE
    assert 0.4 <= time.monotonic() - start < 3.0
    assert fake.count("app.bsky.actor.getProfile") == 2


def test_429_without_a_reset_waits_the_default(client, fake):
    client.bot_user_id
    fake.fail_next("app.bsky.actor.getProfile", 429)
    start = time.monotonic()
    client.get_profile(ALICE)
    assert time.monotonic() - start >= 0.2  # rate_limit_default_wait_seconds


def test_429_with_a_reset_far_ahead_is_a_transient_error_at_once(client, fake):
    client.bot_user_id
    fake.fail_next("app.bsky.notification.listNotifications", 429, headers=fake.reset_in(3600))
    start = time.monotonic()
    with pytest.raises(BlueskyUnavailableError) as caught:
        client.mentions_since(None)
    assert time.monotonic() - start < 1.0
    e = caught.value
    assert isinstance(e, TransientError) and e.transient and 3500 < e.retry_after < 3700
    assert fake.count("app.bsky.notification.listNotifications") == 1
    assert "rate limit" in str(e) and "rate_limit_max_wait_seconds" in str(e)


def test_the_last_retry_gives_a_transient_error(client, fake):
    client.bot_user_id
    fake.fail_next("app.bsky.actor.getProfile", 503, times=100)
    with pytest.raises(BlueskyUnavailableError) as caught:
        client.get_profile(ALICE)
    assert fake.count("app.bsky.actor.getProfile") == 4  # max_retries = 3
    assert caught.value.transient and caught.value.retry_after is None
    assert str(caught.value) == f"Bluesky is unavailable: HTTP 503 while looking up @{ALICE}, 4 attempts; try again later"


def test_nothing_listening_is_unavailable(settings):
    with FakeBluesky(default_users=False) as gone:
        env = gone.env()  # a port where nothing listens any more
    with pytest.raises(BlueskyUnavailableError, match="could not connect while logging in"):
        BlueskyClient.from_settings(settings, environ=env).bot_user_id


def test_a_refusal_is_not_retried(client, fake):
    client.bot_user_id
    fake.fail_next("app.bsky.feed.getAuthorFeed", 400, body={"error": "InvalidRequest", "message": "bad cursor"})
    with pytest.raises(BlueskyRequestError) as caught:
        client.download_posts(client.get_profile(ALICE))
    assert caught.value.status == 400 and not caught.value.transient
    assert str(caught.value) == f"Bluesky refused reading @{ALICE}'s posts: HTTP 400 InvalidRequest: bad cursor"
    assert fake.count("app.bsky.feed.getAuthorFeed") == 1


# --- secrets -----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_no_password_or_token_in_logs_or_errors(fake, settings, caplog):
    caplog.set_level(logging.DEBUG)
    sky = BlueskyClient.from_settings(settings, environ=fake.env())
    mention = fake.add_mention("dave.bsky.social", f"train {ALICE}")
    fake.fail_next("app.bsky.actor.getProfile", 503)
    sky.download_archives([ALICE])
    sky.mentions_since(None)
    sky.reply(mention, f"Your model is ready: {LINK}")
    fake.expire_sessions()
    sky.get_profile(HARU)  # logs in again: a second pair of tokens
    errors = []
    for env in ({**fake.env(), "BLUESKY_APP_PASSWORD": APP_PASSWORD[::-1]}, {"BLUESKY_SERVICE_URL": fake.base_url}):
        try:
            BlueskyClient.from_settings(settings, environ=env).get_profile(ALICE)
        except UserError as e:
            errors.append(str(e))
    fake.fail_next("app.bsky.actor.getProfile", 503, times=100)
    with pytest.raises(BlueskyUnavailableError) as caught:
        sky.get_profile(ALICE)
    errors.append(str(caught.value))
    assert "HTTP Request: POST" in caplog.text and "send_request_headers" in caplog.text  # the libraries did log
    assert len(errors) == 3 and len(fake.issued_tokens) == 4
    for secret in [APP_PASSWORD, APP_PASSWORD[::-1], *fake.issued_tokens]:
        assert secret not in caplog.text
        assert all(secret not in e for e in errors)


# --- settings ----------------------------------------------------------------------------------------


def test_the_bluesky_section_of_config_toml():
    assert load_settings(ROOT / "bot" / "config.toml").bluesky == BlueskySettings()
    with pytest.raises(ConfigError, match=r"unknown key 'bluesky.max_tweets_per_user' \(allowed here: [a-z_, ]*max_posts_per_user"):
        parse_settings({"bluesky": {"max_tweets_per_user": 10}})
    with pytest.raises(ConfigError, match="'bluesky.request_timeout_seconds' = 0"):
        parse_settings({"bluesky": {"request_timeout_seconds": 0}})


# --- the command line ----------------------------------------------------------------------------------


def huggingtweets_cli(*args, env: dict, cwd: Path):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "bot", *map(str, args)], capture_output=True, text=True, timeout=300,
                          cwd=cwd, env=os.environ | {"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"} | env)


@pytest.mark.slow
def test_download_reads_a_bluesky_handle_from_bluesky(fake, tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(f'[bluesky]\ncache_dir = "{tmp_path / "cache"}"\n', encoding="utf-8")
    result = huggingtweets_cli("--config", config, "download", "@Alice.bsky.social", "--out", tmp_path / "alice.jsonl",
                               env=fake.env(), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Wrote 450 posts of @alice.bsky.social" in result.stdout
    assert open_archive(str(tmp_path / "alice.jsonl")).account.username == ALICE
    assert APP_PASSWORD not in result.stdout + result.stderr


def test_a_model_of_people_on_two_networks_is_refused_before_anything_is_read(fake, tmp_path):
    result = huggingtweets_cli("dataset", "alice.bsky.social", "dreamy_kettle", env=fake.env(), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == ("huggingtweets: error: a model is made of people on one network: give X handles "
                                     "or Bluesky handles, not both")
    assert fake.sessions_created == 0  # not even a login
