"""Offline sources of posts: an X data export or a JSONL file of X API v2 tweet objects.

    >>> from bot.archive import open_archive
    >>> archive = open_archive("bot/samples/sample_archive.zip")
    >>> archive.account.username
    'dreamy_kettle'
    >>> sum(1 for _ in archive.posts())    # streams: posts are read one at a time
    420

Accepted forms:
- the X data export as downloaded (`.zip`), its extracted folder, or a `tweets.js` file alone
  (`window.YTD.tweets.part0 = [...]`, continued in `tweets-part1.js`, ...). The account comes from
  `account.js`, the avatar from `profile.js` and the full text of long posts from `note-tweet.js`
  when they are present;
- JSONL with one X API v2 tweet object per line (what `huggingtweets download` writes), with the
  account in a `<name>.user.json` file beside it when present.
"""

from __future__ import annotations

import html
import io
import json
import re
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

import ijson

from bot.errors import ArchiveError
from bot.mentions import normalize_handle

# The opening of every data-export file; the list of objects follows.
JS_PREFIX_RE = re.compile(rb"^\s*window\.YTD\.([A-Za-z_]+)\.part(\d+)\s*=\s*(?=\[)")
TWEET_PART_RE = re.compile(r"^tweets?(?:-part(\d+))?\.js$")
MAX_PREFIX_BYTES = 200


@dataclass(frozen=True, slots=True)
class Post:
    """One post as read, text still raw (entities escaped, links in place)."""

    id: str
    text: str
    lang: str | None = None
    created_at: str | None = None
    retweet: bool = False
    reply: bool = False
    quote: bool = False


@dataclass(frozen=True, slots=True)
class Account:
    username: str | None = None
    display_name: str | None = None
    avatar_url: str | None = None
    user_id: str | None = None


class Archive:
    """A readable source of one account's posts. `posts()` streams and can be called again."""

    def __init__(self, path: Path, account: Account, kind: str):
        self.path = path
        self.account = account
        self.kind = kind  # "export" or "jsonl"

    def posts(self) -> Iterator[Post]:
        if self.kind == "jsonl":
            yield from _read_jsonl(self.path)
        else:
            yield from _read_export_posts(self.path)

    def __repr__(self) -> str:
        return f"Archive({str(self.path)!r}, username={self.account.username!r}, kind={self.kind!r})"


def open_archive(path: str | Path) -> Archive:
    """Recognise the archive's form and read its account; raises ArchiveError naming the file."""
    path = Path(path)
    if not path.exists():
        raise ArchiveError(f"{path}: no such file or folder")
    if path.is_dir():
        if not _export_files(path):
            raise ArchiveError(f"{path}: no tweets.js in this folder (or its data/ folder): not an X data export")
        return Archive(path, _read_export_account(path), "export")
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        return Archive(path, _read_jsonl_account(path), "jsonl")
    if path.suffix.lower() == ".js":
        return Archive(path, _read_export_account(path), "export")
    if zipfile.is_zipfile(path):
        _check_zip(path)
        return Archive(path, _read_export_account(path), "export")
    if path.suffix.lower() == ".zip":
        raise ArchiveError(f"{path}: not a readable zip file (corrupt or truncated download?)")
    raise ArchiveError(f"{path}: unknown archive form (expected an X data export .zip, folder or tweets.js, or a .jsonl file)")


def find_archive(folder: str | Path, handle: str) -> Archive | None:
    """The archive for `handle` in a folder of archives (`<handle>.zip`, `<handle>.jsonl` or `<handle>/`)."""
    handle = normalize_handle(handle)  # before it becomes part of a path
    folder = Path(folder)
    for candidate in (folder / f"{handle}.zip", folder / f"{handle}.jsonl", folder / handle):
        if candidate.exists():
            return open_archive(candidate)
    for candidate in folder.glob("*"):  # handles are case-insensitive
        if candidate.stem.lower() == handle.lower() or candidate.name.lower() == handle.lower():
            return open_archive(candidate)
    return None


# --- the X data export -------------------------------------------------------------------------


def _check_zip(path: Path) -> None:
    try:
        with zipfile.ZipFile(path) as zf:
            if not [n for n in zf.namelist() if TWEET_PART_RE.match(n.rsplit("/", 1)[-1])]:
                raise ArchiveError(f"{path}: the zip holds no data/tweets.js: not an X data export")
    except zipfile.BadZipFile as e:
        raise ArchiveError(f"{path}: not a readable zip file ({e})") from None


def _export_files(path: Path) -> list[Path]:
    """The tweets.js parts of an extracted export, in part order."""
    for folder in (path / "data", path):
        parts = [p for p in folder.glob("tweet*.js") if TWEET_PART_RE.match(p.name)]
        if parts:
            return sorted(parts, key=_part_number)
    return []


def _part_number(p: Path | str) -> int:
    name = p.name if isinstance(p, Path) else p.rsplit("/", 1)[-1]
    m = TWEET_PART_RE.match(name)
    return int(m.group(1) or 0) if m else 0


