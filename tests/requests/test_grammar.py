"""What a mention can say. Each case reads as: mention text -> what the bot understands."""

import pytest
from hypothesis import given, settings, strategies as st

from bot.requests.grammar import Command, parse_mention


def parse(text, author="carol", reply_to_bot=False):
    return parse_mention(text, bot_handle="huggingtweets", author=author, reply_to_bot=reply_to_bot)


@pytest.mark.parametrize("text, handles", [
    ("@huggingtweets train @alice", ("alice",)),
    ("@huggingtweets train @Alice @bob @carol_3", ("alice", "bob", "carol_3")),
    ("@huggingtweets @alice", ("alice",)),
    ("@huggingtweets @alice @bob", ("alice", "bob")),
    ("@HuggingTweets TRAIN @alice, @bob!", ("alice", "bob")),
    ("@huggingtweets train alice bob", ("alice", "bob")),
    ("@huggingtweets train @alice @alice", ("alice",)),
    ("@huggingtweets me", ("carol",)),
    ("@huggingtweets train me", ("carol",)),
    ("@huggingtweets train @alice https://example.com/x", ("alice",)),
    (".@huggingtweets train @alice", ("alice",)),
    ("＠huggingtweets train @alice", ("alice",)),  # X takes the full-width at sign for a mention too
])
def test_train_requests(text, handles):
    assert parse(text) == Command("train", handles)


@pytest.mark.parametrize("text, kind", [
    ("@huggingtweets help", "help"),
    ("@huggingtweets HELP please", "help"),
    ("@huggingtweets opt out", "opt_out"),
    ("@huggingtweets opt-out", "opt_out"),
    ("@huggingtweets optout", "opt_out"),
    ("@huggingtweets opt in", "opt_in"),
])
def test_other_commands(text, kind):
    assert parse(text).kind == kind


def test_opt_out_is_about_the_requester():
    assert parse("@huggingtweets opt out").handles == ("carol",)


@pytest.mark.parametrize("text, reason", [
    ("@huggingtweets train @a @b @c @d", "at most 3 accounts"),
    ("@huggingtweets train", "name 1 to 3 accounts"),
    ("@huggingtweets train @al!ce", "is not a handle"),
    ("@huggingtweets train @this_is_far_too_long_for_x", "is not a handle"),
    ("@huggingtweets train ../../etc/passwd", "is not a handle"),
    ("@huggingtweets opt sideways", "opt out"),
    ("@huggingtweets what is this", "no command"),
])
def test_invalid_requests_say_why(text, reason):
    command = parse(text)
    assert command.kind == "invalid"
    assert reason in command.reason


@pytest.mark.parametrize("text, reply_to_bot, author", [
    ("@huggingtweets @carol thanks, love it!", True, "carol"),  # a reply under the bot's reply
    ("@huggingtweets", True, "carol"),
    ("I love what @huggingtweets does", False, "carol"),        # not addressed to the bot
    ("@huggingtweets train @alice", False, "huggingtweets"),  # the bot's own post
])
def test_ignored(text, reply_to_bot, author):
    assert parse(text, author=author, reply_to_bot=reply_to_bot).kind == "ignore"


def test_a_command_in_a_reply_to_the_bot_still_counts():
    assert parse("@huggingtweets train @bob", reply_to_bot=True) == Command("train", ("bob",))


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=300), st.text(max_size=20), st.booleans())
def test_parsing_never_raises(text, author, reply_to_bot):
    command = parse_mention(text, bot_handle="huggingtweets", author=author, reply_to_bot=reply_to_bot)
    assert command.kind in {"train", "help", "opt_out", "opt_in", "invalid", "ignore"}
    assert "could not read this mention" not in command.reason  # the safety net never fires
    if command.kind == "train":
        assert 1 <= len(command.handles) <= 3


@settings(max_examples=300, deadline=None)
@given(st.lists(st.from_regex(r"@?[A-Za-z0-9_]{1,15}", fullmatch=True), min_size=1, max_size=3, unique_by=str.lower))
def test_any_valid_handles_are_understood(handles):
    text = "@huggingtweets train " + " ".join(h if h.startswith("@") else "@" + h for h in handles)
    command = parse(text)
    assert command.kind == "train"
    assert set(command.handles) == {h.lstrip("@").lower() for h in handles}
