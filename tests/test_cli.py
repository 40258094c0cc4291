"""The `huggingtweets` command as a user meets it: help, the dataset command's table and JSON, and
one clear line on stderr (never a traceback) for each mistake.

Error paths run the real command in a subprocess (`python -m bot`), so what is checked is exactly
what a terminal would show; the rest goes through typer's CliRunner, which is quicker.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from hostile_archives import CATALOGUE
import typer.main
from typer.testing import CliRunner

from bot.cli import app
from bot.common.handles import HANDLE_FORMS
from bot.data.synthetic import export_files, synthetic_tweets, write_export, write_jsonl

PROJECT = Path(__file__).resolve().parent.parent


def huggingtweets(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run the command for real, as `python -m bot ARGS`."""
    environ = os.environ | {"COLUMNS": "120", "PYTHONPATH": str(PROJECT)} | (env or {})
    return subprocess.run([sys.executable, "-m", "bot", *map(str, args)], capture_output=True, text=True,
                          env=environ, cwd=cwd or PROJECT, timeout=120)


def invoke(*args: str):
    result = CliRunner().invoke(app, list(map(str, args)), env={"COLUMNS": "120"})
    return result


def assert_one_line_error(result: subprocess.CompletedProcess, exit_code: int) -> str:
    """The contract for a user mistake: exit 2 or 1, one line on stderr, nothing on stdout."""
    assert "Traceback" not in result.stderr
    assert result.returncode == exit_code, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("huggingtweets: error: ")
    return lines[0].removeprefix("huggingtweets: error: ")


def table_rows(text: str) -> dict[str, list[str]]:
    """The rows of a counts table as printed: {"Downloaded": ["420"], ...}; the header row is ""."""
    rows = {}
    for line in text.splitlines():
        if line.startswith(("│", "┃")):
            cells = [cell.strip() for cell in line.strip("│┃").replace("┃", "│").split("│")]
            rows[cells[0]] = cells[1:]
    return rows


@pytest.fixture
def alice_and_bob(tmp_path) -> tuple[Path, Path]:
    alice = write_export(tmp_path / "alice.zip", synthetic_tweets(200, seed=1), username="Alice", display_name="Alice")
    bob = write_jsonl(tmp_path / "bob.jsonl", synthetic_tweets(150, seed=2, japanese_share=0.7),
                      user={"id": "2", "username": "bob", "name": "Bob"})
    return alice, bob


# --- help ---------------------------------------------------------------------------------------


def test_help_lists_the_commands():
    result = huggingtweets("--help")
    assert result.returncode == 0
    assert "Usage: huggingtweets" in result.stdout
    for command in typer.main.get_command(app).commands:
        assert command in result.stdout


@pytest.mark.parametrize("command", sorted(typer.main.get_command(app).commands))
def test_each_command_has_help(command):
    result = invoke(command, "--help")
    assert result.exit_code == 0
    assert f"Usage: huggingtweets {command} " in result.stdout
    assert "--help" in result.stdout
    assert not re.search(r"<(list|str|int|float|path|Path)\b", result.stdout), result.stdout  # names, not types


@pytest.mark.slow
def test_commands_are_listed_in_the_order_of_the_pipeline_and_help_is_plain_text():
    result = huggingtweets("--help")
    listed = [line.split()[0] for line in result.stdout.split("Commands:")[1].splitlines() if line.strip()]
    assert listed[:3] == ["demo", "init", "config"]
    assert listed[3:8] == ["download", "dataset", "train", "publish", "delete"]
    assert listed[8:10] == ["run", "status"]
    for command in listed:
        text = huggingtweets(command, "--help").stdout
        options = text.split("Options:")[1]
        assert not re.search(r"<(int|str|bool|path|float|list)", options), f"{command}: a type label in its options"


def test_version():
    result = huggingtweets("--version")
    assert result.returncode == 0 and result.stdout.startswith("huggingtweets 0.")


def test_square_brackets_are_printed_as_written(sample_archive, tmp_path):
    folder = tmp_path / "out[bold]x[/]"
    result = huggingtweets("dataset", "dreamy_kettle", "--archive", sample_archive, "--out", folder)
    assert result.returncode == 0, result.stderr
    assert f"written to {folder}" in result.stdout and (folder / "stats.json").exists()


def test_no_arguments_shows_the_help():
    result = huggingtweets()
    assert result.returncode == 2  # a command was expected
    assert "Usage: huggingtweets" in result.stdout
    assert result.stderr == ""


