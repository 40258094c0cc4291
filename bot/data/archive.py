"""Offline sources of posts: an X data export or a JSONL file of X API v2 tweet objects.

    >>> from bot.data.archive import open_archive
    >>> archive = open_archive("bot/data/samples/sample_archive.zip")
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

Archives come from other people (a user's `--archive`, the local source's folder), so reading is
bounded whatever a file claims: `ArchiveLimits` says how deep, how long and how many, and breaking a
limit is an `ArchiveError` of one line naming the file and the limit, raised as soon as the limit is
passed. Nothing is held but the entry being read (and the long posts of `note-tweet.js`, under a
smaller limit of their own), so the memory used does not grow with the archive:

    >>> open_archive("bomb.zip")
    ArchiveError: bomb.zip:data/tweets.js: 4,294,967,296 bytes uncompressed; one file may hold 1,000,000,000 at most
    >>> open_archive("big.zip", ArchiveLimits(max_posts=1_000))   # other limits, for one call

Every field is checked by type as it is read. A field of the wrong type (a number where X writes text,
a list where it writes an id, a username that is not a handle) is an error naming the file and the
post, not a post skipped: X never writes one, so the file was damaged or made by hand, and training
on the rest of it without a word would hide that. Display names are only shown, so control characters
in them (a line break, a tab) become spaces instead.
"""

from __future__ import annotations

import html
import io
import itertools
import json
import re
import struct
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

import ijson

from bot.common.errors import ArchiveError, HandleError
from bot.common.handles import normalize_handle


@dataclass(frozen=True, slots=True)
class ArchiveLimits:
    """The most one archive may hold. Each limit is checked while reading, before it costs more."""

    # JSON nesting: X's files nest fewer than 10 levels (the list, an entry, its tweet, then
    # extended_entities.media[].video_info.variants[]); 64 leaves room, and stops a file of 100,000 '['
    # at its 65th.
    max_depth: int = 64
    # The text of one post in UTF-8: X allows 25,000 characters, 4 bytes each at most.
    max_text_bytes: int = 100_000
    # One entry of a data file (or one JSONL line) as JSON: the text escaped (up to 12 bytes for an
    # emoji written as \\u escapes), entities, media. The JSON parser buffers at most this much.
    max_entry_bytes: int = 1_000_000
    # Posts in one archive: more than all but a handful of accounts have written; a model needs far fewer.
    max_posts: int = 200_000
    # One data file, uncompressed: the tweets.js of the busiest accounts is a few hundred MB.
    max_file_bytes: int = 1_000_000_000
    # All the data files of one archive, uncompressed, in one reading (streamed, never held).
    max_total_bytes: int = 2_000_000_000
    # note-tweet.js is held in memory while tweets.js is read (long posts are matched to their tweets).
    max_notes_bytes: int = 64_000_000
    # tweets.js split in parts (tweets-part1.js, ...): X writes a handful.
    max_parts: int = 1_000
    # Members of a zip: an export holds its data files and every photo and video, some thousands.
    # Python's zipfile keeps an object of about 500 bytes for each: 200,000 take about 100 MB.
    max_members: int = 200_000
    # A zip's central directory, read whole to count its members before zipfile reads it again:
    # about 120 bytes a member in an export.
    max_directory_bytes: int = 24_000_000


LIMITS = ArchiveLimits()

# The opening of every data-export file; the list of objects follows.
JS_PREFIX_RE = re.compile(rb"^\s*window\.YTD\.([A-Za-z_]+)\.part(\d+)\s*=\s*(?=\[)")
TWEET_PART_RE = re.compile(r"^tweets?(?:-part(\d+))?\.js$")
MAX_PREFIX_BYTES = 200
READ_SIZE = 1 << 16  # what the JSON parser asks for at a time
BOM = b"\xef\xbb\xbf"
# What X writes, and what Python reads with no more memory than its window: stored and deflate. LZMA
# (whose dictionary, sized by the file, can take gigabytes) and the rest are refused.
ZIP_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate"}
ZIP_METHOD_NAMES = {zipfile.ZIP_BZIP2: "bzip2", zipfile.ZIP_LZMA: "LZMA", 9: "deflate64", 93: "zstandard",
                    98: "PPMd", 99: "AES encryption"}
