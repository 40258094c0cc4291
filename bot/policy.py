"""Who may be modelled, and what the bot says: a pure decision for each parsed mention.

    >>> from bot.policy import decide
    >>> new = decide(mention, settings, store)        # a NewRequest: queued, rejected, replying or ignored
    >>> new.state, new.reply_text

Modes (`[bot] mode` in config.toml):
- "public": any public account that has not opted out (the original bot's behaviour);
- "consented": the requester's own account, or accounts that have said "opt in";
- "self": only the requester's own account.
Protected and opted-out accounts are never modelled, in any mode.
"""

from __future__ import annotations

from datetime import datetime

from bot import replies
from bot.config import Settings
from bot.errors import HandleError
from bot.grammar import parse_mention
from bot.mentions import model_name, normalize_handle
from bot.store import NewRequest, Store

DAY = 86400.0


def decide(mention, settings: Settings, store: Store, bot_user_id: str | None = None, network: str = "x",
           bot_handle: str | None = None) -> NewRequest:
    """What to do with one mention from `network` ("x", "bluesky" or "local", which reads like X), where
    the bot is `bot_handle` (default: `[bot] handle`). Never raises for anything the mention says.

    Pure: it reads the store (consents, quotas, recent models, the queue) and changes nothing. A change
    of consent ("opt in", "opt out") is part of the returned request (`consent`), and the store applies it
    in the transaction that stores the request, so a later mention in the same batch already sees it.
    """
    requester = (getattr(mention, "author_username", "") or "").lower()
    reply_to_bot = bool(bot_user_id) and str(getattr(mention, "in_reply_to_user_id", "") or "") == str(bot_user_id)
    handles_of = "bluesky" if network == "bluesky" else "x"
    command = parse_mention(mention.text, bot_handle or settings.bot.handle, requester, reply_to_bot,
                            settings.data.max_handles, handles_of)
    base = dict(mention_id=str(mention.id), requester=requester or "?", text=str(mention.text)[:2000],
                kind=command.kind, handles=command.handles, requester_id=getattr(mention, "author_id", None),
                mention_created_at=getattr(mention, "created_at", None), source=network)

    def ignore(reason: str) -> NewRequest:
        return NewRequest(**base, state="ignored", reason=reason)

    def reject(reason: str, reply: str) -> NewRequest:
        return NewRequest(**base, state="rejected", reason=reason, reply_text=reply)

    if command.kind == "ignore":
        return ignore(command.reason)
    if not _is_handle(requester, handles_of):  # a source that gave no usable author: nobody to answer or model
        return ignore("the author is not a handle")
    age = _age_seconds(getattr(mention, "created_at", None), store.clock())
    if age is not None and age > settings.bot.max_mention_age_hours * 3600:
        return ignore("too old to answer")
    if requester in {h.lower() for h in settings.bot.blocklist}:
        return ignore("requester is on the blocklist")
    if command.kind == "help":
        return NewRequest(**base, state="replying", reply_text=replies.HELP)
    if command.kind == "invalid":
        return reject(command.reason, replies.failure("unreadable", detail=command.reason))
    if command.kind == "opt_in":
        return NewRequest(**base, state="replying", reply_text=replies.OPTED_IN, consent="in")
    if command.kind == "opt_out":
        # Recorded with the request, so no request after this one can model the person; the worker deletes the repos.
        return NewRequest(**base, state="queued", reason="delete models on request", consent="out")

    handles = command.handles
    opted_out = [h for h in handles if store.consent(h) == "out"]
    if opted_out:
        return reject("opted out", replies.failure("opted_out", opted_out))
    if settings.bot.mode == "self" and handles != (requester,):
        return reject("mode self", replies.SELF_ONLY)
    if settings.bot.mode == "consented":
        missing = [h for h in handles if h != requester and store.consent(h) != "in"]
        if missing:
            return reject("no consent", replies.failure("no_consent", missing))
    quota = settings.bot.quota_per_day
    if quota and store.requests_since(requester, store.clock() - DAY) >= quota:
        return reject("quota", replies.failure("quota", detail=str(quota)))

    try:
        repo = f"{settings.hub.organization}/{model_name(handles)}"
    except HandleError as e:  # handles too long, together, for one repo name
        return reject("name too long", replies.failure("unreadable", detail=str(e).split(" (")[0]))
    reused = store.recent_publication(repo, settings.bot.reuse_days * DAY)
    if reused:
        url, sample = reused
        return NewRequest(**{**base, "repo": repo}, state="replying", model_url=url, sample=sample,
                          reason="reused a recent model",
                          reply_text=replies.ready(url, sample, repo, link=settings.bot.reply_link))
    if store.queue_length() >= settings.bot.max_queue:
        return reject("queue full", replies.QUEUE_FULL)
    return NewRequest(**{**base, "repo": repo}, state="queued")


def _is_handle(author: str, network: str) -> bool:
    """Whether a source gave the author as a handle of its network: lowercased, no "@"."""
    try:
        return normalize_handle(author, network) == author
    except HandleError:
        return False


def _age_seconds(created_at: str | None, now: float) -> float | None:
    """Seconds since an X timestamp ('2026-11-22T10:00:00.000Z'); None when there is none to read."""
    if not created_at:
        return None
    try:
        return now - datetime.fromisoformat(created_at.replace("Z", "+00:00")).timestamp()
    except (TypeError, ValueError):
        return None
