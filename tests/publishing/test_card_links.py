"""The card as the Hub shows it: GitHub-flavoured Markdown with autolinks (cmark-gfm, the reference
implementation), where text from users must make no link and reorder nothing; and card prose that
follows the run's real counts and base model."""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser

import cmarkgfm
import pytest
from cmarkgfm.cmark import Options
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_card import make_facts, two_users

from bot.publishing.card import escape, render_card
from bot.common.config import Settings

BIDI = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"
# Our links: the Hub (models, the organisation, the base model, the playground with this model chosen) and
# people's profiles.
OUR_LINK_RE = re.compile(r"^https://huggingface\.co/[A-Za-z0-9._/-]+$|^https://x\.com/[a-z0-9_]{1,15}$"
                         r"|^https://bsky\.app/profile/[a-z0-9.-]+$"
                         r"|^https://huggingface\.co/spaces/[A-Za-z0-9._-]+/[A-Za-z0-9._-]+\?model=[A-Za-z0-9._-]+$")
OUR_IMAGE_RE = re.compile(r"^(predictions\.png|loss_curve\.png|https://(pbs\.twimg\.com|abs\.twimg\.com|cdn\.bsky\.app)/\S+)$")
# Pieces of text that renderers turn into links, or that close our markup, and bidi controls.
HOSTILE_PIECES = [
    "www.", "www.evil.com", "WWW.Evil.Com", "evil.com", "evil.example.org", "name@example.com", "a.b@c.de",
    "https://evil.com/x", "http://", "ftp://evil.com", "mailto:", "xmpp:me@evil.com", "://", "@", ".", ":", "/",
    "<https://evil.com>", "[x](https://evil.com)", "![x](https://evil.com/i.png)", "[x]: https://evil.com",
    "<a href='https://evil.com'>x</a>", "<img src=https://evil.com/i.png>", "&#64;", "&#58;", "&#46;", "&lt;",
    "evil\uff0ecom", "evil\u3002com", "\u2060", " ", "\n", "|", "*", "_", "`", "~", "#", "\\", "(", ")",
    "x.com/alice", "huggingface.co/evil", "@alice", "[", "]", *BIDI,
]
hostile_text = st.lists(st.one_of(st.sampled_from(HOSTILE_PIECES), st.text(max_size=4)), min_size=1, max_size=14).map("".join)


class Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []
        self.srcs: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name == "href":
                self.hrefs.append(value)
            elif name == "src":
                self.srcs.append(value)

    def handle_data(self, data):
        self.text.append(data)


def rendered(card_text: str) -> Links:
    """The card as GitHub-flavoured Markdown renders it, with raw HTML kept (as the Hub keeps it)."""
    page = cmarkgfm.github_flavored_markdown_to_html(card_text, options=Options.CMARK_OPT_UNSAFE)
    links = Links()
    links.feed(page)
    return links


def assert_only_our_links(card_text: str) -> Links:
    links = rendered(card_text)
    assert links.hrefs, "the card has lost its own links"
    for href in links.hrefs:
        assert OUR_LINK_RE.fullmatch(href), f"a link that is not ours: {href!r}"
    for src in links.srcs:
        assert OUR_IMAGE_RE.fullmatch(src), f"an image that is not ours: {src!r}"
    return links


@pytest.mark.parametrize("text", ["www.example.com", "name@example.com", "https://evil.com/x", "evil.com",
                                  "see www.evil.com and mail me@evil.com", "http://1.2.3.4/x", "WWW.EVIL.COM"])
def test_addresses_in_names_and_samples_make_no_link(text):
    facts = two_users(text)
    facts["samples"] = [f"My dream is {text}"]
    facts["best_sample"] = None
    links = assert_only_our_links(render_card(facts, Settings()).text)
    assert not re.search(r"evil\.com|example\.com", "".join(links.text)), "a bare domain left whole"


@pytest.mark.slow
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=hostile_text, sample=hostile_text)
def test_no_hostile_name_or_sample_makes_a_link_or_keeps_a_bidi_control(name, sample):
    facts = two_users(name)
    facts["samples"] = [f"My dream is {sample}", sample]
    facts["best_sample"] = None
    text = render_card(facts, Settings()).text
    assert not any(c in text for c in BIDI)
    links = assert_only_our_links(text)
    shown = "".join(links.text)
    assert not re.search(r"(?i)\b(evil|example)\.(com|org)\b", shown)


def test_bidi_controls_are_dropped_and_the_rest_kept():
    assert escape("\u202eevil\u202c \u2066x\u2069 \u200ey\u200f \u061cz") == "evil x y z"
    card = render_card(two_users("Bob \u202etxt.exe\u202c"), Settings()).text
    assert "Bob txt" in card and "\u202e" not in card