# --- the dataset command ------------------------------------------------------------------------


def test_dataset_prints_the_counts_table(sample_archive):
    result = huggingtweets("dataset", "dreamy_kettle", "--archive", sample_archive)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Training data for dreamy_kettle")
    assert table_rows(result.stdout) == {
        "": ["@dreamy_kettle"],
        "Downloaded": ["420"], "Retweets": ["27"], "Short": ["25"], "Duplicates": ["12"], "Kept": ["356"],
        "Language": ["en"],
    }
    assert "320 posts to train on and 36 held out to measure the model" in result.stdout


def test_dataset_table_has_a_column_per_user(alice_and_bob):
    alice, bob = alice_and_bob
    result = invoke("dataset", "@bob", "alice", "--archive", alice, "--archive", bob)
    assert result.exit_code == 0, result.output
    rows = table_rows(result.stdout)
    assert rows[""] == ["@bob", "@Alice"]  # in the order given, as the archives spell the names
    assert rows["Downloaded"] == ["150", "200"]
    assert rows["Language"] == ["ja", "en"]
    assert list(rows) == ["", "Downloaded", "Retweets", "Short", "Duplicates", "Kept", "Language"]
    assert result.stdout.startswith("Training data for alice-bob")


def test_dataset_json_is_exactly_the_contract(alice_and_bob):
    alice, bob = alice_and_bob
    result = huggingtweets("dataset", "Bob", "alice", "--archive", alice, "--archive", bob, "--json")
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert list(printed) == ["name", "users"]
    assert printed["name"] == "alice-bob"
    assert list(printed["users"]) == ["bob", "alice"]
    for counts in printed["users"].values():
        assert list(counts) == ["downloaded", "retweets", "short", "duplicates", "kept", "language"]
        assert all(type(counts[key]) is int for key in ("downloaded", "retweets", "short", "duplicates", "kept"))
        assert counts["downloaded"] == counts["retweets"] + counts["short"] + counts["duplicates"] + counts["kept"]
    assert (printed["users"]["alice"]["downloaded"], printed["users"]["alice"]["language"]) == (200, "en")
    assert (printed["users"]["bob"]["downloaded"], printed["users"]["bob"]["language"]) == (150, "ja")
    assert result.stdout.count("\n") == 1  # one JSON document, nothing else on stdout


def test_dataset_json_for_the_sample(sample_archive):
    result = invoke("dataset", "dreamy_kettle", "--archive", sample_archive, "--json")
    assert json.loads(result.stdout) == {"name": "dreamy_kettle", "users": {"dreamy_kettle": {
        "downloaded": 420, "retweets": 27, "short": 25, "duplicates": 12, "kept": 356, "language": "en"}}}


def test_dataset_writes_the_sets_and_stats(tmp_path, sample_archive):
    result = invoke("dataset", "dreamy_kettle", "--archive", sample_archive, "--out", tmp_path / "data")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["stats.json", "train.jsonl", "validation.jsonl"]
    assert len((tmp_path / "data" / "train.jsonl").read_text(encoding="utf-8").splitlines()) == 320
    assert len((tmp_path / "data" / "validation.jsonl").read_text(encoding="utf-8").splitlines()) == 36
    assert f"written to {tmp_path / 'data'}" in " ".join(result.stdout.split())


def test_dataset_reads_every_archive_form(tmp_path):
    tweets = synthetic_tweets(150, seed=4)
    forms = {
        "zip": write_export(tmp_path / "a.zip", tweets, username="alice", display_name="A"),
        "folder": write_export(tmp_path / "folder", tweets, username="alice", display_name="A"),
        "tweets.js": write_export(tmp_path / "js", tweets, username="alice", display_name="A") / "data" / "tweets.js",
        "parts": write_export(tmp_path / "parts", tweets, username="alice", display_name="A", part_size=40),
        "jsonl": write_jsonl(tmp_path / "a.jsonl", tweets, user={"id": "1", "username": "alice"}),
    }
    counts = {form: json.loads(invoke("dataset", "alice", "--archive", path, "--json").stdout)["users"]["alice"]
              for form, path in forms.items()}
    assert counts["zip"]["downloaded"] == 150
    assert all(c == counts["zip"] for c in counts.values()), counts


