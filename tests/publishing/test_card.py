"""The model card and the folder's images: metadata, escaping, round trip, layout, determinism."""

from __future__ import annotations

import html
import io
import logging
import re
import sys

import pytest
from huggingface_hub import ModelCard
from PIL import Image

from bot.publishing.card import card_data, escape, render_card, write_card, write_images
from bot.common.config import HubSettings, Settings
from bot.publishing.images import HEIGHT, WIDTH, font_chain, predictions_image, text_width, wrap

HOSTILE = "<img src=x onerror=alert(1)> | **x**"


def make_facts(**changes) -> dict:
    """The facts of a run, as train_model writes them to run.json (trimmed to what the card reads)."""
    facts = {
        "name": "dreamy_kettle", "handles": ["dreamy_kettle"], "model_id": "huggingtweets/dreamy_kettle",
        "users": {"dreamy_kettle": {"downloaded": 420, "retweets": 27, "short": 25, "duplicates": 12, "kept": 356,
                                    "language": "en"}},
        "accounts": {"dreamy_kettle": {"username": "dreamy_kettle", "display_name": "Dreamy Kettle ☕",
                                       "avatar_url": "https://pbs.twimg.com/profile_images/1/dreamy_kettle.jpg"}},
        "language": ["en"], "base_model": "openai-community/gpt2", "base_model_hub_id": "openai-community/gpt2",
        "license": "mit", "validation_loss": 3.2189, "validation_perplexity": 25.0, "prompt": "My dream is",
        "samples": ["My dream is a garden full of light", "My dream is to thank @\u2060tea_ghost for the tea"],
        "best_sample": "My dream is a garden full of light", "samples_dropped_as_memorised": 1,
        "hyperparameters": {"learning_rate": 1.372e-4, "batch_size": 8, "block_size": 256, "precision": "fp32"},
        "seed": 42, "epochs_run": 2.5, "steps": 30, "steps_per_epoch": 12, "best_step": 24,
        "stop_reason": "plateau", "tokens_seen": 123456, "train_posts": 320, "validation_posts": 36,
        "base_model_type": "gpt2", "made_by_bot": True,
        "validation_tokens": 1026, "hardware": {"device": "cpu", "name": "Test CPU", "threads": 2},
        "durations_s": {"train": 2.5, "total": 5.0},
        "history": [{"step": 12, "epoch": 1.0, "validation_loss": 3.5}, {"step": 24, "epoch": 2.0, "validation_loss": 3.2},
                    {"step": 30, "epoch": 2.5, "validation_loss": 3.3}],
        "step_losses": [4.5 - 0.05 * i for i in range(30)],
    }
    facts.update(changes)
    return facts


def two_users(display_name: str = HOSTILE) -> dict:
    facts = make_facts(name="bob-dreamy_kettle", model_id="huggingtweets/bob-dreamy_kettle",
                       handles=["bob", "dreamy_kettle"], language=["en", "ja"])
    facts["users"] = {"bob": dict(facts["users"]["dreamy_kettle"], kept=99, language="ja"), **facts["users"]}
    facts["accounts"] = {"bob": {"username": "Bob", "display_name": display_name, "avatar_url": "javascript:alert(1)"},
                         **facts["accounts"]}
    return facts


def test_card_metadata_has_every_field_the_hub_shows():
    data = render_card(make_facts(), Settings()).data
    assert data.language == ["en"]
    assert data.license == "mit"
    assert data.library_name == "transformers"
    assert data.pipeline_tag == "text-generation"
    assert data.base_model == "openai-community/gpt2"
    assert "huggingtweets" in data.tags
    assert data.widget == [{"text": "My dream is", "output": {"text": "My dream is a garden full of light"}}]
    assert data.thumbnail == "https://huggingface.co/huggingtweets/dreamy_kettle/resolve/main/predictions.png"
    result = data.eval_results[0]
    assert (result.metric_type, result.metric_value, result.task_type) == ("perplexity", 25.0, "text-generation")


def test_thumbnail_follows_the_configured_organization():
    data = render_card(make_facts(), Settings(hub=HubSettings(organization="my-org"))).data
    assert data.thumbnail == "https://huggingface.co/my-org/dreamy_kettle/resolve/main/predictions.png"


