"""Synthetic posts shaped like real ones, for the bundled sample archive, the tests and the benchmarks.

    >>> from bot.data.synthetic import synthetic_tweets, write_export
    >>> tweets = synthetic_tweets(3200, seed=1)      # X API v2 tweet objects
    >>> write_export("alice.zip", tweets, username="alice", display_name="Alice")

The text is made up from phrase lists; nothing here comes from a real account. The mix follows what
a timeline looks like: mostly short-to-medium posts, some replies and quotes, a few retweets, links,
emoji, HTML entities, the odd long post and a share of very short ones.
"""

from __future__ import annotations

import json
import random
import zipfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

SUBJECTS = ["my kettle", "the morning", "this city", "our cat", "the garden", "a good book", "the train",
            "my neighbour", "the rain", "coffee", "the old radio", "my bike", "the bakery downstairs",
            "the sea", "a quiet desk", "the moon", "tomorrow", "the library", "my plants", "the harbour"]
VERBS = ["is", "feels", "looks", "sounds", "seems", "was", "keeps being", "might be", "has always been"]
ADJECTIVES = ["wonderful", "strange", "loud", "soft", "too early", "full of light", "very honest",
              "a little dramatic", "perfect", "unreasonably cosy", "brave", "sleepy", "electric", "golden"]
TAILS = ["today", "again", "and I love it", "if you ask me", "for some reason", "right now",
         "every single time", "this week", "since Tuesday", "and nobody talks about it", "honestly"]
OPENERS = ["Hot take:", "Reminder:", "Small joy:", "Today I learned that", "Confession:", "Dream log:",
           "Note to self:", "Unpopular opinion:", "", "", "", ""]
DREAMS = ["My dream is to open a tiny tea shop by the sea", "My dream is a week with no alarms",
          "My dream is to learn every bird song in the park", "My dream is a kitchen full of plants",
          "My dream is to cycle across the whole country", "My dream is to write one good song"]
EMOJI = ["☕", "🌧️", "✨", "🚲", "🌙", "🍞", "📚", "🐈", "🌊", "😅", "🙃", "💛"]
SHORT = ["lol", "same", "yes!!", "ok", "😂", "hmm", "good morning", "nope", "wow"]
# Japanese sentences are put together from parts, like the English ones, so that a mostly Japanese
# timeline is not mostly duplicates.
JA_SUBJECTS = ["今日の空", "朝のコーヒー", "うちの猫", "新しい本", "雨の音", "駅前のパン屋", "私の自転車", "図書館",
               "夜の海", "古いラジオ", "窓辺の植物", "月曜日"]
JA_PREDICATES = ["は本当にきれいです", "がとても静かでした", "はいつもより少し眠そう", "が大好きです",
                 "は不思議なくらい明るい", "を毎日楽しみにしている", "はちょっと大げさだと思う", "がやさしい"]
JA_ENDINGS = ["ね。", "よ。", "な気がする。", "。", "。", "！"]
FRIENDS = ["tea_ghost", "bikebird", "lunar_mo", "quiet_desk", "harbour_fox"]


def _sentence(rng: random.Random) -> str:
    s = f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(ADJECTIVES)} {rng.choice(TAILS)}"
    opener = rng.choice(OPENERS)
    return f"{opener} {s}".strip() if opener else s[0].upper() + s[1:]


def synthetic_text(rng: random.Random, japanese_share: float = 0.0) -> tuple[str, str, str]:
    """One post: (text, kind, lang); kind is 'post', 'reply', 'quote', 'retweet' or 'long'."""
    roll = rng.random()
    if rng.random() < japanese_share:
        text = "".join(f"{rng.choice(JA_SUBJECTS)}{rng.choice(JA_PREDICATES)}{rng.choice(JA_ENDINGS)}"
                       for _ in range(rng.randint(1, 2)))
        return text, "post", "ja"
    if roll < 0.06:
        return f"RT @{rng.choice(FRIENDS)}: {_sentence(rng)}", "retweet", "en"
    if roll < 0.12:
        return rng.choice(SHORT), "post", "en" if rng.random() < 0.7 else "und"
    if roll < 0.14:
        return " ".join(_sentence(rng) + "." for _ in range(rng.randint(8, 14))), "long", "en"
    parts = [_sentence(rng)]
    if rng.random() < 0.3:
        parts.append(_sentence(rng).lower())
    if rng.random() < 0.1:
        parts = [rng.choice(DREAMS)]
    text = ". ".join(parts)
    if rng.random() < 0.25:
        text += " " + "".join(rng.choices(EMOJI, k=rng.randint(1, 3)))
    if rng.random() < 0.08:
        text = text.replace(" and ", " &amp; ", 1)
    if rng.random() < 0.05:
        text += " &lt;3"
    if rng.random() < 0.05:
        text += f" #{rng.choice(['teatime', 'mondays', 'dreams', 'cycling'])}"
    if rng.random() < 0.12:
        text += f" https://t.co/{rng.randrange(16**10):010x}"
    if roll < 0.30:
        friends = rng.sample(FRIENDS, rng.randint(1, 2))
        return " ".join(f"@{f}" for f in friends) + " " + text, "reply", "en"
    if roll < 0.35:
        return text + f" https://t.co/{rng.randrange(16**10):010x}", "quote", "en"
    return text, "post", "en"


