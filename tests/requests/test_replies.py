"""What the bot posts: every sentence comes from bot/requests/replies.py and passes one guard that lets no reply
@mention anyone but the person who asked."""

from __future__ import annotations

import pytest
import regex
from hypothesis import given, settings as hsettings, strategies as st

from bot.requests import replies
from bot.common.errors import clip, mask, retry_policy, TransientError, UserError
from bot.data.text import DOT_LEADER, WORD_JOINER
from twitter_rules import extract_urls

# What X reads as a mention: "@" or "＠" followed by handle characters.
LIVE_MENTION_RE = regex.compile(r"[@＠]([A-Za-z0-9_]+)")


def live_mentions(text: str) -> set[str]:
    return {m.group(1).lower() for m in LIVE_MENTION_RE.finditer(text)}


def test_the_guard_keeps_the_requesters_mention_and_breaks_every_other():
    text = replies.guard("@Carol thanks, @alice and ＠bob and @carolyn say hi to @carol", requester="carol")
    assert live_mentions(text) == {"carol"}
    assert f"@{WORD_JOINER}alice" in text and f"＠{WORD_JOINER}bob" in text and f"@{WORD_JOINER}carolyn" in text


handle = st.from_regex(r"[A-Za-z0-9_]{1,20}", fullmatch=True)
noise = st.text(alphabet=st.characters(codec="utf-8"), max_size=20)


@pytest.mark.slow
@hsettings(max_examples=300, deadline=None)
@given(requester=handle, pieces=st.lists(st.one_of(noise, handle.map(lambda h: "@" + h), handle.map(lambda h: "＠" + h),
                                                    st.sampled_from(["@", "＠", "@@", ".@", "@\u2060x"])), max_size=12))
def test_no_reply_mentions_anyone_but_the_requester_whatever_it_holds(requester, pieces):
    text = "".join(pieces)
    guarded = replies.guard(text, requester)
    assert live_mentions(guarded) <= {requester.lower()}
    # It reads the same: a broken mention gains an invisible joiner; a link (a Bluesky handle is a domain)
    # a dot leader for each dot.
    def read(t: str) -> str:
        return t.replace(WORD_JOINER, "").replace(DOT_LEADER, ".")
    assert read(guarded) == read(text)


ORG_REPOS = "https://huggingface.co/huggingtweets/"
# Links of every shape X knows, and lookalikes of the organisation's own.
link_like = st.sampled_from([
    "https://evil.com/login", "http://evil.example.com", "evil.com", "EVIL.COM/x?y=1", "www.evil.co.uk",
    "t.co/abc", "http://1.2.3.4/x", "xn--80ak6aa92e.com", "https://huggingface.co/evil/x",
    "huggingface.co/huggingtweets/alice", "https://huggingface.co/huggingtweets/../evil",
    "https://huggingface.co/huggingtweets.evil.com/x", "https://huggingface.co/huggingtweets/a/../../b",
    "https://huggingface.co/huggingtweets/alice", "https://evil.com/https://huggingface.co/huggingtweets/a",
    "evil.co\u2060m", "https://evil\u2060.com/x", "ahttps://evil.com", "(evil.com)", "evil.com.", "@evil.com",
    "alice.bsky.social", "https://bsky.app/profile/alice"])


@pytest.mark.slow
@hsettings(max_examples=400, deadline=None)
@given(pieces=st.lists(st.one_of(noise, link_like, st.sampled_from([" ", ".", "/", ":", "\n"])), max_size=10),
       names=st.lists(st.one_of(handle, link_like), max_size=3), requester=handle)
