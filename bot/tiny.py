"""A tiny GPT-2, built locally: the base model for the demo, the tests and machines with no network.

    >>> from bot.tiny import tiny_model_dir
    >>> folder = tiny_model_dir()          # built once (a second or two), then read from the cache
    >>> from transformers import AutoModelForCausalLM, AutoTokenizer
    >>> AutoTokenizer.from_pretrained(folder).vocab_size
    1024
    >>> model = AutoModelForCausalLM.from_pretrained(folder)   # 2 layers, 64 wide, random weights

`huggingtweets train --base-model tiny` uses it. The weights are random (from a fixed seed) and the
byte-level BPE tokenizer is trained with the `tokenizers` library on `bot/assets/tiny_corpus.txt`, so
the same code always builds the same model. It lives in the user's cache directory:
`$HUGGINGTWEETS_CACHE`, else `$XDG_CACHE_HOME/huggingtweets`, else `~/.cache/huggingtweets`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

EOS = "<|endoftext|>"
VOCAB_SIZE = 1024
# Small enough to train in seconds on two CPU cores; the context matches GPT-2's so that the
# original recipe (blocks of the model's maximum length) can be run against it unchanged.
ARCHITECTURE = {"n_layer": 2, "n_head": 2, "n_embd": 64, "n_positions": 1024}
SEED = 1234
CORPUS = Path(__file__).parent / "assets" / "tiny_corpus.txt"
# The license the card states for models fine-tuned from the tiny base (it is this project's own).
LICENSE = "apache-2.0"


def cache_root() -> Path:
    """The huggingtweets cache directory (not created)."""
    if os.environ.get("HUGGINGTWEETS_CACHE"):
        return Path(os.environ["HUGGINGTWEETS_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "huggingtweets"


def _fingerprint() -> str:
    """Changes whenever the recipe or the corpus changes, so a stale cached model is never used."""
    recipe = json.dumps({"arch": ARCHITECTURE, "vocab": VOCAB_SIZE, "seed": SEED, "eos": EOS}, sort_keys=True)
    return hashlib.sha256(recipe.encode() + CORPUS.read_bytes()).hexdigest()[:12]


def tiny_model_dir() -> Path:
    """The folder of the tiny model, building it first if the cache does not have it yet.

    Safe when several processes ask at once: each builds into its own temporary folder and renames
    it into place; the first rename wins and the others drop theirs.
    """
    folder = cache_root() / f"tiny-gpt2-{_fingerprint()}"
    if (folder / "config.json").exists():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=folder.parent))
    try:
        build_tiny_model(tmp)
        try:
            os.rename(tmp, folder)
        except OSError:
            if not (folder / "config.json").exists():  # not a lost race: a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def build_tokenizer():
    """A byte-level BPE tokenizer (GPT-2's scheme) with exactly VOCAB_SIZE entries, EOS included."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2TokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=[EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS.read_text(encoding="utf-8").splitlines(), trainer)
    # Built from the `tokenizers` object: GPT2TokenizerFast(vocab_file=, merges_file=) would
    # silently give an empty tokenizer, which is why the size is checked here.
    tokenizer = GPT2TokenizerFast(tokenizer_object=tok, bos_token=EOS, eos_token=EOS, unk_token=EOS,
                                  model_max_length=ARCHITECTURE["n_positions"])
    if len(tokenizer) != VOCAB_SIZE:
        raise RuntimeError(f"the tiny tokenizer has {len(tokenizer)} entries, expected {VOCAB_SIZE}")
    return tokenizer


def build_tiny_model(folder: str | Path) -> Path:
    """Write the tiny model (config, random weights, tokenizer) into `folder`."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = build_tokenizer()
    config = GPT2Config(vocab_size=VOCAB_SIZE, bos_token_id=tokenizer.eos_token_id,
                        eos_token_id=tokenizer.eos_token_id, **ARCHITECTURE)
    with torch.random.fork_rng(devices=[]):  # a fixed seed without touching the caller's RNG
        torch.manual_seed(SEED)
        model = GPT2LMHeadModel(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return Path(folder)
