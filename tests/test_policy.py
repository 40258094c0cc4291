"""The policy: who may be modelled and what the bot answers, decided against a real store."""

from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from bot.config import parse_settings
from bot.policy import decide
from bot.store import Store


@dataclass
class Mention:
    id: str
    text: str
    author_username: str = "carol"
    in_reply_to_user_id: str | None = None


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path / "bot.sqlite3")


def settings_with(**bot):
    return parse_settings({"bot": {"quota_per_day": 2, **bot}})


def ask(store, text, author="carol", mention_id="1", **bot):
    new = decide(Mention(mention_id, text, author), settings_with(**bot), store, bot_user_id="42")
    store.ingest([Mention(mention_id, text, author)], lambda m: new)
    return new


def test_a_public_request_is_queued_with_its_repo(store):
    new = ask(store, "@huggingtweets train @Bob @alice")
    assert (new.state, new.handles, new.repo, new.reply_text) == ("queued", ("bob", "alice"), "huggingtweets/alice-bob", None)


def test_help_and_malformed_mentions_get_a_reply(store):
    assert ask(store, "@huggingtweets help").state == "replying"
    bad = ask(store, "@huggingtweets train @a @b @c @d", mention_id="2")
    assert bad.state == "rejected" and "at most 3" in bad.reply_text and "train alice bob" in bad.reply_text
    assert "@" not in bad.reply_text  # the help names no real account that would be pinged


def test_opted_out_people_are_never_modelled(store):
    assert ask(store, "@huggingtweets opt out", author="bob").state == "queued"  # the worker deletes bob's models
    new = ask(store, "@huggingtweets train @bob", mention_id="2")
    assert new.state == "rejected"
    assert "bob opted out" in new.reply_text and "@bob" not in new.reply_text  # no ping of the person


def test_self_mode_takes_only_the_requesters_own_account(store):
    assert ask(store, "@huggingtweets train @bob", mode="self").state == "rejected"
    assert ask(store, "@huggingtweets me", mention_id="2", mode="self").state == "queued"


def test_consented_mode_needs_an_opt_in(store):
    assert ask(store, "@huggingtweets train @bob", mode="consented").reason == "no consent"
    ask(store, "@huggingtweets opt in", author="bob", mention_id="2", mode="consented")
    assert ask(store, "@huggingtweets train @bob", mention_id="3", mode="consented").state == "queued"


def test_the_daily_quota(store):
    ask(store, "@huggingtweets train @a1", mention_id="1")
    ask(store, "@huggingtweets train @a2", mention_id="2")
    third = ask(store, "@huggingtweets train @a3", mention_id="3")
    assert third.reason == "quota" and "limit of 2" in third.reply_text
    assert ask(store, "@huggingtweets train @a3", author="dave", mention_id="4").state == "queued"


def test_a_full_queue_turns_requests_away(store):
    ask(store, "@huggingtweets train @a1", mention_id="1", max_queue=1)
    assert ask(store, "@huggingtweets train @a2", author="dave", mention_id="2", max_queue=1).reason == "queue full"


def test_a_recent_model_is_reused_without_training(store):
    store.record_published("huggingtweets/alice", ["alice"], "https://huggingface.co/huggingtweets/alice", "My dream is tea")
    new = ask(store, "@huggingtweets @alice")
    assert new.state == "replying" and new.reason == "reused a recent model"
    assert "https://huggingface.co/huggingtweets/alice" in new.reply_text and "My dream is tea" in new.reply_text


def test_blocklisted_requesters_and_the_bot_itself_are_ignored(store):
    assert ask(store, "@huggingtweets train @a", author="spammer", blocklist=["Spammer"]).state == "ignored"
    assert ask(store, "@huggingtweets train @a", author="huggingtweets", mention_id="2").state == "ignored"


@hsettings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=280), author=st.from_regex(r"[A-Za-z0-9_]{1,15}", fullmatch=True),
       reply=st.booleans(), mode=st.sampled_from(["public", "consented", "self"]))
def test_every_mention_becomes_a_request_or_a_reply(store, text, author, reply, mode):
    mention = Mention(str(abs(hash((text, author)))), "@huggingtweets " + text, author, "42" if reply else None)
    new = decide(mention, settings_with(mode=mode), store, bot_user_id="42")
    if new.state == "queued":
        assert new.handles and (new.kind == "opt_out" or new.repo)
    elif new.state in ("rejected", "replying"):
        assert new.reply_text
    else:
        assert new.state == "ignored" and new.reply_text is None


def test_old_mentions_are_stored_but_not_answered(store):
    @dataclass
    class Dated(Mention):
        created_at: str | None = None

    stale = Dated("1", "@huggingtweets train @bob", created_at="2020-01-01T00:00:00.000Z")
    fresh = Dated("2", "@huggingtweets train @bob", created_at=None)
    assert decide(stale, settings_with(), store).reason == "too old to answer"
    assert decide(fresh, settings_with(), store).state == "queued"


@pytest.mark.parametrize("author", ["../outside", "", "a" * 16, "bob smith", "@bob"])
def test_a_mention_whose_author_is_not_a_handle_is_stored_as_ignored(store, author):
    new = ask(store, "@huggingtweets me", author=author)
    assert new.state == "ignored" and new.reason == "the author is not a handle" and new.reply_text is None
