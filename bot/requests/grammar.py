"""What a mention can say, and what it asks for. Parsing never raises, whatever the text.

    >>> parse_mention("@huggingtweets train @alice @Bob", bot_handle="huggingtweets", author="carol")
    Command(kind='train', handles=('alice', 'bob'), reason='')
    >>> parse_mention("@huggingtweets me", bot_handle="huggingtweets", author="carol").handles
    ('carol',)
    >>> parse_mention("@huggingtweets train @a @b @c @d", bot_handle="huggingtweets", author="x").kind
    'invalid'

The grammar (the bot's help reply, `bot.requests.replies.HELP`, says it in one line):

    @huggingtweets train @alice [@bob [@carol]]   a model of 1 to 3 accounts
    @huggingtweets @alice                         the same, without the word "train"
    @huggingtweets me                             a model of your own posts
    @huggingtweets help                           how to use the bot
    @huggingtweets opt out                        never model me, and delete my models
    @huggingtweets opt in                         allow models of me (when the bot asks for consent)

A reply to one of the bot's own posts that carries none of these is ignored, so a "thanks!" under a
reply does not start a conversation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from bot.common.errors import HandleError
from bot.common.handles import MAX_HANDLES, normalize_handle
from bot.data.text import URL_RE

Kind = Literal["train", "help", "opt_out", "opt_in", "invalid", "ignore"]

HANDLE_RULES = {"x": " (1 to 15 letters, digits or _)", "bluesky": " (a domain name, such as alice.bsky.social)"}
TOKEN_RE = re.compile(r"\S+")
# Punctuation that may follow a handle or word in a sentence ("@alice, @bob!").
TRAILING_PUNCT = ".,!?;:)\"'”’…"


@dataclass(frozen=True)
class Command:
    kind: Kind
    handles: tuple[str, ...] = ()
    reason: str = ""


def parse_mention(text: object, bot_handle: str, author: str = "", reply_to_bot: bool = False,
                  max_handles: int = MAX_HANDLES, network: str = "x") -> Command:
    """What a mention asks for. `reply_to_bot`: the mention replies to one of the bot's posts.
    `network` ("x" or "bluesky") says what a handle looks like there."""
    try:
        return _parse(str(text) if text is not None else "", bot_handle.lower(), (author or "").lower(),
                      reply_to_bot, max_handles, network)
    except Exception as e:  # parsing must never take the bot down; an odd text is simply not understood
        return Command("invalid", reason=f"could not read this mention ({type(e).__name__})")


def _parse(text: str, bot: str, author: str, reply_to_bot: bool, max_handles: int, network: str) -> Command:
    if author == bot:
        return Command("ignore", reason="the bot's own post")
    # ".@bot" is X's habit for a mention that is not a reply; the dot is not part of the handle.
    tokens = [(t.rstrip(TRAILING_PUNCT) or t).removeprefix(".") for t in TOKEN_RE.findall(URL_RE.sub(" ", text))]
    # X also takes the full-width "＠" for a mention.
    lowered_tokens = ["@" + t[1:].lower() if t.startswith("＠") else t.lower() for t in tokens]
    if f"@{bot}" not in lowered_tokens:
        return Command("ignore", reason="the bot is not addressed")
    at = lowered_tokens.index(f"@{bot}")
    # A mention in passing ("I love what @bot does") is not a request; one that opens with @mentions is.
    in_passing = any(not t.startswith(("@", "＠")) for t in tokens[:at])
    # The run of @mentions around the bot's handle names people; X adds such a run to replies by itself.
    start = at
    while start > 0 and tokens[start - 1].startswith(("@", "＠")):
        start -= 1
    end = at + 1
    while end < len(tokens) and tokens[end].startswith(("@", "＠")):
        end += 1
    lead_handles = [t.lstrip("@＠").lower() for t in tokens[start:end] if t.lstrip("@＠").lower() != bot]
    words = tokens[end:]
    lowered = [w.lower() for w in words]

    keyword = lowered[0] if lowered else ""
    if keyword in ("opt", "opt-out", "optout", "opt-in", "optin"):
        direction = keyword[3:].strip("-") or (lowered[1] if len(lowered) > 1 else "")
        if direction == "out":
            return Command("opt_out", (author,) if author else ())
        if direction == "in":
            return Command("opt_in", (author,) if author else ())
        return Command("invalid", reason="say \"opt out\" or \"opt in\"")
    if keyword in ("help", "?"):
        return Command("help")
    if keyword == "me" or lowered[:2] == ["train", "me"]:
        if not author:
            return Command("invalid", reason="cannot tell who is asking")
        return Command("train", (author,))
    if keyword == "train":
        return _train(words[1:], lead_handles, max_handles, network)
    if reply_to_bot or in_passing:
        return Command("ignore", reason="no command")
    if lead_handles and not words:
        return _train([], lead_handles, max_handles, network)
    if lead_handles or any(w.startswith("@") for w in words):
        return _train(words, lead_handles, max_handles, network)
    return Command("invalid", reason="no command")


def _train(words: list[str], lead_handles: list[str], max_handles: int, network: str) -> Command:
    candidates = [w for w in words if w.startswith(("@", "＠"))]
    if not candidates and not lead_handles:
        # "train alice bob": bare words after "train" are taken as handles.
        candidates = words
    handles: list[str] = []
    for raw in [*lead_handles, *candidates]:
        try:
            handle = normalize_handle(raw.lstrip("＠"), network)
        except HandleError:
            # The text is not repeated back: a reply that echoed it would let anyone make the bot say
            # anything, or ping anyone.
            return Command("invalid", reason="one of the names is not a handle" + HANDLE_RULES[network])
        if handle not in handles:
            handles.append(handle)
    if not handles:
        return Command("invalid", reason="name 1 to 3 accounts")
    if len(handles) > max_handles:
        return Command("invalid", reason=f"at most {max_handles} accounts in one model")
    return Command("train", tuple(handles))