# The lengths of short fields, far above what X writes: an id (X: 19 digits; Bluesky: an AT URI),
# a language code, a time, a profile picture's address, a display name (X: 50 characters).
MAX_ID_CHARS = 300
MAX_LANG_CHARS = 35
MAX_TIME_CHARS = 64
MAX_URL_CHARS = 2_048
MAX_NAME_CHARS = 500


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

    def __init__(self, path: Path, account: Account, kind: str, limits: ArchiveLimits = LIMITS):
        self.path = path
        self.account = account
        self.kind = kind  # "export" or "jsonl"
        self.limits = limits

    def posts(self) -> Iterator[Post]:
        """Every post, in the archive's order; an ArchiveError at the first thing past a limit or of a wrong type."""
        if self.kind == "jsonl":
            yield from _read_jsonl(self.path, self.limits)
        else:
            yield from _read_export_posts(self.path, self.limits)

    def __repr__(self) -> str:
        return f"Archive({str(self.path)!r}, username={self.account.username!r}, kind={self.kind!r})"


def open_archive(path: str | Path, limits: ArchiveLimits = LIMITS) -> Archive:
    """Recognise the archive's form and read its account; raises ArchiveError naming the file."""
    path = Path(path)
    if not path.exists():
        raise ArchiveError(f"{path}: no such file or folder")
    if path.is_dir():
        if not _export_files(path, limits):
            raise ArchiveError(f"{path}: no tweets.js in this folder (or its data/ folder): not an X data export")
        return Archive(path, _read_export_account(path, limits), "export", limits)
    _check_regular_file(path)
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        return Archive(path, _read_jsonl_account(path, limits), "jsonl", limits)
    if path.suffix.lower() == ".js":
        return Archive(path, _read_export_account(path, limits), "export", limits)
    if zipfile.is_zipfile(path):
        _check_zip(path, limits)
        return Archive(path, _read_export_account(path, limits), "export", limits)
    if path.suffix.lower() == ".zip":
        raise ArchiveError(f"{path}: not a readable zip file (corrupt or truncated download?)")
    raise ArchiveError(f"{path}: unknown archive form (expected an X data export .zip, folder or tweets.js, or a .jsonl file)")


def find_archive(folder: str | Path, handle: str, limits: ArchiveLimits = LIMITS) -> Archive | None:
    """The archive for `handle` in a folder of archives (`<handle>.zip`, `<handle>.jsonl` or `<handle>/`)."""
    handle = normalize_handle(handle)  # before it becomes part of a path
    folder = Path(folder)
    for candidate in (folder / f"{handle}.zip", folder / f"{handle}.jsonl", folder / handle):
        if candidate.exists():
            return open_archive(candidate, limits)
    for candidate in folder.glob("*"):  # handles are case-insensitive
        if candidate.stem.lower() == handle.lower() or candidate.name.lower() == handle.lower():
            return open_archive(candidate, limits)
    return None


def _check_regular_file(path: Path) -> None:
    """A device or a pipe named like an archive (`/dev/zero`, a FIFO) would be read forever or block."""
    if not path.is_file():
        raise ArchiveError(f"{path}: not a regular file")


# --- reading JSON within limits ------------------------------------------------------------------


class _Reading:
    """One reading of an archive: the bytes read so far from all its files, against `max_total_bytes`."""

    def __init__(self, limits: ArchiveLimits):
        self.limits = limits
        self.total = 0


class _Metered(io.RawIOBase):
    """A data file as the JSON parser reads it, counted against the limits as it goes: the file's own
    (`file_limit`), the whole reading's, and the entry being read (`entry_limit`, when given), which
    restarts at each `next_entry()`. The parser reads ahead by one `READ_SIZE`, so an entry is allowed
    that much more than its limit: no entry within the limit is refused."""

    def __init__(self, stream: BinaryIO, name: str, reading: _Reading, file_limit: int, entry_limit: int | None):
        self._stream = stream
        self._pushed_back = b""
        self.name = name
        self.reading = reading
        self.file_limit = file_limit
        self.entry_limit = entry_limit
        self.read_bytes = 0
        self.entry_start = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self._pushed_back:
            n = min(len(buffer), len(self._pushed_back))
            buffer[:n] = self._pushed_back[:n]
            self._pushed_back = self._pushed_back[n:]
            return n  # counted when first read
        data = self._stream.read(len(buffer))
        buffer[: len(data)] = data
        self._count(len(data))
        return len(data)

    def push_back(self, data: bytes) -> None:
        """Hand `data` (already read and counted) out again before the rest of the stream."""
        self._pushed_back = data + self._pushed_back

    def next_entry(self) -> None:
        self.entry_start = self.read_bytes

    def _count(self, n: int) -> None:
        self.read_bytes += n
        self.reading.total += n
        if self.read_bytes > self.file_limit:
            raise ArchiveError(f"{self.name}: longer than {self.file_limit:,} bytes, the most read from one file")
        if self.reading.total > self.reading.limits.max_total_bytes:
            raise ArchiveError(f"{self.name}: the archive's files hold more than "
                               f"{self.reading.limits.max_total_bytes:,} bytes together, the most read from one archive")
        if self.entry_limit is not None and self.read_bytes - self.entry_start > self.entry_limit + READ_SIZE:
            raise ArchiveError(f"{self.name}: an entry longer than {self.entry_limit:,} bytes "
                               "(the longest post X allows takes at most a third of that)")


