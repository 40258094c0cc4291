"""A complete, valid run.json for tests that need a model folder without training one."""

from __future__ import annotations

import copy

EXAMPLE = {
    "schema_version": 2,
    "name": "alice",
    "model_id": "huggingtweets/alice",
    "handles": ["alice"],
    "users": {"alice": {"downloaded": 3249, "retweets": 410, "short": 480, "duplicates": 20, "kept": 2339,
                        "language": "en"}},
    "accounts": {"alice": {"username": "Alice", "display_name": "Alice A.",
                           "avatar_url": "https://pbs.twimg.com/profile_images/1/a.jpg"}},
    "language": ["en"],
    "bot_handle": "huggingtweets",
    "min_words": 3,
    "base_model": "openai-community/gpt2",
    "base_model_hub_id": "openai-community/gpt2",
    "license": "mit",
    "validation_loss": 3.2189,
    "validation_perplexity": 24.9987,
    "prompt": "My dream is",
    "samples": ["My dream is to sleep", "My dream is tea"],
    "best_sample": "My dream is tea",
    "samples_dropped_as_memorised": 0,
    "hyperparameters": {"learning_rate": 1.372e-4, "learning_rate_setting": 1.372e-4, "schedule": "warmup-stable-decay", "warmup_steps": 0,
                        "max_epochs": 4, "evals_per_epoch": 4, "min_improvement": 0.01, "patience": 2,
                        "cooldown_fraction": 0.2, "max_minutes": 0.0,
                        "batch_size": 1, "block_size": 128, "weight_decay": 0.0, "max_grad_norm": 1.0,
                        "dropout": 0.0, "optimizer": "AdamW", "precision": "fp32", "compiled": False},
    "seed": 42,
    "epochs_run": 1.5,
    "steps": 3,
    "steps_per_epoch": 2,
    "best_step": 2,
    "stop_reason": "plateau",
    "history": [{"step": 1, "epoch": 0.5, "validation_loss": 3.5}, {"step": 2, "epoch": 1.0, "validation_loss": 3.2189},
                {"step": 3, "epoch": 1.5, "validation_loss": 3.25}],
    "step_losses": [4.0, 3.5, 3.1],
    "train_posts": 2105,
    "validation_posts": 234,
    "train_tokens": 60000,
    "validation_tokens": 6000,
    "tokens_seen": 60000,
    "versions": {"huggingtweets": "0.1.0", "torch": "2.13.0"},
    "hardware": {"device": "cpu", "name": "test CPU", "threads": 2},
    "peak_memory_bytes": 500_000_000,
    "finished_at": "2026-11-22T10:00:00Z",
    "durations_s": {"train": 3.0, "total": 4.0},
}


def example_facts(**changes) -> dict:
    """EXAMPLE with some top-level fields changed (a deep copy: tests may edit it)."""
    facts = copy.deepcopy(EXAMPLE)
    facts.update(changes)
    return facts
