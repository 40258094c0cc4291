"""From posts to a training set: what cleaning does to each post, what is counted, and how
users are balanced and split. Archives are real JSONL files and X data exports.
"""

from __future__ import annotations

import itertools
import json
import random

import pytest

from bot.data.archive import Post, open_archive
from bot.common.config import DataSettings
from bot.data.dataset import (Dataset, UserCounts, balance, build_dataset, clean_posts, clean_text, count_words,
                         is_short, pair_archives, split_validation)
from bot.common.errors import ArchiveError, HandleError, NotEnoughDataError, UsageError
from bot.common.handles import model_name, normalize_handle, normalize_handles
from bot.data.synthetic import synthetic_tweets, write_export, write_jsonl

_ids = itertools.count(1)


def v2(text: str, lang: str = "en", **fields) -> dict:
    """An X API v2 tweet object, as the API and `huggingtweets download` give it."""
    tid = str(next(_ids))
    return {"id": tid, "text": text, "edit_history_tweet_ids": [tid], "lang": lang, **fields}


def retweet(text: str) -> dict:
    return v2(text, referenced_tweets=[{"type": "retweeted", "id": "1"}])


def reply(text: str) -> dict:
    return v2(text, referenced_tweets=[{"type": "replied_to", "id": "1"}])


def posts_about(who: str, n: int, lang: str = "en") -> list[dict]:
    """`n` distinct posts, none of them short."""
    return [v2(f"{who} wrote post number {i} about the sea", lang) for i in range(n)]


def archive_of(tmp_path, handle: str, tweets: list[dict]):
    return open_archive(write_jsonl(tmp_path / f"{handle}.jsonl", tweets, user={"id": "1", "username": handle}))


def cleaned(text: str, reply: bool = False, keep_newlines: bool = False) -> str:
    return clean_text(Post(id="1", text=text, reply=reply), keep_newlines)


ANY_AMOUNT = DataSettings(min_kept_posts=1)


# --- cleaning the text --------------------------------------------------------------------------


@pytest.mark.parametrize("raw, text", [
    ("fish &amp; chips", "fish & chips"),
    ("i &lt;3 tea", "i <3 tea"),
    ("a &gt; b", "a > b"),
    ("she said &quot;hi&quot;", 'she said "hi"'),
    ("it&#39;s fine", "it's fine"),
    ("wait for it&hellip;", "wait for it…"),
    ("&eacute;t&eacute; &agrave; Paris", "été à Paris"),
    ("smile &#x1F600;", "smile 😀"),
    ("no&nbsp;break", "no break"),
    ("&amp;lt; stays one level deep", "&lt; stays one level deep"),
])
def test_every_html_entity_is_unescaped(raw, text):
    assert cleaned(raw) == text


@pytest.mark.parametrize("raw, text", [
    ("read this https://t.co/AbC123xyz now", "read this now"),
    ("http://example.com/a?b=c#d and www.example.org too", "and too"),
    ("HTTPS://T.CO/UPPER case", "case"),
    ("記事はこちらhttps://t.co/abcdEFGH12今日は本当にいい天気ですね", "記事はこちら 今日は本当にいい天気ですね"),
])
def test_links_are_removed(raw, text):
    assert cleaned(raw) == text


def test_the_mentions_that_open_a_reply_are_removed():
    assert cleaned("@bob @carol_2 thanks for the tea!", reply=True) == "thanks for the tea!"
    assert cleaned("@bob: agreed, completely", reply=True) == "agreed, completely"
    assert cleaned("@bob今日は本当にいい天気ですね", reply=True) == "今日は本当にいい天気ですね"
    assert cleaned("＠bob full-width at sign", reply=True) == "full-width at sign"


def test_mentions_and_hashtags_inside_the_text_are_kept():
    assert cleaned("@bob thanks @carol for the #tea party", reply=True) == "thanks @carol for the #tea party"


def test_a_post_that_is_not_a_reply_keeps_its_opening_mention():
    assert cleaned("@bob is the best baker in town") == "@bob is the best baker in town"