def synthetic_tweets(n: int, seed: int = 0, japanese_share: float = 0.0, start_id: int = 1_600_000_000_000_000_000,
                     author_id: str = "1000") -> list[dict]:
    """`n` X API v2 tweet objects, newest first, as the API returns them."""
    rng = random.Random(seed)
    start = datetime(2026, 11, 1, tzinfo=timezone.utc)
    tweets = []
    for i in range(n):
        text, kind, lang = synthetic_text(rng, japanese_share)
        tid = str(start_id + n - i)
        t: dict = {"id": tid, "text": text, "edit_history_tweet_ids": [tid], "author_id": author_id,
                   "created_at": (start - timedelta(minutes=37 * i)).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                   "lang": lang}
        if kind == "long":
            t["note_tweet"] = {"text": text}
            t["text"] = text[:270] + "…"
        elif kind in ("reply", "quote", "retweet"):
            ref = {"reply": "replied_to", "quote": "quoted", "retweet": "retweeted"}[kind]
            t["referenced_tweets"] = [{"type": ref, "id": str(start_id - i)}]
        tweets.append(t)
    return tweets


def v2_to_export(t: dict) -> dict:
    """The data-export form of a v2 tweet object (`{"tweet": {...}}` with `full_text`)."""
    created = datetime.strptime(t["created_at"], "%Y-%m-%dT%H:%M:%S.000Z")
    out = {"id_str": t["id"], "id": t["id"], "full_text": t.get("note_tweet", {}).get("text", t["text"]),
           "lang": t.get("lang", "en"), "created_at": created.strftime("%a %b %d %H:%M:%S +0000 %Y"),
           "retweeted": False, "favorite_count": "0", "retweet_count": "0", "entities": {"hashtags": [], "urls": []}}
    for ref in t.get("referenced_tweets", []):
        if ref["type"] == "replied_to":
            out["in_reply_to_status_id_str"] = ref["id"]
            out["in_reply_to_status_id"] = ref["id"]
    return {"tweet": out}


def export_files(tweets: list[dict], username: str, display_name: str, avatar_url: str | None = None,
                 part_size: int | None = None) -> dict[str, bytes]:
    """The files of an X data export (`data/tweets.js`, `data/account.js`, `data/profile.js`)."""
    def js(name: str, part: int, items: list) -> bytes:
        return f"window.YTD.{name}.part{part} = ".encode() + json.dumps(items, ensure_ascii=False, indent=2).encode()

    exported = [v2_to_export(t) for t in tweets]
    chunks = [exported[i:i + part_size] for i in range(0, len(exported), part_size)] if part_size else [exported]
    files = {}
    for part, chunk in enumerate(chunks or [[]]):
        files["data/tweets.js" if part == 0 else f"data/tweets-part{part}.js"] = js("tweets", part, chunk)
    files["data/account.js"] = js("account", 0, [{"account": {
        "email": "", "createdVia": "web", "username": username, "accountId": "1000",
        "createdAt": "2012-01-01T00:00:00.000Z", "accountDisplayName": display_name}}])
    files["data/profile.js"] = js("profile", 0, [{"profile": {
        "description": {"bio": "", "website": "", "location": ""},
        # No made-up picture address: a model card would show it as a broken image. "" is no picture.
        "avatarMediaUrl": avatar_url or ""}}])
    return files


def write_export(path: str | Path, tweets: list[dict], username: str, display_name: str, **kw) -> Path:
    """Write an export as a `.zip` (when `path` ends so) or as an extracted folder."""
    path = Path(path)
    files = export_files(tweets, username, display_name, **kw)
    if path.suffix == ".zip":
        path.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, data in files.items():
                # A fixed timestamp keeps the bundled sample byte-for-byte reproducible.
                info = zipfile.ZipInfo(name, date_time=(2026, 11, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, data)
    else:
        for name, data in files.items():
            (path / name).parent.mkdir(parents=True, exist_ok=True)
            (path / name).write_bytes(data)
    return path


def write_jsonl(path: str | Path, tweets: list[dict], user: dict | None = None) -> Path:
    """Write tweets as JSONL (and the account beside it), as `huggingtweets download` does."""
    from bot.data.archive import user_sidecar

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for t in tweets:
            f.write(json.dumps(t, ensure_ascii=False) + "\n")
    if user:
        user_sidecar(path).write_text(json.dumps(user, ensure_ascii=False), encoding="utf-8")
    return path


if __name__ == "__main__":  # rebuilds the bundled sample: python -m bot.data.synthetic
    out = Path(__file__).parent / "samples" / "sample_archive.zip"
    write_export(out, synthetic_tweets(420, seed=2026), username="dreamy_kettle", display_name="Dreamy Kettle ☕")
    print(out)