def _open_members(path: Path, wanted: str) -> Iterator[tuple[str, BinaryIO]]:
    """Yield (name, binary stream) for the export files `wanted`: 'tweets' (every part, in order),
    'account', 'profile' or 'note-tweet'."""
    def matches(name: str) -> bool:
        base = name.rsplit("/", 1)[-1]
        if wanted == "tweets":
            return bool(TWEET_PART_RE.match(base))
        return base == f"{wanted}.js"

    if path.is_dir():
        files = _export_files(path) if wanted == "tweets" else [
            p for p in (path / "data" / f"{wanted}.js", path / f"{wanted}.js") if p.exists()][:1]
        for f in files:
            with open(f, "rb") as stream:
                yield str(f), stream
    elif path.suffix.lower() == ".js":
        if wanted == "tweets":
            files = sorted((p for p in path.parent.glob("tweet*.js") if TWEET_PART_RE.match(p.name)), key=_part_number)
            if path not in files:
                files = [path]
        else:
            files = [p for p in [path.parent / f"{wanted}.js"] if p.exists()]
        for f in files:
            with open(f, "rb") as stream:
                yield str(f), stream
    else:
        try:
            with zipfile.ZipFile(path) as zf:
                names = sorted((n for n in zf.namelist() if matches(n)), key=_part_number)
                for name in names:
                    with zf.open(name) as stream:
                        yield f"{path}:{name}", stream
        except zipfile.BadZipFile as e:
            raise ArchiveError(f"{path}: not a readable zip file ({e})") from None


def _js_items(name: str, stream: BinaryIO) -> Iterator[dict]:
    """Stream the objects of a `window.YTD.<x>.partN = [ ... ]` file."""
    try:
        head = stream.read(MAX_PREFIX_BYTES)
        if head.startswith(b"\xef\xbb\xbf"):
            head = head[3:]
        m = JS_PREFIX_RE.match(head)
        if not m:
            raise ArchiveError(f"{name}: does not start with 'window.YTD.<name>.part0 = [': not an X data export file")
        rest = io.BufferedReader(_Prepend(head[m.end():], stream), buffer_size=1 << 16)
        yield from ijson.items(rest, "item", use_float=True)
    except ijson.common.IncompleteJSONError as e:
        reason = _first_line(e)
        if reason.startswith("parse error: trailing garbage"):
            return  # text after the closing bracket (a ';', say): every post has been read
        kind = "not UTF-8" if "UTF8" in reason else "malformed JSON"
        raise ArchiveError(f"{name}: {kind} ({reason})") from None
    except ijson.common.JSONError as e:
        raise ArchiveError(f"{name}: malformed JSON ({_first_line(e)})") from None
    except (zipfile.BadZipFile, zlib.error, EOFError) as e:  # a damaged member of a zip
        raise ArchiveError(f"{name}: corrupt zip member ({e})") from None


