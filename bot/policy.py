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

from bot.config import Settings
from bot.grammar import HELP_TEXT, Command, parse_mention
from bot.store import NewRequest, Store

DAY = 86400.0


def decide(mention, settings: Settings, store: Store, bot_user_id: str | None = None) -> NewRequest:
    """What to do with one mention. Never raises for anything the mention says."""
    requester = (getattr(mention, "author_username", "") or "").lower()
    reply_to_bot = bool(bot_user_id) and str(getattr(mention, "in_reply_to_user_id", "") or "") == str(bot_user_id)
    command = parse_mention(mention.text, settings.bot.handle, requester, reply_to_bot, settings.data.max_handles)
    base = dict(mention_id=str(mention.id), requester=requester or "?", text=str(mention.text)[:2000],
                kind=command.kind, handles=command.handles, requester_id=getattr(mention, "author_id", None),
                mention_created_at=getattr(mention, "created_at", None))

    def ignore(reason: str) -> NewRequest:
        return NewRequest(**base, state="ignored", reason=reason)

    def reject(reason: str, reply: str) -> NewRequest:
        return NewRequest(**base, state="rejected", reason=reason, reply_text=reply)

    if command.kind == "ignore":
        return ignore(command.reason)
    age = _age_seconds(getattr(mention, "created_at", None), store.clock())
    if age is not None and age > settings.bot.max_mention_age_hours * 3600:
        return ignore("too old to answer")
    if requester in {h.lower() for h in settings.bot.blocklist}:
        return ignore("requester is on the blocklist")
    if command.kind == "help":
        return NewRequest(**base, state="replying", reply_text=HELP_TEXT)
    if command.kind == "invalid":
        return reject(command.reason, f"Sorry, I could not read that: {command.reason}. {HELP_TEXT}")
    if command.kind == "opt_in":
        store.set_consent(requester, "in")
        return NewRequest(**base, state="replying",
                          reply_text="Done: you have opted in, so people can ask me for a model of your posts. "
                                     "Reply \"opt out\" at any time to undo it and delete those models.")
    if command.kind == "opt_out":
        # Recorded now, so no request after this one can model the person; the repos are deleted by the worker.
        store.set_consent(requester, "out")
        return NewRequest(**base, state="queued", reason="delete models on request")

    handles = command.handles
    opted_out = [h for h in handles if store.consent(h) == "out"]
    if opted_out:
        return reject("opted out", f"Sorry, {_names(opted_out)} opted out of being modelled.")
    if settings.bot.mode == "self" and handles != (requester,):
        return reject("mode self", "Sorry, I only make models of your own posts: reply \"me\".")
    if settings.bot.mode == "consented":
        missing = [h for h in handles if h != requester and store.consent(h) != "in"]
        if missing:
            return reject("no consent", f"Sorry, I only model people who agreed to it: {_names(missing)} can "
                                        "mention me with \"opt in\" to allow it.")
    quota = settings.bot.quota_per_day
    if quota and store.requests_since(requester, store.clock() - DAY) >= quota:
        return reject("quota", f"Sorry, you have reached today's limit of {quota} models. Try again tomorrow.")

    repo = f"{settings.hub.organization}/{'-'.join(sorted(handles))}"
    reused = store.recent_publication(repo, settings.bot.reuse_days * DAY)
    if reused:
        url, sample = reused
        return NewRequest(**{**base, "repo": repo}, state="replying", model_url=url, sample=sample,
                          reason="reused a recent model", reply_text=success_reply(url, sample))
    if store.queue_length() >= settings.bot.max_queue:
        return reject("queue full", "Sorry, I am too busy right now. Please ask again in a few hours.")
    return NewRequest(**{**base, "repo": repo}, state="queued")


def _age_seconds(created_at: str | None, now: float) -> float | None:
    """Seconds since an X timestamp ('2026-11-22T10:00:00.000Z'); None when there is none to read."""
    if not created_at:
        return None
    try:
        return now - datetime.fromisoformat(created_at.replace("Z", "+00:00")).timestamp()
    except (TypeError, ValueError):
        return None


def _names(handles) -> str:
    # Names without "@", so a reply never pings the people it talks about.
    names = list(handles)
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def success_reply(model_url: str, sample: str | None) -> str:
    text = f"Your model is ready: {model_url}"
    if sample:
        text += f"\n\n“{sample}”"
    return text


FAILURE_REPLIES = {
    "unknown": "Sorry, I could not find the account {names}.",
    "suspended": "Sorry, the account {names} is suspended.",
    "protected": "Sorry, {names} has protected posts, so I cannot use them.",
    "too_few": "Sorry, there are too few posts to learn from ({detail}).",
    "opted_out": "Sorry, {names} opted out of being modelled.",
    "failed": "Sorry, something went wrong and I could not make this model ({detail}). Please ask again later.",
}


def failure_reply(kind: str, handles=(), detail: str = "") -> str:
    return FAILURE_REPLIES.get(kind, FAILURE_REPLIES["failed"]).format(names=_names(handles) if handles else "",
                                                                       detail=detail)
