"""Training: the tiny base model, packing, the loop, samples, and the model folder end to end.

The end-to-end test runs `python -m bot train` in a subprocess, as the bot's scheduler does, on the
bundled sample archive with the tiny base model, and loads the result with `pipeline`.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bot.data.archive import open_archive
from bot.common.config import Settings, TrainSettings
from bot.data.dataset import build_dataset

ROOT = Path(__file__).resolve().parents[2]



# One process trains the `trained` model for the whole module (a module fixture), under pytest-xdist too.
pytestmark = pytest.mark.xdist_group("train")


@pytest.fixture(scope="session")
def tiny_cache() -> Path:
    """The session's tiny-model cache (see conftest.py), away from the user's."""
    return Path(os.environ["HUGGINGTWEETS_TEST_CACHE"])


def _env(cache: Path) -> dict[str, str]:
    env = dict(os.environ, HUGGINGTWEETS_CACHE=str(cache), HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    env.pop("HF_TOKEN", None)
    return env


@pytest.fixture(scope="module")
def sample_dataset():
    return build_dataset({"dreamy_kettle": open_archive(str(ROOT / "bot" / "data" / "samples" / "sample_archive.zip"))})


# --- the tiny base model -------------------------------------------------------------------------


def test_tiny_tokenizer_has_the_asserted_vocabulary_and_round_trips_any_text(tiny_cache):
    from transformers import AutoTokenizer

    from bot.training import tiny

    folder = tiny.tiny_model_dir()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert len(tokenizer) == tiny.VOCAB_SIZE == 1024
    assert tokenizer.eos_token == "<|endoftext|>" and tokenizer.eos_token_id is not None
    assert tokenizer.model_max_length == tiny.ARCHITECTURE["n_positions"]
    text = "My dream is a café by the sea ☕🌊 今日はいい天気 @friend #tea"
    ids = tokenizer(text).input_ids
    assert tokenizer.decode(ids) == text  # byte-level: nothing is unknown
    assert len(ids) < len(text.encode())  # merges were learned: fewer tokens than bytes


@pytest.mark.slow
def test_tiny_model_is_built_once_deterministically_and_small(tiny_cache, tmp_path):
    """The session's tiny base comes from the cache; two builds of the same recipe are the same bytes (with
    fewer pretraining steps, which build the same way in a few seconds)."""
    from bot.training import tiny

    first = tiny.tiny_model_dir()
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    assert tiny.tiny_model_dir() == first
    assert (first / "model.safetensors").stat().st_mtime_ns == stamp  # cached, not rebuilt
    assert sum(p.stat().st_size for p in first.iterdir()) < 5_000_000
    one, other = (tiny.build_tiny_model(tmp_path / name, steps=20) for name in ("one", "other"))
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (one / name).read_bytes() == (other / name).read_bytes(), name
    assert (one / "model.safetensors").read_bytes() != (first / "model.safetensors").read_bytes()  # steps count


def test_the_tiny_base_already_knows_some_english(tiny_cache, sample_dataset):
    """Pretrained: on posts it has never seen, far better than the same network with random weights."""
    import torch
    from transformers import AutoModelForCausalLM

    from bot.training import train as T

    cpu = torch.device("cpu")
    pretrained, tok = T.load_base_model(T.resolve_base_model("tiny"), cpu)
    torch.manual_seed(0)
    untrained = AutoModelForCausalLM.from_config(pretrained.config)
    posts = T.pack(sample_dataset.validation, tok, 128)
    assert T.evaluate(pretrained, *posts, 8, cpu) < T.evaluate(untrained, *posts, 8, cpu) - 1.5


def test_tiny_cache_location_follows_the_environment(monkeypatch, tmp_path):
    from bot.training.tiny import cache_root

    monkeypatch.delenv("HUGGINGTWEETS_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "huggingtweets"
    monkeypatch.setenv("HUGGINGTWEETS_CACHE", str(tmp_path / "mine"))
    assert cache_root() == tmp_path / "mine"


@pytest.mark.slow
def test_two_processes_building_the_tiny_model_at_once_both_succeed(tmp_path):
    code = "from bot.training.tiny import tiny_model_dir; print(tiny_model_dir(steps=20))"
    env = _env(tmp_path)
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    results = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    folders = {out.strip() for out, _ in results}
    assert len(folders) == 1
    left = [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")]
    assert left == [Path(folders.pop()).name]  # no temporary folder left


# --- packing, the filter, mentions ---------------------------------------------------------------


def test_pack_joins_posts_with_eos_and_pads_only_the_last_block(tiny_cache):
    from transformers import AutoTokenizer

    from bot.training.tiny import tiny_model_dir
    from bot.training.train import IGNORE_INDEX, count_targets, pack

    tok = AutoTokenizer.from_pretrained(tiny_model_dir())
    posts = ["hello world", "the kettle is singing", "good morning"]
    ids, labels = pack(posts, tok, 8)
    stream = []
    for p in posts:
        stream += tok(p).input_ids + [tok.eos_token_id]
    assert ids.shape == (math.ceil(len(stream) / 8), 8)
    assert ids.flatten()[:len(stream)].tolist() == stream
    pad = ids.numel() - len(stream)
    assert (labels.flatten()[len(stream):] == IGNORE_INDEX).all() and len(labels.flatten()[len(stream):]) == pad
    assert (labels.flatten()[:len(stream)] == ids.flatten()[:len(stream)]).all()
    assert 0 <= pad < 8
    assert count_targets(labels) == len(stream) - ids.shape[0]  # each block's first token has no target


def test_memorisation_filter_catches_copies_and_lets_new_text_through():
    from bot.training.sampling import MemorisationFilter

    posts = ["My dream is to open a tiny tea shop by the sea", "The kettle is singing again and the kitchen smells of toast",
             "今日は本当にいい天気ですね"]
    memo = MemorisationFilter(posts)
    assert memo.is_memorised("My dream is to open a tiny tea shop by the sea")  # verbatim
    assert memo.is_memorised("my dream is to OPEN a tiny tea-shop, by the sea!!")  # case and punctuation
    assert memo.is_memorised("My dream is to open a tiny tea shop")  # a shorter piece of one post
    # 8 words in a row copied inside a longer, otherwise new sample
    assert memo.is_memorised("My dream is that the kettle is singing again and the kitchen smells of bread")
    assert memo.is_memorised("今日は本当にいい天気")  # CJK: each character is a word
    assert not memo.is_memorised("My dream is a kitchen full of plants and a very old radio")
    assert not memo.is_memorised("My dream is the sea")  # shares words, not a run of a post
    assert not memo.is_memorised("今日は雨が降っています")


def test_mentions_are_neutralised_but_read_the_same():
    from bot.data.text import WORD_JOINER, neutralise_mentions

    text = neutralise_mentions("thanks @tea_ghost and ＠bikebird! mail me at a@b.c? @ alone")
    assert "@tea_ghost" not in text and "＠bikebird" not in text
    assert text.replace(WORD_JOINER, "") == "thanks @tea_ghost and ＠bikebird! mail me at a@b.c? @ alone"
    assert "@ alone" in text


# --- the loop -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_training_is_reproducible_on_cpu(tiny_cache, sample_dataset, tmp_path):
    from bot.training.train import train_model

    settings = Settings(train=TrainSettings(max_epochs=1, num_samples=3))
    a = train_model(sample_dataset, settings, tmp_path / "a", base_model="tiny")
    b = train_model(sample_dataset, settings, tmp_path / "b", base_model="tiny")
    assert a.validation_loss == b.validation_loss
    assert a.samples == b.samples
    assert (a.folder / "model.safetensors").read_bytes() == (b.folder / "model.safetensors").read_bytes()
    c = train_model(sample_dataset, Settings(train=TrainSettings(max_epochs=1, num_samples=3, seed=7)), tmp_path / "c",
                    base_model="tiny")
    assert (a.folder / "model.safetensors").read_bytes() != (c.folder / "model.safetensors").read_bytes()


def test_fit_stops_when_validation_gets_worse_and_keeps_the_best_weights(tiny_cache, sample_dataset):
    import torch

    from bot.training import train as T

    cpu = torch.device("cpu")
    torch.manual_seed(0)
    model, tok = T.load_base_model(T.resolve_base_model("tiny"), cpu)
    data, val = T.pack(sample_dataset.train, tok, 64), T.pack(sample_dataset.validation, tok, 64)
    # A learning rate far too high for this model: the validation loss soon stops improving.
    result = T.fit(model, data, val, TrainSettings(learning_rate=0.005, max_epochs=8, batch_size=4, block_size=64), cpu)
    losses = [m["validation_loss"] for m in result.measures]
    assert result.stop_reason == "plateau" and result.epochs_run < 8
    best = min(losses)
    assert result.best_step == result.measures[losses.index(best)]["step"] and result.best_loss == pytest.approx(best, abs=1e-4)
    assert T.evaluate(model, *val, 8, cpu) == pytest.approx(best, abs=1e-3)  # the best weights are back


def test_fit_without_held_out_posts_makes_one_pass(tiny_cache, sample_dataset):
    import torch

    from bot.training import train as T

    cpu = torch.device("cpu")
    model, tok = T.load_base_model(T.resolve_base_model("tiny"), cpu)
    data = T.pack(sample_dataset.train[:40], tok, 64)
    nothing = T.pack([], tok, 64)
    result = T.fit(model, data, nothing, TrainSettings(max_epochs=4, batch_size=2, block_size=64), cpu)
    assert result.stop_reason == "no_heldout"
    assert result.steps == result.steps_per_epoch == result.best_step
    assert all(m["validation_loss"] is None for m in result.measures)


def test_blocks_per_step_take_at_least_1024_tokens_and_fill_a_gpu_leaving_steps_to_measure_between():
    import torch

    from bot.training.train import blocks_per_step

    cpu, gpu = torch.device("cpu"), torch.device("cuda")  # a device name: no GPU needed to ask
    assert [blocks_per_step(0, n, cpu, 256) for n in (2, 10, 5000)] == [4, 4, 4]
    assert [blocks_per_step(0, 5000, cpu, size) for size in (64, 128, 512, 1024, 2048)] == [16, 8, 2, 1, 1]
    assert [blocks_per_step(0, n, gpu, 256) for n in (10, 90, 1000, 5000, 10**6)] == [4, 4, 8, 32, 32]
    assert all(n // blocks_per_step(0, n, gpu, 256) >= 64 for n in range(256, 5000, 7))
    assert blocks_per_step(3, 5000, gpu, 256) == blocks_per_step(3, 5000, cpu, 256) == 3  # a setting wins


def test_held_out_forward_passes_hold_1024_tokens_on_a_cpu_and_4096_on_a_gpu():
    import torch

    from bot.training.train import eval_blocks_per_forward

    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert [eval_blocks_per_forward(size, cpu) for size in (128, 256, 1024, 2048)] == [8, 4, 1, 1]
    assert [eval_blocks_per_forward(size, gpu) for size in (128, 256, 1024, 8192)] == [32, 16, 4, 1]


def test_the_learning_rate_follows_width_and_batch():
    from types import SimpleNamespace

    from bot.training.train import peak_learning_rate

    gpt2, tiny, wide = (SimpleNamespace(config=SimpleNamespace(n_embd=w)) for w in (768, 64, 1600))
    assert peak_learning_rate(gpt2, 1e-4) == 1e-4
    assert peak_learning_rate(tiny, 1e-4) == pytest.approx(12e-4)
    assert peak_learning_rate(wide, 1e-4) == 1e-4  # never scaled down: the setting was tuned for GPT-2 124M
    assert peak_learning_rate(gpt2, 1e-4, batch=16) == pytest.approx(4e-4)


def test_written_out_gpt2_loss_matches_the_library_forward(tiny_cache):
    import torch

    from bot.training import train as T

    cpu = torch.device("cpu")
    model, _ = T.load_base_model(T.resolve_base_model("tiny"), cpu)
    from bot.training.gpt2 import _plain_gpt2

    assert _plain_gpt2(model)
    T.set_dropout(model, 0.0)
    model.train()
    ids = torch.randint(0, model.config.vocab_size, (3, 40), generator=torch.Generator().manual_seed(0))
    labels = ids.clone()
    labels[-1, 25:] = T.IGNORE_INDEX  # a padded tail
    ours = T.causal_lm_loss(model, ids, labels)
    ours.backward()
    ours_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    library = model(input_ids=ids, labels=labels, use_cache=False).loss
    library.backward()
    assert ours.item() == pytest.approx(library.item(), abs=1e-5)
    for mine, theirs in zip(ours_grads, (p.grad for p in model.parameters())):
        assert torch.allclose(mine, theirs, atol=1e-5)


# --- end to end -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_cache):
    """`huggingtweets train` as the scheduler runs it: a subprocess, then read run.json."""
    work = tmp_path_factory.mktemp("work")
    out = work / "models[bold]" / "dreamy_kettle"  # brackets: printed as written, never read as terminal markup
    config = work / "config.toml"  # --push publishes with the local backend: a folder per repo
    config.write_text(f'[hub]\nbackend = "local"\nlocal_dir = "{work / "hub"}"\n', encoding="utf-8")
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "bot", "--config", str(config), "train", "dreamy_kettle", "--archive",
                           str(ROOT / "bot" / "data" / "samples" / "sample_archive.zip"), "--base-model", "tiny", "--out", str(out),
                           "--push"], env=_env(tiny_cache), capture_output=True, text=True, timeout=300, cwd=ROOT)
    return proc, out, time.monotonic() - started


@pytest.mark.slow
def test_train_command_writes_the_folder_and_says_where_how_good_and_how_long(trained):
    proc, out, _ = trained
    assert proc.returncode == 0, proc.stderr
    assert f"Model folder: {out}" in proc.stdout
    assert "Validation perplexity: " in proc.stdout
    assert "Took " in proc.stdout and " s (" in proc.stdout
    assert "Stopped after " in proc.stdout and " passes because " in proc.stdout
    assert "Traceback" not in proc.stderr


def test_push_publishes_the_folder_as_it_is(trained):
    proc, out, _ = trained
    repo = out.parent.parent / "hub" / "huggingtweets" / "dreamy_kettle"
    assert "Model: " in proc.stdout and "Commit: " in proc.stdout
    assert sorted(p.name for p in repo.iterdir() if not p.name.startswith(".")) == sorted(p.name for p in out.iterdir())
    assert (repo / "README.md").read_bytes() == (out / "README.md").read_bytes()


def test_model_folder_holds_exactly_the_hub_files(trained):
    _, out, _ = trained
    from bot.training.train import FOLDER_FILES

    assert sorted(p.name for p in out.iterdir()) == sorted(FOLDER_FILES) == sorted([
        "config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
        "README.md", "predictions.png", "loss_curve.png", "run.json"])
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left beside it


def test_run_json_has_the_facts_and_nothing_from_the_machine(trained, tiny_cache):
    _, out, _ = trained
    facts = json.loads((out / "run.json").read_text(encoding="utf-8"))
    for key in ("name", "handles", "users", "validation_loss", "validation_perplexity", "samples", "best_sample",
                "hyperparameters", "seed", "versions", "hardware", "durations_s", "tokens_seen", "peak_memory_bytes"):
        assert key in facts, key
    assert facts["name"] == "dreamy_kettle" and facts["handles"] == ["dreamy_kettle"]
    assert facts["users"]["dreamy_kettle"]["kept"] > 100 and facts["users"]["dreamy_kettle"]["language"] == "en"
    assert facts["validation_perplexity"] == pytest.approx(math.exp(facts["validation_loss"]), rel=1e-3)
    # The tiny base is 64 wide, GPT-2 768: twelve times the rate; four 256-token blocks a step on a CPU:
    # twice that again.
    hp = facts["hyperparameters"]
    assert hp["batch_size"] == 4 and hp["block_size"] == 256
    assert hp["learning_rate_setting"] == 1.372e-4 and hp["learning_rate"] == pytest.approx(12 * 2 * 1.372e-4)
    assert facts["seed"] == 42 and facts["stop_reason"] in ("plateau", "max_epochs")
    assert facts["tokens_seen"] > 0 and facts["durations_s"]["total"] > 0
    assert facts["peak_memory_bytes"] < 2 * 1024**3  # the tiny model trains in under 2 GB on CPU
    assert set(facts["versions"]) >= {"torch", "transformers", "python", "huggingtweets"}
    assert facts["best_sample"] in facts["samples"]
    for text_file in ("run.json", "README.md", "config.json", "tokenizer_config.json", "generation_config.json"):
        text = (out / text_file).read_text(encoding="utf-8")
        for private in (str(out.parent), str(tiny_cache), str(Path.home()), str(ROOT)):
            assert private not in text, (text_file, private)


def test_samples_read_as_words_of_the_account(trained, sample_dataset):
    """Most words of each sample are words the account uses: the model writes words, not bytes."""
    import regex

    _, out, _ = trained
    facts = json.loads((out / "run.json").read_text(encoding="utf-8"))
    words_of = lambda text: regex.findall(r"\p{L}+", text.lower())  # noqa: E731
    vocabulary = {w for post in sample_dataset.train for w in words_of(post)}
    shares = [sum(w in vocabulary for w in words_of(s)) / max(1, len(words_of(s))) for s in facts["samples"]]
    assert sum(shares) / len(shares) > 0.6, facts["samples"]


def test_generation_config_samples_like_the_widget(trained):
    _, out, _ = trained
    gen = json.loads((out / "generation_config.json").read_text())
    tok = json.loads((out / "tokenizer.json").read_text())
    eos = next(t["id"] for t in tok["added_tokens"] if t["content"] == "<|endoftext|>")
    assert gen["do_sample"] is True and gen["top_p"] == 0.95
    assert gen["eos_token_id"] == eos and gen["pad_token_id"] == eos
    assert 20 <= gen["max_new_tokens"] <= 120  # about a post


def test_folder_loads_with_pipeline_and_generates(trained):
    from transformers import pipeline

    _, out, _ = trained
    generator = pipeline("text-generation", model=str(out), device="cpu")
    result = generator("My dream is", max_new_tokens=12)
    assert result[0]["generated_text"].startswith("My dream is")
    assert len(result[0]["generated_text"]) > len("My dream is")


def test_published_samples_never_carry_a_live_mention(trained):
    import re

    _, out, _ = trained
    facts = json.loads((out / "run.json").read_text(encoding="utf-8"))
    for sample in facts["samples"]:
        assert sample.startswith("My dream is")
        assert not re.search(r"[@＠][A-Za-z0-9_]", sample)
        assert "\n" not in sample and "<|endoftext|>" not in sample


@pytest.mark.slow
def test_train_command_refuses_bad_input_in_one_line(tmp_path, tiny_cache):
    archive = str(ROOT / "bot" / "data" / "samples" / "sample_archive.zip")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    cases = [(["--base-model", str(tmp_path / "missing")], 2, "no such model folder"),
             (["--out", str(tmp_path / "notes")], 2, "not an empty folder")]
    for extra, code, message in cases:
        proc = subprocess.run([sys.executable, "-m", "bot", "train", "dreamy_kettle", "--archive", archive, *extra],
                              env=_env(tiny_cache), capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert proc.returncode == code, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("huggingtweets: error:") and message in lines[0], proc.stderr
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine"
