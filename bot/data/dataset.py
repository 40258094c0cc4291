"""From posts to a training set: cleaning, per-user counts, balancing and the validation split.

    >>> from bot.data.archive import open_archive
    >>> from bot.data.dataset import build_dataset
    >>> ds = build_dataset({"dreamy_kettle": open_archive("bot/data/samples/sample_archive.zip")})
    >>> ds.name, ds.users[0].counts.kept > 100
    ('dreamy_kettle', True)
    >>> folder = ds.save("out/dreamy_kettle/data")       # train.jsonl, validation.jsonl, stats.json

Everything here is a pure function of the posts, the settings and the seed.
"""

from __future__ import annotations

import html
import json
import random
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import regex

from bot.data.archive import Archive, Post
from bot.common.config import DataSettings
from bot.common.errors import ArchiveError, NotEnoughDataError, UsageError
from bot.common.files import write_atomically
from bot.common.handles import model_name, normalize_handle
from bot.data.text import URL_RE

HANDLE_CHARS = "A-Za-z0-9_"
# The run of @mentions that opens a reply ("@bob @carol thanks!" -> "thanks!").
LEADING_MENTIONS_RE = re.compile(rf"^(?:\s*[@＠][{HANDLE_CHARS}]{{1,15}}(?![{HANDLE_CHARS}]))+[\s:,]*")
# Handles are ASCII; hashtags may be in any script (#日本).
MENTION_OR_TAG_RE = regex.compile(rf"[@＠][{HANDLE_CHARS}]+|[#＃][\p{{L}}\p{{M}}\p{{N}}_]+")
SPACES_RE = re.compile(r"[^\S\n]+")
NEWLINES_RE = re.compile(r"\s*\n\s*")
# One segment between two Unicode default word boundaries (UAX #29). CJK text splits into one word
# per character, so Japanese or Chinese posts are not counted as one long "word" the way splitting
# on spaces would; a segment counts as a word when it holds a letter or a digit.
WORD_SEGMENT_RE = regex.compile(r"(?w)\b.+?\b", regex.DOTALL)
HAS_LETTER_RE = regex.compile(r"[\p{L}\p{N}]")
# X's codes for "no language": undetermined, no linguistic content, media-only, hashtags-only, ...
NOT_A_LANGUAGE = {"und", "zxx", "qme", "qht", "qam", "qct", "qst", None, ""}


# The counts shown per person (in the card's table, the commit description and the CLI), in order.
COUNT_ROWS = ("downloaded", "retweets", "short", "duplicates", "kept")


@dataclass
class UserCounts:
    downloaded: int = 0
    retweets: int = 0
    short: int = 0
    duplicates: int = 0
    kept: int = 0
    language: str | None = None


@dataclass
class UserData:
    handle: str  # lowercased, as in the model name
    username: str  # as the archive spells it (or the handle)
    display_name: str
    avatar_url: str | None
    counts: UserCounts
    train: list[str] = field(default_factory=list, repr=False)
    # The network's id of the account (an X user id, a Bluesky DID) when the archive names it: the person,
    # whatever the handle; recorded in run.json so that an opt-out finds the model under any name.
    account_id: str | None = None
    validation: list[str] = field(default_factory=list, repr=False)