SCALARS = frozenset({"string", "number", "integer", "double", "boolean", "null"})


def _too_deep(name: str, limits: ArchiveLimits) -> ArchiveError:
    return ArchiveError(f"{name}: JSON nested more than {limits.max_depth} levels deep (X's own files nest fewer than 10)")


def _list_items(events: Iterable[tuple[str, object]], name: str, meter: _Metered, limits: ArchiveLimits) -> Iterator[object]:
    """The items of the JSON list that `events` (ijson's basic events) open with, built one at a time.

    From basic events, not with ijson's `items()`: `items()` keeps the path of every open level, which
    100,000 levels deep is 25 GB of "item.item.item...". Here the depth is counted as the entry is
    built, and the list's end ends the reading (what follows it, such as a ';', is not read).
    """
    next_entry = meter.next_entry
    opened = False  # the list itself (the first level)
    top: dict | list | None = None  # the innermost container of the entry being built
    top_is_list = False
    key = None  # where the next value goes in `top`, when it is an object
    outer: list[tuple] = []  # (container, is_list, key) of each container around `top`
    for event, value in events:
        if event == "map_key":
            key = value
        elif event in SCALARS:
            if top is None:  # a bare value in the list: 1, "text", null
                yield value
                next_entry()
            elif top_is_list:
                top.append(value)
            else:
                top[key] = value
        elif event == "start_map" or event == "start_array":
            if not opened:
                opened = True
                continue
            container: dict | list = {} if event == "start_map" else []
            if top is not None:
                if len(outer) + 3 > limits.max_depth:  # the list, `outer`, `top` and now this
                    raise _too_deep(name, limits)
                if top_is_list:
                    top.append(container)
                else:
                    top[key] = container
                outer.append((top, top_is_list, key))
            top, top_is_list, key = container, event == "start_array", None
        else:  # end_map, end_array
            if top is None:
                return  # the end of the list
            done = top
            if outer:
                top, top_is_list, key = outer.pop()
            else:
                top = None
                yield done
                next_entry()


def _json_value(data: bytes, where: str, limits: ArchiveLimits) -> object:
    """One JSON value (a JSONL line, a user file), nested no deeper than the limit.
    Raises UnicodeDecodeError or json.JSONDecodeError for what is not UTF-8 or not JSON."""
    try:
        value = json.loads(data.decode("utf-8"))
    except RecursionError:  # Python's own parser stops at its recursion limit, about 1,000 levels
        raise _too_deep(where, limits) from None
    # Only a value with that many brackets can be nested that deep: most lines are never walked.
    if data.count(b"[") + data.count(b"{") > limits.max_depth and _depth(value) > limits.max_depth:
        raise _too_deep(where, limits)
    return value


