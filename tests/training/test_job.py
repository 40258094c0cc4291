"""The training job: a request folder in, a model folder out, with nothing else to read; and the local
executor that runs such jobs beside the bot, one at a time, never outliving it."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from waiting import wait_until

from bot.training import job
from bot.data.archive import open_archive
from bot.common.config import parse_settings
from bot.data.dataset import Dataset, build_dataset
from bot.workers.local import LOCK_FILE, LocalExecutor

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "bot" / "data" / "samples" / "sample_archive.zip"


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    return build_dataset({"dreamy_kettle": open_archive(SAMPLE)})


def prepared(tmp_path: Path, dataset: Dataset, **train) -> Path:
    settings = parse_settings({"train": {"base_model": "tiny", "num_samples": 2, **train}, "hub": {"organization": "acme"}})
    return job.prepare(tmp_path / "request-1", dataset, job.TrainJob.from_settings(settings, dataset.name))


def job_env(tmp_path: Path) -> dict[str, str]:
    """Nothing but what the job may use: no config file nearby, no credentials."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("X_", "HF_TOKEN"))}
    return {**env, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}


def test_the_saved_dataset_loads_back_exactly(tmp_path, dataset):
    folder = prepared(tmp_path, dataset)
    spec, loaded = job.load(folder)
    assert (loaded.name, loaded.train, loaded.validation) == (dataset.name, dataset.train, dataset.validation)
    assert [u.counts for u in loaded.users] == [u.counts for u in dataset.users]
    assert spec.repo_id == "acme/dreamy_kettle" and spec.base_model == "tiny"
    assert sorted(p.name for p in folder.iterdir()) == ["data", "job.json"]


@pytest.mark.slow
def test_the_job_runs_from_the_folder_alone(tmp_path, dataset):
    folder = prepared(tmp_path, dataset)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = subprocess.run([sys.executable, "-m", "bot.training.job", str(folder)], capture_output=True, text=True,
                            timeout=300, cwd=elsewhere, env=job_env(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    facts = json.loads((folder / "model" / "run.json").read_text())
    assert facts["model_id"] == "acme/dreamy_kettle" and facts["train_posts"] == len(dataset.train)
    assert json.loads(result.stdout)["model"].endswith("model")
    assert list(elsewhere.iterdir()) == []  # nothing written beside it


@pytest.mark.slow
def test_a_failing_job_says_why_and_whether_to_try_again(tmp_path, dataset):
    folder = prepared(tmp_path, dataset)
    spec = json.loads((folder / "job.json").read_text())
    spec["base_model"] = "no-such-org/no-such-model"
    (folder / "job.json").write_text(json.dumps(spec))
    result = subprocess.run([sys.executable, "-m", "bot.training.job", str(folder)], capture_output=True, text=True,
                            timeout=120, env=job_env(tmp_path))
    assert result.returncode == 1
    error = job.read_error(folder)
    assert error.transient is False and "cannot load base model 'no-such-org/no-such-model'" in error.message
    assert "Traceback" not in result.stderr


def test_a_folder_that_is_not_a_request_is_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "bot.training.job", str(tmp_path)], capture_output=True, text=True,
                            timeout=60, env=job_env(tmp_path))
    assert result.returncode == 1
    assert result.stderr.strip() == f"training failed: {tmp_path}: not a request folder (no job.json)"


# A bot that starts one job and waits: what the test kills. It prints the job's process id.
BOT_STARTING_A_JOB = """
import sys, time
from pathlib import Path
from bot.workers.local import LocalExecutor
job_id = LocalExecutor(sys.argv[1], timeout_seconds=600).submit(Path(sys.argv[2]))
print(job_id.split(":")[1], flush=True)
time.sleep(600)
"""


@pytest.mark.slow
@pytest.mark.parametrize("when", ["while it starts", "once it has loaded torch"])
def test_the_job_dies_with_the_bot_that_started_it(tmp_path, dataset, when):
    """A bot killed with kill -9, even before its job's first import is done, takes the job with it."""
    folder = prepared(tmp_path, dataset, max_epochs=100, patience=1000)  # minutes of training, if left alone
    bot = subprocess.Popen([sys.executable, "-c", BOT_STARTING_A_JOB, str(tmp_path), str(folder)],
                           stdout=subprocess.PIPE, text=True, env=job_env(tmp_path))
    child_pid = int(bot.stdout.readline())
    if when == "once it has loaded torch":
        wait_until(lambda: "libtorch" in _maps(child_pid), "the job has imported torch", timeout=120)
    bot.send_signal(signal.SIGKILL)
    bot.wait()
    wait_until(lambda: not _alive(child_pid), "the job ended with the bot", timeout=10)
    assert "training failed" not in (folder / "train.log").read_text(), "it ended by itself, not with the bot"


def _maps(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return ""


@pytest.mark.slow
def test_the_executor_starts_no_job_while_another_holds_the_lock(tmp_path, dataset):
    folder = prepared(tmp_path, dataset)
    executor = LocalExecutor(tmp_path, timeout_seconds=300)
    fd = os.open(tmp_path / LOCK_FILE, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # an orphan of an earlier bot, still ending
    try:
        assert executor.submit(folder) is None
    finally:
        os.close(fd)
    job_id = executor.submit(folder)
    assert job_id is not None and executor.submit(folder) is None  # one at a time
    deadline = time.monotonic() + 300
    while (status := executor.check(job_id, folder)).state == "running":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert status.state == "done" and (folder / "model" / "run.json").exists()
    assert LocalExecutor(tmp_path, 300).check(job_id, folder).state == "done"  # known by its folder after a restart


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped by init) counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False
