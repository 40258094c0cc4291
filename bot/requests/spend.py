"""What the bot spends on the networks it reads, in US dollars, from the usage its sources count.

    >>> from bot.sources.adapters import Usage
    >>> priced(Usage(posts_read=3200, users_read=1, posts_created_with_link=1), XPrices())
    [('posts read', 3200, 16.0), ('users read', 1, 0.01), ('posts created with a link', 1, 0.2)]

X bills every post and account read, and a post with a link far more than one without (`[x.prices]`);
Bluesky charges nothing. The store keeps one line per item per step of a request (`Store.add_spend`),
so `huggingtweets status` shows what each request cost and what each day cost.
"""

from __future__ import annotations

from bot.sources.adapters import Usage
from bot.common.config import XPrices

FREE = XPrices(post_read=0, user_read=0, post_created=0, post_created_with_link=0)


def priced(usage: Usage, prices: XPrices) -> list[tuple[str, int, float]]:
    """(item, units, dollars) for each kind of use that happened."""
    items = (("posts read", usage.posts_read, prices.post_read),
             ("users read", usage.users_read, prices.user_read),
             ("posts created", usage.posts_created, prices.post_created),
             ("posts created with a link", usage.posts_created_with_link, prices.post_created_with_link))
    return [(item, units, round(units * price, 6)) for item, units, price in items if units]


def download_estimate(handles: int, posts_per_user: int, prices: XPrices) -> float:
    """The most a download of `handles` people can cost: each account looked up and read in full."""
    return handles * (prices.user_read + posts_per_user * prices.post_read)