@pytest.mark.parametrize("url, kept", [
    ("https://pbs.twimg.com/profile_images/1/a.jpg", True),
    ("https://abs.twimg.com/sticky/default_profile_images/default_profile.png", True),
    ("https://cdn.bsky.app/img/avatar/plain/did:plc:abc/bafk@jpeg", True),
    ("https://evil.com/a.jpg", False),
    ("https://pbs.twimg.com.evil.com/a.jpg", False),
    ("https://pbs.twimg.com@evil.com/a.jpg", False),
    ("https://pbs.twimg.com:8443/a.jpg", False),
    ("http://pbs.twimg.com/a.jpg", False),
    ("https://pbs.twimg.com/a.jpg\" onerror=\"alert(1)", False),
    ("javascript:alert(1)", False),
])
def test_avatars_only_from_x_and_bluesky_image_hosts(url, kept):
    facts = make_facts()
    facts["accounts"]["dreamy_kettle"]["avatar_url"] = url
    srcs = rendered(render_card(facts, Settings()).text).srcs
    assert (html.escape(url, quote=True) in render_card(facts, Settings()).text) == kept
    assert [s for s in srcs if s.startswith("http")] == ([url] if kept else [])


def test_bluesky_people_link_to_their_bluesky_profile():
    facts = make_facts(handles=["alice.bsky.social"], name="alice.bsky.social", model_id="huggingtweets/alice.bsky.social")
    facts["users"] = {"alice.bsky.social": facts["users"]["dreamy_kettle"]}
    facts["accounts"] = {"alice.bsky.social": {"username": "alice.bsky.social", "display_name": "Alice",
                                               "avatar_url": "https://cdn.bsky.app/img/avatar/plain/did:plc:x/y@jpeg"}}
    links = assert_only_our_links(render_card(facts, Settings()).text)
    assert "https://bsky.app/profile/alice.bsky.social" in links.hrefs
    assert not any("x.com" in h for h in links.hrefs)
    text = render_card(facts, Settings()).text
    assert 'mention the bot with "opt out" on Bluesky' in text and "opt out\" on X" not in text
    assert 'each "-" of a handle is written "\\_"' in text  # the naming rule, said on the card


def test_x_people_are_told_to_opt_out_on_x():
    text = render_card(make_facts(), Settings()).text
    assert 'post "@huggingtweets opt out" on X' in text and "Bluesky" not in text


# --- the prose follows the run ------------------------------------------------------------------


def limitations(facts: dict) -> str:
    return render_card(facts, Settings()).text.split("## Limitations and bias")[1].split("## Removal")[0]


@pytest.mark.parametrize("train_posts", [1, 320, 2_918, 48_000])
def test_card_says_how_many_posts_the_model_learned_from(train_posts):
    text = render_card(make_facts(train_posts=train_posts), Settings()).text
    count = f"{train_posts:,}"
    assert f"fine-tuned on {count} of their public posts (36 more were held out" in text.replace("\n", " ")
    assert f"learned from {count} post{'' if train_posts == 1 else 's'} of one person" in text
    assert "a few thousand" not in text


@pytest.mark.parametrize("base, hub_id, says, never", [
    ("openai-community/gpt2", "openai-community/gpt2", "[openai-community/gpt2](https://huggingface.co/openai-community/gpt2), which was trained on unfiltered web text", "random weights"),
    ("distilbert/distilgpt2", "distilbert/distilgpt2", "biases of its base model, [distilbert/distilgpt2]", "random weights"),
    ("EleutherAI/pythia-70m", "EleutherAI/pythia-70m", "biases of its base model, [EleutherAI/pythia-70m](https://huggingface.co/EleutherAI/pythia-70m): see that model's card", "GPT-2"),
    ("tiny", None, "learned its English from one public-domain book", "unfiltered web text"),
    ("my_model", None, "biases its base model, the local model my&#95;model, learned", "GPT-2"),
])
def test_card_names_the_real_base_model(base, hub_id, says, never):
    facts = make_facts(base_model=base, base_model_hub_id=hub_id)
    text = limitations(facts)
    assert says in text.replace("\n", " ")
    assert never not in text
    intro = render_card(facts, Settings()).text.split("## How to use")[0]
    assert "It is GPT-2 fine-tuned" not in intro


def test_fixed_text_is_written_as_is_and_only_user_text_escaped():
    facts = make_facts(base_model="tiny", base_model_hub_id=None)
    body = render_card(facts, Settings()).text  # the Markdown, without the YAML header
    for fixed in ("a tiny GPT-2 built locally (2 layers, 64 wide, pretrained on the Jargon File)", "| Learning rate | 0.0001372,",
                  "| Training time | 2.5 s (5.0 s in all) |", "post \"@huggingtweets opt out\" on X: the bot",
                  "[huggingtweets](https://huggingface.co/huggingtweets) with huggingtweets"):
        assert fixed in body, fixed
    # Entities appear only where user text needs them (here: the "_" of a handle, the "@" in a sample).
    for line in body.splitlines():
        for entity in re.findall(r"&#\d+;", line):
            assert entity in ("&#95;", "&#64;"), (entity, line)