def test_settings_follow_the_config_option(tmp_path, sample_archive):
    """Each invocation reads its own --config, even several in one process."""
    strict = tmp_path / "strict.toml"
    strict.write_text("[data]\nmin_kept_posts = 1000\n", encoding="utf-8")
    lenient = tmp_path / "lenient.toml"
    lenient.write_text("[data]\nmin_kept_posts = 10\nvalidation_fraction = 0.25\n", encoding="utf-8")
    assert "1000 needed" in str(invoke("--config", strict, "dataset", "dreamy_kettle", "--archive", sample_archive).exception)
    result = invoke("--config", lenient, "dataset", "dreamy_kettle", "--archive", sample_archive)
    assert result.exit_code == 0, result.output
    assert "267 posts to train on and 89 held out to measure the model" in result.stdout


def test_keep_newlines_from_the_config(tmp_path):
    tweets = [{"id": str(i), "text": f"post {i} first line\n\nand its second line"} for i in range(20)]
    archive = write_jsonl(tmp_path / "alice.jsonl", tweets)
    for keep, expected in ((False, "post 0 first line and its second line"), (True, "post 0 first line\nand its second line")):
        config = tmp_path / f"keep-{keep}.toml"
        config.write_text(f"[data]\nmin_kept_posts = 1\nvalidation_fraction = 0\nkeep_newlines = {str(keep).lower()}\n",
                          encoding="utf-8")
        result = invoke("--config", config, "dataset", "alice", "--archive", archive, "--out", tmp_path / f"out-{keep}")
        assert result.exit_code == 0, result.output
        written = [json.loads(line)["text"] for line in (tmp_path / f"out-{keep}" / "train.jsonl").open(encoding="utf-8")]
        assert expected in written


# --- mistakes: one line on stderr, exit 2 for bad usage, 1 for a failure -------------------------


def test_missing_handle():
    assert "Missing argument" in assert_one_line_error(huggingtweets("dataset"), 2)


def test_unknown_option():
    assert "No such option: --bogus" in assert_one_line_error(huggingtweets("dataset", "alice", "--bogus"), 2)


def test_unknown_command():
    assert "No such command 'bogus'" in assert_one_line_error(huggingtweets("bogus"), 2)




@pytest.mark.parametrize("handle", ["a" * 16, "ａlice", "al ice", "../etc", "alice.invalid", "a-.bsky.social",
                                    "https://example.com/alice", "https://x.com/alice/status/1"])
def test_bad_handle(handle, sample_archive):
    """Whatever it looks like, a wrong handle gets one line saying what a handle is on each network."""
    result = invoke("dataset", handle, "--archive", sample_archive)
    assert result.exception.exit_code == 2  # bad usage
    assert str(result.exception) == f"{handle!r} is not a handle: {HANDLE_FORMS}"


def test_the_command_line_error_for_a_bad_handle_is_one_line():
    message = assert_one_line_error(huggingtweets("dataset", "al ice", "--archive", "sample"), 2)
    assert message == f"'al ice' is not a handle: {HANDLE_FORMS}"


@pytest.mark.parametrize("given", ["dreamy_kettle", "@Dreamy_Kettle", "https://x.com/dreamy_kettle", "x.com/dreamy_kettle/",
                                   "https://twitter.com/Dreamy_Kettle?lang=en", "www.x.com/dreamy_kettle"])
