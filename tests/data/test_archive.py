"""Reading posts offline: every form of archive `open_archive` accepts, and every bad one it refuses.

The archives are real files: X data exports written by `bot.data.synthetic` (zip, folder, split parts)
or by hand, and JSONL files of X API v2 tweet objects.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import tracemalloc
import zipfile
from pathlib import Path

import hostile_archives
import pytest
from hostile_archives import CATALOGUE

from bot.data.archive import Account, Archive, ArchiveLimits, find_archive, open_archive, post_from_v2
from bot.common.errors import ArchiveError, HandleError
from bot.data.synthetic import export_files, synthetic_tweets, v2_to_export, write_export, write_jsonl

PROJECT = Path(__file__).resolve().parents[2]
ALICE = {"id": "1000", "username": "alice", "name": "Alice ☕",
         "profile_image_url": "https://pbs.twimg.com/profile_images/1/alice_normal.jpg"}


def ytd(name: str, items: list, part: int = 0) -> bytes:
    """A data-export file: `window.YTD.<name>.partN = [...]`, as X writes it."""
    return f"window.YTD.{name}.part{part} = ".encode() + json.dumps(items, ensure_ascii=False, indent=2).encode()


def export_tweet(text: str, id: str = "1", **fields) -> dict:
    """One entry of tweets.js."""
    return {"tweet": {"id_str": id, "id": id, "full_text": text, "lang": "en",
                      "created_at": "Mon Nov 02 10:00:00 +0000 2026", **fields}}


def write_zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def texts(archive: Archive) -> list[str]:
    return [post.text for post in archive.posts()]


@pytest.fixture
def tweets() -> list[dict]:
    return synthetic_tweets(60, seed=7)


# --- the X data export, in each of its forms -----------------------------------------------------


def test_zip_as_downloaded(tmp_path, tweets):
    path = write_export(tmp_path / "twitter-2026-11-01.zip", tweets, username="Alice", display_name="Alice ☕",
                        avatar_url="https://pbs.twimg.com/profile_images/1/Alice.jpg")
    archive = open_archive(path)
    assert archive.kind == "export"
    assert archive.account == Account(username="Alice", display_name="Alice ☕", user_id="1000",
                                      avatar_url="https://pbs.twimg.com/profile_images/1/Alice.jpg")
    posts = list(archive.posts())
    assert len(posts) == 60
    assert [p.id for p in posts] == [t["id"] for t in tweets]


def test_extracted_folder(tmp_path, tweets):
    write_export(tmp_path / "export", tweets, username="alice", display_name="Alice")
    archive = open_archive(tmp_path / "export")
    assert archive.account.username == "alice"
    assert len(texts(archive)) == 60


def test_folder_with_the_files_at_its_top(tmp_path):
    (tmp_path / "tweets.js").write_bytes(ytd("tweets", [export_tweet("a post in a flat folder")]))
    (tmp_path / "account.js").write_bytes(ytd("account", [{"account": {"username": "alice"}}]))
    archive = open_archive(tmp_path)
    assert archive.account.username == "alice"
    assert texts(archive) == ["a post in a flat folder"]


def test_tweets_js_alone(tmp_path):
    (tmp_path / "tweets.js").write_bytes(ytd("tweets", [export_tweet("just the one file", "1")]))
    archive = open_archive(tmp_path / "tweets.js")
    assert archive.account == Account()  # nobody named: the handle given on the command line is trusted
    assert texts(archive) == ["just the one file"]


def test_tweets_js_picks_up_account_and_profile_beside_it(tmp_path, tweets):
    write_export(tmp_path, tweets, username="alice", display_name="Alice", avatar_url="https://pbs.twimg.com/a.jpg")
    archive = open_archive(tmp_path / "data" / "tweets.js")
    assert archive.account.display_name == "Alice"
    assert archive.account.avatar_url == "https://pbs.twimg.com/a.jpg"


@pytest.mark.parametrize("form", ["zip", "folder", "tweets.js"])
def test_posts_split_over_parts_are_all_read_in_order(tmp_path, tweets, form):
    path = write_export(tmp_path / ("export.zip" if form == "zip" else "export"), tweets,
                        username="alice", display_name="Alice", part_size=25)
    if form == "tweets.js":
        path = path / "data" / "tweets.js"
    files = export_files(tweets, "alice", "Alice", part_size=25)
    assert {"data/tweets.js", "data/tweets-part1.js", "data/tweets-part2.js"} <= set(files)
    assert [p.id for p in open_archive(path).posts()] == [t["id"] for t in tweets]


def test_parts_are_ordered_by_number_not_by_name(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for part in range(12):  # tweets-part10.js sorts before tweets-part2.js as text
        name = "tweets.js" if part == 0 else f"tweets-part{part}.js"
        (data / name).write_bytes(ytd("tweets", [export_tweet(f"post number {part}", str(part))], part))
    assert [p.id for p in open_archive(tmp_path).posts()] == [str(n) for n in range(12)]


def test_older_exports_name_the_file_tweet_js(tmp_path):
    (tmp_path / "tweet.js").write_bytes(ytd("tweet", [export_tweet("from an older export")]))
    assert texts(open_archive(tmp_path)) == ["from an older export"]


def test_account_without_profile(tmp_path):
    files = {"data/tweets.js": ytd("tweets", [export_tweet("hello there world")]),
             "data/account.js": ytd("account", [{"account": {"username": "bob", "accountDisplayName": "Bob",
                                                             "accountId": "42"}}])}
    archive = open_archive(write_zip(tmp_path / "bob.zip", files))
    assert archive.account == Account(username="bob", display_name="Bob", avatar_url=None, user_id="42")


def test_posts_can_be_read_twice(tmp_path, tweets):
    archive = open_archive(write_export(tmp_path / "a.zip", tweets, username="alice", display_name="Alice"))
    assert texts(archive) == texts(archive)


def test_export_fields(tmp_path):
    files = {"data/tweets.js": ytd("tweets", [
        export_tweet("@bob that is right", "1", in_reply_to_status_id_str="9", lang="en"),
        export_tweet("RT @bob: someone else's words", "2"),
        export_tweet("a repost, the old way", "3", retweeted_status={"id_str": "8"}),
        export_tweet("look at this one https://t.co/x", "4", is_quote_status=True),
        export_tweet("今日は本当にいい天気ですね", "5", lang="ja"),
    ])}
    first, rt, old_rt, quote, ja = open_archive(write_zip(tmp_path / "a.zip", files)).posts()
    assert first.reply and not first.retweet and first.created_at == "Mon Nov 02 10:00:00 +0000 2026"
    assert rt.retweet and old_rt.retweet
    assert quote.quote and not quote.retweet
    assert (ja.lang, ja.text) == ("ja", "今日は本当にいい天気ですね")


def test_entities_stay_escaped_in_the_archive(tmp_path):
    """Unescaping is the dataset's job: the archive hands over the text as X wrote it."""
    files = {"data/tweets.js": ytd("tweets", [export_tweet("fish &amp; chips &lt;3")])}
    assert texts(open_archive(write_zip(tmp_path / "a.zip", files))) == ["fish &amp; chips &lt;3"]


