"""Settings: config.toml and the environment in one typed object, and one clear line for each mistake."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from bot.common.config import CONFIG_TEMPLATE, ConfigSource, Settings, find_config, load_settings
from bot.common.errors import ConfigError


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def error_for(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(write_config(tmp_path, text))
    message = str(caught.value)
    assert "\n" not in message, "an error is one line"
    return message


# --- reading --------------------------------------------------------------------------------------


def test_the_template_holds_the_defaults():
    assert load_settings(CONFIG_TEMPLATE) == Settings()


def test_which_file_is_read_option_then_variable_then_the_current_folder_then_defaults(tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.delenv("HUGGINGTWEETS_CONFIG", raising=False)
    assert find_config().path is None and load_settings() == Settings()  # no file anywhere: the defaults
    here = write_config(elsewhere, "[data]\nmin_words = 4\n")
    assert find_config() == ConfigSource(Path("config.toml"), "config.toml in the current folder")
    assert load_settings().data.min_words == 4
    named = tmp_path / "named.toml"
    named.write_text("[data]\nmin_words = 5\n", encoding="utf-8")
    monkeypatch.setenv("HUGGINGTWEETS_CONFIG", str(named))
    assert load_settings().data.min_words == 5  # the variable wins over the folder's file
    assert load_settings(here).data.min_words == 4  # and --config over both
    monkeypatch.setenv("HUGGINGTWEETS_CONFIG", str(tmp_path / "gone.toml"))
    with pytest.raises(ConfigError, match=r"gone\.toml: no such config file \(named by HUGGINGTWEETS_CONFIG\)$"):
        load_settings()


def test_a_file_only_needs_the_keys_it_changes(tmp_path):
    settings = load_settings(write_config(tmp_path, "[data]\nmin_kept_posts = 10\nkeep_newlines = true\n"))
    assert (settings.data.min_kept_posts, settings.data.keep_newlines) == (10, True)
    assert settings.data.validation_fraction == 0.1
    assert settings.train == Settings().train


def test_an_empty_file_gives_the_defaults(tmp_path):
    assert load_settings(write_config(tmp_path, "")) == Settings()


def test_settings_are_typed(tmp_path):
    settings = load_settings(write_config(tmp_path, '[bot]\nstate_db = "elsewhere/bot.sqlite3"\n'))
    assert settings.bot.state_db == Path("elsewhere/bot.sqlite3")


def test_settings_cannot_be_changed_by_accident():
    with pytest.raises(Exception):
        Settings().data.min_words = 1


def test_every_key_in_config_toml_is_documented():
    """Each key has a comment line right above it, and every setting appears in the file."""
    lines = CONFIG_TEMPLATE.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines):
        if re.match(r"^[a-z_]+\s*=", line):
            assert lines[number - 1].startswith("#"), f"config.toml line {number + 1}: '{line}' has no comment"
    in_file = tomllib.loads("\n".join(lines))
    for section, field in Settings.model_fields.items():
        assert set(in_file[section]) == set(field.annotation.model_fields), f"[{section}] differs from the settings"


# --- secrets come from the environment only ------------------------------------------------------


def test_a_secret_in_the_file_is_refused_without_echoing_it(tmp_path):
    message = error_for(tmp_path, '[hub]\nhf_token = "hf_supersecretvalue"\n')
    assert message.startswith(f"{tmp_path / 'config.toml'}: unknown key 'hub.hf_token'")
    assert "hf_supersecretvalue" not in message


# --- mistakes: one line naming the key and what is allowed ---------------------------------------


def test_unknown_key(tmp_path):
    assert error_for(tmp_path, "[data]\nmin_word = 2\n") == (
        f"{tmp_path / 'config.toml'}: unknown key 'data.min_word' (allowed here: min_words, keep_newlines, "
        "validation_fraction, min_kept_posts, max_handles, seed)")


def test_unknown_section(tmp_path):
    assert error_for(tmp_path, "[dataset]\nmin_words = 2\n") == (
        f"{tmp_path / 'config.toml'}: unknown key 'dataset' (allowed here: data, train, hub, x, bot, bluesky, celery, hf_jobs, space, monitoring)")


def test_one_visitor_may_not_hold_more_than_the_whole_playground(tmp_path):
    message = error_for(tmp_path, "[space]\nqueue_size = 2\nqueue_per_visitor = 3\n")
    assert message.endswith("space.queue_per_visitor must be at most space.queue_size")


def test_jobs_on_workers_come_back_to_the_queue_only_after_their_time_limit(tmp_path):
    message = error_for(tmp_path, '[train]\nexecutor = "celery"\n[bot]\njob_timeout_seconds = 600\n'
                                  '[celery]\nvisibility_timeout_seconds = 300\n')
    assert message.endswith(": celery.visibility_timeout_seconds must be longer than bot.job_timeout_seconds")


def test_the_broker_url_from_the_environment_wins(tmp_path, monkeypatch):
    settings = load_settings(write_config(tmp_path, '[celery]\nbroker_url = "redis://queue.example:6379/1"\n'))
    assert settings.celery.broker == "redis://queue.example:6379/1"
    monkeypatch.setenv("CELERY_BROKER_URL", "redis://other.example:6379/2")
    assert settings.celery.broker == "redis://other.example:6379/2"


def test_value_out_of_range(tmp_path):
    assert error_for(tmp_path, "[data]\nvalidation_fraction = 0.9\n") == (
        f"{tmp_path / 'config.toml'}: 'data.validation_fraction' = 0.9: Input should be less than 0.5")


def test_value_not_among_the_choices(tmp_path):
    assert error_for(tmp_path, '[train]\ndevice = "tpu"\n') == (
        f"{tmp_path / 'config.toml'}: 'train.device' = 'tpu': Input should be 'auto', 'cpu' or 'cuda'")


def test_value_of_the_wrong_type(tmp_path):
    message = error_for(tmp_path, '[data]\nmin_words = "three"\n')
    assert message.startswith(f"{tmp_path / 'config.toml'}: 'data.min_words' = 'three': ")
    assert "integer" in message


def test_a_section_that_is_not_a_table(tmp_path):
    assert error_for(tmp_path, "data = 3\n") == (
        f"{tmp_path / 'config.toml'}: 'data' must be a table ([data] with its keys)")


def test_a_bad_handle_for_the_bot(tmp_path):
    message = error_for(tmp_path, '[bot]\nhandle = "../hugging"\n')
    assert message.startswith(f"{tmp_path / 'config.toml'}: 'bot.handle' = '../hugging': ")


def test_not_toml(tmp_path):
    message = error_for(tmp_path, "[data]\nmin_words 3\n")
    assert message.startswith(f"{tmp_path / 'config.toml'}: not valid TOML: ")
    assert "line 2" in message


def test_not_utf8(tmp_path):
    path = tmp_path / "config.toml"
    path.write_bytes('[train]\nprompt = "Mon rêve"\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(path)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path / "nope.toml")
    assert str(caught.value) == f"{tmp_path / 'nope.toml'}: no such config file"


def test_a_folder_is_not_a_config_file(tmp_path):
    with pytest.raises(ConfigError, match=f"^{tmp_path}: cannot read the config file"):
        load_settings(tmp_path)


def test_a_config_mistake_is_bad_usage():
    assert ConfigError.exit_code == 2
