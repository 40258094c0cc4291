"""Publishing and deleting, through the real huggingface_hub client against the loopback Hub (fake_hub.py).

The model folder is a real, tiny GPT-2 (one layer, 32 wide) with a byte-level BPE tokenizer, saved by
transformers, plus the card, images and run.json that training writes beside it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from huggingface_hub import HfApi, ModelCard, snapshot_download
from run_facts import example_facts

from bot.common.config import parse_settings
from bot.publishing.facts import RunFacts
from bot.publishing.hub import (
    HubAccessError,
    HubUnavailableError,
    RepoNameError,
    commit_message,
    delete_repos,
    find_published,
    find_repos_for,
    last_published,
    local_history,
    model_url,
    publish_folder,
)

PROJECT = Path(__file__).resolve().parents[2]
RUN_FACTS = example_facts()
CARD = """\
---
language: en
license: mit
library_name: transformers
pipeline_tag: text-generation
base_model: openai-community/gpt2
tags:
- huggingtweets
widget:
- text: My dream is
  output:
    text: My dream is tea
thumbnail: predictions.png
---

# @alice's bot
"""
LINES = [
    "My dream is a quiet morning with tea and a good book.",
    "The kettle sings at seven and the cat complains at eight.",
    "Reading on the train is the best part of the day.",
    "Rain again, so more tea and another chapter.",
] * 8



# One process builds the model the module publishes (a module fixture), under pytest-xdist too.
pytestmark = pytest.mark.xdist_group("hub")


def build_tiny_model(folder: Path) -> None:
    """A model folder as training writes it, small enough to build in a second."""
    import torch
    from PIL import Image
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(LINES, trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = GPT2TokenizerFast(tokenizer_object=bpe, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                  unk_token="<|endoftext|>")
    assert len(tokenizer) > 256  # the byte alphabet at least: not an empty tokenizer
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=32, n_layer=1, n_head=2,
                        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id)
    GPT2LMHeadModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / "README.md").write_text(CARD, encoding="utf-8")
    Image.new("RGB", (64, 32), (200, 120, 40)).save(folder / "predictions.png")
    Image.new("RGB", (64, 32), (40, 120, 200)).save(folder / "loss.png")
    (folder / "run.json").write_text(json.dumps(RUN_FACTS), encoding="utf-8")


@pytest.fixture(scope="module")
def built_model(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("built") / "alice"
    folder.mkdir()
    build_tiny_model(folder)
    return folder


@pytest.fixture
def model_folder(built_model, tmp_path) -> Path:
    """A fresh copy of the tiny model folder, free to change."""
    return Path(shutil.copytree(built_model, tmp_path / "alice"))


@pytest.fixture
def settings():
    return parse_settings({"hub": {"organization": "huggingtweets", "max_retries": 2,
                                   "retry_base_wait_seconds": 0.01, "retry_max_wait_seconds": 0.05}})


@pytest.fixture
def writer(fake_hub, monkeypatch):
    """The loopback Hub with HF_TOKEN set to a token that may write everywhere."""
    monkeypatch.setenv("HF_TOKEN", fake_hub.token)
    return fake_hub


def run_cli(args: list[str], tmp_path: Path, env: dict[str, str], stdin: str | None = None):
    """`python -m bot ARGS` in a subprocess, with a config.toml for the loopback Hub and retries kept short."""
    config = tmp_path / "config.toml"
    config.write_text('[hub]\norganization = "huggingtweets"\nmax_retries = 1\nretry_base_wait_seconds = 0.01\n',
                      encoding="utf-8")
    full_env = {k: v for k, v in os.environ.items() if k != "HF_TOKEN"} | env
    return subprocess.run([sys.executable, "-m", "bot", "--config", str(config), *args], cwd=tmp_path, env=full_env,
                          input=stdin, capture_output=True, text=True, timeout=120)


# -- publishing --------------------------------------------------------------------------------------------


def test_publish_then_list_files_and_read_the_card(model_folder, settings, writer):
    result = publish_folder(model_folder, settings)

    assert result.repo_id == "huggingtweets/alice"  # the name comes from run.json
    assert result.model_url == f"{writer.url}/huggingtweets/alice"
    assert result.commit_url == f"{writer.url}/huggingtweets/alice/commit/{result.commit_id}"
    api = HfApi()
    local = sorted(p.name for p in model_folder.iterdir())
    assert sorted(api.list_repo_files("huggingtweets/alice")) == sorted([".gitattributes", *local])
    card = ModelCard.load("huggingtweets/alice")
    assert card.data.pipeline_tag == "text-generation"
    assert card.data.tags == ["huggingtweets"]
    assert card.data.widget[0]["text"] == "My dream is"

    commit = writer.repos["huggingtweets/alice"].head
    assert commit.oid == result.commit_id
    assert commit.title == "Train on 2,105 posts from @alice (234 held out)"
    assert "@alice: 3,249 downloaded, 410 retweets, 480 short, 20 duplicates, 2,339 kept (language: en)" in commit.description
    assert "perplexity 24.999" in commit.description
    # The weights went through LFS, byte for byte.
    weights = writer.repos["huggingtweets/alice"].files["model.safetensors"]
    assert weights.is_lfs and weights.blob.read_bytes() == (model_folder / "model.safetensors").read_bytes()


def test_snapshot_download_then_generate(model_folder, settings, writer, tmp_path):
    from transformers import pipeline

    publish_folder(model_folder, settings)
    download = snapshot_download("huggingtweets/alice", cache_dir=tmp_path / "cache")

    generator = pipeline("text-generation", model=download, device="cpu")
    text = generator("My dream is", max_new_tokens=8, do_sample=False)[0]["generated_text"]
    assert text.startswith("My dream is") and len(text) > len("My dream is")


def test_publishing_again_with_a_file_fewer_deletes_it_in_one_commit(model_folder, settings, writer):
    publish_folder(model_folder, settings)
    commits_before = len(writer.repos["huggingtweets/alice"].commits)
    (model_folder / "loss.png").unlink()
    (model_folder / "README.md").write_text(CARD + "\nRetrained.\n", encoding="utf-8")

    result = publish_folder(model_folder, settings)

    repo = writer.repos["huggingtweets/alice"]
    assert len(repo.commits) == commits_before + 1
    assert repo.head.oid == result.commit_id
    assert "loss.png" not in HfApi().list_repo_files("huggingtweets/alice")
    assert "loss.png" in repo.commits[-2].files  # still in the commit before
    assert writer.read("huggingtweets/alice", "README.md").decode().endswith("Retrained.\n")
    assert ".gitattributes" in repo.files  # the Hub's own file is kept


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["hub", "local"])
def test_a_publish_for_a_request_is_made_once_however_often_it_runs(model_folder, settings, writer, tmp_path, backend):
    if backend == "local":
        settings = parse_settings({"hub": {"backend": "local", "local_dir": str(tmp_path / "hub")}})
    assert find_published("huggingtweets/alice", "7 (x mention 70)", settings) is None  # no repo yet

    first = publish_folder(model_folder, settings, key="7 (x mention 70)")
    again = publish_folder(model_folder, settings, key="7 (x mention 70)")
    (model_folder / "README.md").write_text(CARD + "\nRetrained.\n", encoding="utf-8")
    other = publish_folder(model_folder, settings, key="8 (x mention 80)")

    assert again == first and other.commit_id != first.commit_id
    assert find_published("huggingtweets/alice", "7 (x mention 70)", settings) == first
    if backend == "hub":
        commits = writer.repos["huggingtweets/alice"].commits
        assert [c.description.splitlines()[-1] for c in commits[1:]] == [
            "huggingtweets-request: 7 (x mention 70)", "huggingtweets-request: 8 (x mention 80)"]
    else:
        assert len(local_history("huggingtweets/alice", settings)) == 2


def test_a_500_on_the_first_commit_is_retried_and_one_commit_lands(model_folder, settings, writer):
    writer.fail_next("/api/models/huggingtweets/alice/commit/", 500)

    result = publish_folder(model_folder, settings)

    assert [status for _, _, status in writer.commit_requests("huggingtweets/alice")] == [500, 200]
    titles = [c.title for c in writer.repos["huggingtweets/alice"].commits]
    assert titles == ["initial commit", "Train on 2,105 posts from @alice (234 held out)"]
    assert writer.repos["huggingtweets/alice"].head.oid == result.commit_id


def test_a_commit_whose_answer_was_lost_is_not_made_twice(model_folder, settings, writer):
    writer.fail_next("/api/models/huggingtweets/alice/commit/", 502, after=True)  # lands, then the answer fails

    result = publish_folder(model_folder, settings)

    assert [status for _, _, status in writer.commit_requests("huggingtweets/alice")] == [502, 412]
    repo = writer.repos["huggingtweets/alice"]
    assert len(repo.commits) == 2 and repo.head.oid == result.commit_id


def test_a_hub_that_stays_down_is_a_transient_error(model_folder, settings, writer):
    writer.fail_next("/api/repos/create", 503, times=10)

    with pytest.raises(HubUnavailableError) as raised:
        publish_folder(model_folder, settings)

    assert raised.value.transient
    assert "try again later" in str(raised.value) and "HTTP 503" in str(raised.value)
    assert len([r for r in writer.requests if r[1] == "/api/repos/create"]) == 3  # max_retries = 2
    assert "huggingtweets/alice" not in writer.repos


def test_a_token_that_may_not_write_to_the_organisation(model_folder, settings, fake_hub, monkeypatch):
    fake_hub.add_token("hf_reader_of_others", user="someone", namespaces={"someone"})
    monkeypatch.setenv("HF_TOKEN", "hf_reader_of_others")

    with pytest.raises(HubAccessError, match="cannot write to the organisation 'huggingtweets' \\(HTTP 403"):
        publish_folder(model_folder, settings)
    assert fake_hub.repos == {}

    fake_hub.create_repo("huggingtweets/alice")  # when the repo exists, the refusal comes at the upload
    with pytest.raises(HubAccessError, match="cannot write to the organisation 'huggingtweets' \\(HTTP 403"):
        publish_folder(model_folder, settings)
    assert [c.title for c in fake_hub.repos["huggingtweets/alice"].commits] == ["initial commit"]


def test_a_refused_repo_name(model_folder, settings, writer):
    with pytest.raises(RepoNameError, match="not a valid repo name"):
        publish_folder(model_folder, settings, repo_id="huggingtweets/bad--name")
    with pytest.raises(RepoNameError, match="expected ORG/NAME"):
        publish_folder(model_folder, settings, repo_id="alice")

    writer.fail_next("/api/repos/create", 400, message="Invalid repo name: reserved")
    with pytest.raises(RepoNameError, match="the Hub refused the repo name 'huggingtweets/alice': Invalid repo name"):
        publish_folder(model_folder, settings)


def test_a_folder_without_run_facts_still_publishes(model_folder, settings, writer):
    (model_folder / "run.json").unlink()
    result = publish_folder(model_folder, settings, repo_id="huggingtweets/alice-test")
    assert writer.repos["huggingtweets/alice-test"].head.title == "Publish alice-test"
    assert result.repo_id == "huggingtweets/alice-test"
    assert publish_folder(model_folder, settings, message="By hand").repo_id == "huggingtweets/alice"
    assert writer.repos["huggingtweets/alice"].head.title == "By hand"


def test_commit_message_names_every_user():
    counts = {"downloaded": 0, "retweets": 0, "short": 0, "duplicates": 0}
    users = {h: {**counts, "kept": n} for h, n in (("alice", 1000), ("bob", 200), ("carol", 34))}
    facts = RunFacts.parse(example_facts(users=users, handles=list(users), train_posts=2_700, distinct_train_posts=1_100,
                                         validation_posts=134))
    # The posts trained on, each once (not the balancing's repeats, nor the held-out ones), then those held out.
    assert commit_message(facts, "x") == "Train on 1,100 posts from @alice, @bob and @carol (134 held out)"
    assert commit_message(None, "x") == "Publish x"


def test_last_published_and_model_url(model_folder, settings, writer):
    assert last_published("huggingtweets/alice", settings) is None
    publish_folder(model_folder, settings)
    when = last_published("huggingtweets/alice", settings)
    assert when is not None and abs(datetime.now(timezone.utc) - when) < timedelta(minutes=1)
    assert model_url("huggingtweets/alice", settings) == f"{writer.url}/huggingtweets/alice"


@pytest.mark.slow
def test_a_first_publish_that_keeps_failing_leaves_no_empty_repo(model_folder, settings, writer):
    writer.fail_next("/api/models/huggingtweets/alice/commit", 503, times=100)
    with pytest.raises(HubUnavailableError):
        publish_folder(model_folder, settings)
    assert "huggingtweets/alice" not in writer.repos  # created for this publish, removed when it failed

    writer.create_repo("huggingtweets/alice")  # a repo that was there before is never removed
    writer.fail_next("/api/models/huggingtweets/alice/commit", 503, times=100)
    with pytest.raises(HubUnavailableError):
        publish_folder(model_folder, settings)
    assert "huggingtweets/alice" in writer.repos


@pytest.mark.parametrize("body", [b"<html>Bad gateway</html>", b'{"unexpected": [1, 2]}', b"[]"])
def test_an_answer_that_cannot_be_read_is_one_line_not_a_traceback(model_folder, settings, writer, body):
    writer.fail_next("/api/models/huggingtweets/alice", 200, body=body, method="GET", times=100)
    with pytest.raises(HubUnavailableError, match="gave an answer"):
        publish_folder(model_folder, settings)


# -- through the command line ----------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_publish_prints_the_urls(model_folder, writer, tmp_path):
    result = run_cli(["publish", str(model_folder)], tmp_path, {"HF_TOKEN": writer.token})
    assert result.returncode == 0, result.stderr
    commit = writer.repos["huggingtweets/alice"].head.oid
    assert f"Model: {writer.url}/huggingtweets/alice" in result.stdout
    assert f"Commit: {writer.url}/huggingtweets/alice/commit/{commit}" in result.stdout


def test_cli_a_401_is_one_clear_line_and_the_token_shows_nowhere(model_folder, fake_hub, tmp_path):
    token = "hf_" + "not-a-real-token-unknown"  # the loopback Hub answers 401 to it
    # Debug verbosity: huggingface_hub logs every request; the token must not be in the logs either.
    result = run_cli(["publish", str(model_folder)], tmp_path, {"HF_TOKEN": token, "HF_HUB_VERBOSITY": "debug"})

    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("huggingtweets: error: the Hugging Face token cannot write to the organisation "
                           "'huggingtweets' (HTTP 401")
    assert "Traceback" not in result.stderr
    assert token not in result.stdout and token not in result.stderr
    assert "GET http" in result.stderr  # the debug log did run
    assert fake_hub.repos == {}


def test_cli_without_any_token(model_folder, fake_hub, tmp_path):
    result = run_cli(["publish", str(model_folder)], tmp_path, {"HF_HOME": str(tmp_path / "hf-home")})
    assert result.returncode == 1
    assert "huggingtweets: error: no Hugging Face token: set HF_TOKEN" in result.stderr


def make_repos(hub, names: list[str]) -> None:
    for name in names:
        hub.create_repo(f"huggingtweets/{name}")
    hub.create_repo("elsewhere/alice")


@pytest.mark.slow
def test_delete_with_yes_removes_alice_and_alice_bob_but_not_malice(fake_hub, tmp_path):
    make_repos(fake_hub, ["alice", "alice-bob", "bob-alice-carol", "malice", "alice_b", "bob"])

    result = run_cli(["delete", "@Alice", "--yes"], tmp_path, {"HF_TOKEN": fake_hub.token})

    assert result.returncode == 0, result.stderr
    assert sorted(fake_hub.repos) == ["elsewhere/alice", "huggingtweets/alice_b", "huggingtweets/bob",
                                      "huggingtweets/malice"]
    assert "huggingtweets/alice-bob" in result.stdout and "Deleted 3 repos." in result.stdout


@pytest.mark.slow
def test_delete_asks_first(fake_hub, tmp_path):
    make_repos(fake_hub, ["alice", "alice-bob", "malice"])
    env = {"HF_TOKEN": fake_hub.token}

    declined = run_cli(["delete", "alice"], tmp_path, env, stdin="n\n")
    assert declined.returncode == 1 and "nothing deleted" in declined.stderr
    assert "huggingtweets/alice\n" in declined.stdout and "Delete these 2?" in declined.stdout
    assert len(fake_hub.repos) == 4

    accepted = run_cli(["delete", "alice"], tmp_path, env, stdin="y\n")
    assert accepted.returncode == 0, accepted.stderr
    assert sorted(fake_hub.repos) == ["elsewhere/alice", "huggingtweets/malice"]

    nothing = run_cli(["delete", "alice"], tmp_path, env)
    assert nothing.returncode == 0 and "No model of huggingtweets is made from @alice's posts." in nothing.stdout


def test_find_and_delete_in_process(settings, writer):
    make_repos(writer, ["alice", "alice-bob", "malice"])
    assert find_repos_for("ALICE", settings) == ["huggingtweets/alice", "huggingtweets/alice-bob"]
    delete_repos(["huggingtweets/alice", "huggingtweets/gone-already"], settings)
    assert sorted(writer.repos) == ["elsewhere/alice", "huggingtweets/alice-bob", "huggingtweets/malice"]


# -- the local backend ------------------------------------------------------------------------------------


@pytest.fixture
def local_settings(tmp_path):
    return parse_settings({"hub": {"backend": "local", "organization": "huggingtweets",
                                   "local_dir": str(tmp_path / "hub")}})


def test_local_publish_twice_keeps_a_history(model_folder, local_settings, tmp_path):
    first = publish_folder(model_folder, local_settings)
    (model_folder / "loss.png").unlink()
    second = publish_folder(model_folder, local_settings, message="Second")

    repo = tmp_path / "hub" / "huggingtweets" / "alice"
    history = local_history("huggingtweets/alice", local_settings)
    assert [h["commit"] for h in history] == [first.commit_id, second.commit_id]
    assert [h["message"] for h in history] == ["Train on 2,105 posts from @alice (234 held out)", "Second"]
    assert history[1]["deleted"] == ["loss.png"] and history[1]["parent"] == first.commit_id
    assert "loss.png" in history[0]["files"] and "loss.png" not in history[1]["files"]
    assert not (repo / "loss.png").exists()
    assert (repo / "model.safetensors").read_bytes() == (model_folder / "model.safetensors").read_bytes()
    assert second.model_url == repo.absolute().as_uri()
    when = last_published("huggingtweets/alice", local_settings)
    assert when == datetime.fromisoformat(history[1]["time"])


def test_local_crash_between_writing_and_swapping_keeps_the_old_version(model_folder, local_settings, tmp_path):
    first = publish_folder(model_folder, local_settings)
    (model_folder / "loss.png").unlink()
    # A publish that dies (no clean-up runs) right before the swap.
    script = textwrap.dedent(f"""
        import os, bot.publishing.hub
        from bot.common.config import parse_settings
        bot.publishing.hub._swap_in = lambda link, version: os._exit(3)
        settings = parse_settings({{"hub": {{"backend": "local", "local_dir": {str(tmp_path / "hub")!r}}}}})
        bot.publishing.hub.publish_folder({str(model_folder)!r}, settings, message="Crashed")
    """)
    crashed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert crashed.returncode == 3, crashed.stderr

    repo = tmp_path / "hub" / "huggingtweets" / "alice"
    assert (repo / "loss.png").exists()
    assert [h["commit"] for h in local_history("huggingtweets/alice", local_settings)] == [first.commit_id]
    versions = repo.parent / ".versions" / "alice"
    assert len(list(versions.iterdir())) == 2  # the old version and the unfinished new one

    after = publish_folder(model_folder, local_settings, message="After the crash")
    assert [h["message"] for h in local_history("huggingtweets/alice", local_settings)] == [
        "Train on 2,105 posts from @alice (234 held out)", "After the crash"]
    assert sorted(p.name for p in versions.iterdir()) == sorted([first.commit_id, after.commit_id])


def test_local_find_and_delete(model_folder, local_settings, tmp_path):
    for name in ("alice", "alice-bob", "malice"):
        publish_folder(model_folder, local_settings, repo_id=f"huggingtweets/{name}")
    assert find_repos_for("alice", local_settings) == ["huggingtweets/alice", "huggingtweets/alice-bob"]

    delete_repos(["huggingtweets/alice", "huggingtweets/alice-bob"], local_settings)

    assert find_repos_for("alice", local_settings) == []
    assert find_repos_for("malice", local_settings) == ["huggingtweets/malice"]
    assert last_published("huggingtweets/alice", local_settings) is None
    assert sorted(p.name for p in (tmp_path / "hub" / "huggingtweets" / ".versions").iterdir()) == ["malice"]


@pytest.mark.slow
@pytest.mark.parametrize("cut", [None, 12, 20, 31])
def test_a_hub_that_echoes_the_token_shows_no_part_of_it(model_folder, fake_hub, tmp_path, cut):
    token = "hf_" + "not-a-real-token-echoed-abc"
    fake_hub.add_token(token, namespaces={"someone-else"})
    spec = "{authorization}" if cut is None else "{authorization:.%d}" % (len("Bearer ") + cut)
    fake_hub.fail_next("/api/models", 401, message=f"Invalid credentials: {spec}", times=10)
    result = run_cli(["publish", str(model_folder)], tmp_path, {"HF_TOKEN": token})
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "Invalid credentials: Bearer ***" in result.stderr
    assert token[:8] not in result.stderr + result.stdout


@pytest.mark.slow
def test_an_unreachable_hub_is_an_error_in_seconds(tmp_path):
    import socket
    import time

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    result = run_cli(["delete", "alice", "--yes"], tmp_path,
                     {"HF_ENDPOINT": f"http://127.0.0.1:{port}", "HF_TOKEN": "hf_" + "x" * 30})
    took = time.monotonic() - started
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()[-1:]
    assert line.startswith("huggingtweets: error: the Hub at http://127.0.0.1:") and "unavailable" in line
    assert took < 15, f"took {took:.0f} s"
