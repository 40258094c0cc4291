"""Training on Hugging Face Jobs: the bot as `huggingtweets run --once` with executor = "hf-jobs", the real
`huggingface_hub` client against the loopback Hub, whose Jobs service runs each job's command as a local
process standing in for its container (tests/fakes/fake_hub.py, `FakeHub.run_container`), the loopback X, the tiny
model. Each test says what the operator sees: one commit and one reply per mention, a failure's log tail in
`status` with no secret in it, and no job submitted twice for a request."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from bot_process import BotProcess, assert_each_answered_once, keyed_commits, mention_burst, replies_to
from fake_x import FakeX
from waiting import wait_until

from bot.cli import to_toml
from bot.common.config import Settings, parse_settings
from bot.workers.hf_jobs import (
    ERROR_MARKER,
    REQUEST_LABEL,
    HfJobsExecutor,
    error_in_log,
    job_command,
    log_tail_message,
    request_folder,
)
from bot.training.job import JobError

JOBS_DATASET = "huggingtweets/huggingtweets-jobs"
NAMESPACE = "loopback-tester"  # the user of the loopback Hub's own token: jobs run under it by default


# --- the pure pieces ---------------------------------------------------------------------------------


def test_a_request_key_gives_a_folder_name_of_letters_digits_and_dashes():
    assert request_folder("7 (x mention 1890)") == "7-x-mention-1890"
    assert request_folder("12 (bluesky mention at://did:plc:abc/app.bsky.feed.post/3k)") == \
        "12-bluesky-mention-at-did-plc-abc-app-bsky-feed-post-3k"


def test_the_command_installs_the_package_and_runs_the_job_and_carries_no_secret(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_not-a-real-token-but-shaped-like-one")
    command = job_command("huggingtweets==0.1.0", JOBS_DATASET, "abc123", "requests/7/ticket.json", "huggingtweets")
    assert command[:2] == ["sh", "-c"]
    assert command[2] == ("pip install --quiet --no-cache-dir --disable-pip-version-check huggingtweets==0.1.0 && "
                          "exec python -m bot.workers.hf_jobs run --dataset huggingtweets/huggingtweets-jobs --revision abc123 "
                          "--path requests/7/ticket.json --organization huggingtweets")
    assert "hf_not-a-real" not in " ".join(command)


def test_a_package_with_shell_characters_is_quoted():
    command = job_command("huggingtweets @ git+https://example.org/x.git; rm -rf /", JOBS_DATASET, "r", "p", "org")
    assert "'huggingtweets @ git+https://example.org/x.git; rm -rf /'" in command[2]


def test_the_log_tail_keeps_the_last_lines_that_fit():
    lines = [f"step {n}" for n in range(100)] + ["CUDA out of memory"]
    message = log_tail_message("the job failed", lines, limit=61)
    assert message.startswith("the job failed; log: … ") and message.endswith("step 98 | step 99 | CUDA out of memory")
    assert len(message) == 61
    assert log_tail_message("the job failed", []) == "the job failed"
    long = log_tail_message("failed", ["x" * 500], limit=50)
    assert len(long) <= 50 and long.endswith("xxx")


def test_the_jobs_own_error_is_read_from_its_last_marked_line():
    record = JobError(type="NotEnoughDataError", message="too few posts", transient=False)
    lines = ["training", ERROR_MARKER + record.model_dump_json(), "===== Job finished ====="]
    assert error_in_log(lines) == record
    assert error_in_log(["training", "Killed"]) is None
    assert error_in_log([ERROR_MARKER + "{not json"]) is None


def test_settings_of_hf_jobs_are_checked_with_one_line():
    settings = parse_settings({"train": {"executor": "hf-jobs"}, "hf_jobs": {"flavor": "a10g-small", "max_jobs": 2}})
    assert settings.hf_jobs.flavor == "a10g-small" and settings.hf_jobs.max_jobs == 2
    from bot.common.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^config: 'hf_jobs.max_jobs' = 0: Input should be greater than or equal to 1$"):
        parse_settings({"hf_jobs": {"max_jobs": 0}})
    with pytest.raises(ConfigError, match=r"unknown key 'hf_jobs.gpu' \(allowed here: flavor, image, package, "):
        parse_settings({"hf_jobs": {"gpu": "t4"}})


# --- the executor against the loopback Jobs service ----------------------------------------------------


def test_a_failed_jobs_log_comes_back_masked(fake_hub, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_TOKEN", fake_hub.token)
    executor = HfJobsExecutor(Settings.model_validate({"hf_jobs": {"poll_seconds": 0}}))
    script = "import os, sys; print('starting with', os.environ['HF_TOKEN']); print('a cut one', os.environ['HF_TOKEN'][:12]); sys.exit(3)"
    info = executor.api.run_job(image="python:3.12", command=["python", "-c", script],
                                secrets={"HF_TOKEN": fake_hub.token}, namespace=NAMESPACE)
    job_id = f"{NAMESPACE}/{info.id}"
    assert fake_hub.token not in str(executor.api.inspect_job(job_id=info.id, namespace=NAMESPACE).secrets)

    status = wait_until(lambda: (s := executor.check(job_id, tmp_path)).state != "running" and s, "the job ended")
    assert status.state == "failed" and status.error.transient
    message = str(status.error)
    assert "exit code: 3" in message and "starting with ***" in message and "a cut one ***" in message, message
    assert fake_hub.token[:8] not in message
    assert status.where == f"cpu-basic {fake_hub.url}/jobs/{NAMESPACE}/{info.id}"
    assert fake_hub.token not in (tmp_path / "job.log").read_text()

    assert executor.running() == 0


@pytest.mark.parametrize("ending", ["DELETED", "CANCELED", "gone from the service"])
def test_a_job_that_ends_any_other_way_is_an_attempt_to_try_again(fake_hub, monkeypatch, tmp_path, ending):
    monkeypatch.setenv("HF_TOKEN", fake_hub.token)
    executor = HfJobsExecutor(Settings.model_validate({"hf_jobs": {"poll_seconds": 0}}))
    info = executor.api.run_job(image="python:3.12", command=["python", "-c", "import time; time.sleep(300)"],
                                namespace=NAMESPACE)
    job_id = f"{NAMESPACE}/{info.id}"
    assert executor.check(job_id, tmp_path).state == "running"
    fake_hub.end_job(info.id, "DELETED" if ending.startswith("gone") else ending, forget=ending.startswith("gone"))

    status = executor.check(job_id, tmp_path)
    assert status.state == "failed" and status.error.transient, status  # the bot's retry policy decides
    what = {"DELETED": "was deleted on", "CANCELED": "was cancelled on"}.get(ending, "is no longer known to")
    assert f"the job {info.id} {what} Hugging Face Jobs" in str(status.error)
    assert executor.running() == 0


@pytest.mark.slow
def test_a_job_left_waiting_for_a_machine_is_cancelled_and_a_hub_away_is_asked_again(fake_hub, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_TOKEN", fake_hub.token)
    fake_hub.scheduling_seconds = 60  # no machine free for a minute
    executor = HfJobsExecutor(Settings.model_validate({"hf_jobs": {"poll_seconds": 0, "start_timeout_seconds": 10}}))
    info = executor.api.run_job(image="python:3.12", command=["python", "-c", "print('never runs')"],
                                namespace=NAMESPACE)
    job_id = f"{NAMESPACE}/{info.id}"

    fake_hub.fail_next(f"/api/jobs/{NAMESPACE}/{info.id}", 503, method="GET", times=100)  # every retry too
    assert executor.check(job_id, tmp_path).state == "running"  # the Hub is away: ask again later
    asked = f"/api/jobs/{NAMESPACE}/{info.id}"
    assert 503 in {status for _, path, status in fake_hub.requests if path.startswith(asked)}
    fake_hub.faults.clear()
    assert executor.check(job_id, tmp_path).state == "running"  # waiting for a machine, within the limit

    time.sleep(10.5)
    # A cancel the service refuses: the job is not given up on while it may still start (never two at once).
    fake_hub.fail_next(f"/api/jobs/{NAMESPACE}/{info.id}/cancel", 500, method="POST", times=100)
    assert executor.check(job_id, tmp_path).state == "running" and fake_hub.jobs[info.id].stage == "SCHEDULING"
    fake_hub.faults.clear()
    status = executor.check(job_id, tmp_path)
    assert status.state == "failed" and status.error.transient
    assert "no cpu-basic machine was free for 10 s" in str(status.error) and "cancelled" in str(status.error)
    assert fake_hub.jobs[info.id].stage == "CANCELED"  # the bot pays for no machine it gave up on


# --- the bot, end to end -------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def tiny_base():
    from bot.training.tiny import tiny_model_dir

    tiny_model_dir()  # the session's tiny base, built before any job's time limit starts counting


@pytest.fixture
def x():
    with FakeX() as fake:
        for name in ("dora", "eli", "finn"):
            fake.add_user(name, posts=150)
        yield fake


class BotOnJobs(BotProcess):
    def __init__(self, tmp: Path, hub, x: FakeX, max_attempts: int = 2, **hf_jobs):
        self.hub, self.x = hub, x
        config = tmp / "config.toml"
        config.write_text(to_toml({
            "train": {"base_model": "tiny", "max_epochs": 1, "num_samples": 2, "executor": "hf-jobs"},
            "x": {"cache_dir": str(tmp / "x-cache"), "max_retries": 1},
            "hub": {"max_retries": 1, "retry_base_wait_seconds": 0.1},
            "bot": {"sources": ["x"], "state_db": str(tmp / "bot.sqlite3"), "work_dir": str(tmp / "work"),
                    "quota_per_day": 5, "max_attempts": max_attempts, "retry_base_seconds": 0},
            "hf_jobs": {"poll_seconds": 0.5, "timeout_seconds": 120, **hf_jobs},
        }), encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if k != "HUGGINGTWEETS_FAILPOINT" and not k.startswith("X_")}
        super().__init__(tmp, config, {**env, "HF_TOKEN": hub.token, **x.env()}, self.job_logs)

    def job_logs(self) -> str:
        return "\n".join(f"--- job {j.id} {j.stage} {j.message}\n" + "\n".join(line for _, line in j.log[-15:])
                         for j in self.hub.jobs.values())

    def jobs_of(self, row) -> list:
        """The jobs the loopback service was given for a request."""
        return self.hub.jobs_for(REQUEST_LABEL, request_key_folder(row))


def request_key_folder(row) -> str:
    """A request's folder in the jobs dataset, and its jobs' label (from its key, `bot.requests.scheduler.publish_key`)."""
    return request_folder(f"{row['id']} (x mention {row['mention_id']})")


@pytest.mark.slow
def test_a_burst_of_mentions_trains_on_hf_jobs_and_each_gets_one_reply(fake_hub, x, tmp_path):
    bot = BotOnJobs(tmp_path, fake_hub, x, max_jobs=2)
    mentions = mention_burst(x)
    stderr = bot.finish(bot.start())

    # Never more paid machines at once than [hf_jobs] max_jobs: the third job waited for one to end.
    jobs = list(fake_hub.jobs.values())
    assert len(jobs) == 3 and all(j.finished_at for j in jobs)
    for job in jobs:
        at_once = [o for o in jobs if o.created_at <= job.created_at < o.finished_at]
        assert len(at_once) <= 2, [(o.created_at, o.finished_at) for o in jobs]

    assert_each_answered_once(x, fake_hub, mentions, f"{stderr[-2000:]}\n{bot.job_logs()}")
    rows = bot.rows()
    assert {r["state"] for r in rows} == {"done"} and {r["executor"] for r in rows} == {"hf-jobs"}
    for row in rows:
        [job] = bot.jobs_of(row)
        assert row["job_host"] == f"t4-small {fake_hub.url}/jobs/{NAMESPACE}/{job.id}"
        assert job.spec["flavor"] == "t4-small" and job.spec["timeoutSeconds"] == 120
        assert job.spec["secrets"] == {"HF_TOKEN": fake_hub.token}, "the token travels as a secret"
        assert fake_hub.token not in str(job.spec["environment"]) + str(job.spec["command"])
    # The posts reached the jobs through the private dataset repo, once each; X was read by the bot alone.
    dataset = fake_hub.repos[f"datasets/{JOBS_DATASET}"]
    assert dataset.private
    assert sorted(p for p in dataset.files if p.endswith("ticket.json")) == sorted(
        f"requests/{request_key_folder(r)}/ticket.json" for r in rows)
    assert fake_hub.token not in stderr

    status = bot.status()
    assert status.stdout.count(f"hf-jobs on t4-small {fake_hub.url}/jobs/{NAMESPACE}/") == 3, status.stdout


@pytest.mark.slow
def test_a_job_that_fails_shows_its_log_tail_in_status_with_no_token(fake_hub, x, tmp_path):
    bot = BotOnJobs(tmp_path, fake_hub, x, max_attempts=2)
    mention = x.add_mention("carol", "@huggingtweets train @dora")
    # The job trains, then the Hub refuses its commit, echoing the credentials it was given.
    fake_hub.fail_next("/api/models/huggingtweets/dora/commit/", 403, times=10, message="Bad token {authorization}")
    stderr = bot.finish(bot.start())

    [row] = bot.rows()
    assert row["state"] == "failed" and len(replies_to(x, mention)) == 1
    assert len(bot.jobs_of(row)) == 1, "a token that may not write: the job's error says trying again cannot help"
    reason = row["reason"]
    assert reason.startswith("the job failed on Hugging Face Jobs: the Hugging Face token cannot write to the "
                             "organisation 'huggingtweets' (HTTP 403: Bad token Bearer ***"), reason
    assert "; log: … " in reason, "the log's last lines follow"
    status = bot.status()
    assert "the job failed on Hugging Face Jobs" in status.stdout, status.stdout
    log = (tmp_path / "work" / f"request-{row['id']}" / "job.log").read_text()
    assert "training huggingtweets/dora on tiny" in log and "HTTP Request" not in log, log
    for shown in (status.stdout, stderr, reason, log):
        assert fake_hub.token not in shown and fake_hub.token[:8] not in shown


@pytest.mark.slow
def test_a_job_past_the_services_time_limit_fails_as_out_of_time(fake_hub, x, tmp_path):
    bot = BotOnJobs(tmp_path, fake_hub, x, max_attempts=1, timeout_seconds=1)
    mention = x.add_mention("carol", "@huggingtweets train @dora")
    bot.finish(bot.start())

    [row] = bot.rows()
    [job] = bot.jobs_of(row)
    assert job.stage == "ERROR" and "timed out" in job.message
    assert row["state"] == "failed" and "ran out of time on Hugging Face Jobs" in row["reason"], row["reason"]
    assert len(replies_to(x, mention)) == 1
    assert "huggingtweets/dora" not in fake_hub.repos


@pytest.mark.slow
def test_a_job_cancelled_from_outside_is_submitted_again_and_answered_once(fake_hub, x, tmp_path):
    """A cancel on the service's side (an operator, a machine taken back) costs an attempt, not the request."""
    from huggingface_hub import HfApi

    bot = BotOnJobs(tmp_path, fake_hub, x, max_attempts=3)
    mention = x.add_mention("carol", "@huggingtweets train @dora")
    process = bot.start()
    running = wait_until(lambda: next((j for j in fake_hub.jobs.values() if j.stage == "RUNNING"), None),
                         "a job runs", timeout=90)
    HfApi(token=fake_hub.token).cancel_job(job_id=running.id, namespace=NAMESPACE)
    stderr = bot.finish(process)

    [row] = bot.rows()
    assert row["state"] == "done" and row["attempts"] == 1, stderr[-2000:]
    first, second = bot.jobs_of(row)
    assert first.id == running.id and first.stage == "CANCELED" and second.stage == "COMPLETED"
    assert second.created_at >= first.finished_at, "never two jobs of one request at once"
    assert f"the job {running.id} was cancelled on Hugging Face Jobs, not by the bot" in stderr
    assert len(replies_to(x, mention)) == 1 and len(keyed_commits(fake_hub, "huggingtweets/dora")) == 1