def test_long_posts_take_their_full_text_from_note_tweet_js(tmp_path):
    long_text = "My dream is a long post. " * 20
    files = {
        "data/tweets.js": ytd("tweets", [
            export_tweet(long_text[:270] + "… https://t.co/abc", "1", created_at="Wed Jul 19 17:06:50 +0000 2023"),
            # Posted in the same second, but a different post: keeps its own text.
            export_tweet("2/ and a short follow-up", "2", created_at="Wed Jul 19 17:06:50 +0000 2023"),
            export_tweet("an ordinary post", "3", created_at="Thu Jul 20 09:00:00 +0000 2023"),
        ]),
        "data/note-tweet.js": ytd("note_tweet", [{"noteTweet": {
            "noteTweetId": "777", "createdAt": "2023-07-19T17:06:50.000Z",
            "core": {"text": long_text, "urls": [], "mentions": [], "hashtags": []}}}]),
    }
    assert texts(open_archive(write_zip(tmp_path / "a.zip", files))) == [
        long_text, "2/ and a short follow-up", "an ordinary post"]


def test_note_tweet_matched_by_post_id_when_it_names_one(tmp_path):
    (tmp_path / "tweets.js").write_bytes(ytd("tweets", [export_tweet("Cut short here…", "55")]))
    (tmp_path / "note-tweet.js").write_bytes(ytd("note_tweet", [{"noteTweet": {
        "tweetId": "55", "createdAt": "2020-01-01T00:00:00.000Z", "core": {"text": "Cut short here, but not here."}}}]))
    assert texts(open_archive(tmp_path)) == ["Cut short here, but not here."]


def test_note_tweet_inside_the_tweet(tmp_path):
    entry = export_tweet("short version…", note_tweet={"text": "short version, and the rest of it"})
    (tmp_path / "tweets.js").write_bytes(ytd("tweets", [entry]))
    assert texts(open_archive(tmp_path)) == ["short version, and the rest of it"]


