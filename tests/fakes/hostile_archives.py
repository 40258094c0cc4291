"""Archives made to hurt whatever reads them, for the tests and `benchmarks/hostile_archives.py`.

    >>> from hostile_archives import CATALOGUE
    >>> path = CATALOGUE["deep-100k.zip"].build(tmp_path)     # a 293-byte zip, 100,000 '[' inside
    >>> CATALOGUE["deep-100k.zip"].expect                     # what the one-line error must say
    'JSON nested more than 64 levels deep'

Each builder writes one archive to a path and returns it; `Hostile.build(folder)` names it. Everything
is streamed to disk (a 256 MB post is written 1 MB at a time), so building one costs no memory worth counting. Builders
marked `heavy` compress gigabytes and take seconds: the benchmark builds them, the tests use the same
builders at a small size against tighter `ArchiveLimits`.
"""

from __future__ import annotations

import json
import os
import struct
import warnings
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

TWEETS_PREFIX = b"window.YTD.tweets.part0 = "
MB = 1 << 20


def ytd(name: str, items: list) -> bytes:
    """A data-export file: `window.YTD.<name>.part0 = [...]`."""
    return f"window.YTD.{name}.part0 = ".encode() + json.dumps(items, ensure_ascii=False).encode()


def tweet(text: object = "a perfectly ordinary post", id: object = "1", **fields) -> dict:
    return {"tweet": {"id_str": id, "full_text": text, "lang": "en",
                      "created_at": "Mon Nov 02 10:00:00 +0000 2026", **fields}}


def account(**fields) -> bytes:
    return ytd("account", [{"account": {"username": "alice", "accountId": "1000",
                                        "accountDisplayName": "Alice", **fields}}])


def write_zip(path: Path, members: dict[str, Iterable[bytes] | bytes], method: int = zipfile.ZIP_DEFLATED,
              level: int | None = 1) -> Path:
    """A zip of `members`, each given whole or as chunks (written as they come)."""
    with zipfile.ZipFile(path, "w", method, compresslevel=level if method == zipfile.ZIP_DEFLATED else None) as zf:
        for name, data in members.items():
            with zf.open(name, "w", force_zip64=True) as f:
                for chunk in [data] if isinstance(data, bytes) else data:
                    f.write(chunk)
    return path


def repeated(first: bytes, chunk: bytes, times: int, last: bytes = b"") -> Iterable[bytes]:
    yield first
    for _ in range(times):
        yield chunk
    yield last


def patch_member(path: Path, member: str, *, flag_bits: int | None = None, method: int | None = None,
                 declared_size: int | None = None) -> Path:
    """Rewrite fields of one member's headers in place, as a damaged or crafted zip would have them."""
    zf = zipfile.ZipFile(path)
    info = zf.getinfo(member)
    directory_at = zf.start_dir
    zf.close()
    data = bytearray(path.read_bytes())
    central = data.find(b"PK\x01\x02" + data[directory_at + 4: directory_at + 8], directory_at)
    while central != -1:  # the member's central directory entry
        name_length = struct.unpack_from("<H", data, central + 28)[0]
        if data[central + 46: central + 46 + name_length] == member.encode():
            break
        central = data.find(b"PK\x01\x02", central + 46)
    local = info.header_offset
    if flag_bits is not None:
        struct.pack_into("<H", data, local + 6, flag_bits)
        struct.pack_into("<H", data, central + 8, flag_bits)
    if method is not None:
        struct.pack_into("<H", data, local + 8, method)
        struct.pack_into("<H", data, central + 10, method)
    if declared_size is not None:
        struct.pack_into("<L", data, central + 24, declared_size)
    path.write_bytes(bytes(data))
    return path


def good_files() -> dict[str, bytes]:
    posts = [tweet(f"post number {n} about the weather and the sea", str(n)) for n in range(400)]
    return {"data/tweets.js": ytd("tweets", posts), "data/account.js": account()}


# --- the builders --------------------------------------------------------------------------------


def deep_arrays(path: Path, depth: int = 100_000) -> Path:
    """tweets.js holding one list nested `depth` deep: a few hundred bytes zipped."""
    return write_zip(path, {"data/tweets.js": TWEETS_PREFIX + b"[" * depth}, level=9)