@pytest.mark.slow
def test_a_bot_killed_while_its_job_runs_picks_the_same_job_up_again(fake_hub, x, tmp_path):
    bot = BotOnJobs(tmp_path, fake_hub, x)
    mention = x.add_mention("carol", "@huggingtweets train @dora")
    process = bot.start()
    bot.wait_for(lambda: bot.job_ids(), "a job was submitted", process)
    [job_id] = bot.job_ids()
    os.kill(process.pid, signal.SIGKILL)
    process.communicate()
    assert fake_hub.jobs[job_id.split("/")[1]].stage in ("SCHEDULING", "RUNNING"), "the job outlives the bot"

    stderr = bot.finish(bot.start())
    [row] = bot.rows()
    assert row["state"] == "done" and len(replies_to(x, mention)) == 1, stderr[-2000:]
    assert [j.id for j in bot.jobs_of(row)] == [job_id.split("/")[1]], "no second job"
    assert len(keyed_commits(fake_hub, "huggingtweets/dora")) == 1


@pytest.mark.slow
def test_a_bot_killed_between_submitting_and_recording_adopts_the_job_it_started(fake_hub, x, tmp_path):
    bot = BotOnJobs(tmp_path, fake_hub, x)
    mention = x.add_mention("carol", "@huggingtweets train @dora")
    crashing = subprocess.run([sys.executable, "-m", "bot", "--config", str(bot.config), "run", "--once"],
                              env={**bot.env, "HUGGINGTWEETS_FAILPOINT": "job_submitted"}, cwd=bot.tmp,
                              capture_output=True, text=True, timeout=120)
    assert crashing.returncode == -signal.SIGKILL and not bot.job_ids()
    [started] = fake_hub.jobs.values()

    stderr = bot.finish(bot.start())
    [row] = bot.rows()
    assert row["state"] == "done" and len(replies_to(x, mention)) == 1
    assert [j.id for j in bot.jobs_of(row)] == [started.id], "the job started before the crash was adopted"
    assert "submitted before a restart" in stderr
