"""The playground: its logic over real tiny models, the page in a real browser, and its deploy as a Space.

Two tiny models are trained once for the module (`train_model` on the bundled sample archive, one pass)
and published to a local Hub folder, and to the loopback Hub for the Hub-backed tests. The browser test
starts `huggingtweets space run` in a subprocess on 127.0.0.1 and drives headless Chromium through
Selenium and Debian's chromedriver; it is skipped, saying why, when Gradio, Selenium or the browser is
missing (`.ci/run` installs them).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest

from bot.common.config import parse_settings
from bot.publishing.hub import delete_repos, publish_folder

PROJECT = Path(__file__).resolve().parents[2]
HOSTILE_PROMPT = "<b>bold</b> **x** @alice"
ORG = "huggingtweets"

needs_gradio = pytest.mark.skipif(importlib.util.find_spec("gradio") is None,
                                  reason="Gradio is not installed (pip install -e '.[space]')")



# One process makes the models, the local Hub and the served playground for the module (module fixtures),
# under pytest-xdist too.
pytestmark = pytest.mark.xdist_group("space")


def chromium_and_driver() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


needs_browser = pytest.mark.skipif(
    importlib.util.find_spec("selenium") is None or chromium_and_driver() is None,
    reason="no headless browser: needs selenium (pip) and chromium + chromedriver (apt-get install chromium "
           "chromium-driver)")


# --- two tiny models -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_folders(tmp_path_factory) -> dict[str, Path]:
    """'dreamy_kettle' trained on the sample archive, and 'tea_ghost': the same weights, another
    name, people and prompt (its run.json says so), as a second model of the organisation."""
    from bot.data.archive import open_archive
    from bot.common.config import Settings, TrainSettings
    from bot.data.dataset import build_dataset
    from bot.training.train import train_model

    root = tmp_path_factory.mktemp("models")
    dataset = build_dataset({"dreamy_kettle": open_archive(str(PROJECT / "bot" / "data" / "samples" / "sample_archive.zip"))})
    settings = Settings(train=TrainSettings(max_epochs=1, num_samples=2, sample_max_new_tokens=16))
    train_model(dataset, settings, root / "dreamy_kettle", base_model="tiny")
    tea = Path(shutil.copytree(root / "dreamy_kettle", root / "tea_ghost"))
    facts = json.loads((tea / "run.json").read_text(encoding="utf-8"))
    counts, account = facts["users"]["dreamy_kettle"], facts["accounts"]["dreamy_kettle"]
    facts.update(name="tea_ghost", model_id=f"{ORG}/tea_ghost", handles=["tea_ghost"], prompt="Tea is",
                 users={"tea_ghost": counts}, accounts={"tea_ghost": dict(account, username="tea_ghost")})
    (tea / "run.json").write_text(json.dumps(facts), encoding="utf-8")
    return {"dreamy_kettle": root / "dreamy_kettle", "tea_ghost": tea}


def local_settings(local_dir: Path, **space):
    return parse_settings({"hub": {"backend": "local", "local_dir": str(local_dir), "organization": ORG},
                           "space": {"list_refresh_seconds": 0, **space}})


@pytest.fixture(scope="module")
def local_hub(model_folders, tmp_path_factory) -> Path:
    """A local Hub folder with both models; tea_ghost published a second after dreamy_kettle (newer)."""
    local_dir = tmp_path_factory.mktemp("hub")
    settings = local_settings(local_dir)
    publish_folder(model_folders["dreamy_kettle"], settings)
    time.sleep(1.1)  # the local history keeps seconds
    publish_folder(model_folders["tea_ghost"], settings)
    return local_dir


def playground_module():
    from bot.publishing.space import load_app

    return load_app()


# --- the playground's logic ----------------------------------------------------------------------


@pytest.mark.slow
@needs_gradio
def test_models_are_listed_newest_first_and_found_by_handle(local_hub):
    app = playground_module()
    playground = app.Playground(app.LocalModels(local_settings(local_hub).hub), refresh_seconds=0)
    assert [m.name for m in playground.models()] == ["tea_ghost", "dreamy_kettle"]
    assert [m.name for m in playground.find("@Dreamy")] == ["dreamy_kettle"]
    assert [m.name for m in playground.find("ghost")] == ["tea_ghost"]
    assert playground.find("nobody") == []


@needs_gradio
def test_samples_start_from_the_models_prompt_and_ping_no_one(local_hub):
    app = playground_module()
    playground = app.Playground(app.LocalModels(local_settings(local_hub).hub), num_samples=3, max_new_tokens=12)
    assert playground.default_prompt("tea_ghost") == "Tea is"  # from its run.json
    result = playground.generate("tea_ghost", "")
    assert len(result.samples) == 3 and all(s.startswith("Tea is") for s in result.samples)
    hostile = playground.generate("tea_ghost", HOSTILE_PROMPT)
    assert all(s.startswith("<b>bold</b> **x** @\u2060alice") for s in hostile.samples)
    assert "@\u2060tea_ghost" in hostile.notice and "not written by" in hostile.notice


@needs_gradio
def test_a_prompt_may_take_the_models_positions_less_what_it_writes(local_hub):
    app = playground_module()
    playground = app.Playground(app.LocalModels(local_settings(local_hub).hub), num_samples=1, max_new_tokens=8)
    loaded = playground.cache.get(playground.entry("tea_ghost"))
    positions = loaded.model.config.n_positions
    room = positions - 8
    assert app.prompt_room(loaded.model.config, 8) == room
    # 300 emoji are short in characters, long in tokens (several bytes each): past the model's positions.
    with pytest.raises(app.PlaygroundError, match=rf"too long for this model: [\d,]+ tokens, and it takes at most "
                                                  rf"{room:,} \(it writes up to 8 more within its {positions:,} positions\)"):
        playground.generate("tea_ghost", "🌧" * 300)
    words = " a" * room
    assert len(loaded.tokenizer(words, add_special_tokens=False).input_ids) == room
    assert playground.generate("tea_ghost", words).samples  # exactly as long as it may be: it writes
    with pytest.raises(app.PlaygroundError, match="too long for this model"):
        playground.generate("tea_ghost", words + " a")


@needs_gradio
def test_generations_wait_in_a_bounded_queue_per_visitor_and_in_all(local_hub):
    app = playground_module()
    playground = app.Playground(app.LocalModels(local_settings(local_hub).hub), max_new_tokens=8, queue_size=3,
                                queue_per_visitor=2)
    admission = playground.admission
    with admission.slot("203.0.113.7"), admission.slot("203.0.113.7"):  # two of one visitor's, waiting
        with pytest.raises(app.PlaygroundError, match="You already have 2 generations waiting or running"):
            playground.generate("tea_ghost", "", visitor="203.0.113.7")
        with admission.slot("198.51.100.1"):
            with pytest.raises(app.PlaygroundError, match=r"The playground is busy \(3 generations"):
                playground.generate("tea_ghost", "", visitor="192.0.2.9")
        assert playground.generate("tea_ghost", "", visitor="198.51.100.1").samples  # room for one more
    assert admission.held == {}  # every slot given back, refused or not
    assert playground.generate("tea_ghost", "", visitor="203.0.113.7").samples


@needs_gradio
def test_a_visitor_is_the_address_a_proxy_received_the_request_from():
    from types import SimpleNamespace

    app = playground_module()
    direct = SimpleNamespace(headers={}, client=SimpleNamespace(host="127.0.0.1"))
    proxied = SimpleNamespace(headers={"x-forwarded-for": "203.0.113.7, 10.0.0.2"}, client=SimpleNamespace(host="10.0.0.3"))
    assert (app.visitor_of(direct), app.visitor_of(proxied), app.visitor_of(None)) == ("127.0.0.1", "203.0.113.7", "unknown")


@needs_gradio
def test_the_cache_keeps_the_most_recently_used_models_only(local_hub):
    app = playground_module()
    playground = app.Playground(app.LocalModels(local_settings(local_hub).hub), cache_size=1, max_new_tokens=8)
    playground.generate("dreamy_kettle", "")
    playground.generate("tea_ghost", "")
    assert [repo for repo, _ in playground.cache.models] == [f"{ORG}/tea_ghost"]
    first = playground.cache.models[(f"{ORG}/tea_ghost", playground.entry("tea_ghost").revision)]
    playground.generate("tea_ghost", "")
    assert list(playground.cache.models.values()) == [first]  # used again: not loaded again


@needs_gradio
def test_a_deleted_model_leaves_the_list_and_memory(model_folders, tmp_path):
    settings = local_settings(tmp_path / "hub")
    for folder in model_folders.values():
        publish_folder(folder, settings)
    app = playground_module()
    playground = app.Playground(app.LocalModels(settings.hub), refresh_seconds=0, max_new_tokens=8)
    playground.generate("tea_ghost", "")
    delete_repos([f"{ORG}/tea_ghost"], settings)  # what "opt out" does
    assert [m.name for m in playground.models()] == ["dreamy_kettle"]
    assert len(playground.cache) == 0
    with pytest.raises(app.PlaygroundError, match="not, or no longer, published"):
        playground.generate("tea_ghost", "")


@pytest.mark.slow
@needs_gradio
def test_models_on_the_hub_are_listed_downloaded_and_forgotten_when_deleted(model_folders, fake_hub, monkeypatch,
                                                                            tmp_path):
    monkeypatch.setenv("HF_TOKEN", fake_hub.token)
    settings = parse_settings({"hub": {"organization": ORG}})
    for folder in model_folders.values():
        publish_folder(folder, settings)
    app = playground_module()
    playground = app.Playground(app.HubModels(ORG, cache_dir=tmp_path / "cache"), refresh_seconds=0, max_new_tokens=8)
    assert sorted(m.name for m in playground.models()) == ["dreamy_kettle", "tea_ghost"]
    assert playground.generate("tea_ghost", "").samples[0].startswith("Tea is")
    downloaded = {p.name for p in (tmp_path / "cache").rglob("*") if p.is_file() and "snapshots" in p.parts}
    assert "model.safetensors" in downloaded and "predictions.png" not in downloaded  # what it needs, no more
    delete_repos([f"{ORG}/tea_ghost"], settings)
    assert [m.name for m in playground.models()] == ["dreamy_kettle"]


# --- the page, in a real browser -----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(local_hub, tmp_path_factory):
    """`huggingtweets space run` in a subprocess over the local Hub folder, its config.toml found in the
    folder it runs in; yields its URL and the file of what it printed."""
    tmp_path = tmp_path_factory.mktemp("served")
    config = tmp_path / "config.toml"
    config.write_text(f'[hub]\nbackend = "local"\nlocal_dir = {json.dumps(str(local_hub))}\norganization = "{ORG}"\n'
                      '[space]\ncache_size = 1\nlist_refresh_seconds = 0\nmax_new_tokens = 16\n', encoding="utf-8")
    port = free_port()
    env = dict(os.environ, HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False", PYTHONPATH=str(PROJECT))
    log = open(tmp_path / "server.log", "wb")
    env.pop("HUGGINGTWEETS_CONFIG", None)
    server = subprocess.Popen([sys.executable, "-m", "bot", "space", "run", "--host", "127.0.0.1", "--port", str(port)],
                              cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(url, timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("the playground did not start:\n" + (tmp_path / "server.log").read_text())
            time.sleep(0.3)
        yield url, tmp_path / "server.log"
    finally:
        server.send_signal(signal.SIGINT)  # Ctrl-C
        try:
            server.wait(timeout=20)
        finally:
            server.kill() if server.poll() is None else None
            log.close()


@pytest.mark.slow
@needs_gradio
def test_the_command_serves_says_where_and_nothing_meant_for_a_python_caller(served):
    from gradio_client import Client

    url, printed = served
    client = Client(url, verbose=False)
    notice, *samples = client.predict("dreamy_kettle", "My dream is", api_name="/generate")
    assert "dreamy_kettle" in notice and len(samples) == 3 and all(s.startswith("My dream is") for s in samples)
    with pytest.raises(Exception, match="too long for this model"):  # the visitor's error, said as it is
        client.predict("dreamy_kettle", "🌧" * 300, api_name="/generate")
    text = printed.read_text(encoding="utf-8")
    assert text.startswith(f"Serving the playground at {url}/ (Ctrl-C stops it)"), text
    for meant_for_python in ("share=True", "launch()", "Traceback", "Loading weights"):
        assert meant_for_python not in text, text


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    binary, driver = chromium_and_driver()
    options = Options()
    options.binary_location = binary
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1200,1500"):
        options.add_argument(argument)
    chrome = webdriver.Chrome(options=options, service=Service(driver))
    yield chrome
    chrome.quit()


@pytest.mark.slow
@needs_gradio
@needs_browser
def test_in_a_browser_choose_a_model_generate_and_read_inert_text(served, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    served, _ = served
    wait = WebDriverWait(browser, 45)

    def value(selector: str) -> str:
        return browser.find_element(By.CSS_SELECTOR, selector).get_attribute("value") or ""

    def shown(selector: str) -> bool:
        return any(e.is_displayed() for e in browser.find_elements(By.CSS_SELECTOR, selector))

    # A link to a model that is not published says so, and offers no Generate that would use another.
    browser.get(f"{served}/?model=nosuchmodel")
    wait.until(lambda _: "No model named “nosuchmodel” is published here" in value("#notice textarea"))
    assert value("#model input") == "" and not shown("#generate")

    # A card's link, and Generate clicked the moment it shows: samples of that model, never an error.
    browser.get(f"{served}/?model=dreamy_kettle")
    wait.until(lambda _: shown("#generate"))
    browser.find_element(By.CSS_SELECTOR, "#generate").click()
    wait.until(lambda _: all(value(f"#sample-{i} textarea") for i in (1, 2, 3)))
    assert all(value(f"#sample-{i} textarea").startswith("My dream is") for i in (1, 2, 3))
    assert "dreamy_kettle" in value("#notice textarea")
    assert value("#model input").startswith("dreamy_kettle")
    assert value("#prompt textarea") == "My dream is"

    # Choosing another model in the list brings its own prompt.
    choose = browser.find_element(By.CSS_SELECTOR, "#model input")
    choose.click()
    choose.send_keys(Keys.CONTROL, "a")
    choose.send_keys("ghost")
    wait.until(lambda _: any(li.get_attribute("aria-label").startswith("tea_ghost")
                             for li in browser.find_elements(By.CSS_SELECTOR, "#model li")))
    next(li for li in browser.find_elements(By.CSS_SELECTOR, "#model li")
         if li.get_attribute("aria-label").startswith("tea_ghost")).click()
    wait.until(lambda _: value("#prompt textarea") == "Tea is")
    assert "tea_ghost" in value("#notice textarea")

    # A hostile prompt: HTML, Markdown and a mention come back as the same characters, inert.
    prompt = browser.find_element(By.CSS_SELECTOR, "#prompt textarea")
    prompt.send_keys(Keys.CONTROL, "a")
    prompt.send_keys(HOSTILE_PROMPT)
    browser.find_element(By.CSS_SELECTOR, "#generate").click()
    wait.until(lambda _: all(value(f"#sample-{i} textarea") for i in (1, 2, 3)))
    samples = [value(f"#sample-{i} textarea") for i in (1, 2, 3)]
    assert all(s.startswith("<b>bold</b> **x** @\u2060alice") for s in samples), samples
    for i in (1, 2, 3):
        rendered = browser.find_elements(By.CSS_SELECTOR, f"#sample-{i} b, #sample-{i} strong, #sample-{i} a")
        assert rendered == [], "a sample was rendered as HTML or Markdown"
    assert "not written by @\u2060tea_ghost" in value("#notice textarea")
    screenshot = tmp_path / "playground.png"
    browser.save_screenshot(str(screenshot))
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and screenshot.stat().st_size > 10_000


# --- deploying the Space -------------------------------------------------------------------------


SPACE = f"spaces/{ORG}/playground"


@pytest.fixture
def writer(fake_hub, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", fake_hub.token)
    return fake_hub


def hub_settings(**space):
    return parse_settings({"hub": {"organization": ORG, "max_retries": 1, "retry_base_wait_seconds": 0.01},
                           "space": space})


def test_deploy_creates_a_gradio_space_with_the_app_in_one_commit(writer):
    from bot.publishing.space import GRADIO_VERSION, deploy_space

    result = deploy_space(hub_settings())
    space = writer.repos[SPACE]
    assert (space.repo_type, space.sdk) == ("space", "gradio")
    assert [c.title for c in space.commits] == ["initial commit", "Deploy the huggingtweets playground"]
    assert result.changed and result.commit_url.endswith(space.head.oid)
    assert sorted(space.files) == [".gitattributes", "README.md", "app.py", "bot/__init__.py", "bot/data/__init__.py", "bot/data/text.py",
                                   "requirements.txt", "space_settings.json"]
    assert writer.read(f"{ORG}/playground", "app.py", repo_type="space") == (PROJECT / "bot" / "publishing" / "playground" / "app.py").read_bytes()
    readme = writer.read(f"{ORG}/playground", "README.md", repo_type="space").decode()
    assert "sdk: gradio\n" in readme and f"sdk_version: {GRADIO_VERSION}\n" in readme and "app_file: app.py" in readme
    settings = json.loads(writer.read(f"{ORG}/playground", "space_settings.json", repo_type="space"))
    assert settings["organization"] == ORG and settings["cache_size"] == 3


def test_a_second_deploy_commits_only_what_changed(writer):
    from bot.publishing.space import deploy_space

    deploy_space(hub_settings())
    again = deploy_space(hub_settings())
    space = writer.repos[SPACE]
    assert not again.changed and len(space.commits) == 2
    assert len(writer.commit_requests(f"{ORG}/playground", "space")) == 1  # nothing was even sent

    before = space.head.files
    changed = deploy_space(hub_settings(cache_size=5))
    after = writer.repos[SPACE].head.files
    assert changed.changed and len(writer.repos[SPACE].commits) == 3
    assert {p for p in after if after[p].blob_id != before[p].blob_id} == {"space_settings.json"}


def test_deploy_removes_files_the_app_no_longer_has(writer):
    from huggingface_hub import HfApi

    from bot.publishing.space import deploy_space

    deploy_space(hub_settings())
    HfApi().upload_file(path_or_fileobj=b"old", path_in_repo="old_app.py", repo_id=f"{ORG}/playground",
                        repo_type="space")
    deploy_space(hub_settings())
    assert "old_app.py" not in writer.repos[SPACE].files and len(writer.repos[SPACE].commits) == 4


@pytest.mark.slow
def test_deploy_from_the_command_line(writer, tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(f'[hub]\norganization = "{ORG}"\nmax_retries = 1\n[space]\nname = "try-it"\n', encoding="utf-8")
    env = dict(os.environ, HF_TOKEN=writer.token, PYTHONPATH=str(PROJECT))

    def deploy():
        return subprocess.run([sys.executable, "-m", "bot", "--config", str(config), "space", "deploy"], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=120)

    first, second = deploy(), deploy()
    assert first.returncode == 0, first.stderr
    assert f"Space: {writer.url}/spaces/{ORG}/try-it" in first.stdout and "Commit: " in first.stdout
    assert second.returncode == 0 and "No change" in second.stdout
    assert len(writer.repos[f"spaces/{ORG}/try-it"].commits) == 2
    assert writer.token not in first.stdout + first.stderr


@pytest.mark.slow
def test_deploy_without_a_token_is_one_clear_line(fake_hub, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "HF_TOKEN"} | {"PYTHONPATH": str(PROJECT),
                                                                       "HF_HOME": str(tmp_path / "hf")}
    result = subprocess.run([sys.executable, "-m", "bot", "space", "deploy"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().startswith("huggingtweets: error: no Hugging Face token")
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_the_space_runs_the_gradio_the_extra_pins_and_the_projects_ranges():
    from bot.publishing.space import GRADIO_VERSION

    project = tomllib.loads((PROJECT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert f"gradio=={GRADIO_VERSION}" in project["optional-dependencies"]["space"]
    dependencies = set(project["dependencies"])
    wanted = [line for line in (PROJECT / "bot" / "publishing" / "playground" / "requirements.txt").read_text().splitlines()
              if line and not line.startswith("#")]
    assert wanted and all(re.sub(r"\s", "", line) in dependencies for line in wanted), wanted