def deep_objects(path: Path, depth: int = 200_000) -> Path:
    """A tweets.js alone: an entry of objects nested `depth` deep (json.loads raises RecursionError)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(TWEETS_PREFIX + b"[" + b'{"a":' * depth)
    return path


def huge_post(path: Path, megabytes: int = 256) -> Path:
    """One post of `megabytes` MB of text, 261 kB zipped."""
    body = repeated(TWEETS_PREFIX + b'[{"tweet": {"id_str": "1", "lang": "en", "full_text": "', b"a" * MB, megabytes,
                    b'"}}]')
    return write_zip(path, {"data/tweets.js": body, "data/account.js": account()}, level=9)


def whitespace_flood(path: Path, megabytes: int = 900) -> Path:
    """A list opened, then `megabytes` MB of spaces: no entry ever ends."""
    body = repeated(TWEETS_PREFIX + b"[", b" " * MB, megabytes, b"]")
    return write_zip(path, {"data/tweets.js": body}, level=9)


def big_member(path: Path, megabytes: int = 1_500) -> Path:
    """A zip bomb: a tweets.js of 1.5 GB (honestly declared) in a few MB."""
    body = repeated(TWEETS_PREFIX + b"[", b" " * MB, megabytes, b"]")
    return write_zip(path, {"data/tweets.js": body})


def many_parts(path: Path, parts: int = 3, megabytes: int = 800) -> Path:
    """A zip bomb in parts: each below the limit of one file, together above the archive's."""
    members = {("data/tweets.js" if n == 0 else f"data/tweets-part{n}.js"):
               repeated(TWEETS_PREFIX + b"[", b" " * MB, megabytes, b"]") for n in range(parts)}
    return write_zip(path, members)


def understated(path: Path) -> Path:
    """A member whose directory entry claims 100 bytes for 64 MB: reading stops at 100 and the check fails."""
    write_zip(path, {"data/tweets.js": repeated(TWEETS_PREFIX + b"[", b" " * MB, 64, b"]")})
    return patch_member(path, "data/tweets.js", declared_size=100)


def many_members(path: Path, members: int = 210_000) -> Path:
    """More members than an export has: the directory alone would cost zipfile memory and time."""
    with warnings.catch_warnings(), zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        warnings.simplefilter("ignore")  # the same name again and again
        zf.writestr("data/tweets.js", ytd("tweets", [tweet()]))
        for _ in range(members):
            zf.writestr("m", b"")
    return path


def directory_lies(path: Path, members: int = 500_000) -> Path:
    """Half a million tiny members while the end record declares one (zipfile would parse them all)."""
    many_members(path, members)
    data = bytearray(path.read_bytes())
    end = data.rfind(b"PK\x05\x06")
    struct.pack_into("<HH", data, end + 8, 1, 1)  # members on this disk, in all
    zip64_end = data.rfind(b"PK\x06\x06", 0, end)  # past 65,535 members the count is (also) here
    if zip64_end != -1:
        struct.pack_into("<QQ", data, zip64_end + 24, 1, 1)
    path.write_bytes(bytes(data))
    return path


def encrypted(path: Path) -> Path:
    write_zip(path, good_files(), method=zipfile.ZIP_STORED)
    return patch_member(path, "data/tweets.js", flag_bits=0x1)


def lzma(path: Path) -> Path:
    return write_zip(path, good_files(), method=zipfile.ZIP_LZMA)


def unknown_method(path: Path) -> Path:
    write_zip(path, good_files(), method=zipfile.ZIP_STORED)
    return patch_member(path, "data/tweets.js", method=77)


def truncated(path: Path) -> Path:
    whole = write_zip(path, good_files()).read_bytes()
    path.write_bytes(whole[: len(whole) // 2])
    return path


def corrupt_member(path: Path) -> Path:
    write_zip(path, good_files(), level=6)
    info = zipfile.ZipFile(path).getinfo("data/tweets.js")
    data = bytearray(path.read_bytes())
    start = info.header_offset + 30 + len(info.filename.encode())  # where the compressed bytes begin
    for i in range(start + 10, start + min(info.compress_size - 10, 400)):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))
    return path


def not_utf8(path: Path) -> Path:
    text = 'window.YTD.tweets.part0 = [{"tweet": {"id_str": "1", "full_text": "café au lait"}}]'
    return write_zip(path, {"data/tweets.js": text.encode("latin-1")})


def not_ytd(path: Path) -> Path:
    return write_zip(path, {"data/tweets.js": b"var tweets = " + json.dumps([tweet()]).encode()})


def object_not_list(path: Path) -> Path:
    return write_zip(path, {"data/tweets.js": TWEETS_PREFIX + json.dumps(tweet()).encode()})


def too_many_posts(path: Path, posts: int = 200_001) -> Path:
    entry = b'{"tweet": {"id_str": "1", "full_text": "the same short post again"}}'
    body = repeated(TWEETS_PREFIX + b"[" + entry, b"," + entry, posts - 1, b"]")
    return write_zip(path, {"data/tweets.js": body})


def big_notes(path: Path, megabytes: int = 70) -> Path:
    """A note-tweet.js (held in memory while reading) past its limit."""
    body = repeated(b"window.YTD.note_tweet.part0 = [", b" " * MB, megabytes, b"]")
    return write_zip(path, {"data/tweets.js": ytd("tweets", [tweet()]), "data/note-tweet.js": body})