@dataclass
class Dataset:
    name: str
    users: list[UserData]
    train: list[str] = field(repr=False)  # balanced across users and shuffled
    validation: list[str] = field(repr=False)
    seed: int = 42

    @property
    def distinct_train_posts(self) -> int:
        """The posts trained on, each counted once (what "trained on N posts" means everywhere): in a model
        of several people the balancing repeats the smaller accounts' posts, so `len(train)` counts more."""
        return len(set(self.train))

    @property
    def languages(self) -> list[str]:
        """The users' languages, most common first, without repeats (for the model card)."""
        return list(dict.fromkeys(u.counts.language for u in self.users if u.counts.language))

    def counts_json(self) -> dict:
        return {"name": self.name, "users": {u.handle: asdict(u.counts) for u in self.users}}

    def save(self, folder: str | Path) -> Path:
        """Write `train.jsonl`, `validation.jsonl` and `stats.json` (last) into `folder`, each atomically.

        `Dataset.load(folder)` gives back exactly these posts, in this order.
        """
        folder = Path(folder)
        write_atomically(folder / "train.jsonl", _jsonl(self.train))
        write_atomically(folder / "validation.jsonl", _jsonl(self.validation))
        stats = self.counts_json() | {
            "seed": self.seed,
            "train_posts": len(self.train),
            "validation_posts": len(self.validation),
            "accounts": {u.handle: {"username": u.username, "display_name": u.display_name,
                                    "avatar_url": u.avatar_url, "account_id": u.account_id} for u in self.users},
        }
        write_atomically(folder / "stats.json", json.dumps(stats, ensure_ascii=False, indent=2) + "\n")
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> Dataset:
        """A dataset written by `save`; a folder that is not one is a one-line error."""
        folder = Path(folder)
        try:
            stats = json.loads((folder / "stats.json").read_text(encoding="utf-8"))
            users = [UserData(handle=h, counts=UserCounts(**c), **stats["accounts"][h])
                     for h, c in stats["users"].items()]
            return cls(name=stats["name"], users=users, train=_read_jsonl(folder / "train.jsonl"),
                       validation=_read_jsonl(folder / "validation.jsonl"), seed=stats["seed"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise UsageError(f"{folder}: not a dataset folder written by `huggingtweets dataset --out` "
                             f"({type(e).__name__}: {e})") from None


def _jsonl(texts: list[str]) -> str:
    return "".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts)


def _read_jsonl(path: Path) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f if line.strip()]


# --- cleaning -----------------------------------------------------------------------------------


def clean_text(post: Post, keep_newlines: bool = False) -> str:
    """The post's text as the model will see it: entities unescaped, links and the reply's opening
    @mentions removed, whitespace collapsed. @mentions and #hashtags inside the text stay."""
    text = html.unescape(post.text)
    text = URL_RE.sub(" ", text)
    if post.reply:
        text = LEADING_MENTIONS_RE.sub("", text)
    if keep_newlines:
        return NEWLINES_RE.sub("\n", SPACES_RE.sub(" ", text)).strip()
    return " ".join(text.split())


def count_words(text: str, stop_at: int | None = None) -> int:
    """Words by Unicode word segmentation (UAX #29), not counting @mentions or #hashtags.

    >>> count_words("今日は本当にいい天気ですね"), count_words("lol 😂"), count_words("@bob #tea time")
    (13, 1, 1)
    """
    text = MENTION_OR_TAG_RE.sub(" ", text)
    n = 0
    for segment in WORD_SEGMENT_RE.finditer(text):
        if HAS_LETTER_RE.search(segment.group()):
            n += 1
            if n == stop_at:
                break
    return n


def is_short(text: str, min_words: int = 3) -> bool:
    """Fewer than `min_words` words: "草", "lol", an emoji alone, or what is left of a bare link."""
    return count_words(text, stop_at=min_words) < min_words


def clean_posts(posts: Iterable[Post], settings: DataSettings = DataSettings()) -> tuple[UserCounts, list[str]]:
    """Count and filter one user's posts; returns the counts and the kept texts, in input order."""
    counts = UserCounts()
    kept: list[str] = []
    seen: set[str] = set()
    langs: Counter[str] = Counter()
    for post in posts:
        counts.downloaded += 1
        if post.retweet:
            counts.retweets += 1
            continue
        text = clean_text(post, settings.keep_newlines)
        if is_short(text, settings.min_words):
            counts.short += 1
            continue
        if text in seen:
            counts.duplicates += 1
            continue
        seen.add(text)
        kept.append(text)
        if post.lang not in NOT_A_LANGUAGE:
            langs[post.lang] += 1
    counts.kept = len(kept)
    counts.language = langs.most_common(1)[0][0] if langs else None
    return counts, kept


# --- splitting and balancing --------------------------------------------------------------------


def split_validation(texts: list[str], fraction: float, rng: random.Random) -> tuple[list[str], list[str]]:
    """A held-out share of one user's posts (at least one when there are two or more)."""
    if fraction <= 0 or len(texts) < 2:
        return list(texts), []
    n_val = max(1, round(len(texts) * fraction))
    order = list(range(len(texts)))
    rng.shuffle(order)
    val_idx = set(order[:n_val])
    train = [t for i, t in enumerate(texts) if i not in val_idx]
    val = [t for i, t in enumerate(texts) if i in val_idx]
    return train, val