def test_handles_as_people_copy_them_from_a_browser(given):
    result = invoke("dataset", given, "--archive", "sample", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["name"] == "dreamy_kettle"


def test_a_bluesky_profile_address_names_its_handle():
    from bot.common.handles import handle_from_input

    assert handle_from_input("https://bsky.app/profile/Alice.bsky.social") == "alice.bsky.social"
    assert handle_from_input("bsky.app/profile/carol.example.com/") == "carol.example.com"


# --- which settings: --config before or after the command, then the variable, then ./config.toml --------


@pytest.fixture
def strict_and_lenient(tmp_path) -> tuple[Path, Path]:
    strict, lenient = tmp_path / "strict.toml", tmp_path / "lenient.toml"
    strict.write_text("[data]\nmin_kept_posts = 1000\n", encoding="utf-8")
    lenient.write_text("[data]\nmin_kept_posts = 10\n", encoding="utf-8")
    return strict, lenient


def test_config_is_taken_after_the_command_too(strict_and_lenient):
    strict, lenient = strict_and_lenient
    assert "1000 needed" in str(invoke("dataset", "dreamy_kettle", "--archive", "sample", "--config", strict).exception)
    after_wins = invoke("--config", strict, "dataset", "dreamy_kettle", "--archive", "sample", "--config", lenient)
    assert after_wins.exit_code == 0, after_wins.output
    missing = strict.parent / "missing.toml"
    for args in (("space", "--config", missing, "deploy"), ("space", "deploy", "--config", missing)):
        assert "missing.toml: no such config file" in str(invoke(*args).exception)  # a group takes it as well


def test_a_config_toml_in_the_current_folder_is_read_and_named(strict_and_lenient, tmp_path, monkeypatch):
    strict, lenient = strict_and_lenient
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HUGGINGTWEETS_CONFIG", raising=False)
    assert "built-in defaults" in invoke("config").stdout
    (tmp_path / "config.toml").write_text(strict.read_text(), encoding="utf-8")
    assert "1000 needed" in str(invoke("dataset", "dreamy_kettle", "--archive", "sample").exception)
    said = invoke("config")
    assert said.exit_code == 0 and said.stdout.startswith(f"Settings: {tmp_path / 'config.toml'} (from config.toml in the current folder)")
    monkeypatch.setenv("HUGGINGTWEETS_CONFIG", str(lenient))
    assert invoke("dataset", "dreamy_kettle", "--archive", "sample").exit_code == 0
    assert f"Settings: {lenient} (from HUGGINGTWEETS_CONFIG)" in invoke("config").stdout


def test_config_says_what_is_wrong_with_the_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config.toml").write_text("[data]\nmin_word = 2\n", encoding="utf-8")
    message = assert_one_line_error(huggingtweets("config", cwd=tmp_path, env={"HUGGINGTWEETS_CONFIG": ""}), 2)
    assert message.startswith("config.toml: unknown key 'data.min_word'")


def test_init_writes_the_commented_template_here_and_never_overwrites(tmp_path, monkeypatch):
    from bot.common.config import CONFIG_TEMPLATE

    monkeypatch.chdir(tmp_path)
    result = invoke("init")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "config.toml").read_text(encoding="utf-8") == CONFIG_TEMPLATE.read_text(encoding="utf-8")
    (tmp_path / "config.toml").write_text("[data]\nmin_words = 4\n", encoding="utf-8")
    again = invoke("init")
    assert again.exit_code == 1 and "already exists" in str(again.exception)
    assert (tmp_path / "config.toml").read_text(encoding="utf-8") == "[data]\nmin_words = 4\n"


def test_too_many_handles(sample_archive):
    result = huggingtweets("dataset", "a", "b", "c", "d", *["--archive", sample_archive] * 4)
    assert assert_one_line_error(result, 2) == "at most 3 handles in one model (got 4)"


def test_one_archive_per_handle(sample_archive):
    result = huggingtweets("dataset", "alice", "bob", "--archive", sample_archive)
    assert assert_one_line_error(result, 2) == "give one --archive per handle (2 handles, 1 archives)"


def test_nonexistent_archive(tmp_path):
    result = huggingtweets("dataset", "alice", "--archive", tmp_path / "nope.zip")
    assert assert_one_line_error(result, 1) == f"{tmp_path / 'nope.zip'}: no such file or folder"


def test_archive_of_another_user(sample_archive):
    result = huggingtweets("dataset", "alice", "--archive", sample_archive)
    assert assert_one_line_error(result, 1) == f"{sample_archive}: this archive is @dreamy_kettle's, not @alice's"


def test_truncated_zip(tmp_path, sample_archive):
    (tmp_path / "half.zip").write_bytes(Path(sample_archive).read_bytes()[:5000])
    message = assert_one_line_error(huggingtweets("dataset", "alice", "--archive", tmp_path / "half.zip"), 1)
    assert message.startswith(f"{tmp_path / 'half.zip'}: not a readable zip file")


def test_corrupt_zip(tmp_path):
    path = tmp_path / "damaged.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in export_files(synthetic_tweets(300, seed=3), "alice", "Alice").items():
            zf.writestr(name, data)
    info = zipfile.ZipFile(path).getinfo("data/tweets.js")
    data = bytearray(path.read_bytes())
    start = info.header_offset + 30 + len(info.filename)
    data[start + 50:start + 350] = bytes(b ^ 0x5A for b in data[start + 50:start + 350])
    path.write_bytes(bytes(data))
    message = assert_one_line_error(huggingtweets("dataset", "alice", "--archive", path), 1)
    assert message.startswith(f"{path}:data/tweets.js: ")


