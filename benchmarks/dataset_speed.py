"""How fast a training set is built from an archive, and the memory it takes.

    python benchmarks/dataset_speed.py               # 3,200 and 100,000 posts, as an export zip and as JSONL
    python benchmarks/dataset_speed.py --json
    python benchmarks/dataset_speed.py --sizes 3200 --repeat 5

Targets on the 2-core reference machine: 3,200 posts in under 0.2 s, 100,000 in under 5 s, peak memory
under 300 MB.

The posts are synthetic (`bot.data.synthetic`), written once to a temporary folder as an X data export
(`.zip`) and as JSONL. The time is the whole build: `open_archive` + `build_dataset` (read, clean,
count, split, balance); imports are not counted. Each run is a fresh child process (this script with
`--child`), so that the peak resident memory reported (VmHWM of the child, or ru_maxrss off Linux) is
the build's own plus the interpreter and imports, nothing from the parent that generated the posts. The last row adds a second,
smaller user, so balancing repeats posts.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

TARGET_SECONDS = {3_200: 0.2, 100_000: 5.0}
TARGET_MB = 300


def peak_rss_mb() -> float:
    """This process's peak resident memory. On Linux, VmHWM: ru_maxrss would also carry the parent's
    peak across fork and exec (the parent holds all the generated posts)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 if sys.platform != "darwin" else 1024 * 1024)


def child(paths: list[str]) -> None:
    """Build one dataset from `paths` (one archive per user) and print the figures as JSON."""
    from bot.data.archive import open_archive
    from bot.common.config import DataSettings
    from bot.data.dataset import build_dataset

    imports_mb = peak_rss_mb()
    start = time.perf_counter()
    archives = {f"user{i}": open_archive(path) for i, path in enumerate(paths)}
    dataset = build_dataset(archives, DataSettings(min_kept_posts=1))
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "peak_mb": peak_rss_mb(), "imports_mb": imports_mb,
                      "kept": sum(u.counts.kept for u in dataset.users), "train": len(dataset.train)}))


def run_child(paths: list[Path]) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", *map(str, paths)], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"the build failed:\n{done.stderr}")
    return json.loads(done.stdout)


def write_archives(folder: Path, sizes: list[int]) -> dict[tuple[int, str], Path]:
    """Each size as an export zip and as JSONL, with the same posts."""
    from bot.data.synthetic import synthetic_tweets, write_export, write_jsonl

    paths = {}
    for n in sizes:
        tweets = synthetic_tweets(n, seed=n)
        paths[n, "zip"] = write_export(folder / f"posts{n}.zip", tweets, username=f"user{n}", display_name="User")
        paths[n, "jsonl"] = write_jsonl(folder / f"posts{n}.jsonl", tweets)
    return paths


def measure(label: str, posts: int, paths: list[Path], repeat: int, target_s: float | None) -> dict:
    runs = [run_child(paths) for _ in range(repeat)]
    times = [r["seconds"] for r in runs]
    median = statistics.median(times)
    peak = max(r["peak_mb"] for r in runs)
    met = peak < TARGET_MB and (target_s is None or median < target_s)
    return {"case": label, "posts": posts, "seconds_median": round(median, 3), "seconds_best": round(min(times), 3),
            "posts_per_second": round(posts / median), "peak_rss_mb": round(peak, 1),
            "imports_rss_mb": round(max(r["imports_mb"] for r in runs), 1), "kept": runs[0]["kept"],
            "train_posts": runs[0]["train"], "target_seconds": target_s, "target_mb": TARGET_MB, "met": met}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[3_200, 100_000], help="posts per archive")
    parser.add_argument("--repeat", type=int, default=3, help="runs per case; the median time is reported")
    parser.add_argument("--json", action="store_true", help="print the results as one JSON list")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child)

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        sizes = sorted(set(args.sizes))
        if not args.json:
            print(f"writing synthetic archives of {', '.join(f'{n:,}' for n in sizes)} posts…", file=sys.stderr)
        paths = write_archives(Path(tmp), sorted(set(sizes) | {3_200}))
        for n in sizes:
            for form in ("zip", "jsonl"):
                results.append(measure(f"{n:,} posts, {form}", n, [paths[n, form]], args.repeat,
                                       TARGET_SECONDS.get(n)))
        largest = sizes[-1]
        if largest > 3_200:
                results.append(measure(f"{largest:,} + 3,200 posts, two users balanced, zip", largest + 3_200,
                                   [paths[largest, "zip"], paths[3_200, "zip"]], args.repeat,
                                   TARGET_SECONDS.get(largest)))

    if args.json:
        print(json.dumps(results))
    else:
        print(f"{'case':<45} {'median s':>9} {'best s':>8} {'posts/s':>9} {'peak MB':>8} {'imports MB':>11}  target")
        for r in results:
            target = (f"< {r['target_seconds']} s, " if r["target_seconds"] else "") + f"< {TARGET_MB} MB"
            print(f"{r['case']:<45} {r['seconds_median']:>9.3f} {r['seconds_best']:>8.3f} {r['posts_per_second']:>9,} "
                  f"{r['peak_rss_mb']:>8.0f} {r['imports_rss_mb']:>11.0f}  {target}: {'met' if r['met'] else 'NOT met'}")
    sys.exit(0 if all(r["met"] for r in results) else 1)


if __name__ == "__main__":
    main()