def test_tiny_or_local_base_model_is_not_claimed_as_a_hub_model():
    card = render_card(make_facts(base_model="tiny", base_model_hub_id=None, license="apache-2.0"), Settings())
    assert card.data.base_model is None and card.data.license == "apache-2.0"
    assert "tiny GPT-2 built locally" in card.text


def test_written_card_round_trips_through_model_card_load(tmp_path):
    facts = two_users()
    path = write_card(tmp_path, facts, Settings())
    raw = path.read_bytes()
    assert raw.decode("utf-8")  # UTF-8
    loaded = ModelCard.load(path)
    expected = card_data(facts, Settings()).to_dict()
    assert loaded.data.to_dict() == expected
    assert expected["language"] == ["en", "ja"] and "model-index" in expected and "widget" in expected


def test_card_body_has_the_sections_of_the_original():
    text = render_card(make_facts(), Settings()).text
    assert "🤖 AI BOT 🤖" in text
    assert '<img src="https://pbs.twimg.com/profile_images/1/dreamy_kettle.jpg"' in text
    assert "Dreamy Kettle ☕" in text  # emoji intact
    for heading in ("## How to use", "## Samples", "## Training data", "## Training procedure", "## Evaluation",
                    "## Limitations and bias", "## Removal"):
        assert heading in text
    assert 'pipeline("text-generation", model="huggingtweets/dreamy_kettle")' in text
    assert "![Sample predictions](predictions.png)" in text and "![Loss curve](loss_curve.png)" in text
    assert "generated text, not" in text
    assert "@huggingtweets opt out" in text
    assert "123,456" in text and "**25.0**" in text  # tokens seen, perplexity
    assert "| Kept | 356 |" in text


def test_several_users_make_a_cyborg_with_one_column_each():
    text = render_card(two_users("Bob 猫好き"), Settings()).text
    assert "🤖 AI CYBORG 🤖" in text
    table = [line for line in text.splitlines() if line.startswith("| Kept")]
    assert table == ["| Kept | 99 | 356 |"]
    assert "Bob 猫好き" in text  # CJK intact


def test_hostile_display_name_shows_as_text_and_breaks_neither_html_nor_table():
    body = render_card(two_users(HOSTILE), Settings()).text  # the body, without the YAML header
    assert "<img src=x" not in body and "onerror=alert(1)>" not in body.replace("&#", "")
    assert "**x**" not in body
    assert "javascript:" not in body  # the bad avatar URL is left out
    shown = [m for m in re.findall(r"<b>(.*?)</b>", body) if "img" in html.unescape(m)]
    assert shown and html.unescape(shown[0]).startswith(HOSTILE)  # the name, as text
    table = body.split("## Training data")[1].split("## Training procedure")[0]
    rows = [line for line in table.splitlines() if line.startswith("|")]
    assert len(rows) == 8 and all(line.count("|") == 4 for line in rows), rows  # every row keeps its 3 columns
    # The HTML header has as many closing tags as opening ones.
    header = body[body.index('<div align="center">'):body.index("</div>") + 6]
    assert header.count("<p>") == header.count("</p>") and header.count("<b>") == header.count("</b>")


def test_escape_neutralises_markdown_and_html_but_keeps_text():
    for text in (HOSTILE, "[link](https://evil.example) `code` ~~x~~ # h $x$ @alice _i_ \\ |", "雨 ☕ 🌊 café"):
        escaped = escape(text)
        assert html.unescape(escaped).replace("\u2060", "") == text  # the same text, word joiners aside
        assert not re.search(r"[<>|*`\[\]_~#$@\\]", re.sub(r"&#\d+;", "", escaped))
    assert escape("a\nb") == "a b"


def test_samples_in_the_card_are_escaped_and_ping_no_one():
    facts = make_facts(samples=["My dream is **bold** <b>x</b> | @\u2060alice"], best_sample=None)
    body = render_card(facts, Settings()).text
    assert "**bold**" not in body and "<b>x</b>" not in body
    assert not re.search(r"@[A-Za-z0-9_]", body.split("## Samples")[1].split("## Training data")[0])
    assert render_card(facts, Settings()).data.widget == [{"text": "My dream is"}]  # no best sample: no output