def test_whitespace_is_collapsed_and_newlines_become_spaces():
    assert cleaned("  line one\n\n  line two\r\nthree\t\tfour  ") == "line one line two three four"


def test_newlines_are_kept_when_configured():
    assert cleaned("  line one\n\n  line two\r\nthree\t\tfour  ", keep_newlines=True) == "line one\nline two\nthree four"


def test_emoji_are_kept():
    assert cleaned("good morning ☕🌧️ world") == "good morning ☕🌧️ world"


# --- short posts: words by Unicode segmentation -------------------------------------------------


@pytest.mark.parametrize("text", [
    "今日は本当にいい天気ですね",  # no spaces at all, yet 13 words
    "我今天很高兴",
    "한국어 문장입니다 정말",
    "I love my kettle",
    "don't stop me now",
    "@bob and @carol love #tea time",  # 'and', 'love', 'time'
])
def test_not_short(text):
    assert not is_short(text)


@pytest.mark.parametrize("text", [
    "草",
    "lol",
    "😂",
    "😂😂😂 🙃",
    "good morning",
    "#one #two #three",
    "@bob @carol @dave",
    "",
])
def test_short(text):
    assert is_short(text)


def test_a_bare_link_is_short_once_cleaned():
    assert cleaned("https://t.co/AbC123xyz") == ""
    assert is_short(cleaned("https://t.co/AbC123xyz"))


def test_word_counts():
    assert count_words("今日は本当にいい天気ですね") == 13
    assert count_words("don't stop") == 2  # one word, not "don" and "t"
    assert count_words("lol 😂 #tea @bob") == 1


def test_min_words_is_configurable():
    assert is_short("three little words", min_words=4)
    assert not is_short("草", min_words=1)


# --- counting one user's posts ------------------------------------------------------------------


def test_counts_for_a_timeline(tmp_path):
    timeline = [
        v2("The kettle sang this morning and I sang back"),
        retweet("Someone else's lovely words about kettles"),  # v2 repost
        v2("RT @bob: an old-style repost of bob's words"),  # the older form
        v2("Look at this, the best kettle ever made https://t.co/abc",
           referenced_tweets=[{"type": "quoted", "id": "7"}]),  # quotes are kept
        reply("@bob @carol I would love a cup of tea"),  # replies are kept, opening mentions gone
        v2("lol"),
        v2("https://t.co/onlyalink"),
        v2("The kettle sang this morning and I sang back"),  # the same again
        v2("The kettle  sang this morning and I sang back https://t.co/x"),  # the same once cleaned
        v2("cut short…", note_tweet={"text": "A long post, " + "and it goes on " * 30 + "until the end."}),
    ]
    counts, kept = clean_posts(archive_of(tmp_path, "alice", timeline).posts())
    assert counts == UserCounts(downloaded=10, retweets=2, short=2, duplicates=2, kept=4, language="en")
    assert kept == [
        "The kettle sang this morning and I sang back",
        "Look at this, the best kettle ever made",
        "I would love a cup of tea",
        "A long post, " + "and it goes on " * 30 + "until the end.",
    ]


def test_a_repost_in_an_export(tmp_path):
    """Exports mark reposts with `retweeted_status` (older ones) or text opening with "RT @"."""
    (tmp_path / "tweets.js").write_text("window.YTD.tweets.part0 = " + json.dumps([
        {"tweet": {"id_str": "1", "full_text": "Someone else's words, reposted", "retweeted_status": {"id_str": "9"}}},
        {"tweet": {"id_str": "2", "full_text": "RT @bob: more of bob's words here"}},
        {"tweet": {"id_str": "3", "full_text": "My own words, written today", "lang": "en"}},
    ]), encoding="utf-8")
    counts, kept = clean_posts(open_archive(tmp_path).posts())
    assert (counts.downloaded, counts.retweets, counts.kept) == (3, 2, 1)
    assert kept == ["My own words, written today"]