def test_byte_order_mark_and_trailing_semicolon_are_tolerated(tmp_path):
    (tmp_path / "tweets.js").write_bytes(b"\xef\xbb\xbf" + ytd("tweets", [export_tweet("still fine to read")]) + b";\n")
    assert texts(open_archive(tmp_path)) == ["still fine to read"]


# --- JSONL of X API v2 tweet objects -------------------------------------------------------------


def test_jsonl_with_user_sidecar(tmp_path, tweets):
    path = write_jsonl(tmp_path / "alice.jsonl", tweets, user=ALICE)
    assert (tmp_path / "alice.user.json").exists()
    archive = open_archive(path)
    assert archive.kind == "jsonl"
    assert archive.account == Account(username="alice", display_name="Alice ☕", user_id="1000",
                                      avatar_url=ALICE["profile_image_url"])
    assert [p.id for p in archive.posts()] == [t["id"] for t in tweets]


def test_jsonl_without_sidecar(tmp_path, tweets):
    archive = open_archive(write_jsonl(tmp_path / "posts.jsonl", tweets))
    assert archive.account == Account()
    assert len(texts(archive)) == 60


def test_jsonl_blank_lines_and_byte_order_mark(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"id": "1", "text": "first line here"}\n\n{"id": "2", "text": "second line here"}\n')
    assert texts(open_archive(path)) == ["first line here", "second line here"]


def test_v2_fields():
    retweet = post_from_v2({"id": "1", "text": "a repost", "referenced_tweets": [{"type": "retweeted", "id": "9"}]})
    old_style = post_from_v2({"id": "2", "text": "RT @bob: old style"})
    reply = post_from_v2({"id": "3", "text": "@bob yes", "referenced_tweets": [{"type": "replied_to", "id": "9"}]})
    quote = post_from_v2({"id": "4", "text": "look", "referenced_tweets": [{"type": "quoted", "id": "9"}]})
    long = post_from_v2({"id": "5", "text": "cut…", "note_tweet": {"text": "cut short no more"}, "lang": "fr",
                         "created_at": "2026-11-01T10:00:00.000Z"})
    assert retweet.retweet and old_style.retweet
    assert reply.reply and not reply.retweet
    assert quote.quote and not quote.retweet
    assert (long.text, long.lang, long.created_at) == ("cut short no more", "fr", "2026-11-01T10:00:00.000Z")


def test_export_and_jsonl_of_the_same_posts_read_alike(tmp_path, tweets):
    from_export = list(open_archive(write_export(tmp_path / "a.zip", tweets, username="a", display_name="A")).posts())
    from_jsonl = list(open_archive(write_jsonl(tmp_path / "a.jsonl", tweets)).posts())
    assert [(p.id, p.text, p.lang, p.retweet, p.reply) for p in from_export] == \
           [(p.id, p.text, p.lang, p.retweet, p.reply) for p in from_jsonl]


# --- the bundled sample and streaming -----------------------------------------------------------


def test_bundled_sample(sample_archive):
    archive = open_archive(sample_archive)
    assert archive.account.username == "dreamy_kettle"
    assert archive.account.display_name == "Dreamy Kettle ☕"
    assert sum(1 for _ in archive.posts()) == 420


def test_bundled_sample_is_rebuilt_byte_for_byte(tmp_path, sample_archive):
    """`python -m bot.data.synthetic` rebuilds the sample; the same call here gives the same bytes."""
    rebuilt = write_export(tmp_path / "sample.zip", synthetic_tweets(420, seed=2026),
                           username="dreamy_kettle", display_name="Dreamy Kettle ☕")
    assert rebuilt.read_bytes() == Path(sample_archive).read_bytes()


@pytest.mark.slow
def test_a_big_export_streams_in_bounded_memory(tmp_path):
    """20,000 posts (about 8 MB of tweets.js) are read while holding only a few posts at a time."""
    entries = [v2_to_export(t) for t in synthetic_tweets(2_000, seed=1)]
    path = tmp_path / "big.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf, zf.open("data/tweets.js", "w") as f:
        f.write(b"window.YTD.tweets.part0 = [")
        for n in range(20_000):
            entry = {"tweet": entries[n % 2_000]["tweet"] | {"id_str": str(n)}}
            f.write((b",\n" if n else b"") + json.dumps(entry, indent=2).encode())
        f.write(b"]")
    uncompressed = zipfile.ZipFile(path).getinfo("data/tweets.js").file_size
    assert uncompressed > 7_500_000

    archive = open_archive(path)
    tracemalloc.start()
    count = sum(1 for _ in archive.posts())
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert count == 20_000
    assert peak < 2_000_000, f"reading held {peak / 1e6:.1f} MB at once"