@pytest.mark.slow
def test_japanese_user_gets_language_ja(tmp_path, monkeypatch):
    from bot.data.archive import open_archive
    from bot.common.config import TrainSettings
    from bot.data.dataset import build_dataset
    from bot.data.synthetic import synthetic_tweets, write_export
    from bot.training.train import train_model

    archive = write_export(tmp_path / "neko.zip", synthetic_tweets(300, seed=3, japanese_share=1.0),
                           username="neko_desu", display_name="ねこ 🐈")
    dataset = build_dataset({"neko_desu": open_archive(str(archive))})
    assert dataset.languages == ["ja"]
    result = train_model(dataset, Settings(train=TrainSettings(max_epochs=1, num_samples=2)), tmp_path / "model",
                         base_model="tiny")
    card = ModelCard.load(result.folder / "README.md")
    assert card.data.language == ["ja"]
    assert "ねこ 🐈" in card.text


# --- images ------------------------------------------------------------------------------------


def test_predictions_image_is_a_deterministic_social_card(tmp_path):
    facts = two_users(HOSTILE + " " + "very long name " * 10)
    facts["samples"] = ["My dream is " + "a very long sample that goes on and on " * 12,
                        "My dream is 今日は本当にいい天気ですね。朝のコーヒーが一番おいしい" * 4, "My dream is ☕🌊✨"]
    write_images(tmp_path / "a", facts) if (tmp_path / "a").mkdir() is None else None
    write_images(tmp_path / "b", facts) if (tmp_path / "b").mkdir() is None else None
    for name in ("predictions.png", "loss_curve.png"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    img = Image.open(io.BytesIO((tmp_path / "a" / "predictions.png").read_bytes()))
    assert img.size == (WIDTH, HEIGHT) == (1200, 628) and img.format == "PNG"
    assert not img.info.get("Creation Time") and "date" not in str(img.info).lower()


def test_long_text_wraps_inside_its_box_and_is_cut_with_an_ellipsis():
    size, width = 26, 500
    spans = [("My dream is", True), (" " + "supercalifragilistic " * 20 + "今日は本当にいい天気ですね" * 5, False)]
    lines = wrap(spans, width, 4, size)
    assert len(lines) == 4
    for line in lines:
        assert sum(text_width(t, font_chain(size, b)) for t, b in line) <= width + 1
    assert lines[-1][-1][0].endswith("…")
    cjk = wrap([("今日は本当にいい天気ですね" * 10, False)], 300, 50, size)  # no spaces: breaks between characters
    assert len(cjk) > 1 and "".join(t for line in cjk for t, _ in line) == "今日は本当にいい天気ですね" * 10
    short = wrap([("My dream is", True), (" the sea", False)], width, 3, size)
    assert short == [[("My dream is", True), (" the sea", False)]]


def test_images_draw_with_whatever_fonts_the_machine_has_after_one_warning(monkeypatch, caplog):
    import bot.publishing.images as images

    def clear():
        for cached in (images._font_files, images.packaged_font_files, images.font_chain, images._font_for):
            cached.cache_clear()

    clear()
    monkeypatch.setattr(images, "FONT_DIRS", ("/nonexistent-fonts",))
    for module in images.FONT_PACKAGES:  # None in sys.modules: the import system finds no such package
        monkeypatch.setitem(sys.modules, module, None)
    try:
        with caplog.at_level(logging.WARNING, logger="huggingtweets.images"):
            for _ in range(2):
                img = predictions_image(["ねこ ☕"], ["neko"], "My dream is", ["My dream is 雨 🌊 and more"])
                assert img.size == (1200, 628)
                assert len(img.getcolors(maxcolors=1 << 20)) > 10  # something was drawn, with Pillow's own font
        (warning,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert warning.startswith("the font packages manimgx-fonts and manimgx-fonts-cjk are not installed")
        assert warning.endswith("(pip install manimgx-fonts manimgx-fonts-cjk)")
    finally:
        clear()


def _glyph(font, ch: str) -> bytes:
    mask = font.getmask(ch)
    return bytes(mask.size) + bytes(mask)


@pytest.mark.parametrize("text", ["今日は本当に天気", "我的梦想是", "한국어", "🌊☕🐈✨"])
def test_cjk_and_emoji_are_drawn_as_glyphs_not_empty_boxes(text):
    """This machine has no CJK or emoji font of its own: the glyphs come from the font packages."""
    from bot.publishing.images import _font_for, packaged_font_files

    assert packaged_font_files(), "the font packages (manimgx-fonts, manimgx-fonts-cjk) are not installed"
    chain = font_chain(30)
    glyphs = []
    for ch in text:
        font = _font_for(chain, ch)
        assert font is not None, f"{ch!r}: no font has it"
        assert font.path in packaged_font_files(), f"{ch!r}: drawn with {font.path}"
        glyph = _glyph(font, ch)
        assert glyph != _glyph(font, "\U0010fffd") and any(glyph[8:]), f"{ch!r}: drawn as the missing-glyph box"
        glyphs.append(glyph)
    assert len(set(glyphs)) == len(glyphs)  # every character its own shape: no shared box


def test_bold_text_is_heavier_than_regular():
    from bot.publishing.images import _font_for

    for ch in ("M", "夢"):
        regular, bold = (_glyph(_font_for(font_chain(30, b), ch), ch) for b in (False, True))
        assert sum(bold[8:]) > 1.15 * sum(regular[8:]), ch  # more ink: the variable fonts' weight is set


def test_a_model_trained_by_hand_names_its_organisation_for_removal_not_the_bot():
    text = render_card(make_facts(made_by_bot=False), Settings(hub=HubSettings(organization="my-org"))).text
    removal = text.split("## Removal")[1]
    assert "contact [my-org](https://huggingface.co/my-org), who published it" in removal
    assert "opt out" not in text and "@huggingtweets" not in text  # no bot answers for this organisation
    bot_made = render_card(make_facts(made_by_bot=True), Settings()).text.split("## Removal")[1]
    assert 'post "@huggingtweets opt out" on X' in bot_made


def test_a_run_json_without_the_flag_is_a_model_made_by_hand():
    facts = make_facts()
    del facts["made_by_bot"]
    assert "opt out" not in render_card(facts, Settings()).text


@pytest.mark.parametrize("model_type, tags", [("gpt2", ["huggingtweets", "text-generation", "gpt2"]),
                                              ("llama", ["huggingtweets", "text-generation", "llama"]),
                                              (None, ["huggingtweets", "text-generation"]),
                                              ("not a tag\n- injected", ["huggingtweets", "text-generation"])])
def test_tags_name_the_base_models_own_architecture(model_type, tags):
    assert render_card(make_facts(base_model_type=model_type), Settings()).data.tags == tags


def test_the_card_counts_the_posts_trained_on_and_those_held_out_apart():
    # Two people: the balancing repeats the smaller one's posts, so the training set holds more texts.
    text = render_card(make_facts(train_posts=600, distinct_train_posts=400, validation_posts=44), Settings()).text
    flat = text.replace("\n", " ")
    assert "fine-tuned on 400 of their public posts (44 more were held out to measure it)" in flat
    assert "learned from 400 posts of one person" in flat and "On 44 held-out posts" in flat
    assert "600" not in flat


def test_the_sample_account_has_no_made_up_picture(sample_archive):
    from bot.data.archive import open_archive

    assert open_archive(sample_archive).account.avatar_url is None  # a card would show it as a broken image
    facts = make_facts()
    facts["accounts"]["dreamy_kettle"]["avatar_url"] = None
    assert "<img" not in render_card(facts, Settings()).text


def test_card_links_to_the_playground_with_the_model_chosen():
    from bot.common.config import SpaceSettings

    text = render_card(make_facts(), Settings(hub=HubSettings(organization="my-org"),
                                              space=SpaceSettings(name="try-it"))).text
    link = "https://huggingface.co/spaces/my-org/try-it?model=dreamy_kettle"
    assert f"[the huggingtweets playground]({link})" in text
    assert "Try it in your browser" in text