def _depth(value: object) -> int:
    """How deep lists and objects nest in `value` (a scalar: 0), without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (list, dict)):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def _json_problem(e: Exception) -> str:
    """'not UTF-8 (...)' or 'malformed JSON (...)' for an error of the JSON parser."""
    reason = _first_line(e)
    kind = "not UTF-8" if isinstance(e, UnicodeDecodeError) or "UTF8" in reason else "malformed JSON"
    return f"{kind} ({reason})"


def _first_line(e: Exception) -> str:
    text = e.args[0] if e.args else str(e)
    if isinstance(e, UnicodeDecodeError):
        text = str(e)
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return str(text).strip().splitlines()[0] if str(text).strip() else type(e).__name__


# --- the X data export -------------------------------------------------------------------------


EOCD = struct.Struct("<4s4H2LH")  # the end of central directory record
ZIP64_LOCATOR = struct.Struct("<4sLQL")
ZIP64_EOCD = struct.Struct("<4sQ2H2L4Q")
CENTRAL_ENTRY = struct.Struct("<4s6H3L5H2L")  # a central directory entry, before its name


def _zip_members(path: Path, limits: ArchiveLimits) -> int | None:
    """How many members a zip has, counted in its central directory before zipfile reads it (zipfile keeps
    an object of about 500 bytes for each, and trusts no count but its own walk). The directory is found
    the way zipfile finds it. Raises ArchiveError past `max_directory_bytes` or `max_members`; None when
    there is no end record to start from (zipfile then says what is wrong)."""
    with open(path, "rb") as f:
        size = f.seek(0, io.SEEK_END)
        tail_length = min(size, EOCD.size + 0xFFFF)  # the record, then a comment of up to 64 kB
        f.seek(size - tail_length)
        tail = f.read(tail_length)
        at = len(tail) - EOCD.size if tail[-EOCD.size:-EOCD.size + 4] == b"PK\x05\x06" else tail.rfind(b"PK\x05\x06")
        if at < 0 or len(tail) - at < EOCD.size:
            return None
        members, directory_bytes = EOCD.unpack_from(tail, at)[4:6]
        directory_end = size - tail_length + at
        if at >= ZIP64_LOCATOR.size:
            signature, _, zip64_at, _ = ZIP64_LOCATOR.unpack_from(tail, at - ZIP64_LOCATOR.size)
            if signature == b"PK\x06\x07" and zip64_at < size:
                f.seek(zip64_at)
                record = f.read(ZIP64_EOCD.size)
                if len(record) == ZIP64_EOCD.size and record[:4] == b"PK\x06\x06":
                    members, directory_bytes = ZIP64_EOCD.unpack(record)[7:9]
                    directory_end -= ZIP64_EOCD.size + ZIP64_LOCATOR.size
        if members > limits.max_members:
            raise ArchiveError(f"{path}: {members:,} members; a zip may hold {limits.max_members:,} at most")
        if directory_bytes > limits.max_directory_bytes:
            raise ArchiveError(f"{path}: a central directory of {directory_bytes:,} bytes; "
                               f"a zip may have {limits.max_directory_bytes:,} at most")
        if not 0 <= directory_end - directory_bytes <= size:
            return None
        f.seek(directory_end - directory_bytes)
        directory = f.read(directory_bytes)
    # The end record's count may understate: walk the entries (46 bytes, then a name, extra and comment).
    count, position = 0, 0
    while position + CENTRAL_ENTRY.size <= len(directory) and directory[position:position + 4] == b"PK\x01\x02":
        name_length, extra_length, comment_length = CENTRAL_ENTRY.unpack_from(directory, position)[10:13]
        position += CENTRAL_ENTRY.size + name_length + extra_length + comment_length
        count += 1
        if count > limits.max_members:
            raise ArchiveError(f"{path}: more than {limits.max_members:,} members; a zip may hold "
                               f"{limits.max_members:,} at most")
    return count


def _wanted(name: str) -> bool:
    """Whether a zip member is a data file this module reads."""
    base = name.rsplit("/", 1)[-1]
    return bool(TWEET_PART_RE.match(base)) or base in ("account.js", "profile.js", "note-tweet.js")


def _check_zip(path: Path, limits: ArchiveLimits) -> None:
    """Refuse, before reading any data, a zip past a limit or with data files this module cannot read."""
    _zip_members(path, limits)
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, ValueError, struct.error, EOFError, OverflowError, NotImplementedError) as e:
        raise ArchiveError(f"{path}: not a readable zip file ({_first_line(e)})") from None
    if len(infos) > limits.max_members:  # when the directory could not be walked beforehand
        raise ArchiveError(f"{path}: {len(infos):,} members; a zip may hold {limits.max_members:,} at most")
    data_files = [info for info in infos if _wanted(info.filename)]
    parts = [info for info in data_files if TWEET_PART_RE.match(info.filename.rsplit("/", 1)[-1])]
    if not parts:
        raise ArchiveError(f"{path}: the zip holds no data/tweets.js: not an X data export")
    if len(parts) > limits.max_parts:
        raise ArchiveError(f"{path}: {len(parts):,} tweets.js parts; an export may have {limits.max_parts:,} at most")
    for info in data_files:
        where = f"{path}:{info.filename}"
        if info.flag_bits & 0x1:
            raise ArchiveError(f"{where}: encrypted (X exports never are: unzip it with its password, "
                               "then give the folder)")
        if info.compress_type not in ZIP_METHODS:
            method = ZIP_METHOD_NAMES.get(info.compress_type, "an unknown method")
            raise ArchiveError(f"{where}: compressed with {method} (method {info.compress_type}); "
                               "only stored and deflate, what X writes, are read")
        limit = _file_limit(info.filename, limits)
        if info.file_size > limit:
            raise ArchiveError(f"{where}: {info.file_size:,} bytes uncompressed; one file may hold {limit:,} at most")
    total = sum(info.file_size for info in data_files)
    if total > limits.max_total_bytes:
        raise ArchiveError(f"{path}: the data files hold {total:,} bytes uncompressed together; "
                           f"an archive may hold {limits.max_total_bytes:,} at most")


def _file_limit(name: str, limits: ArchiveLimits) -> int:
    if name.rsplit("/", 1)[-1] == "note-tweet.js":
        return min(limits.max_file_bytes, limits.max_notes_bytes)
    return limits.max_file_bytes


def _export_files(path: Path, limits: ArchiveLimits = LIMITS) -> list[Path]:
    """The tweets.js parts of an extracted export, in part order."""
    for folder in (path / "data", path):
        if parts := _parts_in(folder, limits):
            return parts
    return []


def _parts_in(folder: Path, limits: ArchiveLimits) -> list[Path]:
    """The tweets.js parts in one folder, in part order."""
    parts = [p for p in folder.glob("tweet*.js") if TWEET_PART_RE.match(p.name)]
    if len(parts) > limits.max_parts:
        raise ArchiveError(f"{folder}: {len(parts):,} tweets.js parts; an export may have {limits.max_parts:,} at most")
    return sorted(parts, key=_part_number)


def _part_number(p: Path | str) -> int:
    name = p.name if isinstance(p, Path) else p.rsplit("/", 1)[-1]
    m = TWEET_PART_RE.match(name)
    return int(m.group(1) or 0) if m else 0


def _open_members(path: Path, wanted: str, limits: ArchiveLimits) -> Iterator[tuple[str, BinaryIO]]:
    """Yield (name, binary stream) for the export files `wanted`: 'tweets' (every part, in order),
    'account', 'profile' or 'note-tweet'."""
    def matches(name: str) -> bool:
        base = name.rsplit("/", 1)[-1]
        if wanted == "tweets":
            return bool(TWEET_PART_RE.match(base))
        return base == f"{wanted}.js"

    if path.is_dir() or path.suffix.lower() == ".js":
        if path.is_dir():
            files = _export_files(path, limits) if wanted == "tweets" else [
                p for p in (path / "data" / f"{wanted}.js", path / f"{wanted}.js") if p.exists()][:1]
        elif wanted == "tweets":
            files = _parts_in(path.parent, limits)
            if path not in files:
                files = [path]
        else:
            files = [p for p in [path.parent / f"{wanted}.js"] if p.exists()]
        for f in files:
            _check_regular_file(f)
            limit = _file_limit(f.name, limits)
            if (size := f.stat().st_size) > limit:  # refused at once; the reading is counted as well
                raise ArchiveError(f"{f}: {size:,} bytes; one file may hold {limit:,} at most")
            try:
                stream = open(f, "rb")
            except OSError as e:
                raise ArchiveError(f"{f}: cannot be read ({e.strerror})") from None
            with stream:
                yield str(f), stream
    else:
        try:
            with zipfile.ZipFile(path) as zf:
                names = sorted((n for n in zf.namelist() if matches(n)), key=_part_number)
                for name in names:
                    try:
                        stream = zf.open(name)
                    except (RuntimeError, NotImplementedError) as e:  # encrypted, or a method zipfile lacks
                        raise ArchiveError(f"{path}:{name}: cannot be read ({_first_line(e)})") from None
                    with stream:
                        yield f"{path}:{name}", stream
        except (zipfile.BadZipFile, ValueError, struct.error, EOFError, OverflowError) as e:
            raise ArchiveError(f"{path}: not a readable zip file ({_first_line(e)})") from None


def _js_items(name: str, stream: BinaryIO, reading: _Reading) -> Iterator[object]:
    """Stream the entries of a `window.YTD.<x>.partN = [ ... ]` file, within the limits."""
    limits = reading.limits
    meter = _Metered(stream, name, reading, _file_limit(name, limits), limits.max_entry_bytes)
    try:
        head = meter.read(MAX_PREFIX_BYTES)
        if head.startswith(BOM):
            head = head[len(BOM):]
        m = JS_PREFIX_RE.match(head)
        if not m:
            raise ArchiveError(f"{name}: does not start with 'window.YTD.<name>.part0 = [': not an X data export file")
        meter.push_back(head[m.end():])
        rest = io.BufferedReader(meter, buffer_size=READ_SIZE)
        yield from _list_items(ijson.basic_parse(rest, buf_size=READ_SIZE, use_float=True), name, meter, limits)
    except ijson.common.IncompleteJSONError as e:
        if _first_line(e).startswith("parse error: trailing garbage"):
            return  # text after the closing bracket: every entry has been read
        raise ArchiveError(f"{name}: {_json_problem(e)}") from None
    except (ijson.common.JSONError, UnicodeDecodeError) as e:
        raise ArchiveError(f"{name}: {_json_problem(e)}") from None
    except (zipfile.BadZipFile, zlib.error, EOFError) as e:  # a damaged member of a zip
        raise ArchiveError(f"{name}: corrupt zip member ({_first_line(e)})") from None
    except OSError as e:
        raise ArchiveError(f"{name}: cannot be read ({e.strerror or _first_line(e)})") from None


def _first_entry(path: Path, wanted: str, key: str, limits: ArchiveLimits) -> tuple[str, dict] | None:
    """The first entry of account.js or profile.js, unwrapped (`{"account": {...}}` -> `{...}`)."""
    reading = _Reading(limits)
    for name, stream in _open_members(path, wanted, limits):
        for item in _js_items(name, stream, reading):
            inner = item.get(key, item) if isinstance(item, dict) else None
            if not isinstance(inner, dict):
                raise ArchiveError(f"{name}: an entry is not {'an' if key[0] in 'aeiou' else 'a'} {key} object")
            return name, inner
    return None


def _read_export_account(path: Path, limits: ArchiveLimits) -> Account:
    username = display = user_id = avatar = None
    if found := _first_entry(path, "account", "account", limits):
        name, acc = found
        username = _username(acc.get("username"), name, "x")
        display = _display_name(acc.get("accountDisplayName"), name, "'accountDisplayName'")
        user_id = _token(acc.get("accountId"), name, "'accountId'", MAX_ID_CHARS, numbers=True)
    if found := _first_entry(path, "profile", "profile", limits):
        name, prof = found
        avatar = _url(prof.get("avatarMediaUrl"), name, "'avatarMediaUrl'")
    return Account(username=username or None, display_name=display or None, avatar_url=avatar or None,
                   user_id=user_id or None)


def _read_export_posts(path: Path, limits: ArchiveLimits) -> Iterator[Post]:
    reading = _Reading(limits)
    notes = _read_note_tweets(path, reading)
    found = False
    count = 0
    for name, stream in _open_members(path, "tweets", limits):
        found = True
        for item in _js_items(name, stream, reading):
            tweet = item.get("tweet", item) if isinstance(item, dict) else None
            if not isinstance(tweet, dict):
                raise ArchiveError(f"{name}: an entry is not a tweet object")
            count += 1
            if count > limits.max_posts:
                raise ArchiveError(f"{name}: more than {limits.max_posts:,} posts, the most read from one archive")
            yield _post_from_export(tweet, name, notes, limits)
    if not found:
        raise ArchiveError(f"{path}: no tweets.js found: not an X data export")


def _post_from_export(t: dict, name: str, notes: dict[str, str], limits: ArchiveLimits = LIMITS) -> Post:
    id_field = "id_str" if t.get("id_str") not in (None, "") else "id"
    tweet_id = _token(t.get(id_field), name, f"an entry's '{id_field}'", MAX_ID_CHARS, numbers=True) or ""
    where = f"{name}: tweet {tweet_id or '?'}"
    field = "full_text" if "full_text" in t else "text"
    if t.get(field) is None:
        raise ArchiveError(f"{where} has no text")
    text = _text(t[field], where, f"'{field}'", limits)
    note = t.get("note_tweet")
    if isinstance(note, dict):  # long posts, when the tweet carries its note
        long_text = note.get("text")
        if long_text is None:
            long_text = _dig(note, "note_tweet_results", "result", "text")
        if long_text is not None:
            text = _text(long_text, where, "the note's 'text'", limits) or text
    elif notes:
        created = t.get("created_at")
        long_text = notes.get(tweet_id) or (notes.get(created) if isinstance(created, str) else None)
        if long_text and _same_start(text, long_text):
            text = long_text
    return Post(
        id=tweet_id,
        text=text,
        lang=_token(t.get("lang"), where, "'lang'", MAX_LANG_CHARS),
        created_at=_token(t.get("created_at"), where, "'created_at'", MAX_TIME_CHARS),
        retweet=bool(t.get("retweeted_status")) or text.startswith("RT @"),
        reply=bool(t.get("in_reply_to_status_id_str") or t.get("in_reply_to_status_id")
                   or t.get("in_reply_to_user_id_str")),
        quote=bool(t.get("is_quote_status") or t.get("quoted_status_id_str")),
    )


def _read_note_tweets(path: Path, reading: _Reading) -> dict[str, str]:
    """The full text of long posts, from `note-tweet.js`: the export keeps it apart from tweets.js,
    where a long post is cut short. The file is held in memory, so it has a limit of its own
    (`max_notes_bytes`).

    An entry names its post (`tweetId`) in some exports; otherwise a long post and its cut-short tweet
    share their creation time, so the text is also keyed by the time as tweets.js writes it.
    """
    notes: dict[str, str] = {}
    for name, stream in _open_members(path, "note-tweet", reading.limits):
        for item in _js_items(name, stream, reading):
            note = item.get("noteTweet") if isinstance(item, dict) else None
            core = note.get("core") if isinstance(note, dict) else None
            text = core.get("text") if isinstance(core, dict) else None
            if not isinstance(text, str):
                continue
            where = f"{name}: note {_token(note.get('noteTweetId'), name, 'a note', MAX_ID_CHARS, numbers=True) or '?'}"
            text = _text(text, where, "'text'", reading.limits)
            tweet_id = _token(note.get("tweetId"), where, "'tweetId'", MAX_ID_CHARS, numbers=True)
            if tweet_id:
                notes[tweet_id] = text
            created = _export_time(note.get("createdAt"))
            if created:
                notes[created] = text
    return notes


WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _export_time(iso: object) -> str | None:
    """'2023-07-19T17:06:50.000Z' -> 'Wed Jul 19 17:06:50 +0000 2023', the way tweets.js writes times."""
    if not isinstance(iso, str):
        return None
    try:
        t = datetime.strptime(iso[:19], "%Y-%m-%dT%H:%M:%S")
    except ValueError:
        return None
    return f"{WEEKDAYS[t.weekday()]} {MONTHS[t.month - 1]} {t.day:02d} {t:%H:%M:%S} +0000 {t.year}"


def _same_start(cut: str, full: str) -> bool:
    """Whether a cut-short post opens like a long text (two posts can share a second)."""
    def opening(s: str) -> str:
        return "".join(html.unescape(s[:200]).split())[:10]
    return bool(opening(cut)) and opening(cut) == opening(full)


# --- the fields, by type -------------------------------------------------------------------------


def _kind(value: object) -> str:
    """What a JSON value is, in words (the value itself is never echoed: it may be long or many lines)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return "a number"


