"""A wheel install works: the package carries its templates, playground and assets, and the README's
commands run from it.

The test suite itself runs against an editable install, which reads files from the source tree, so a
file left out of the wheel would go unnoticed there. Here the wheel is built from a copy of only what
the build needs, installed (not editable) into a fresh virtual environment, and from an unrelated folder
`huggingtweets init` writes a config.toml, a config.toml there is read, `huggingtweets demo` runs, and
`huggingtweets space run` serves the demo's model (asked for samples, then stopped with Ctrl-C).

The fresh environment borrows the test environment's dependencies through a `.pth` file rather than
installing torch and the rest again (which takes minutes). Lines of a `.pth` file only add folders to
`sys.path`; `.pth` files inside those folders are not run, so the editable install's import hook never
loads, and `bot` can only come from the wheel (checked below).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import site
import socket
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# What a build reads: the project metadata, the README it names, and the package.
BUILD_INPUTS = ("pyproject.toml", "README.md", "bot")

# One wheel and one venv for the module: under pytest-xdist its tests run on one worker.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("wheel")]


def _run(args: list, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=300, **kw)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    source = tmp_path_factory.mktemp("source")
    for name in BUILD_INPUTS:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy(REPO / name, source / name)
    dist = tmp_path_factory.mktemp("dist")
    # No build isolation: the build uses the setuptools of the test environment and needs no index.
    result = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                   "--quiet", "--wheel-dir", dist, source])
    assert result.returncode == 0, result.stdout + result.stderr
    (built,) = dist.glob("huggingtweets-*.whl")
    return built


@pytest.fixture(scope="module")
def wheel_env(wheel, tmp_path_factory) -> Path:
    """A fresh virtual environment with the wheel installed; its dependencies borrowed (see above)."""
    env = tmp_path_factory.mktemp("venv")
    result = _run([sys.executable, "-m", "venv", "--without-pip", env])
    assert result.returncode == 0, result.stderr
    python = env / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    purelib = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    borrowed = dict.fromkeys([*site.getsitepackages(), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    Path(purelib, "borrowed_dependencies.pth").write_text("\n".join(borrowed) + "\n", encoding="utf-8")
    result = _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index",
                   "--quiet", wheel])
    assert result.returncode == 0, result.stdout + result.stderr
    return env


def _clean_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    # The session's tiny base: the wheel's own code finds it by a fingerprint of the wheel's own assets, so a
    # file missing from the wheel still fails here, without pretraining the model a second time.
    env["HUGGINGTWEETS_CACHE"] = os.environ["HUGGINGTWEETS_CACHE"]
    return env


@pytest.mark.slow
def test_wheel_carries_templates_the_playground_and_assets(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("bot/publishing/cards/model_card.md.j2", "bot/data/samples/sample_archive.zip", "bot/training/assets/tiny_corpus.txt",
                   "bot/cli.py", "bot/config.toml", "bot/publishing/playground/app.py", "bot/publishing/playground/requirements.txt"):
        assert needed in names, f"{needed} is not in {wheel.name}"
    assert not any(n.startswith(("tests/", "benchmarks/", "docs/")) or "__pycache__" in n for n in names)


@pytest.fixture(scope="module")
def elsewhere(wheel_env, tmp_path_factory) -> tuple[Path, dict, Path]:
    """An unrelated folder, the environment to run in, and the wheel environment's bin folder."""
    folder = tmp_path_factory.mktemp("elsewhere")
    env = _clean_env()
    env.pop("HUGGINGTWEETS_CONFIG", None)
    bin_dir = wheel_env / ("Scripts" if os.name == "nt" else "bin")
    where = _run([bin_dir / "python", "-c", "import bot; print(bot.__file__)"], cwd=folder, env=env)
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).resolve().is_relative_to(wheel_env.resolve()), where.stdout  # not the source tree
    return folder, env, bin_dir


@pytest.mark.slow
def test_init_and_a_config_in_the_current_folder_from_a_wheel_install(elsewhere):
    folder, env, bin_dir = elsewhere
    here = folder / "mine"
    here.mkdir()
    huggingtweets = bin_dir / "huggingtweets"
    result = _run([huggingtweets, "init"], cwd=here, env=env)
    assert result.returncode == 0, result.stderr
    assert "[space]" in (here / "config.toml").read_text(encoding="utf-8")  # the whole commented template
    assert _run([huggingtweets, "init"], cwd=here, env=env).returncode == 1  # never over an existing file
    (here / "config.toml").write_text("[data]\nmin_kept_posts = 1000\n", encoding="utf-8")
    said = _run([huggingtweets, "config"], cwd=here, env=env)
    assert said.stdout.startswith(f"Settings: {here / 'config.toml'} (from config.toml in the current folder)"), said.stdout
    # The README's first command of its own: the bundled sample, read with the settings of this folder.
    result = _run([huggingtweets, "dataset", "https://x.com/dreamy_kettle", "--archive", "sample"], cwd=here, env=env)
    assert result.returncode == 1 and "1000 needed" in result.stderr, result.stderr


@pytest.fixture(scope="module")
def demo(elsewhere) -> Path:
    """`huggingtweets demo` run once from the unrelated folder; its folder."""
    folder, env, bin_dir = elsewhere
    started = time.monotonic()
    result = _run([bin_dir / "huggingtweets", "demo"], cwd=folder, env=env)
    took = time.monotonic() - started
    assert result.returncode == 0, result.stdout + result.stderr
    assert "-> done" in result.stdout, result.stdout
    print(f"demo from the wheel install: {took:.1f} s")
    return folder / "demo"


@pytest.mark.slow
def test_demo_runs_from_a_wheel_install_in_another_folder(demo):
    (card,) = (demo / "hub").glob("*/*/README.md")
    assert "## Training data" in card.read_text(encoding="utf-8")
    assert (card.parent / "predictions.png").exists()


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("gradio") is None, reason="Gradio is not installed (the space extra)")
def test_the_playground_serves_from_a_wheel_install(demo, elsewhere):
    from gradio_client import Client

    _, env, bin_dir = elsewhere
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = demo / "space.log"
    with open(log, "wb") as printed:  # in the demo's folder: its config.toml is found there
        server = subprocess.Popen([bin_dir / "huggingtweets", "space", "run", "--port", str(port)], cwd=demo,
                                  env=env | {"HF_HUB_OFFLINE": "1"}, stdout=printed, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 90
            while "Serving the playground" not in log.read_text(encoding="utf-8"):
                assert server.poll() is None and time.monotonic() < deadline, log.read_text(encoding="utf-8")
                time.sleep(0.2)
            notice, *samples = Client(f"http://127.0.0.1:{port}/", verbose=False).predict(
                "dreamy_kettle", "", api_name="/generate")
            assert "dreamy_kettle" in notice and len(samples) == 3 and all(s.startswith("My dream is") for s in samples)
            server.send_signal(signal.SIGINT)  # Ctrl-C
            assert server.wait(timeout=30) == 0
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()
    assert log.read_text(encoding="utf-8").rstrip().endswith("Stopped.")