def a_device(path: Path) -> Path:
    """An extracted export whose tweets.js is /dev/zero: endless bytes."""
    (path / "data").mkdir(parents=True, exist_ok=True)
    os.symlink("/dev/zero", path / "data" / "tweets.js")
    return path


def jsonl_deep(path: Path, depth: int = 200_000) -> Path:
    path.write_bytes(b'{"id": "1", "text": "fine"}\n' + b"[" * depth + b"\n")
    return path


def jsonl_long_line(path: Path, megabytes: int = 64) -> Path:
    with open(path, "wb") as f:
        f.write(b'{"id": "1", "text": "')
        for _ in range(megabytes):
            f.write(b"a" * MB)
        f.write(b'"}\n')
    return path


def wrong_type(field: str, value: object) -> Callable[[Path], Path]:
    """An export whose one post or account has `field` of the wrong type."""
    def build(path: Path) -> Path:
        files = {"data/tweets.js": ytd("tweets", [tweet()]), "data/account.js": account()}
        if field in ("username", "accountDisplayName", "accountId"):
            files["data/account.js"] = account(**{field: value})
        elif field == "avatarMediaUrl":
            files["data/profile.js"] = ytd("profile", [{"profile": {field: value}}])
        else:
            files["data/tweets.js"] = ytd("tweets", [tweet(**{field: value})] if field != "full_text"
                                          else [tweet(text=value)])
        return write_zip(path, files)
    return build


@dataclass(frozen=True)
class Hostile:
    name: str  # the file (or folder) it is written to
    builder: Callable[[Path], Path]
    expect: str  # a part of the one-line error
    heavy: bool = False  # compresses gigabytes or writes tens of MB: seconds to build

    def build(self, folder: Path) -> Path:
        return self.builder(folder / self.name)


CATALOGUE = {h.name: h for h in [
    Hostile("deep-100k.zip", deep_arrays, "JSON nested more than 64 levels deep"),
    Hostile("deep-200k/tweets.js", deep_objects, "JSON nested more than 64 levels deep"),
    Hostile("post-256mb.zip", huge_post, "an entry longer than 1,000,000 bytes"),
    Hostile("spaces-900mb.zip", whitespace_flood, "an entry longer than 1,000,000 bytes", heavy=True),
    Hostile("bomb-1.5gb.zip", big_member, "one file may hold 1,000,000,000 at most", heavy=True),
    Hostile("bomb-parts.zip", many_parts, "an archive may hold 2,000,000,000 at most", heavy=True),
    Hostile("sizes-lie.zip", understated, "corrupt zip member"),
    Hostile("members-210k.zip", many_members, "a zip may hold 200,000 at most", heavy=True),
    Hostile("directory-lies.zip", directory_lies, "more than 200,000 members", heavy=True),
    Hostile("encrypted.zip", encrypted, "encrypted"),
    Hostile("lzma.zip", lzma, "compressed with LZMA (method 14)"),
    Hostile("method-77.zip", unknown_method, "compressed with an unknown method (method 77)"),
    Hostile("truncated.zip", truncated, "not a readable zip file"),
    Hostile("corrupt.zip", corrupt_member, "data/tweets.js: "),
    Hostile("latin-1.zip", not_utf8, "not UTF-8"),
    Hostile("not-ytd.zip", not_ytd, "does not start with 'window.YTD.<name>.part0 = ['"),
    Hostile("object.zip", object_not_list, "does not start with 'window.YTD.<name>.part0 = ['"),
    Hostile("posts-200k.zip", too_many_posts, "more than 200,000 posts", heavy=True),
    Hostile("notes-70mb.zip", big_notes, "one file may hold 64,000,000 at most"),
    Hostile("device", a_device, "not a regular file"),
    Hostile("deep.jsonl", jsonl_deep, "line 2: JSON nested more than 64 levels deep"),
    Hostile("long-line.jsonl", jsonl_long_line, "line 1 is longer than 1,000,000 bytes"),
    Hostile("lang-int.zip", wrong_type("lang", 7), "tweet 1: 'lang' is a number, not text"),
    Hostile("full_text-list.zip", wrong_type("full_text", ["a"]), "tweet 1: 'full_text' is a list, not text"),
    Hostile("created_at-dict.zip", wrong_type("created_at", {}), "tweet 1: 'created_at' is an object, not text"),
    Hostile("id_str-list.zip", wrong_type("id_str", [1]), "an entry's 'id_str' is a list, not an id"),
    Hostile("username-list.zip", wrong_type("username", ["alice"]), "'username' is a list, not a handle"),
    Hostile("username-path.zip", wrong_type("username", "../alice"), "the username '../alice' is not an X handle"),
    Hostile("accountDisplayName-int.zip", wrong_type("accountDisplayName", 5),
            "'accountDisplayName' is a number, not text"),
    Hostile("avatarMediaUrl-list.zip", wrong_type("avatarMediaUrl", ["x"]),
            "'avatarMediaUrl' is a list, not a web address"),
]}