# --- finding a user's archive in a folder (the bot's local source) ------------------------------


def test_find_archive(tmp_path, tweets):
    write_export(tmp_path / "Alice.zip", tweets, username="Alice", display_name="Alice")
    write_jsonl(tmp_path / "bob.jsonl", tweets)
    write_export(tmp_path / "carol", tweets, username="carol", display_name="Carol")
    assert find_archive(tmp_path, "@alice").account.username == "Alice"  # case-insensitive
    assert find_archive(tmp_path, "bob").kind == "jsonl"
    assert find_archive(tmp_path, "CAROL").path == tmp_path / "carol"
    assert find_archive(tmp_path, "dave") is None


def test_find_archive_refuses_what_is_not_a_handle(tmp_path):
    with pytest.raises(HandleError):
        find_archive(tmp_path, "../alice")


# --- bad input: a clear error that names the file -----------------------------------------------


def error_for(path) -> str:
    """The message of the ArchiveError that opening and reading `path` gives."""
    with pytest.raises(ArchiveError) as caught:
        archive = open_archive(path)
        list(archive.posts())
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_nonexistent_path(tmp_path):
    assert error_for(tmp_path / "nope.zip") == f"{tmp_path / 'nope.zip'}: no such file or folder"


def test_truncated_zip(tmp_path, tweets):
    whole = write_export(tmp_path / "whole.zip", tweets, username="a", display_name="A").read_bytes()
    (tmp_path / "half.zip").write_bytes(whole[: len(whole) // 2])
    message = error_for(tmp_path / "half.zip")
    assert message.startswith(f"{tmp_path / 'half.zip'}: not a readable zip file")


def test_zero_byte_zip(tmp_path):
    (tmp_path / "empty.zip").write_bytes(b"")
    assert error_for(tmp_path / "empty.zip").startswith(f"{tmp_path / 'empty.zip'}: not a readable zip file")


@pytest.mark.parametrize("member", ["data/account.js", "data/tweets.js"])
def test_corrupt_zip_member(tmp_path, member):
    """Damaged compressed data inside an intact zip directory: found while reading, still one clear line."""
    files = export_files(synthetic_tweets(300, seed=3), "alice", "Alice")
    path = write_zip(tmp_path / "damaged.zip", files)
    info = zipfile.ZipFile(path).getinfo(member)
    data = bytearray(path.read_bytes())
    start = info.header_offset + 30 + len(info.filename.encode())  # where the compressed bytes begin
    for i in range(start + 10, start + min(info.compress_size - 10, 400)):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))
    message = error_for(path)
    assert message.startswith(f"{path}:{member}: ")
    assert any(word in message for word in ("corrupt", "malformed", "not UTF-8"))


def test_zip_without_tweets_js(tmp_path):
    path = write_zip(tmp_path / "photos.zip", {"IMG_0001.txt": b"not an export"})
    assert error_for(path) == f"{path}: the zip holds no data/tweets.js: not an X data export"


def test_empty_folder(tmp_path):
    assert "no tweets.js" in error_for(tmp_path)


@pytest.mark.parametrize("content", [
    b"var tweets = []",
    b"[]",
    b'window.YTD.tweets.part0 = {"tweet": {}}',  # an object where the list belongs
    b"",
])
def test_wrong_js_prefix(tmp_path, content):
    (tmp_path / "tweets.js").write_bytes(content)
    assert error_for(tmp_path / "tweets.js") == (
        f"{tmp_path / 'tweets.js'}: does not start with 'window.YTD.<name>.part0 = [': not an X data export file")


def test_non_utf8_bytes_in_tweets_js(tmp_path):
    latin1 = 'window.YTD.tweets.part0 = [{"tweet": {"id_str": "1", "full_text": "café au lait"}}]'.encode("latin-1")
    (tmp_path / "tweets.js").write_bytes(latin1)
    assert error_for(tmp_path / "tweets.js").startswith(f"{tmp_path / 'tweets.js'}: not UTF-8")


def test_malformed_json_in_tweets_js(tmp_path):
    whole = ytd("tweets", [export_tweet("one"), export_tweet("two")])
    (tmp_path / "tweets.js").write_bytes(whole[:-40])
    assert error_for(tmp_path / "tweets.js").startswith(f"{tmp_path / 'tweets.js'}: malformed JSON")


