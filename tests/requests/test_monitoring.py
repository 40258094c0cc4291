"""Running it for months: /healthz and /metrics of the bot and a worker, JSON logs, the service units.

What a supervisor and a Prometheus server see: the real `huggingtweets run` (and `worker`) serving
/healthz over HTTP while X answers 500 or the state database's folder turns read-only, and back; the
metrics a burst of mentions moves through the bot; `systemd-analyze verify` over deploy/*.service.
"""

from __future__ import annotations

import ctypes
import json
import logging
import math
import secrets
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from io import StringIO
from pathlib import Path

import pytest
from fake_x import BOT_ID, FakeX
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from bot.cli import to_toml
from bot.common.config import parse_settings
from bot.common.errors import ConfigError, hide_in_logs
from bot.publishing.facts import RunFacts
from bot.sources.local import LocalX
from bot.common.logs import AboutFilter, JsonFormatter, about
from bot.requests.monitoring import worker_label
from bot.requests.scheduler import Bot
from redis_queue import REDIS_SERVER, RedisServer, free_port

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_ARCHIVE = ROOT / "bot" / "data" / "samples" / "sample_archive.zip"


# --- helpers ----------------------------------------------------------------------------------------


def get(url: str) -> tuple[int, str]:
    """(HTTP status, body) of a GET; (0, why) when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError as e:
        return 0, str(e)


def wait_for_health(url: str, status: int, words: str, process: subprocess.Popen, log: Path,
                    timeout: float = 60) -> str:
    """Ask /healthz until it answers `status` with `words` in its reason; the reason."""
    deadline = time.monotonic() + timeout
    while True:
        code, body = get(url + "/healthz")
        if code == status and words in body:
            return body.strip()
        assert process.poll() is None, f"the process ended: {log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"never {status} '{words}': last {code} {body!r}\n{log.read_text()[-3000:]}"
        time.sleep(0.1)


def metrics(text: str) -> dict[tuple[str, frozenset], float]:
    """Every sample of a scrape: {(name, {label: value}): number}."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: dict, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def obeying_file_permissions() -> None:
    """Run in the child before exec: root without the powers to ignore file permissions
    (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER), so a read-only file is read-only to it too."""
    for capability in (1, 2, 3):
        if _prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            os._exit(125)


_prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before fork: the child only calls it


def stop(process: subprocess.Popen) -> int:
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        pytest.fail("the process did not stop on SIGTERM")


# --- the bot's /healthz, over HTTP, from the real command ------------------------------------------------