def balance(per_user: list[list[str]], rng: random.Random) -> list[list[str]]:
    """Repeat smaller users' posts until each has about the largest user's character total,
    so each person weighs the same in a multi-user model."""
    totals = [sum(map(len, texts)) for texts in per_user]
    target = max(totals, default=0)
    balanced = []
    for texts, total in zip(per_user, totals):
        if not texts or total >= target:
            balanced.append(list(texts))
            continue
        out = list(texts) * (target // total)
        have = total * (target // total)
        extra = list(texts)
        rng.shuffle(extra)
        for t in extra:
            if have >= target:
                break
            out.append(t)
            have += len(t)
        balanced.append(out)
    return balanced


# --- the whole step -----------------------------------------------------------------------------


def pair_archives(handles: list[str], archives: list[Archive]) -> dict[str, Archive]:
    """Match archives to handles: by the account an archive names, else in the order given."""
    handles = [normalize_handle(h) for h in handles]
    if len(archives) != len(handles):
        raise UsageError(f"give one --archive per handle ({len(handles)} handles, {len(archives)} archives)")
    paired: dict[str, Archive] = {}
    unnamed: list[Archive] = []
    for archive in archives:
        owner = (archive.account.username or "").lower()
        if not owner:
            unnamed.append(archive)
        elif owner in paired:
            raise UsageError(f"two archives of @{owner}: {paired[owner].path} and {archive.path}")
        elif owner in handles:
            paired[owner] = archive
        else:
            wanted = ", ".join(f"@{h}" for h in handles)
            raise ArchiveError(f"{archive.path}: this archive is @{archive.account.username}'s, not {wanted}'s")
    for handle in handles:
        if handle not in paired:
            paired[handle] = unnamed.pop(0)
    return {h: paired[h] for h in handles}


def build_dataset(archives: Mapping[str, Archive], settings: DataSettings = DataSettings()) -> Dataset:
    """Clean each user's posts, hold out a validation share, balance the training posts across users.

    `archives` maps each handle to its archive (see `pair_archives`). Raises NotEnoughDataError when
    fewer than `settings.min_kept_posts` posts are kept in all.
    """
    if not archives:
        raise UsageError("give at least one handle")
    if len(archives) > settings.max_handles:
        raise UsageError(f"at most {settings.max_handles} handles in one model (got {len(archives)})")
    name = model_name(list(archives))
    users: list[UserData] = []
    for handle, archive in archives.items():
        handle = normalize_handle(handle)
        counts, kept = clean_posts(archive.posts(), settings)
        if counts.downloaded == 0:
            raise ArchiveError(f"{archive.path}: the archive holds no posts")
        # Seeded per user so adding a second user does not change the first user's split.
        train, val = split_validation(kept, settings.validation_fraction, random.Random(f"{settings.seed}:{handle}"))
        acc = archive.account
        users.append(UserData(handle=handle, username=acc.username or handle,
                              display_name=acc.display_name or acc.username or handle,
                              avatar_url=acc.avatar_url, counts=counts, train=train, validation=val,
                              account_id=acc.user_id))
    total_kept = sum(u.counts.kept for u in users)
    detail = "; ".join(f"@{u.handle}: {format_counts(u.counts)}" for u in users)
    if total_kept < settings.min_kept_posts:
        raise NotEnoughDataError(
            f"only {total_kept} posts left after cleaning, {settings.min_kept_posts} needed ({detail})")
    if empty := [u.handle for u in users if u.counts.kept == 0]:  # nothing to weigh the same as the others
        raise NotEnoughDataError(f"no posts of @{empty[0]} left after cleaning ({detail})")
    rng = random.Random(settings.seed)
    train = [t for texts in balance([u.train for u in users], rng) for t in texts]
    rng.shuffle(train)
    # Two people can post the same words: a text one user holds out must not be trained on as another's.
    in_train = set(train)
    validation = [t for u in users for t in u.validation if t not in in_train]
    return Dataset(name=name, users=users, train=train, validation=validation, seed=settings.seed)


def format_counts(c: UserCounts) -> str:
    return ", ".join(f"{getattr(c, row)} {row}" for row in COUNT_ROWS)