def _text(value: object, where: str, field: str, limits: ArchiveLimits) -> str:
    """A post's text: a string of at most `max_text_bytes` in UTF-8 (`where`: the file and post; `field`:
    the field, for the message, made only when there is one to give)."""
    if type(value) is not str:
        raise ArchiveError(f"{where}: {field} is {_kind(value)}, not text")
    if value.isascii():
        size = len(value)
    else:
        try:
            size = len(value.encode("utf-8"))
        except UnicodeEncodeError:  # a lone surrogate (a \udc00 escape): no UTF-8 can hold it
            raise ArchiveError(f"{where}: {field} is not UTF-8 (it holds a lone surrogate)") from None
    if size > limits.max_text_bytes:
        raise ArchiveError(f"{where}: {field} is longer than {limits.max_text_bytes:,} bytes "
                           "(X allows 25,000 characters in a post)")
    return value


def _token(value: object, where: str, field: str, max_chars: int, numbers: bool = False) -> str | None:
    """A short one-line field (an id, a language code, a time), or None when it is absent or null.
    `numbers`: an integer is taken too (ids are numbers in some files)."""
    if value is None:
        return None
    if type(value) is str and len(value) <= max_chars and value.isprintable():
        return value
    if numbers and type(value) is int:
        return str(value)
    if type(value) is not str:
        raise ArchiveError(f"{where}: {field} is {_kind(value)}, not {'an id' if numbers else 'text'}")
    raise ArchiveError(f"{where}: {field} is not {'an id' if numbers else 'a short line of text'} "
                       f"({len(value):,} characters{'' if value.isprintable() else ', with control characters'})")