def test_entry_that_is_not_a_tweet(tmp_path):
    (tmp_path / "tweets.js").write_bytes(b"window.YTD.tweets.part0 = [1, 2]")
    assert error_for(tmp_path / "tweets.js") == f"{tmp_path / 'tweets.js'}: an entry is not a tweet object"


def test_tweet_without_text(tmp_path):
    (tmp_path / "tweets.js").write_bytes(ytd("tweets", [{"tweet": {"id_str": "12"}}]))
    assert error_for(tmp_path / "tweets.js") == f"{tmp_path / 'tweets.js'}: tweet 12 has no text"


def test_malformed_jsonl_line(tmp_path):
    path = tmp_path / "alice.jsonl"
    path.write_text('{"id": "1", "text": "a fine first line"}\n{"id": "2", "text": \n', encoding="utf-8")
    assert error_for(path).startswith(f"{path}: line 2 is not JSON")


def test_jsonl_line_that_is_not_a_tweet(tmp_path):
    path = tmp_path / "alice.jsonl"
    path.write_text('{"id": "1", "full_text": "the export field, in the wrong file"}\n', encoding="utf-8")
    assert error_for(path) == f"{path}: line 1 is not an X API v2 tweet object (no 'text')"


def test_non_utf8_jsonl(tmp_path):
    path = tmp_path / "alice.jsonl"
    path.write_bytes('{"id": "1", "text": "ok"}\n{"id": "2", "text": "café"}\n'.encode("latin-1"))
    assert error_for(path) == f"{path}: line 2 is not UTF-8"


def test_broken_user_sidecar(tmp_path, tweets):
    path = write_jsonl(tmp_path / "alice.jsonl", tweets)
    (tmp_path / "alice.user.json").write_text("{not json", encoding="utf-8")
    assert error_for(path).startswith(f"{tmp_path / 'alice.user.json'}: not a JSON user object")


def test_unknown_kind_of_file(tmp_path):
    (tmp_path / "notes.txt").write_text("hello", encoding="utf-8")
    assert "unknown archive form" in error_for(tmp_path / "notes.txt")


# --- hostile archives: each refused in one line, quickly, in bounded memory -----------------------
#
# The archives come from `hostile_archives.CATALOGUE` (also built, at full size, by
# benchmarks/hostile_archives.py). The heavy ones (gigabytes compressed) are built here at a small
# size and read with tighter limits: the same check, the same line.

QUICK = [h for h in CATALOGUE.values() if not h.heavy]


@pytest.mark.slow
@pytest.mark.parametrize("hostile", QUICK, ids=[h.name for h in QUICK])
def test_a_hostile_archive_is_one_line_that_names_the_file_and_the_limit(tmp_path, hostile):
    path = hostile.build(tmp_path)
    started = time.monotonic()
    message = error_for(path)
    assert time.monotonic() - started < 2.0
    assert message.startswith(str(path)), message
    assert hostile.expect in message


def test_the_heavy_hostile_archives_are_in_the_catalogue_and_the_benchmark():
    assert {h.name for h in CATALOGUE.values() if h.heavy} == {
        "spaces-900mb.zip", "bomb-1.5gb.zip", "bomb-parts.zip", "members-210k.zip", "directory-lies.zip",
        "posts-200k.zip"}


def limited_error(path: Path, **limits) -> str:
    with pytest.raises(ArchiveError) as caught:
        list(open_archive(path, ArchiveLimits(**limits)).posts())
    assert "\n" not in str(caught.value)
    return str(caught.value)


def test_a_list_that_never_ends_is_refused_after_one_entry_s_worth(tmp_path):
    path = hostile_archives.whitespace_flood(tmp_path / "spaces.zip", megabytes=3)
    assert error_for(path) == (f"{path}:data/tweets.js: an entry longer than 1,000,000 bytes "
                               "(the longest post X allows takes at most a third of that)")


def test_a_zip_bomb_is_refused_by_its_declared_size_before_reading(tmp_path):
    path = hostile_archives.big_member(tmp_path / "bomb.zip", megabytes=2)
    with pytest.raises(ArchiveError) as caught:
        open_archive(path, ArchiveLimits(max_file_bytes=1_000_000))  # at once: not a byte inflated
    assert str(caught.value) == (f"{path}:data/tweets.js: 2,097,180 bytes uncompressed; "
                                 "one file may hold 1,000,000 at most")


