"""How fast the bot takes in mentions: parse, decide and store, in the batches a poll delivers.

    python benchmarks/ingest_speed.py            # 10,000 mentions; target: at least 2,000 per second
    python benchmarks/ingest_speed.py --n 50000 --json

Each batch of 100 (one page of X's mentions) is one transaction, as in the bot, on a real SQLite file.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bot.common.config import parse_settings
from bot.requests.policy import decide
from bot.requests.store import Store

TARGET_PER_SECOND = 2000


@dataclass
class Mention:
    id: str
    text: str
    author_username: str
    in_reply_to_user_id: str | None = None


def mentions(n: int, seed: int = 0) -> list[Mention]:
    rng = random.Random(seed)
    forms = ["@huggingtweets train @{a}", "@huggingtweets @{a} @{b}", "@huggingtweets me", "@huggingtweets help",
             "@huggingtweets train @{a} @{b} @{c} @{d}", "@huggingtweets opt out", "@huggingtweets thanks!",
             "@huggingtweets train @{a} please 🙏", "@huggingtweets train @bad!handle"]
    names = [f"user{i}" for i in range(2000)]
    return [Mention(str(10**15 + i), rng.choice(forms).format(a=rng.choice(names), b=rng.choice(names),
                                                               c=rng.choice(names), d=rng.choice(names)),
                    rng.choice(names)) for i in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    settings = parse_settings({"bot": {"max_queue": 10**6, "quota_per_day": 5}})
    batch = mentions(args.n)
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "bot.sqlite3")
        start = time.perf_counter()
        for i in range(0, len(batch), 100):
            page = batch[i:i + 100]
            store.ingest(page, lambda m: decide(m, settings, store, "42"), cursor_value=page[-1].id)
        elapsed = time.perf_counter() - start
        states = {}
        for r in store.requests():
            states[r.state] = states.get(r.state, 0) + 1
    rate = args.n / elapsed
    result = {"mentions": args.n, "seconds": round(elapsed, 3), "per_second": round(rate),
              "target_per_second": TARGET_PER_SECOND, "met": rate >= TARGET_PER_SECOND, "states": states}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.n:,} mentions parsed, decided and stored in {elapsed:.2f} s: {rate:,.0f} per second "
              f"(target {TARGET_PER_SECOND:,}: {'met' if result['met'] else 'NOT met'})")
        print("outcomes: " + ", ".join(f"{k} {v:,}" for k, v in sorted(states.items())))


if __name__ == "__main__":
    main()
