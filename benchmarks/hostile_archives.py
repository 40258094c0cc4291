"""Archives made to hurt the reader, each read by the real command, with the time and memory it took.

    python benchmarks/hostile_archives.py                 # every archive of tests/fakes/hostile_archives.py
    python benchmarks/hostile_archives.py --quick         # leave out the six that take seconds to build
    python benchmarks/hostile_archives.py --only deep-100k.zip post-256mb.zip --json
    python benchmarks/hostile_archives.py --save benchmarks/results/cpu-hostile-archives.json

The bound: every archive refused with one line on stderr and exit status 1, in a few seconds (under 10),
peak memory under 500 MB.

Each archive of `tests/hostile_archives.CATALOGUE` is built in a temporary folder (in a process of its
own) and read by `python -m bot dataset alice --archive PATH` in a fresh process: the time is the
whole command, interpreter and imports included (about 0.5 s of it), and the peak resident memory is
the child's `ru_maxrss` from `os.wait4`. Linux carries a parent's peak into its children across fork
and exec, so this launcher builds nothing itself and stays small; its own peak, printed last, is a
floor under every child's figure.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT / "tests" / "fakes"))

from hostile_archives import CATALOGUE  # noqa: E402  (stdlib only: keeps this launcher small)

BOUND_SECONDS = 10.0  # "a few seconds": the most work is reading and cleaning 200,000 posts (about 4 s here)
BOUND_MB = 500.0
ERROR_PREFIX = "huggingtweets: error: "


def build(name: str, folder: str) -> None:
    """In a child: build one archive."""
    CATALOGUE[name].build(Path(folder))


def size_on_disk(path: Path) -> int:
    if path.is_symlink():
        return 0
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())
    return path.stat().st_size


def read(path: Path, folder: Path) -> dict:
    """Run the command on `path` in a fresh process; its outcome, time and peak memory."""
    env = os.environ | {"PYTHONPATH": str(PROJECT), "COLUMNS": "200"}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.monotonic()
        child = subprocess.Popen([sys.executable, "-m", "bot", "dataset", "alice", "--archive", str(path)],
                                 stdout=out, stderr=err, env=env, cwd=PROJECT)
        _, status, usage = os.wait4(child.pid, 0)  # the exit and the child's resource usage, together
        seconds = time.monotonic() - started
        child.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    lines = stderr.decode("utf-8", "replace").splitlines()
    outcome = lines[0].removeprefix(ERROR_PREFIX) if len(lines) == 1 else " / ".join(lines[-3:])
    return {"exit": child.returncode, "stderr_lines": len(lines), "stdout_bytes": len(stdout),
            "outcome": outcome.replace(f"{folder}/", ""), "seconds": round(seconds, 2),
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}


def machine() -> dict:
    """Where the figures were taken: they vary with the machine and with what else runs on it."""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), None) if Path("/proc/cpuinfo").exists() else None
    return {"cpu": cpu, "cores": os.cpu_count(), "python": sys.version.split()[0],
            "load_average": [round(x, 2) for x in os.getloadavg()]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="leave out the archives that take seconds to build")
    parser.add_argument("--only", nargs="+", metavar="NAME", choices=sorted(CATALOGUE), help="these archives only")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--save", type=Path, metavar="FILE", help="also write the results as JSON to FILE")
    parser.add_argument("--build", nargs=2, metavar=("NAME", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.build:
        return build(*args.build)

    names = args.only or [n for n, h in CATALOGUE.items() if not (args.quick and h.heavy)]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name in names:
            subprocess.run([sys.executable, __file__, "--build", name, tmp], check=True)
            path = folder / name
            result = {"archive": name, "bytes_on_disk": size_on_disk(path), **read(path, folder)}
            result["met"] = (result["exit"] == 1 and result["stderr_lines"] == 1 and result["stdout_bytes"] == 0
                             and CATALOGUE[name].expect in result["outcome"]
                             and result["seconds"] < BOUND_SECONDS and result["peak_rss_mb"] < BOUND_MB)
            results.append(result)
            if not args.json:
                print(f"{name}: {result['outcome']}", file=sys.stderr)
            if path.is_dir() and not path.is_symlink():
                subprocess.run(["rm", "-rf", str(path)], check=True)
            else:
                path.unlink()
    launcher_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    report = {"machine": machine(), "bound_seconds": BOUND_SECONDS, "bound_mb": BOUND_MB,
              "launcher_peak_rss_mb": round(launcher_mb, 1), "results": results}
    if args.save:
        args.save.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if args.json:
        print(json.dumps(report))
    else:
        print(f"\n| archive | bytes on disk | outcome (the one line on stderr) | seconds | peak RSS MB | bound |")
        print("| --- | ---: | --- | ---: | ---: | --- |")
        for r in results:
            print(f"| {r['archive']} | {r['bytes_on_disk']:,} | {r['outcome']} | {r['seconds']:.2f} | "
                  f"{r['peak_rss_mb']:.0f} | {'met' if r['met'] else 'NOT met'} |")
        print(f"\nBound: exit 1 with one line, under {BOUND_SECONDS:.0f} s, under {BOUND_MB:.0f} MB. "
              f"Launcher's own peak: {launcher_mb:.0f} MB.")
    sys.exit(0 if all(r["met"] for r in results) else 1)


if __name__ == "__main__":
    main()