def test_parts_below_the_file_limit_are_refused_together(tmp_path):
    path = hostile_archives.many_parts(tmp_path / "parts.zip", parts=3, megabytes=1)
    assert limited_error(path, max_total_bytes=2_500_000) == (
        f"{path}: the data files hold 3,145,812 bytes uncompressed together; an archive may hold 2,500,000 at most")


def test_the_total_is_counted_as_read_where_nothing_declares_it(tmp_path):
    """An extracted folder declares no sizes: the bytes are counted as they stream."""
    for part in range(3):
        name = "tweets.js" if part == 0 else f"tweets-part{part}.js"
        posts = [export_tweet(f"post {n} of part {part}, about the sea", f"{part}{n}") for n in range(2_000)]
        (tmp_path / name).write_bytes(ytd("tweets", posts, part))
    size = (tmp_path / "tweets.js").stat().st_size
    message = limited_error(tmp_path, max_total_bytes=int(size * 2.5))
    assert message == (f"{tmp_path / 'tweets-part2.js'}: the archive's files hold more than {int(size * 2.5):,} "
                       "bytes together, the most read from one archive")
    assert len(list(open_archive(tmp_path, ArchiveLimits(max_total_bytes=size * 3 + 1)).posts())) == 6_000


def test_a_file_over_its_limit_in_a_folder_is_refused_by_its_size(tmp_path):
    (tmp_path / "tweets.js").write_bytes(ytd("tweets", [export_tweet("x" * 5_000)]))
    size = (tmp_path / "tweets.js").stat().st_size
    assert limited_error(tmp_path, max_file_bytes=4_000) == (
        f"{tmp_path / 'tweets.js'}: {size:,} bytes; one file may hold 4,000 at most")


@pytest.mark.parametrize("lying", [False, True], ids=["declared", "understated"])
def test_too_many_zip_members(tmp_path, lying):
    """The end record's count is checked before zipfile reads the directory; when it understates, the
    entries are counted, still before zipfile makes an object of each."""
    build = hostile_archives.directory_lies if lying else hostile_archives.many_members
    path = build(tmp_path / "many.zip", 50)
    assert limited_error(path, max_members=40) == (
        f"{path}: {'more than 40' if lying else '51'} members; a zip may hold 40 at most")


def test_a_central_directory_over_its_limit(tmp_path):
    path = hostile_archives.many_members(tmp_path / "many.zip", 50)
    directory = zipfile.ZipFile(path)
    size = path.stat().st_size - directory.start_dir - 22
    assert limited_error(path, max_directory_bytes=1_000) == (
        f"{path}: a central directory of {size:,} bytes; a zip may have 1,000 at most")


def test_too_many_posts(tmp_path):
    path = hostile_archives.too_many_posts(tmp_path / "posts.zip", 101)
    assert limited_error(path, max_posts=100) == (
        f"{path}:data/tweets.js: more than 100 posts, the most read from one archive")
    assert len(list(open_archive(path, ArchiveLimits(max_posts=101)).posts())) == 101