def test_wrong_js_prefix(tmp_path):
    (tmp_path / "tweets.js").write_text("var tweets = []", encoding="utf-8")
    message = assert_one_line_error(huggingtweets("dataset", "alice", "--archive", tmp_path / "tweets.js"), 1)
    assert message.startswith(f"{tmp_path / 'tweets.js'}: does not start with 'window.YTD.")


def test_non_utf8_export(tmp_path):
    (tmp_path / "tweets.js").write_bytes('window.YTD.tweets.part0 = [{"tweet": {"full_text": "café"}}]'.encode("latin-1"))
    message = assert_one_line_error(huggingtweets("dataset", "alice", "--archive", tmp_path / "tweets.js"), 1)
    assert message.startswith(f"{tmp_path / 'tweets.js'}: not UTF-8")


def test_malformed_jsonl_line(tmp_path):
    path = tmp_path / "alice.jsonl"
    path.write_text('{"id": "1", "text": "fine"}\n{"id": "2", "text": oops}\n', encoding="utf-8")
    message = assert_one_line_error(huggingtweets("dataset", "alice", "--archive", path), 1)
    assert message.startswith(f"{path}: line 2 is not JSON")


HOSTILE = [h for h in CATALOGUE.values() if not h.heavy]


@pytest.mark.slow
@pytest.mark.parametrize("hostile", HOSTILE, ids=[h.name for h in HOSTILE])
def test_a_hostile_archive_is_one_line_and_exit_1_in_seconds(tmp_path, hostile):
    """Each archive of `hostile_archives.CATALOGUE` that builds quickly (the rest, at full size, are in
    benchmarks/hostile_archives.py): a 565-byte zip nested 100,000 deep, a 256 MB post, a zip bomb, ..."""
    path = hostile.build(tmp_path)
    started = time.monotonic()
    result = huggingtweets("dataset", "alice", "--archive", path)
    assert time.monotonic() - started < 10  # the interpreter and imports take most of it
    message = assert_one_line_error(result, 1)
    assert message.startswith(str(path)) and hostile.expect in message


def test_empty_archive(tmp_path):
    path = write_jsonl(tmp_path / "alice.jsonl", [])
    assert assert_one_line_error(huggingtweets("dataset", "alice", "--archive", path), 1) == (
        f"{path}: the archive holds no posts")


def test_too_little_data_states_each_users_counts(tmp_path):
    path = write_jsonl(tmp_path / "alice.jsonl", synthetic_tweets(50, seed=5))
    message = assert_one_line_error(huggingtweets("dataset", "alice", "--archive", path), 1)
    assert message.startswith("only ")
    assert "100 needed (@alice: 50 downloaded, " in message
    assert message.endswith(" kept)")


@pytest.mark.slow
@pytest.mark.parametrize("text, expected", [
    ("[data]\nmin_word = 2\n", "{config}: unknown key 'data.min_word' (allowed here: min_words, "),
    ("[data]\nmin_words = 0\n", "{config}: 'data.min_words' = 0: Input should be greater than or equal to 1"),
    ("[data\n", "{config}: not valid TOML"),
])
def test_a_broken_config_is_one_line_and_exit_2(tmp_path, sample_archive, text, expected):
    config = tmp_path / "config.toml"
    config.write_text(text, encoding="utf-8")
    message = assert_one_line_error(
        huggingtweets("--config", config, "dataset", "dreamy_kettle", "--archive", sample_archive), 2)
    assert message.startswith(expected.format(config=config))


def test_missing_config(tmp_path, sample_archive):
    result = huggingtweets("--config", tmp_path / "nope.toml", "dataset", "dreamy_kettle", "--archive", sample_archive)
    assert assert_one_line_error(result, 2) == f"{tmp_path / 'nope.toml'}: no such config file"


def test_secrets_never_appear_in_an_error(tmp_path):
    token = "hf_" + "not-a-real-token-cli"
    result = huggingtweets("dataset", "alice", "--archive", tmp_path / f"{token}.zip", env={"HF_TOKEN": token})
    message = assert_one_line_error(result, 1)
    assert token not in result.stderr
    assert message == f"{tmp_path / '***.zip'}: no such file or folder"


# --- commands that need the network or a token fail in seconds offline, in one line ---------------