def _username(value: object, name: str, network: str | None = None) -> str | None:
    """The account's handle as the file spells it ('Alice'); it must be a handle (of `network`, when given)."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ArchiveError(f"{name}: 'username' is {_kind(value)}, not a handle")
    try:
        normalize_handle(value, network)
    except HandleError as e:
        raise ArchiveError(f"{name}: the username {e}") from None
    return value


CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]+")


def _display_name(value: object, where: str, field: str) -> str | None:
    """A display name: text, each control character (a line break, a tab) made a space; it is only shown."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ArchiveError(f"{where}: {field} is {_kind(value)}, not text")
    if len(value) > MAX_NAME_CHARS:
        raise ArchiveError(f"{where}: {field} is {len(value):,} characters long; a name has {MAX_NAME_CHARS} at most")
    return CONTROL_RE.sub(" ", value)


def _url(value: object, where: str, field: str) -> str | None:
    """A web address (a profile picture): http(s), one line, no spaces."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ArchiveError(f"{where}: {field} is {_kind(value)}, not a web address")
    if len(value) > MAX_URL_CHARS or not re.fullmatch(r"https?://[^\s\x00-\x1f\x7f]+", value, re.ASCII):
        raise ArchiveError(f"{where}: {field} is not a web address (http:// or https://, {MAX_URL_CHARS:,} characters at most)")
    return value


def _dig(value: object, *keys: str) -> object:
    """value[k1][k2]... through objects only; None where a step is missing or not an object."""
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


# --- JSONL of X API v2 tweet objects -------------------------------------------------------------


def user_sidecar(path: Path) -> Path:
    """Where the account of a JSONL archive lives: `alice.jsonl` -> `alice.user.json`."""
    return path.with_name(path.name.rsplit(".", 1)[0] + ".user.json")


def read_user_file(path: Path, limits: ArchiveLimits = LIMITS) -> dict | None:
    """The JSON object of a `.user.json` file, read within the limits; None when there is none.

        >>> read_user_file(Path("archives/alice.user.json"))
        {'id': '1000', 'username': 'alice', 'name': 'Alice', 'protected': False}
    """
    if not path.exists():
        return None
    _check_regular_file(path)
    try:
        with open(path, "rb") as f:
            data = f.read(limits.max_entry_bytes + 1)
    except OSError as e:
        raise ArchiveError(f"{path}: cannot be read ({e.strerror})") from None
    if len(data) > limits.max_entry_bytes:
        raise ArchiveError(f"{path}: longer than {limits.max_entry_bytes:,} bytes, the most a user file may hold")
    try:
        user = _json_value(data.removeprefix(BOM), str(path), limits)
    except UnicodeDecodeError:
        raise ArchiveError(f"{path}: not a JSON user object (not UTF-8)") from None
    except json.JSONDecodeError as e:
        raise ArchiveError(f"{path}: not a JSON user object ({e.msg})") from None
    if not isinstance(user, dict):
        raise ArchiveError(f"{path}: not a JSON user object")
    return user


def _read_jsonl_account(path: Path, limits: ArchiveLimits) -> Account:
    sidecar = user_sidecar(path)
    user = read_user_file(sidecar, limits)
    if user is None:
        return Account()
    where = str(sidecar)
    return Account(
        username=_username(user.get("username"), where),
        display_name=_display_name(user.get("name"), where, "'name'") or None,
        avatar_url=_url(user.get("profile_image_url"), where, "'profile_image_url'"),
        user_id=_token(user.get("id") or None, where, "'id'", MAX_ID_CHARS, numbers=True),
    )


def _read_jsonl(path: Path, limits: ArchiveLimits) -> Iterator[Post]:
    _check_regular_file(path)
    if (size := path.stat().st_size) > limits.max_file_bytes:
        raise ArchiveError(f"{path}: {size:,} bytes; one file may hold {limits.max_file_bytes:,} at most")
    count = 0
    with open(path, "rb") as f:
        # Lines are read whole, so a line longer than the limit is refused as soon as its limit is read.
        lines = io.BufferedReader(_Metered(f, str(path), _Reading(limits), limits.max_file_bytes, None), READ_SIZE)
        for lineno in itertools.count(1):
            raw = lines.readline(limits.max_entry_bytes + 1)
            if not raw:
                break
            if len(raw) > limits.max_entry_bytes:
                raise ArchiveError(f"{path}: line {lineno} is longer than {limits.max_entry_bytes:,} bytes "
                                   "(the longest post X allows takes at most a third of that)")
            if not raw.strip():
                continue
            try:
                t = _json_value(raw.removeprefix(BOM), f"{path}: line {lineno}", limits)  # a mark some editors add
            except UnicodeDecodeError:
                raise ArchiveError(f"{path}: line {lineno} is not UTF-8") from None
            except json.JSONDecodeError as e:
                raise ArchiveError(f"{path}: line {lineno} is not JSON ({e.msg})") from None
            if not isinstance(t, dict) or "text" not in t:
                raise ArchiveError(f"{path}: line {lineno} is not an X API v2 tweet object (no 'text')")
            count += 1
            if count > limits.max_posts:
                raise ArchiveError(f"{path}: more than {limits.max_posts:,} posts, the most read from one archive")
            yield post_from_v2(t, f"{path}: line {lineno}", limits)


def post_from_v2(t: dict, where: str = "post", limits: ArchiveLimits = LIMITS) -> Post:
    """A Post from an X API v2 tweet object (as the API or `huggingtweets download` gives it).
    A field of the wrong type is an ArchiveError that starts with `where` (the file and line)."""
    post_id = _token(t.get("id"), where, "'id'", MAX_ID_CHARS, numbers=True) or ""
    text = _text(t.get("text"), where, "'text'", limits)
    note = t.get("note_tweet")
    if isinstance(note, dict) and note.get("text") is not None:
        text = _text(note["text"], where, "the note's 'text'", limits)
    references = t.get("referenced_tweets") or []
    if not isinstance(references, list):
        raise ArchiveError(f"{where}: 'referenced_tweets' is {_kind(references)}, not a list")
    kinds = {r.get("type") for r in references if isinstance(r, dict) and isinstance(r.get("type"), str)}
    return Post(
        id=post_id,
        text=text,
        lang=_token(t.get("lang"), where, "'lang'", MAX_LANG_CHARS),
        created_at=_token(t.get("created_at"), where, "'created_at'", MAX_TIME_CHARS),
        retweet="retweeted" in kinds or text.startswith("RT @"),
        reply="replied_to" in kinds or bool(t.get("in_reply_to_user_id")),
        quote="quoted" in kinds,
    )
