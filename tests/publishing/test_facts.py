"""run.json, typed: what training writes and card, Hub commit and bot read; a broken one is one clear line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from run_facts import example_facts

from bot.publishing.facts import RunFacts, RunFactsError

ROOT = Path(__file__).resolve().parents[2]


def test_run_facts_round_trip_through_the_file(tmp_path):
    facts = RunFacts.parse(example_facts())
    facts.save(tmp_path)
    assert RunFacts.load(tmp_path) == facts
    assert json.loads((tmp_path / "run.json").read_text())["schema_version"] == 2
    assert facts.kept_posts == 2339


@pytest.mark.parametrize("change, message", [
    ({"validation_loss": "low"}, "validation_loss: input should be a valid number"),
    ({"colour": "blue"}, "colour: extra inputs are not permitted"),
    ({"users": {"alice": {"kept": 3}}}, "users.alice.downloaded: field required"),
    ({"schema_version": 1}, "schema version 1; this program reads version 2"),
])
def test_a_wrong_field_is_named_in_one_line(tmp_path, change, message):
    (tmp_path / "run.json").write_text(json.dumps(example_facts(**change)), encoding="utf-8")
    with pytest.raises(RunFactsError, match=message.replace("(", r"\(")):
        RunFacts.load(tmp_path)


def test_a_missing_field_is_named(tmp_path):
    facts = example_facts()
    del facts["model_id"]
    (tmp_path / "run.json").write_text(json.dumps(facts), encoding="utf-8")
    with pytest.raises(RunFactsError, match="model_id: field required"):
        RunFacts.load(tmp_path)


def test_publishing_a_folder_with_a_broken_run_json_is_one_line(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    (tmp_path / "model" / "run.json").write_text(json.dumps(example_facts(seed="x")))
    result = subprocess.run([sys.executable, "-m", "bot", "publish", str(tmp_path / "model")], capture_output=True,
                            text=True, cwd=tmp_path, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin",
                                                          "HF_TOKEN": "hf_x" * 5, "HOME": str(tmp_path)})
    assert result.returncode == 1
    assert result.stderr.strip().endswith("run.json: seed: input should be a valid integer, unable to parse string as an integer")
    assert "Traceback" not in result.stderr
