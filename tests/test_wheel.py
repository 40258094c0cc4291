"""A wheel install works: the package carries its templates, fonts and assets, and the demo runs from it.

The test suite itself runs against an editable install, which reads files from the source tree, so a
file left out of the wheel would go unnoticed there. Here the wheel is built from a copy of only what
the build needs, installed (not editable) into a fresh virtual environment, and `huggingtweets demo`
runs from an unrelated folder.

The fresh environment borrows the test environment's dependencies through a `.pth` file rather than
installing torch and the rest again (which takes minutes). Lines of a `.pth` file only add folders to
`sys.path`; `.pth` files inside those folders are not run, so the editable install's import hook never
loads, and `bot` can only come from the wheel (checked below).
"""

from __future__ import annotations

import os
import shutil
import site
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

pytestmark = pytest.mark.slow


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


def _clean_env(tmp: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    env["HUGGINGTWEETS_CACHE"] = str(tmp / "cache")
    return env


def test_wheel_carries_templates_fonts_and_assets(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("bot/cards/model_card.md.j2", "bot/samples/sample_archive.zip", "bot/assets/tiny_corpus.txt",
                   "bot/cli.py"):
        assert needed in names, f"{needed} is not in {wheel.name}"
    assert not any(n.startswith(("tests/", "benchmarks/")) for n in names)


def test_demo_runs_from_a_wheel_install_in_another_folder(wheel_env, tmp_path):
    bin_dir = wheel_env / ("Scripts" if os.name == "nt" else "bin")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = _clean_env(tmp_path)
    where = _run([bin_dir / "python", "-c", "import bot; print(bot.__file__)"], cwd=elsewhere, env=env)
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).resolve().is_relative_to(wheel_env.resolve()), where.stdout  # not the source tree

    started = time.monotonic()
    result = _run([bin_dir / "huggingtweets", "demo"], cwd=elsewhere, env=env)
    took = time.monotonic() - started
    assert result.returncode == 0, result.stdout + result.stderr
    assert "-> done" in result.stdout, result.stdout
    (card,) = (elsewhere / "demo" / "hub").glob("*/*/README.md")
    assert "## Training data" in card.read_text(encoding="utf-8")
    assert (card.parent / "predictions.png").exists()
    print(f"demo from the wheel install: {took:.1f} s")