def test_japanese_posts_are_kept(tmp_path):
    """The original split on spaces and lost most of a Japanese user's posts."""
    timeline = [v2(t, "ja") for t in ("今日は本当にいい天気ですね", "朝のコーヒーが一番おいしい", "猫が窓の外をずっと見ている",
                                      "新しい本を読み始めました", "草", "www")]
    counts, kept = clean_posts(archive_of(tmp_path, "hanako", timeline).posts())
    assert (counts.short, counts.kept, counts.language) == (2, 4, "ja")


def test_language_is_the_most_common_among_kept_posts(tmp_path):
    timeline = ([v2(f"今日は本当にいい天気ですね その{i}", "ja") for i in range(3)]
                + [v2(f"A fine English post number {i}", "en") for i in range(2)]
                + [retweet(f"Reposted English words number {i}") for i in range(5)]  # not kept: not counted
                + [v2(f"no words here {i} 😂 really", "und") for i in range(4)])  # no language: not counted
    counts, _ = clean_posts(archive_of(tmp_path, "hanako", timeline).posts())
    assert counts.kept == 9
    assert counts.language == "ja"


def test_no_language_when_no_post_names_one(tmp_path):
    counts, _ = clean_posts(archive_of(tmp_path, "a", [v2("words without a language", "und")]).posts())
    assert counts.language is None


def test_duplicates_are_counted_after_cleaning():
    posts = [Post("1", "Same words here"), Post("2", "Same   words here\n"), Post("3", "same words here"),
             Post("4", "@bob Same words here", reply=True)]
    counts, kept = clean_posts(posts)
    assert (counts.duplicates, counts.kept) == (2, 2)
    assert kept == ["Same words here", "same words here"]


def test_keep_newlines_through_clean_posts():
    _, kept = clean_posts([Post("1", "first line\nsecond line\nthird")], DataSettings(keep_newlines=True))
    assert kept == ["first line\nsecond line\nthird"]


# --- the validation split -----------------------------------------------------------------------


def test_ten_percent_is_held_out_and_never_trained_on(tmp_path):
    ds = build_dataset({"alice": archive_of(tmp_path, "alice", posts_about("alice", 200))})
    assert (len(ds.train), len(ds.validation)) == (180, 20)
    assert not set(ds.validation) & set(ds.train)
    assert sorted(ds.train + ds.validation) == sorted(f"alice wrote post number {i} about the sea" for i in range(200))


def test_the_split_is_deterministic_by_seed(tmp_path):
    archive = archive_of(tmp_path, "alice", posts_about("alice", 200))
    first, again = build_dataset({"alice": archive}), build_dataset({"alice": archive})
    other_seed = build_dataset({"alice": archive}, DataSettings(seed=7))
    assert (first.train, first.validation) == (again.train, again.validation)
    assert set(first.validation) != set(other_seed.validation)


def test_the_split_fraction_is_configurable(tmp_path):
    archive = archive_of(tmp_path, "alice", posts_about("alice", 200))
    assert len(build_dataset({"alice": archive}, DataSettings(validation_fraction=0.25)).validation) == 50
    assert build_dataset({"alice": archive}, DataSettings(validation_fraction=0)).validation == []


def test_adding_a_user_leaves_the_first_users_split_alone(tmp_path):
    alice = archive_of(tmp_path, "alice", posts_about("alice", 200))
    bob = archive_of(tmp_path, "bob", posts_about("bob", 50))
    alone = build_dataset({"alice": alice})
    together = build_dataset({"alice": alice, "bob": bob})
    assert together.users[0].validation == alone.users[0].validation


def test_split_validation_keeps_every_post_once():
    texts = [f"post {i}" for i in range(31)]
    train, val = split_validation(texts, 0.1, random.Random(1))
    assert len(val) == 3
    assert sorted(train + val) == sorted(texts)
    assert split_validation(["only one"], 0.1, random.Random(1)) == (["only one"], [])


# --- several users: balancing and the model name ------------------------------------------------