@pytest.mark.slow
def test_healthz_turns_503_when_polls_fail_or_the_database_turns_read_only_and_back(tmp_path):
    """One bot, polling every second; /healthz says 503 after two missed polls."""
    state = tmp_path / "state"
    listen = f"127.0.0.1:{free_port()}"
    url = f"http://{listen}"
    config = tmp_path / "config.toml"
    config.write_text(to_toml({
        "hub": {"backend": "local", "local_dir": str(tmp_path / "hub")},
        "x": {"cache_dir": str(tmp_path / "x-cache"), "max_retries": 0},
        "bot": {"sources": ["x"], "state_db": str(state / "bot.sqlite3"), "work_dir": str(state / "work"),
                "poll_interval_seconds": 1},
        "monitoring": {"listen": listen, "missed_polls": 2},
    }), encoding="utf-8")
    log = tmp_path / "bot.log"
    with FakeX() as x, open(log, "w") as log_file:
        env = {**os.environ, **x.env(), "PYTHONPATH": str(ROOT)}
        secrets = [v for k, v in x.env().items() if k != "X_API_BASE_URL"]
        process = subprocess.Popen([sys.executable, "-m", "bot", "--config", str(config), "--log-format", "json", "run"],
                                   stdout=subprocess.DEVNULL, stderr=log_file, env=env, cwd=tmp_path,
                                   preexec_fn=obeying_file_permissions if os.geteuid() == 0 else None)
        try:
            assert wait_for_health(url, 200, "ok: x polled", process, log).endswith("the state database is writable")

            x.fail_next(f"/2/users/{BOT_ID}/mentions", 500, times=1000)
            reason = wait_for_health(url, 503, "no successful poll of x", process, log)
            assert "(one every 1 s); last error:" in reason and "500" in reason
            asked = subprocess.run([sys.executable, "-m", "bot", "--config", str(config), "health"],
                                   capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
            assert asked.returncode == 1 and asked.stdout == ""
            assert asked.stderr.startswith("huggingtweets: error: unhealthy: no successful poll of x for ")
            scraped = metrics(get(url + "/metrics")[1])
            assert value(scraped, "huggingtweets_polls_total", network="x", outcome="failed") >= 2
            assert value(scraped, "huggingtweets_seconds_since_successful_poll", network="x") > 2
            assert value(scraped, "huggingtweets_healthy") == 0

            x.clear_faults()
            wait_for_health(url, 200, "ok: x polled", process, log)

            files = [state, *state.glob("bot.sqlite3*")]
            for path in files:
                path.chmod(0o555 if path.is_dir() else 0o444)
            try:
                reason = wait_for_health(url, 503, "cannot be written", process, log)
                assert reason == f"the state database {state / 'bot.sqlite3'} cannot be written: attempt to write a readonly database"
            finally:
                for path in files:
                    path.chmod(0o755 if path.is_dir() else 0o644)
            wait_for_health(url, 200, "ok: x polled", process, log)
            asked = subprocess.run([sys.executable, "-m", "bot", "--config", str(config), "health"],
                                   capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
            assert asked.returncode == 0 and asked.stdout.startswith("ok: x polled"), asked.stderr
        finally:
            code = stop(process)
        assert code == 0, log.read_text()[-3000:]

    lines = [json.loads(line) for line in log.read_text().splitlines()]  # every line one JSON object
    failed = [line for line in lines if line["message"].startswith("poll failed on x")]
    assert failed and all(line["network"] == "x" and line["level"] == "WARNING" for line in failed)
    assert {"time", "level", "logger", "message"} <= set(lines[0])
    assert not any(secret in log.read_text() for secret in secrets)


def test_health_says_in_one_line_when_nothing_listens(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(to_toml({"monitoring": {"listen": f"127.0.0.1:{free_port()}"}}), encoding="utf-8")
    asked = subprocess.run([sys.executable, "-m", "bot", "--config", str(config), "health"], capture_output=True,
                           text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=tmp_path, timeout=60)
    assert asked.returncode == 1 and asked.stdout == ""
    [line] = asked.stderr.splitlines()
    assert line.startswith("huggingtweets: error: nothing answers at http://127.0.0.1:") and "Connection refused" in line


def test_a_listen_address_that_is_not_host_and_port_is_refused_in_one_line():
    for wrong in ("9464", "127.0.0.1", "127.0.0.1:99999", "http://127.0.0.1:9464", ":9464"):
        with pytest.raises(ConfigError, match="monitoring.listen") as caught:
            parse_settings({"monitoring": {"listen": wrong}})
        assert "\n" not in str(caught.value) and "HOST:PORT" in str(caught.value)
    assert parse_settings({"monitoring": {"listen": "[::1]:9464"}}).monitoring.address == ("::1", 9464)
    assert parse_settings({}).monitoring.address is None  # off unless set


# --- the metrics, as a burst of mentions goes through the bot ---------------------------------------------


@pytest.fixture
def local_settings(tmp_path):
    (tmp_path / "archives").mkdir()
    shutil.copy(SAMPLE_ARCHIVE, tmp_path / "archives" / "dreamy_kettle.zip")
    return parse_settings({
        "train": {"base_model": "tiny", "max_epochs": 1, "max_minutes": 0.02, "num_samples": 1, "sample_max_new_tokens": 8},
        "hub": {"backend": "local", "local_dir": str(tmp_path / "hub")},
        "bot": {"sources": ["local"], "state_db": str(tmp_path / "bot.sqlite3"), "inbox": str(tmp_path / "inbox.jsonl"),
                "outbox": str(tmp_path / "outbox.jsonl"), "archives_dir": str(tmp_path / "archives"),
                "work_dir": str(tmp_path / "work"), "daily_budget_usd": 5.0},
    })


def scrape(bot: Bot) -> dict:
    return metrics(generate_latest(bot.monitor.registry).decode())


@pytest.mark.slow
def test_metrics_follow_a_burst_of_mentions_through_the_bot_and_survive_a_restart(local_settings):
    bot = Bot(local_settings)
    before = scrape(bot)
    assert value(before, "huggingtweets_mentions_total", network="local") == 0
    assert value(before, "huggingtweets_requests", network="local", state="done") == 0
    assert value(before, "huggingtweets_retries_total", step="downloading") == 0

    inbox = LocalX.from_settings(local_settings)
    inbox.add_mention(author_username="sleepy_reader", text="@huggingtweets train @dreamy_kettle")
    inbox.add_mention(author_username="carol", text="@huggingtweets help")
    inbox.add_mention(author_username="dave", text="@huggingtweets train @a @b @c @d")
    bot.poll_and_log()
    assert value(scrape(bot), "huggingtweets_queue_length") == 1  # the model to train; the others need only replies
    bot.drain()
    after = scrape(bot)

    assert value(after, "huggingtweets_mentions_total", network="local") == 3
    assert value(after, "huggingtweets_replies_sent_total", network="local") == 3
    assert value(after, "huggingtweets_requests", network="local", state="done") == 2
    assert value(after, "huggingtweets_requests", network="local", state="rejected") == 1
    assert value(after, "huggingtweets_queue_length") == 0
    assert value(after, "huggingtweets_polls_total", network="local", outcome="ok") == 1
    assert value(after, "huggingtweets_jobs_finished_total", executor="local", worker="", outcome="done") == 1
    assert value(after, "huggingtweets_training_seconds_count", executor="local") == 1
    assert 0 < value(after, "huggingtweets_training_seconds_sum", executor="local") < 300
    facts = RunFacts.load(bot.work_dir / "request-1" / "model")
    assert value(after, "huggingtweets_validation_loss_sum", executor="local") == pytest.approx(
        math.log(facts.validation_perplexity))
    assert value(after, "huggingtweets_validation_loss_bucket", executor="local", le="+Inf") == 1
    assert value(after, "huggingtweets_healthy") == 1
    assert value(after, "huggingtweets_daily_budget_usd") == 5.0

    bot.store.add_spend(None, "x", [("post_read", 3, 0.015), ("user_read", 1, 0.01)])  # what reading X costs
    spent = scrape(bot)
    assert value(spent, "huggingtweets_spend_usd_total", network="x", item="post_read") == pytest.approx(0.015)
    assert value(spent, "huggingtweets_spend_today_usd") == pytest.approx(0.025)

    # A restart: what the store holds reads the same; what was counted as it happened starts again.
    bot.store.close()
    restarted = scrape(Bot(local_settings))
    for name, labels in (("huggingtweets_mentions_total", {"network": "local"}),
                         ("huggingtweets_replies_sent_total", {"network": "local"}),
                         ("huggingtweets_requests", {"network": "local", "state": "done"}),
                         ("huggingtweets_spend_usd_total", {"network": "x", "item": "post_read"})):
        assert value(restarted, name, **labels) == value(spent, name, **labels), name
    assert ("huggingtweets_training_seconds_count", frozenset({"executor": "local"}.items())) not in restarted


def test_a_state_database_that_fails_the_loop_makes_the_bot_unhealthy(local_settings):
    bot = Bot(local_settings)
    bot.monitor.polled("local")
    assert bot.monitor.health().healthy
    bot.store.close()  # every use of it now fails, as on a full disk
    bot.drain()
    health = bot.monitor.health()
    assert not health.healthy
    assert health.reason.startswith("the state database failed the bot 0 s ago: ") and "cannot be used now" in health.reason
    assert value(scrape(bot), "huggingtweets_healthy") == 0  # the store's own metrics are left out, not the rest


def test_jobs_are_labelled_by_worker_name_or_flavor_never_by_a_url_new_for_each_job():
    assert worker_label("huggingtweets@gpu-2") == "huggingtweets@gpu-2"
    assert worker_label("t4-small https://huggingface.co/jobs/alice/68780d00") == "t4-small"
    assert worker_label(None) == ""


# --- a worker's /healthz: its broker -------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(REDIS_SERVER is None, reason="no redis-server binary on this machine (apt-get install redis-server)")
def test_a_workers_healthz_says_when_its_broker_cannot_be_reached_and_when_it_answers(tmp_path):
    redis = RedisServer(tmp_path)  # its port chosen, nothing listening yet
    listen = f"127.0.0.1:{free_port()}"
    config = tmp_path / "config.toml"
    config.write_text(to_toml({"hub": {"backend": "local", "local_dir": str(tmp_path / "hub")},
                               "celery": {"broker_url": redis.url}}), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "CELERY_BROKER_URL"} | {"PYTHONPATH": str(ROOT)}
    log = tmp_path / "worker.log"
    with open(log, "w") as log_file:
        process = subprocess.Popen([sys.executable, "-m", "bot", "--config", str(config), "worker", "--listen", listen],
                                   stdout=log_file, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    try:
        reason = wait_for_health(f"http://{listen}", 503, "cannot be reached", process, log)
        assert reason.startswith(f"the broker {redis.url} cannot be reached: ConnectionError")
        assert value(metrics(get(f"http://{listen}/metrics")[1]), "huggingtweets_broker_up") == 0
        redis.start()
        assert wait_for_health(f"http://{listen}", 200, "answers", process, log) == f"ok: the broker {redis.url} answers"
        scraped = metrics(get(f"http://{listen}/metrics")[1])
        assert value(scraped, "huggingtweets_broker_up") == 1
        assert value(scraped, "huggingtweets_worker_jobs_running") == 0
    finally:
        stop(process)
        redis.stop()


# --- logs an operator can search ------------------------------------------------------------------------------


def test_json_log_lines_carry_the_request_and_mask_secrets(monkeypatch):
    token = "hf_" + "QuiteSecretTokenValue123"
    monkeypatch.setenv("HF_TOKEN", token)
    session = "sess-" + secrets.token_hex(12)
    hide_in_logs([], [session])
    stream = StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(AboutFilter())
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("huggingtweets.test-json-logs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        with about(network="bluesky"), about(request=7, state="training"):
            logger.info("request 7: the Hub refused %s \"quoted\"", token)
            logger.info("a server said \x9b2J\u202egnp.exe\x1b]0;title\x07 with session %s", session)
            logger.info("request 7: training -> publishing", extra={"state": "publishing"})
        logger.warning("outside any request")
    finally:
        logger.removeHandler(handler)
    first, hostile, second, third = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == 'request 7: the Hub refused *** "quoted"'
    # JSON escapes C0 controls but leaves C1 and bidirectional ones raw: each field is made inert first, and a
    # session token the bot was handed (no variable names it) is masked as in plain lines.
    assert hostile["message"] == "a server said gnp.exe with session ***"
    assert (first["request"], first["state"], first["network"]) == (7, "training", "bluesky")
    assert second["state"] == "publishing"  # a line says which state it is about
    assert set(third) == {"time", "level", "logger", "message"} and third["level"] == "WARNING"
    assert token[:8] not in stream.getvalue() and session[:8] not in stream.getvalue()


# --- the service units ------------------------------------------------------------------------------------------


SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
INSTALLED_PROGRAM = "/opt/huggingtweets/venv/bin/huggingtweets"


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="no systemd-analyze on this machine (systemd's tools): "
                    "the units are verified where it is")
def test_the_service_units_verify_and_keep_their_sandbox(tmp_path):
    """`systemd-analyze verify` finds nothing to say, and `security` rates each unit's exposure low.

    The units run the program from /opt/huggingtweets/venv, which `verify` checks exists: here they run
    this checkout's instead. The worker's template is checked as its first instance.
    """
    program = shutil.which("huggingtweets") or pytest.skip("the huggingtweets command is not installed (pip install -e .)")
    units = sorted((ROOT / "deploy").glob("*.service"))
    assert [u.name for u in units] == ["huggingtweets-worker@.service", "huggingtweets.service"]
    checked = []
    for unit in units:
        text = unit.read_text(encoding="utf-8")
        assert INSTALLED_PROGRAM in text
        copy = tmp_path / unit.name.replace("@.", "@0.")
        copy.write_text(text.replace(INSTALLED_PROGRAM, program), encoding="utf-8")
        checked.append(copy)
    verified = subprocess.run([SYSTEMD_ANALYZE, "verify", *map(str, checked)], capture_output=True, text=True,
                              cwd=tmp_path, timeout=60)
    assert verified.returncode == 0 and verified.stderr.strip() == "", verified.stderr
    for unit in checked:  # 0 is the safest, 100 the most exposed; the bot's rates 17, a worker's 18
        rated = subprocess.run([SYSTEMD_ANALYZE, "security", "--offline=true", "--threshold=25", str(unit)],
                               capture_output=True, text=True, cwd=tmp_path, timeout=60)
        assert rated.returncode == 0, rated.stdout[-2000:] + rated.stderr
    for unit in units:
        text = unit.read_text(encoding="utf-8")
        for setting in ("Restart=on-failure", "User=huggingtweets", "NoNewPrivileges=yes", "ProtectSystem=strict",
                        "StateDirectory=huggingtweets", "PrivateTmp=yes"):
            assert f"\n{setting}\n" in text, f"{unit.name}: {setting}"
