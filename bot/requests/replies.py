"""Every sentence the bot posts, and the one guard every reply passes before it is posted.

    >>> ready("https://huggingface.co/huggingtweets/alice", "My dream is a garden")
    'Your model is ready: https://huggingface.co/huggingtweets/alice\\n\\nWritten by the model, not by a person: “My dream is a garden”'
    >>> guard("@carol hi @alice and @carol", requester="carol") == "@carol hi @\\u2060alice and @carol"
    True

Replies never @mention anyone but the person who asked: X suspends automated accounts for unsolicited
mentions, and a reply that echoed text from a mention would let anyone make the bot ping anyone. So the
sentences below name people without "@", and `guard` breaks every other mention whatever a sentence or an
echoed text holds.
"""

from __future__ import annotations

from collections.abc import Sequence

import regex

from bot.data.text import WORD_JOINER, join_words, unlink

HELP = ("Ask me for a model of up to 3 accounts: \"train\" and their handles (\"train alice bob\"), "
        "\"me\" for your own, \"help\", \"opt out\" to never be modelled (and delete models of you), "
        "\"opt in\" to allow it.")
OPTED_IN = ("Done: you have opted in, so people can ask me for a model of your posts. "
            "Reply \"opt out\" at any time to undo it and delete those models.")
SELF_ONLY = "Sorry, I only make models of your own posts: reply \"me\"."
QUEUE_FULL = "Sorry, I am too busy right now. Please ask again in a few hours."
OVER_BUDGET = "Sorry, reading these posts would cost more than I may spend in a day."
GENERIC_FAILURE = ("Sorry, something went wrong on my side and I could not make this model. "
                   "Please ask again later.")

# Why a request cannot be served, by the kind of reason the grammar and the policy give.
FAILURES = {
    "unknown": "Sorry, I could not find the account {names}.",
    "suspended": "Sorry, the account {names} is suspended.",
    "protected": "Sorry, {names} has protected posts, so I cannot use them.",
    "changed": "Sorry, the handle {names} passed to another account while I worked on it. Please ask again.",
    "opted_out": "Sorry, {names} opted out of being modelled.",
    "no_consent": "Sorry, I only model people who agreed to it: {names} can mention me with \"opt in\" to allow it.",
    "too_few": "Sorry, there are too few posts to learn from ({detail}).",
    "quota": "Sorry, you have reached today's limit of {detail} models. Try again tomorrow.",
    "unreadable": "Sorry, I could not read that: {detail}. " + HELP,
}


def ready(model_url: str, sample: str | None, repo_id: str | None = None, link: bool = True) -> str:
    """The reply for a finished (or reused) model: where it is, and a sample marked as the model's own words.

    Without `link` the repo is named in words X does not turn into a link (a reply with a link costs X's
    bot over ten times more); people find it by that name on the Hub.
    """
    if link or not repo_id:
        text = f"Your model is ready: {model_url}"
    else:
        text = f"Your model is ready on the Hugging Face Hub as {repo_id}"
    if sample:
        text += f"\n\nWritten by the model, not by a person: “{sample}”"
    return text


def failure(kind: str, names: tuple[str, ...] | list[str] = (), detail: str = "") -> str:
    """A refusal or a failure, naming accounts without "@" (so they are not pinged)."""
    template = FAILURES.get(kind)
    if template is None:
        return GENERIC_FAILURE
    return template.format(names=join_words(list(names)), detail=detail)


def opted_out(deleted: int) -> str:
    done = f"deleted {deleted} model{'s' if deleted != 1 else ''}" if deleted else "there were no models of you"
    return f"Done: you have opted out, so I will not model your posts, and {done}."


def numbered(text: str, request_id: int) -> str:
    """`text` with "(request #N)" at the end of its first line.

    X refuses a post whose text it has seen from the account before (a reused model, a second "help"), so
    every reply needs something of its own; the number also lets the operator find it in `status`. It goes
    on the first line, which fitting a reply to X's length never cuts.
    """
    first, _, rest = text.partition("\n")
    return f"{first} (request #{request_id})" + (f"\n{rest}" if rest else "")


# "@" or "＠" followed by a handle: X's (letters, digits, _; X links up to 20, so the whole run is looked
# at) or a Bluesky domain handle (dots and hyphens inside, never at the end: "@alice." is "@alice").
_MENTION_RE = regex.compile(r"([@＠])([A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?)")


def guard(text: str, requester: str, links: Sequence[str] = ()) -> str:
    """`text` with every @mention broken (a word joiner after the "@") except the requester's own, and every
    link made plain text except those under `links` (the organisation's repos): a sample, an echoed name or
    an error can then neither ping anyone nor send a reader anywhere else.

    Applied to every reply right before it is posted, on every network.

        >>> guard("ready: https://hf.co/org/a, see evil.com", "carol", ["https://hf.co/org/"])
        'ready: https://hf.co/org/a, see evil\u2024com'
    """
    allowed = requester.lower()

    def fix(m: regex.Match) -> str:
        return m.group(0) if allowed and m.group(2).lower() == allowed else m.group(1) + WORD_JOINER + m.group(2)

    return unlink(_MENTION_RE.sub(fix, text), links, mention=allowed or None)