def test_no_reply_links_anywhere_but_the_organisations_repos(pieces, names, requester):
    """Whatever a sample, a name or an error holds, X (its own twitter-text rules) finds no link in a reply
    but to one of the organisation's repos."""
    text = "".join(pieces)
    sentences = [replies.ready(ORG_REPOS + "alice-bob", text), replies.ready(text, None),
                 replies.failure("unreadable", names, detail=text), replies.failure("opted_out", names)]
    for sentence in sentences:
        guarded = replies.guard(replies.numbered(sentence, 7), requester, [ORG_REPOS])
        for url in extract_urls(guarded):
            assert url.startswith(ORG_REPOS) and "/" not in url[len(ORG_REPOS):] and ".." not in url, (url, guarded)


def test_the_model_link_stays_a_link():
    guarded = replies.guard(replies.ready(ORG_REPOS + "alice-bob", "see evil.com"), "carol", [ORG_REPOS])
    assert extract_urls(guarded) == [ORG_REPOS + "alice-bob"]


def test_no_fixed_sentence_names_an_account():
    sentences = [replies.HELP, replies.OPTED_IN, replies.SELF_ONLY, replies.QUEUE_FULL, replies.GENERIC_FAILURE,
                 replies.opted_out(0), replies.opted_out(2), replies.ready("https://huggingface.co/huggingtweets/x", "a")]
    sentences += [replies.failure(kind, ["alice", "bob"], "3") for kind in replies.FAILURES]
    for sentence in sentences:
        assert live_mentions(sentence) == set(), sentence
    assert replies.failure("opted_out", ["alice", "bob", "carol"]) == "Sorry, alice, bob and carol opted out of being modelled."


def test_a_finished_model_reply_says_the_sample_is_the_models_not_a_persons():
    text = replies.ready("https://huggingface.co/huggingtweets/alice", "My dream is tea")
    assert "Written by the model, not by a person" in text and text.startswith("Your model is ready: https://")


def test_every_reply_is_numbered_on_its_first_line():
    assert replies.numbered("Done.\n\nmore", 7) == "Done. (request #7)\n\nmore"


# --- secrets and errors ---------------------------------------------------------------------------

TOKEN = "hf_" + "not-a-real-token-" + "0123456789abcde"  # built here: no token-shaped literal in the tree


def test_a_secret_is_masked_whole_cut_short_or_url_encoded():
    assert mask(f"token {TOKEN} refused", [TOKEN]) == "token *** refused"
    assert mask(f"token {TOKEN[:14]}", [TOKEN]) == "token ***"  # a server's message cut after part of it
    assert mask("oauth_signature=Ab%2Bcd%2FefGH%3Dij12&x=1", ["Ab+cd/efGH=ij12"]) == "oauth_signature=***&x=1"
    assert mask("the hf_ prefix alone is not a secret", [TOKEN]) == "the hf_ prefix alone is not a secret"


def test_clip_masks_before_it_cuts(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    echoed = "Invalid credentials: Bearer " + TOKEN + " " + "x" * 400
    for limit in (40, 45, 50, 60, 300):  # wherever the cut falls, no part of the token survives
        shown = clip(echoed, limit)
        assert len(shown) <= limit and TOKEN[:8] not in shown


def test_errors_say_whether_trying_again_may_help():
    assert retry_policy(UserError("bad handle")).transient is False
    assert retry_policy(TransientError("X is down", retry_after=90)).retry_after == 90
    assert retry_policy(OSError("disk full")).transient is True  # not ours: it may pass


def test_guard_knows_bluesky_handles():
    text = "@alice.bsky.social your model is ready; thanks @bob.bsky.social and @alice."
    guarded = replies.guard(text, "alice.bsky.social")
    assert guarded.startswith("@alice.bsky.social your model")
    # Neither a mention nor, on X, a link to the website bob.bsky.social.
    assert "@bob.bsky.social" not in guarded and f"@{WORD_JOINER}bob{DOT_LEADER}bsky{DOT_LEADER}social" in guarded
    assert f"@{WORD_JOINER}alice." in guarded  # "@alice" is another account than alice.bsky.social
    assert replies.guard("hi @alice.", "alice") == "hi @alice."  # a full stop ends a sentence, not a handle