def test_too_many_posts_in_jsonl(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", synthetic_tweets(30, seed=1))
    assert limited_error(path, max_posts=29) == f"{path}: more than 29 posts, the most read from one archive"


def test_too_many_tweets_js_parts(tmp_path):
    for part in range(4):
        (tmp_path / ("tweets.js" if part == 0 else f"tweets-part{part}.js")).write_bytes(ytd("tweets", [], part))
    with pytest.raises(ArchiveError) as caught:
        open_archive(tmp_path, ArchiveLimits(max_parts=3))
    assert str(caught.value) == f"{tmp_path}: 4 tweets.js parts; an export may have 3 at most"


def test_the_longest_post_x_allows_is_read_and_one_byte_more_is_refused(tmp_path):
    longest = "😀" * 25_000  # 100,000 bytes of UTF-8, written as \ud83d\ude00 escapes: 300 kB of JSON
    (tmp_path / "tweets.js").write_text(
        "window.YTD.tweets.part0 = " + json.dumps([export_tweet(longest, "1"), export_tweet(longest + "!", "2")]),
        encoding="ascii")
    archive = open_archive(tmp_path / "tweets.js")
    posts = archive.posts()
    assert next(posts).text == longest
    with pytest.raises(ArchiveError) as caught:
        next(posts)
    assert str(caught.value) == (f"{tmp_path / 'tweets.js'}: tweet 2: 'full_text' is longer than 100,000 bytes "
                                 "(X allows 25,000 characters in a post)")


def test_an_entry_just_under_the_entry_limit_is_read(tmp_path):
    """The entry limit counts JSON bytes, within a read's worth; an entry below it is never refused."""
    escaped = "\\u0061" * 99_000  # 594 kB of JSON for 99,000 characters of text
    entry = '{"tweet": {"id_str": "1", "full_text": "' + escaped + '", "pad": "' + "p" * 390_000 + '"}}'
    (tmp_path / "tweets.js").write_text(f"window.YTD.tweets.part0 = [{entry}, {entry}]", encoding="ascii")
    assert [len(t) for t in texts(open_archive(tmp_path / "tweets.js"))] == [99_000, 99_000]


def test_a_long_note_is_refused(tmp_path):
    (tmp_path / "tweets.js").write_bytes(ytd("tweets", [export_tweet("Cut short here…", "55")]))
    (tmp_path / "note-tweet.js").write_bytes(ytd("note_tweet", [{"noteTweet": {
        "noteTweetId": "9", "tweetId": "55", "core": {"text": "n" * 100_001}}}]))
    assert error_for(tmp_path) == (f"{tmp_path / 'note-tweet.js'}: note 9: 'text' is longer than 100,000 bytes "
                                   "(X allows 25,000 characters in a post)")


def test_a_lone_surrogate_is_not_utf8(tmp_path):
    (tmp_path / "tweets.js").write_bytes(b'window.YTD.tweets.part0 = [{"tweet": {"id_str": "1", "full_text": "\\udc00"}}]')
    assert error_for(tmp_path / "tweets.js").startswith(f"{tmp_path / 'tweets.js'}: not UTF-8")


@pytest.mark.parametrize("line, expected", [
    ('{"id": "1", "text": "ok", "lang": 5}', "line 1: 'lang' is a number, not text"),
    ('{"id": "1", "text": ["a"]}', "line 1: 'text' is a list, not text"),
    ('{"id": {"n": 1}, "text": "ok"}', "line 1: 'id' is an object, not an id"),
    ('{"id": "1", "text": "ok", "created_at": 1700000000}', "line 1: 'created_at' is a number, not text"),
    ('{"id": "1", "text": "ok", "referenced_tweets": 5}', "line 1: 'referenced_tweets' is a number, not a list"),
    ('{"id": "1", "text": "ok", "note_tweet": {"text": 5}}', "line 1: the note's 'text' is a number, not text"),
    ('{"id": "1\\n2", "text": "ok"}', "line 1: 'id' is not an id (3 characters, with control characters)"),
    ('[' * 100_000, "line 1: JSON nested more than 64 levels deep (X's own files nest fewer than 10)"),
])
def test_jsonl_fields_of_the_wrong_type(tmp_path, line, expected):
    path = tmp_path / "a.jsonl"
    path.write_text(line + "\n", encoding="utf-8")
    assert error_for(path) == f"{path}: {expected}"


def test_referenced_tweets_of_odd_shapes_are_no_crash():
    post = post_from_v2({"id": "1", "text": "hi", "referenced_tweets": [5, {"type": ["x"]}, {"type": "quoted"}]})
    assert post.quote and not post.retweet


@pytest.mark.parametrize("user, expected", [
    ({"username": ["alice"]}, "'username' is a list, not a handle"),
    ({"username": "al ice"}, "the username 'al ice' is not an X handle"),
    ({"username": "alice", "name": 5}, "'name' is a number, not text"),
    ({"username": "alice", "profile_image_url": ["x"]}, "'profile_image_url' is a list, not a web address"),
    ({"username": "alice", "profile_image_url": "javascript:alert(1)"}, "'profile_image_url' is not a web address"),
    ({"username": "alice", "id": [1]}, "'id' is a list, not an id"),
])
def test_user_file_fields_of_the_wrong_type(tmp_path, user, expected):
    path = write_jsonl(tmp_path / "alice.jsonl", synthetic_tweets(3, seed=1), user=user)
    assert error_for(path).startswith(f"{tmp_path / 'alice.user.json'}: {expected}")


def test_a_user_file_nested_deep_or_too_long(tmp_path):
    path = write_jsonl(tmp_path / "alice.jsonl", synthetic_tweets(3, seed=1))
    (tmp_path / "alice.user.json").write_bytes(b"[" * 200_000)
    assert error_for(path) == f"{tmp_path / 'alice.user.json'}: JSON nested more than 64 levels deep (X's own files nest fewer than 10)"
    (tmp_path / "alice.user.json").write_bytes(b'{"name": "' + b"a" * 1_000_001 + b'"}')
    assert error_for(path).startswith(f"{tmp_path / 'alice.user.json'}: longer than 1,000,000 bytes")


def test_control_characters_in_a_display_name_become_spaces(tmp_path):
    files = {"data/tweets.js": ytd("tweets", [export_tweet("hello there")]),
             "data/account.js": ytd("account", [{"account": {"username": "bob", "accountDisplayName": "Bob\nthe\tbuilder  ☕"}}])}
    assert open_archive(write_zip(tmp_path / "bob.zip", files)).account.display_name == "Bob the builder  ☕"


def test_ids_given_as_numbers_are_read_as_text(tmp_path):
    files = {"data/tweets.js": ytd("tweets", [{"tweet": {"id": 12, "full_text": "a number for an id"}}]),
             "data/account.js": ytd("account", [{"account": {"username": "bob", "accountId": 42}}])}
    archive = open_archive(write_zip(tmp_path / "bob.zip", files))
    assert archive.account.user_id == "42"
    assert [p.id for p in archive.posts()] == ["12"]


def test_reading_the_100k_deep_archive_stays_under_500_mb(tmp_path):
    """Peak resident memory of a fresh process reading it, from getrusage. A small launcher starts the
    reader, so the peak is not the test runner's own (Linux carries a parent's peak across fork and exec)."""
    path = hostile_archives.deep_arrays(tmp_path / "deep.zip")
    assert path.stat().st_size < 600
    reader = ("import sys; from bot.data.archive import open_archive; from bot.common.errors import ArchiveError\n"
              "try: list(open_archive(sys.argv[1]).posts())\n"
              "except ArchiveError as e: print(e)")
    launcher = ("import os, subprocess, sys, time; t = time.monotonic()\n"
                "child = subprocess.Popen([sys.executable, '-c', sys.argv[1], sys.argv[2]], stdout=subprocess.PIPE, text=True)\n"
                "out = child.stdout.read(); _, status, usage = os.wait4(child.pid, 0)\n"
                "print(usage.ru_maxrss, time.monotonic() - t, out.strip(), sep='\\t')")
    done = subprocess.run([sys.executable, "-c", launcher, reader, str(path)], capture_output=True, text=True,
                          timeout=60, env=os.environ | {"PYTHONPATH": str(PROJECT)})
    peak_kb, seconds, outcome = done.stdout.rstrip("\n").split("\t")
    assert outcome == f"{path}:data/tweets.js: JSON nested more than 64 levels deep (X's own files nest fewer than 10)"
    print(f"peak {int(peak_kb) / 1024:.0f} MB in {float(seconds):.2f} s")
    assert int(peak_kb) < 500 * 1024
    assert float(seconds) < 5


@pytest.mark.parametrize("form", ["tweets.js", "jsonl", "user.json"])
def test_64_levels_are_read_and_65_are_not(tmp_path, form):
    def nested(levels: int) -> str:
        """A post (or user) whose field `deep` makes the whole file nest `levels` deep."""
        outer = {"tweets.js": 3, "jsonl": 1, "user.json": 1}[form]  # [ {tweet: {  /  {  /  {
        return "[" * (levels - outer) + "]" * (levels - outer)

    for levels in (64, 65):
        if form == "tweets.js":
            path = tmp_path / f"{levels}" / "tweets.js"
            path.parent.mkdir()
            path.write_text('window.YTD.tweets.part0 = [{"tweet": {"id_str": "1", "full_text": "deep", "deep": '
                            + nested(levels) + "}}]", encoding="utf-8")
        elif form == "jsonl":
            path = tmp_path / f"{levels}.jsonl"
            path.write_text('{"id": "1", "text": "deep", "deep": ' + nested(levels) + "}\n", encoding="utf-8")
        else:
            path = write_jsonl(tmp_path / f"{levels}.jsonl", [{"id": "1", "text": "deep"}])
            user_sidecar = tmp_path / f"{levels}.user.json"
            user_sidecar.write_text('{"username": "alice", "deep": ' + nested(levels) + "}", encoding="utf-8")
        if levels == 64:
            assert texts(open_archive(path)) == ["deep"]
        else:
            assert error_for(path).endswith(": JSON nested more than 64 levels deep (X's own files nest fewer than 10)")


def test_a_lone_surrogate_in_jsonl_is_refused_before_it_reaches_a_file(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"id": "1", "text": "half an emoji \\ud83d"}\n', encoding="utf-8")
    assert error_for(path) == f"{path}: line 1: 'text' is not UTF-8 (it holds a lone surrogate)"
