"""Who may be modelled, and what the bot says: a pure decision for each parsed mention.

    >>> from bot.requests.policy import decide
    >>> new = decide(mention, settings, store)        # a NewRequest: queued, rejected, replying or ignored
    >>> new.state, new.reply_text

Modes (`[bot] mode` in config.toml):
- "public": any public account that has not opted out (the original bot's behaviour);
- "consented": the requester's own account, or accounts that have said "opt in";
- "self": only the requester's own account.
Protected and opted-out accounts are never modelled, in any mode.

A person is an account id (an X user id, a Bluesky DID), never a handle: handles change and pass to other
people. A mention names its author by id, so the blocklist, quotas and the author's own consent are decided
here on the id. The people a request names are only handles until the network is asked who they are now:
`check_accounts` decides on the accounts themselves once the bot has looked them up, before anything is
downloaded or reused.
"""

from __future__ import annotations

from datetime import datetime

from bot.requests import replies
from bot.common.config import Settings
from bot.common.errors import HandleError, UserError
from bot.requests.grammar import parse_mention
from bot.common.handles import model_name, normalize_handle
from bot.requests.store import NewRequest, Request, Store

DAY = 86400.0


class Refusal(UserError):
    """A request that may not go on, found once its people were looked up: the reply says why."""

    def __init__(self, reason: str, reply: str):
        super().__init__(reason)
        self.reply = reply


def check_accounts(r: Request, accounts: dict[str, str], settings: Settings, store: Store) -> None:
    """Decide again, on the accounts the handles of `r` name now (handle -> account id): raise `Refusal`
    for an account that opted out, or one the mode does not allow. Pure, like `decide`."""
    network = r.network
    opted_out = [h for h, account in accounts.items() if store.consent(network, account, h) == "out"]
    if opted_out:
        raise Refusal("opted out", replies.failure("opted_out", opted_out))
    others = [h for h, account in accounts.items() if not (r.requester_id and account == r.requester_id)]
    if settings.bot.mode == "self" and others:
        raise Refusal("mode self", replies.SELF_ONLY)
    if settings.bot.mode == "consented":
        missing = [h for h in others if store.consent(network, accounts[h], h) != "in"]
        if missing:
            raise Refusal("no consent", replies.failure("no_consent", missing))


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
    requester_id = str(getattr(mention, "author_id", "") or "") or None
    if store.is_blocked(network, requester_id, requester, settings.bot.blocklist):
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
    # Consents are the accounts' own, decided by `check_accounts` once the handles are looked up (a name last
    # seen on one account may be someone else's by now). Only a consent given before ids were kept, whose
    # name has not been seen since, is known by name alone.
    opted_out = [h for h in handles if store.consent(network, None, h) == "out"]
    if opted_out:
        return reject("opted out", replies.failure("opted_out", opted_out))
    if settings.bot.mode == "self" and handles != (requester,):
        return reject("mode self", replies.SELF_ONLY)
    quota = settings.bot.quota_per_day
    if quota and store.requests_since(requester_id, requester, store.clock() - DAY) >= quota:
        return reject("quota", replies.failure("quota", detail=str(quota)))

    try:
        repo = f"{settings.hub.organization}/{model_name(handles)}"
    except HandleError as e:  # handles too long, together, for one repo name
        return reject("name too long", replies.failure("unreadable", detail=str(e).split(" (")[0]))
    if store.queue_length() >= settings.bot.max_queue:
        return reject("queue full", replies.QUEUE_FULL)
    # A recent model of the same people is reused once their accounts are known (the bot's queued step).
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