def test_smaller_users_are_repeated_up_to_the_largest_users_characters(tmp_path):
    alice = archive_of(tmp_path, "alice", posts_about("alice", 300))
    bob = archive_of(tmp_path, "bob", posts_about("bob", 40))
    ds = build_dataset({"bob": bob, "alice": alice})
    assert ds.name == "alice-bob"
    alice_chars = sum(len(t) for t in ds.train if t.startswith("alice"))
    bob_chars = sum(len(t) for t in ds.train if t.startswith("bob"))
    longest_post = max(map(len, ds.train))
    assert alice_chars <= bob_chars < alice_chars + longest_post
    # Every one of bob's training posts is repeated, none of his validation posts is.
    bob_train = ds.users[0].train
    assert all(ds.train.count(t) >= 7 for t in bob_train)
    assert not set(ds.validation) & set(ds.train)
    assert len(ds.validation) == 30 + 4


def test_balancing_is_deterministic_by_seed(tmp_path):
    archives = {"alice": archive_of(tmp_path, "alice", posts_about("alice", 300)),
                "bob": archive_of(tmp_path, "bob", posts_about("bob", 45))}
    assert build_dataset(archives).train == build_dataset(archives).train
    assert build_dataset(archives).train != build_dataset(archives, DataSettings(seed=1)).train


def test_balance_directly():
    big, small = ["x" * 100] * 10, ["ab", "cdef"]  # 1,000 characters against 6
    balanced_big, balanced_small = balance([big, small], random.Random(0))
    assert balanced_big == big
    assert 1000 <= sum(map(len, balanced_small)) < 1000 + 4
    assert balanced_small.count("ab") >= 166 and balanced_small.count("cdef") >= 166


def test_the_same_words_from_two_users_are_not_both_held_out_and_trained_on(tmp_path):
    shared = "we both posted exactly these words"
    alice = archive_of(tmp_path, "alice", [v2(shared)] + posts_about("alice", 150))
    bob = archive_of(tmp_path, "bob", [v2(shared)] + posts_about("bob", 150))
    for seed in range(20):
        ds = build_dataset({"alice": alice, "bob": bob}, DataSettings(seed=seed))
        assert not (shared in ds.validation and shared in ds.train)


def test_three_users_at_most(tmp_path):
    archives = {h: archive_of(tmp_path, h, posts_about(h, 50)) for h in ("a", "b", "c", "d")}
    with pytest.raises(UsageError, match="at most 3 handles"):
        build_dataset(archives)


def test_exports_and_jsonl_mix_in_one_model(tmp_path):
    alice = open_archive(write_export(tmp_path / "alice.zip", synthetic_tweets(300, seed=1),
                                      username="Alice", display_name="Alice A."))
    hanako = archive_of(tmp_path, "hanako", synthetic_tweets(300, seed=2, japanese_share=0.8))
    ds = build_dataset({"hanako": hanako, "alice": alice})
    assert ds.name == "alice-hanako"
    assert [u.counts.language for u in ds.users] == ["ja", "en"]
    assert ds.languages == ["ja", "en"]
    assert [u.display_name for u in ds.users] == ["hanako", "Alice A."]


# --- too little data ----------------------------------------------------------------------------


def test_too_few_posts_is_an_error_with_each_users_counts(tmp_path):
    alice = archive_of(tmp_path, "alice", posts_about("alice", 60) + [v2("lol"), retweet("someone's words here")])
    bob = archive_of(tmp_path, "bob", posts_about("bob", 30))
    with pytest.raises(NotEnoughDataError) as caught:
        build_dataset({"alice": alice, "bob": bob})
    assert str(caught.value) == (
        "only 90 posts left after cleaning, 100 needed ("
        "@alice: 62 downloaded, 1 retweets, 1 short, 0 duplicates, 60 kept; "
        "@bob: 30 downloaded, 0 retweets, 0 short, 0 duplicates, 30 kept)")