def test_delete_without_a_token_says_so_before_looking(tmp_path):
    result = huggingtweets("delete", "alice", "--yes", env={"HF_TOKEN": "", "HF_HOME": str(tmp_path / "hf"),
                                                             "HF_ENDPOINT": "http://127.0.0.1:9"}, cwd=tmp_path)
    assert "no Hugging Face token" in assert_one_line_error(result, 1)


def test_status_before_anything_ran_points_at_the_demo_state_when_there_is_one(tmp_path):
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / ".huggingtweets-demo").touch()
    message = assert_one_line_error(huggingtweets("--config", tmp_path / "none.toml", "status", cwd=tmp_path), 2)
    assert "no such config file" in message
    (tmp_path / "config.toml").write_text("")
    message = assert_one_line_error(huggingtweets("--config", tmp_path / "config.toml", "status", cwd=tmp_path), 1)
    assert "no bot state yet" in message and "huggingtweets --config demo/config.toml status" in message


def test_publish_to_another_organisation_with_the_local_backend(tmp_path):
    from run_facts import example_facts

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "run.json").write_text(json.dumps(example_facts()))
    (tmp_path / "config.toml").write_text(f'[hub]\nbackend = "local"\nlocal_dir = "{tmp_path / "hub"}"\n')
    result = huggingtweets("--config", tmp_path / "config.toml", "publish", model, "--repo-id", "me/test", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "hub" / "me" / "test" / "config.json").exists()
    assert not (tmp_path / "hub" / "huggingtweets").exists()
    assert f"Model: {(tmp_path / 'hub' / 'me' / 'test').as_uri()}" in result.stdout
    assert ".versions" not in result.stdout


@pytest.mark.slow
def test_ctrl_c_during_training_says_so_and_leaves_no_half_folder(sample_archive, tmp_path):
    """Ctrl-C once the progress bar says a pass is under way (stderr is a terminal, so it draws one)."""
    import pty
    import re
    import select
    import signal
    import time

    out = tmp_path / "model"
    config = tmp_path / "long.toml"
    config.write_text("[train]\npatience = 1000\n")  # a long run, to be interrupted
    terminal, its_end = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "bot", "--config", str(config), "train", "dreamy_kettle",
                                "--archive", sample_archive, "--base-model", "tiny", "--max-epochs", "100", "--out", str(out)],
                               stdout=subprocess.PIPE, stderr=its_end, text=True, cwd=tmp_path,
                               env=os.environ | {"PYTHONPATH": str(PROJECT), "HF_HUB_OFFLINE": "1", "COLUMNS": "120"})
    os.close(its_end)
    shown = b""

    def read(seconds: float) -> bool:
        nonlocal shown
        if select.select([terminal], [], [], seconds)[0]:
            try:
                chunk = os.read(terminal, 65536)
            except OSError:  # the command has closed its end
                return False
            shown += chunk
            return bool(chunk)
        return True

    deadline = time.monotonic() + 180
    while b"Training: pass" not in shown:
        assert process.poll() is None and time.monotonic() < deadline, shown.decode(errors="replace")[-2000:]
        read(1)
    process.send_signal(signal.SIGINT)
    while read(5) and process.poll() is None:
        pass
    process.wait(timeout=60)
    while read(0.2):  # what is left in the terminal
        pass
    os.close(terminal)
    assert process.returncode == 130, shown.decode(errors="replace")[-2000:]
    lines = [line.strip() for line in re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", shown.decode(errors="replace")).splitlines()]
    assert [line for line in lines if line][-1] == "huggingtweets: error: interrupted; nothing was finished"
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["long.toml"]


@pytest.mark.parametrize("env, why", [
    ({"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_OFFLINE": "0"}, "127.0.0.1 cannot be reached"),
    ({"HF_HUB_OFFLINE": "1"}, "HF_HUB_OFFLINE is set"),
])
def test_a_base_model_that_needs_the_hub_offline_fails_at_once_and_names_tiny(sample_archive, tmp_path, env, why):
    """No half minute of the library's retries: one line, the reason, and what works offline."""
    result = huggingtweets("train", "dreamy_kettle", "--archive", sample_archive, "--base-model", "someone/not-cached",
                           "--out", tmp_path / "model", env={"HF_HOME": str(tmp_path / "hf"), **env})
    message = assert_one_line_error(result, 1)
    assert message.startswith("cannot load base model 'someone/not-cached': it is not in the local cache and ")
    assert why in message and "--base-model tiny" in message
    assert not (tmp_path / "model").exists()
