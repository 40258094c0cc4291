"""What reading from Bluesky costs on our side: the atproto SDK's import, a login, and a person's posts
read page by page through the real client (its models parse every answer), against the loopback XRPC
server of the tests, so that the network itself costs next to nothing.

    python benchmarks/bluesky_read.py              # 3,200 posts; target: under 50 ms of our time a page
    python benchmarks/bluesky_read.py --posts 10000 --json

On Bluesky itself each page is a round trip (a few hundred milliseconds): what this measures is what
the bot adds to it. The loopback server's own time (building and encoding the answers) is included,
so the figure is an upper bound of the client's.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "fakes")]

from bot.sources.bluesky import PAGE_SIZE, BlueskyClient  # noqa: E402
from bot.common.config import BlueskySettings, Settings  # noqa: E402
from fake_bsky import FakeBluesky  # noqa: E402

TARGET_MS_PER_PAGE = 50.0
HANDLE = "reader.bsky.social"


def import_seconds() -> float:
    """The SDK's import in a fresh interpreter (it loads the models of every lexicon)."""
    code = "import time; t = time.perf_counter(); import atproto_client; print(time.perf_counter() - t)"
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posts", type=int, default=3200)
    parser.add_argument("--repeat", type=int, default=3, help="downloads to time; the median is shown")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    imported = import_seconds()
    with FakeBluesky(default_users=False) as fake, tempfile.TemporaryDirectory() as tmp:
        fake.add_user(HANDLE, args.posts, japanese_share=0.2)
        settings = Settings(bluesky=BlueskySettings(cache_dir=Path(tmp), max_posts_per_user=args.posts))
        sky = BlueskyClient.from_settings(settings, environ=fake.env())
        start = time.perf_counter()
        sky.bot_user_id
        login = time.perf_counter() - start
        profile = sky.get_profile(HANDLE)
        times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            posts = sky.download_posts(profile)
            times.append(time.perf_counter() - start)
        sky.close()
    elapsed = sorted(times)[len(times) // 2]
    pages = -(-len(posts) // PAGE_SIZE)
    result = {"posts": len(posts), "pages": pages, "import_seconds": round(imported, 3),
              "login_seconds": round(login, 3), "download_seconds": round(elapsed, 3),
              "ms_per_page": round(1000 * elapsed / pages, 1), "posts_per_second": round(len(posts) / elapsed),
              "target_ms_per_page": TARGET_MS_PER_PAGE, "runs": [round(t, 3) for t in times]}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"import atproto_client: {imported:.2f} s; login: {1000 * login:.0f} ms")
    print(f"{len(posts):,} posts in {pages} pages: {elapsed:.2f} s (median of {len(times)}), "
          f"{1000 * elapsed / pages:.1f} ms a page, {len(posts) / elapsed:,.0f} posts/s "
          f"(target: under {TARGET_MS_PER_PAGE:.0f} ms a page)")


if __name__ == "__main__":
    main()