def test_the_minimum_is_configurable(tmp_path):
    alice = archive_of(tmp_path, "alice", posts_about("alice", 60))
    assert build_dataset({"alice": alice}, DataSettings(min_kept_posts=60)).users[0].counts.kept == 60
    with pytest.raises(NotEnoughDataError, match="61 needed"):
        build_dataset({"alice": alice}, DataSettings(min_kept_posts=61))


def test_a_user_with_nothing_left_is_an_error(tmp_path):
    """A model named alice-bob with nothing of bob's in it would be a lie."""
    alice = archive_of(tmp_path, "alice", posts_about("alice", 200))
    bob = archive_of(tmp_path, "bob", [retweet("only reposts here, nothing else")])
    with pytest.raises(NotEnoughDataError, match="no posts of @bob left after cleaning"):
        build_dataset({"alice": alice, "bob": bob})


def test_an_empty_archive_is_an_error_naming_the_file(tmp_path):
    path = write_jsonl(tmp_path / "alice.jsonl", [])
    with pytest.raises(ArchiveError, match=f"^{path}: the archive holds no posts$"):
        build_dataset({"alice": open_archive(path)})


def test_an_export_with_an_empty_list_is_an_empty_archive(tmp_path):
    (tmp_path / "tweets.js").write_text("window.YTD.tweets.part0 = [ ]", encoding="utf-8")
    with pytest.raises(ArchiveError, match="holds no posts"):
        build_dataset({"alice": open_archive(tmp_path)})


# --- pairing archives with handles --------------------------------------------------------------


def test_archives_pair_with_handles_by_the_account_they_name(tmp_path):
    alice = archive_of(tmp_path, "Alice", posts_about("alice", 3))
    bob = archive_of(tmp_path, "bob", posts_about("bob", 3))
    assert pair_archives(["@bob", "alice"], [alice, bob]) == {"bob": bob, "alice": alice}


def test_archives_that_name_nobody_pair_in_order(tmp_path):
    first = open_archive(write_jsonl(tmp_path / "1.jsonl", posts_about("x", 3)))
    second = open_archive(write_jsonl(tmp_path / "2.jsonl", posts_about("y", 3)))
    assert pair_archives(["alice", "bob"], [first, second]) == {"alice": first, "bob": second}


def test_an_archive_of_someone_else_is_refused(tmp_path):
    path = write_export(tmp_path / "carol.zip", synthetic_tweets(5), username="carol", display_name="Carol")
    with pytest.raises(ArchiveError) as caught:
        pair_archives(["alice"], [open_archive(path)])
    assert str(caught.value) == f"{path}: this archive is @carol's, not @alice's"


def test_two_archives_of_one_user_are_refused(tmp_path):
    first = archive_of(tmp_path, "alice", posts_about("alice", 3))
    second = open_archive(write_export(tmp_path / "a.zip", synthetic_tweets(5), username="alice", display_name="A"))
    with pytest.raises(UsageError, match="two archives of @alice"):
        pair_archives(["alice", "bob"], [first, second])


def test_one_archive_per_handle(tmp_path):
    with pytest.raises(UsageError, match=r"give one --archive per handle \(2 handles, 1 archives\)"):
        pair_archives(["alice", "bob"], [archive_of(tmp_path, "alice", posts_about("alice", 3))])


# --- handles and the model name -----------------------------------------------------------------


@pytest.mark.parametrize("text, handle", [
    ("alice", "alice"),
    ("@Alice_1", "alice_1"),
    ("ALICE", "alice"),
    ("_", "_"),
    ("123", "123"),
    ("a" * 15, "a" * 15),
    ("@" + "B" * 15, "b" * 15),
])
def test_valid_handles(text, handle):
    assert normalize_handle(text) == handle


@pytest.mark.parametrize("text", [
    "",
    "@",
    "@@alice",
    "a" * 16,
    "../etc/passwd",
    "alice/../bob",
    "..",
    "https://x.com/alice",
    "x.com/alice",
    "al ice",
    " alice",
    "alice\n",
    "alice!",
    "alice-bob",
    "ａlice",  # full-width a
    "аlice",  # Cyrillic a
    "alicé",
    "ali\u200bce",  # zero-width space
    None,
])
def test_invalid_handles_are_refused(text):
    with pytest.raises(HandleError, match="is not an? (X|Bluesky) handle"):
        normalize_handle(text)


