"""The policy: who may be modelled and what the bot answers, decided against a real store."""

from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from bot.common.config import parse_settings
from bot.requests.policy import Refusal, check_accounts, decide
from bot.requests.store import Store


@dataclass
class Mention:
    id: str
    text: str
    author_username: str = "carol"
    in_reply_to_user_id: str | None = None
    author_id: str | None = None


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
    r, settings = requested(store, "@huggingtweets train @bob", mode="consented")
    with pytest.raises(Refusal, match="no consent") as refused:
        check_accounts(r, {"bob": "200"}, settings, store)
    assert "bob can mention me with" in refused.value.reply
    requested(store, "@huggingtweets opt in", author="bob", author_id="200", mention_id="2", mode="consented")
    check_accounts(r, {"bob": "200"}, settings, store)


def test_the_daily_quota(store):
    ask(store, "@huggingtweets train @a1", mention_id="1")
    ask(store, "@huggingtweets train @a2", mention_id="2")
    third = ask(store, "@huggingtweets train @a3", mention_id="3")
    assert third.reason == "quota" and "limit of 2" in third.reply_text
    assert ask(store, "@huggingtweets train @a3", author="dave", mention_id="4").state == "queued"


def test_a_full_queue_turns_requests_away(store):
    ask(store, "@huggingtweets train @a1", mention_id="1", max_queue=1)
    assert ask(store, "@huggingtweets train @a2", author="dave", mention_id="2", max_queue=1).reason == "queue full"


def requested(store, text, author="carol", author_id="700", mention_id="1", **bot):
    """A mention stored as the bot stores it: its author an account, the decision made on it."""
    mention = Mention(mention_id, text, author, author_id=author_id)
    settings = settings_with(**bot)
    store.ingest([mention], lambda m: decide(m, settings, store, bot_user_id="42"))
    return store.by_mention(mention_id), settings


def test_an_opt_out_follows_the_account_through_a_rename(store):
    requested(store, "@huggingtweets opt out", author="bob", author_id="200")  # bob's account is 200
    # bob renames to "bobby"; a stranger asks for "bobby", a handle the bot has never seen.
    r, settings = requested(store, "@huggingtweets train @bobby", mention_id="2")
    assert r.state == "queued"  # nothing is known of "bobby" yet: looked up before anything is read
    with pytest.raises(Refusal, match="opted out") as refused:
        check_accounts(r, {"bobby": "200"}, settings, store)
    assert "bobby opted out" in refused.value.reply
    check_accounts(r, {"bobby": "201"}, settings, store)  # the name taken by someone else: theirs to ask for


def test_self_and_consented_modes_check_the_account_not_the_name(store):
    r, settings = requested(store, "@huggingtweets me", mode="self")
    check_accounts(r, {"carol": "700"}, settings, store)
    with pytest.raises(Refusal, match="mode self"):  # "carol" names another account by now
        check_accounts(r, {"carol": "701"}, settings, store)
    requested(store, "@huggingtweets opt in", author="dan", author_id="300", mention_id="2", mode="consented")
    r, settings = requested(store, "@huggingtweets train @dan_renamed", mention_id="3", mode="consented")
    check_accounts(r, {"dan_renamed": "300"}, settings, store)  # dan's consent, under his new name
    r, settings = requested(store, "@huggingtweets train @carol", mention_id="4", mode="consented")
    with pytest.raises(Refusal, match="no consent"):  # "carol" is not the requester any more
        check_accounts(r, {"carol": "999"}, settings, store)
    check_accounts(r, {"carol": "700"}, settings, store)


def test_a_blocked_requester_stays_blocked_after_a_rename(store):
    store.blocklist = ("spammer",)
    assert requested(store, "@huggingtweets train @a", author="spammer", author_id="66",
                     blocklist=["spammer"])[0].state == "ignored"
    assert requested(store, "@huggingtweets train @a", author="nice_name", author_id="66", mention_id="2",
                     blocklist=["spammer"])[0].state == "ignored"
    assert requested(store, "@huggingtweets train @a", author="someone", author_id="67", mention_id="3",
                     blocklist=["x:67"])[0].state == "ignored"


def test_the_quota_counts_the_account_under_every_handle(store):
    for number, author in enumerate(["carol", "carol_new"], 1):
        requested(store, f"@huggingtweets train @a{number}", author=author, mention_id=str(number))
    third, _ = requested(store, "@huggingtweets train @a3", author="carol_newer", mention_id="3")
    assert third.reason == "quota"


def test_blocklisted_requesters_and_the_bot_itself_are_ignored(store):
    assert ask(store, "@huggingtweets train @a", author="spammer", blocklist=["Spammer"]).state == "ignored"
    assert ask(store, "@huggingtweets train @a", author="huggingtweets", mention_id="2").state == "ignored"


@pytest.mark.slow
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