class _Prepend(io.RawIOBase):
    """A stream that yields `head` and then the rest of `stream` (to hand ijson what follows the prefix)."""

    def __init__(self, head: bytes, stream: BinaryIO):
        self._head = head
        self._stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self._head:
            n = min(len(buffer), len(self._head))
            buffer[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._stream.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _first_line(e: Exception) -> str:
    text = e.args[0] if e.args else str(e)
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return str(text).strip().splitlines()[0] if str(text).strip() else type(e).__name__


def _read_export_account(path: Path) -> Account:
    username = display = user_id = avatar = None
    for name, stream in _open_members(path, "account"):
        for item in _js_items(name, stream):
            acc = item.get("account", item) if isinstance(item, dict) else {}
            username = acc.get("username") or username
            display = acc.get("accountDisplayName") or display
            user_id = acc.get("accountId") or user_id
            break
    for name, stream in _open_members(path, "profile"):
        for item in _js_items(name, stream):
            prof = item.get("profile", item) if isinstance(item, dict) else {}
            avatar = prof.get("avatarMediaUrl") or avatar
            break
    return Account(username=username, display_name=display, avatar_url=avatar, user_id=user_id)


def _read_export_posts(path: Path) -> Iterator[Post]:
    notes = _read_note_tweets(path)
    found = False
    for name, stream in _open_members(path, "tweets"):
        found = True
        for item in _js_items(name, stream):
            tweet = item.get("tweet", item) if isinstance(item, dict) else None
            if not isinstance(tweet, dict):
                raise ArchiveError(f"{name}: an entry is not a tweet object")
            yield _post_from_export(tweet, name, notes)
    if not found:
        raise ArchiveError(f"{path}: no tweets.js found: not an X data export")


def _post_from_export(t: dict, name: str, notes: dict[str, str]) -> Post:
    text = t.get("full_text", t.get("text"))
    if not isinstance(text, str):
        raise ArchiveError(f"{name}: tweet {t.get('id_str', t.get('id', '?'))} has no text")
    tweet_id = str(t.get("id_str") or t.get("id") or "")
    note = t.get("note_tweet")
    if isinstance(note, dict):  # long posts, when the tweet carries its note
        text = note.get("text") or (note.get("note_tweet_results", {}).get("result", {}).get("text")) or text
    elif notes:
        long_text = notes.get(tweet_id) or notes.get(t.get("created_at"))
        if long_text and _same_start(text, long_text):
            text = long_text
    return Post(
        id=tweet_id,
        text=text,
        lang=t.get("lang"),
        created_at=t.get("created_at"),
        retweet=bool(t.get("retweeted_status")) or text.startswith("RT @"),
        reply=bool(t.get("in_reply_to_status_id_str") or t.get("in_reply_to_status_id")
                   or t.get("in_reply_to_user_id_str")),
        quote=bool(t.get("is_quote_status") or t.get("quoted_status_id_str")),
    )


def _read_note_tweets(path: Path) -> dict[str, str]:
    """The full text of long posts, from `note-tweet.js`: the export keeps it apart from tweets.js,
    where a long post is cut short. Long posts are few, so this stays small.

    An entry names its post (`tweetId`) in some exports; otherwise a long post and its cut-short tweet
    share their creation time, so the text is also keyed by the time as tweets.js writes it.
    """
    notes: dict[str, str] = {}
    for name, stream in _open_members(path, "note-tweet"):
        for item in _js_items(name, stream):
            note = item.get("noteTweet") if isinstance(item, dict) else None
            core = note.get("core") if isinstance(note, dict) else None
            text = core.get("text") if isinstance(core, dict) else None
            if not isinstance(text, str):
                continue
            if note.get("tweetId"):
                notes[str(note["tweetId"])] = text
            created = _export_time(note.get("createdAt"))
            if created:
                notes[created] = text
    return notes


WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _export_time(iso: object) -> str | None:
    """'2023-07-19T17:06:50.000Z' -> 'Wed Jul 19 17:06:50 +0000 2023', the way tweets.js writes times."""
    try:
        t = datetime.strptime(str(iso)[:19], "%Y-%m-%dT%H:%M:%S")
    except ValueError:
        return None
    return f"{WEEKDAYS[t.weekday()]} {MONTHS[t.month - 1]} {t.day:02d} {t:%H:%M:%S} +0000 {t.year}"


def _same_start(cut: str, full: str) -> bool:
    """Whether a cut-short post opens like a long text (two posts can share a second)."""
    def opening(s: str) -> str:
        return "".join(html.unescape(s).split())[:10]
    return bool(opening(cut)) and opening(cut) == opening(full)


# --- JSONL of X API v2 tweet objects -------------------------------------------------------------


def user_sidecar(path: Path) -> Path:
    """Where the account of a JSONL archive lives: `alice.jsonl` -> `alice.user.json`."""
    return path.with_name(path.name.rsplit(".", 1)[0] + ".user.json")


def _read_jsonl_account(path: Path) -> Account:
    sidecar = user_sidecar(path)
    if not sidecar.exists():
        return Account()
    try:
        user = json.loads(sidecar.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArchiveError(f"{sidecar}: not a JSON user object ({e})") from None
    if not isinstance(user, dict):
        raise ArchiveError(f"{sidecar}: not a JSON user object")
    return Account(
        username=user.get("username"),
        display_name=user.get("name"),
        avatar_url=user.get("profile_image_url"),
        user_id=str(user["id"]) if user.get("id") else None,
    )


def _read_jsonl(path: Path) -> Iterator[Post]:
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                t = json.loads(raw.decode("utf-8-sig"))  # -sig: a byte-order mark some editors add
            except UnicodeDecodeError:
                raise ArchiveError(f"{path}: line {lineno} is not UTF-8") from None
            except json.JSONDecodeError as e:
                raise ArchiveError(f"{path}: line {lineno} is not JSON ({e.msg})") from None
            if not isinstance(t, dict) or not isinstance(t.get("text"), str):
                raise ArchiveError(f"{path}: line {lineno} is not an X API v2 tweet object (no 'text')")
            yield post_from_v2(t)


def post_from_v2(t: dict) -> Post:
    """A Post from an X API v2 tweet object (as the API or `huggingtweets download` gives it)."""
    text = t["text"]
    note = t.get("note_tweet")
    if isinstance(note, dict) and isinstance(note.get("text"), str):
        text = note["text"]
    kinds = {r.get("type") for r in t.get("referenced_tweets") or [] if isinstance(r, dict)}
    return Post(
        id=str(t.get("id", "")),
        text=text,
        lang=t.get("lang"),
        created_at=t.get("created_at"),
        retweet="retweeted" in kinds or text.startswith("RT @"),
        reply="replied_to" in kinds or bool(t.get("in_reply_to_user_id")),
        quote="quoted" in kinds,
    )