@pytest.mark.parametrize("text", ["alice..bsky.social", "-alice.bsky.social", "alice.bsky.social.", "handle.invalid",
                                  "alice_1.bsky.social", "a" * 250 + ".social", "alice.bsky.social/../x", "alice.bsky.1"])
def test_invalid_bluesky_handles_are_refused(text):
    with pytest.raises(HandleError, match="is not a Bluesky handle"):
        normalize_handle(text, "bluesky")


def test_model_names_of_both_networks_split_back_into_their_handles_and_never_collide():
    assert normalize_handle("@Alice.BSKY.social") == "alice.bsky.social"
    name = model_name(["my-name.bsky.social", "bob", "zed.example.com"])
    assert name == "bob-my_name.bsky.social-zed.example.com"
    assert name.split("-") == ["bob", "my_name.bsky.social", "zed.example.com"]  # one part per person
    assert model_name(["alice"]) != model_name(["alice.bsky.social"])
    with pytest.raises(HandleError, match="96 at most"):
        model_name(["a" * 60 + ".bsky.social", "b" * 60 + ".bsky.social"])


def test_handles_compare_without_case():
    assert normalize_handles(["Alice", "@alice", "BOB"]) == ["alice", "bob"]


def test_one_to_three_handles():
    with pytest.raises(HandleError, match="give at least one handle"):
        normalize_handles([])
    with pytest.raises(HandleError, match=r"at most 3 handles in one model \(got 4\)"):
        normalize_handles(["a", "b", "c", "d"])


def test_model_name_is_the_sorted_lowercased_handles():
    assert model_name(["Bob", "@alice"]) == "alice-bob"
    assert model_name(["carol", "ALICE", "bob"]) == "alice-bob-carol"
    assert model_name(["dreamy_kettle"]) == "dreamy_kettle"


def test_model_name_refuses_bad_handles():
    with pytest.raises(HandleError):
        model_name(["alice", "../bob"])


# --- saving and loading -------------------------------------------------------------------------


def test_save_and_load(tmp_path):
    alice = open_archive(write_export(tmp_path / "alice.zip", synthetic_tweets(300, seed=1),
                                      username="alice", display_name="Alice ☕"))
    ds = build_dataset({"alice": alice})
    folder = ds.save(tmp_path / "out")
    assert sorted(p.name for p in folder.iterdir()) == ["stats.json", "train.jsonl", "validation.jsonl"]
    stats = json.loads((folder / "stats.json").read_text(encoding="utf-8"))
    assert stats["name"] == "alice"
    assert stats["users"]["alice"] == {"downloaded": 300, "retweets": ds.users[0].counts.retweets,
                                       "short": ds.users[0].counts.short, "duplicates": ds.users[0].counts.duplicates,
                                       "kept": ds.users[0].counts.kept, "language": "en"}
    assert stats["accounts"]["alice"]["display_name"] == "Alice ☕"
    assert (stats["train_posts"], stats["validation_posts"]) == (len(ds.train), len(ds.validation))
    first_line = (folder / "train.jsonl").read_text(encoding="utf-8").splitlines()[0]
    assert json.loads(first_line) == {"text": ds.train[0]}

    loaded = Dataset.load(folder)
    assert (loaded.name, loaded.train, loaded.validation, loaded.seed) == (ds.name, ds.train, ds.validation, ds.seed)
    assert loaded.users[0].counts == ds.users[0].counts


def test_the_bundled_sample(sample_archive):
    ds = build_dataset({"dreamy_kettle": open_archive(sample_archive)})
    assert ds.counts_json() == {"name": "dreamy_kettle", "users": {"dreamy_kettle": {
        "downloaded": 420, "retweets": 27, "short": 25, "duplicates": 12, "kept": 356, "language": "en"}}}
