"""Peak memory of `huggingtweets publish` while it uploads a 500 MB weights file to the loopback Hub.

    python benchmarks/publish_memory.py              # 500 MB; target: the publishing process stays under 300 MB
    python benchmarks/publish_memory.py --mb 100 --json

The model folder (a weights file of random bytes, config.json, README.md) is written to a temporary folder;
the loopback Hub of the tests (tests/fakes/fake_hub.py) runs in this process and the publish in a child process,
the real command line, so that the child's peak resident memory (ru_maxrss, from wait4) is the publisher's
alone. A second child only starts the same command (`--help`) to show what the imports alone cost.
Uploads take the plain LFS path here (HF_HUB_DISABLE_XET=1: the loopback Hub does not speak Xet).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT / "tests" / "fakes"))

from fake_hub import FakeHub  # noqa: E402

TARGET_MB = 300


def write_model_folder(folder: Path, megabytes: int) -> None:
    folder.mkdir(parents=True)
    block = os.urandom(1024 * 1024)
    with open(folder / "model.safetensors", "wb") as out:
        for i in range(megabytes):
            out.write(i.to_bytes(8, "little") + block[8:])  # every block differs: no trick of the hash
    (folder / "config.json").write_text('{"model_type": "gpt2"}\n', encoding="utf-8")
    (folder / "README.md").write_text("---\nlibrary_name: transformers\ntags:\n- huggingtweets\n---\n# bench\n",
                                      encoding="utf-8")


def run_child(args: list[str], env: dict[str, str], cwd: Path) -> tuple[int, float, float, str]:
    """Run `python -m bot ARGS`; return its exit status, peak RSS in MB, seconds, and stderr's tail."""
    start = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "bot", *args], env=env, cwd=cwd,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # wait4 gives this child's own resource usage; communicate() would reap it first.
    out_chunks, err_chunks = [], []
    import threading

    def drain(stream, into):
        for chunk in iter(lambda: stream.read(65536), b""):
            into.append(chunk)

    readers = [threading.Thread(target=drain, args=(child.stdout, out_chunks)),
               threading.Thread(target=drain, args=(child.stderr, err_chunks))]
    for reader in readers:
        reader.start()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    for reader in readers:
        reader.join()
    elapsed = time.perf_counter() - start
    peak_mb = usage.ru_maxrss / 1024  # KiB on Linux
    return child.returncode, peak_mb, elapsed, b"".join(err_chunks).decode(errors="replace")[-2000:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=500, help="size of the weights file in MB (MiB)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp, FakeHub() as hub:
        tmp = Path(tmp)
        folder = tmp / "bench"
        write_model_folder(folder, args.mb)
        config = tmp / "config.toml"
        config.write_text('[hub]\norganization = "huggingtweets"\nmax_retries = 0\n', encoding="utf-8")
        env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_TOKEN": hub.token, "HF_HUB_DISABLE_XET": "1",
               "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_HOME": str(tmp / "hf-home")}

        _, baseline_mb, _, _ = run_child(["--config", str(config), "publish", "--help"], env, tmp)
        status, peak_mb, seconds, stderr = run_child(["--config", str(config), "publish", str(folder)], env, tmp)
        if status != 0:
            sys.exit(f"publish failed (exit {status}):\n{stderr}")
        stored = hub.repos["huggingtweets/bench"].files["model.safetensors"]
        assert stored.size == args.mb * 1024 * 1024, "the Hub holds a different file"

    result = {"weights_mb": args.mb, "peak_rss_mb": round(peak_mb, 1), "baseline_rss_mb": round(baseline_mb, 1),
              "seconds": round(seconds, 1), "target_mb": TARGET_MB, "ok": peak_mb < TARGET_MB}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"published {args.mb} MB in {seconds:.1f} s; peak RSS of the publishing process {peak_mb:.0f} MB "
              f"(the command's imports alone: {baseline_mb:.0f} MB); target: under {TARGET_MB} MB "
              f"-> {'ok' if result['ok'] else 'OVER'}")
    sys.exit(0 if result["ok"] else 1)


if __name__ == "__main__":
    main()
