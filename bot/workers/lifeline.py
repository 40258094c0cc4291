"""Run a module as a job that dies with the process that started it, from its first instruction on.

    python -m bot.workers.lifeline FD bot.training.job state/work/request-7     # how `LocalExecutor` starts a job

The starting process keeps the write end of a pipe and hands the read end down as FD; it never writes.
When it ends, however it ends (kill -9 included), the kernel closes its end, and a read of FD returns:
this process then kills its own process group (the job and whatever it started) at once. The watch
starts here, before the job's module and its heavy imports (torch, transformers: seconds) are loaded,
and a pipe already closed reads as closed: a parent that died while the job was still starting ends
it too. So a bot restarted after a crash never finds the old job still training beside the new one.

Why a pipe and not `prctl(PR_SET_PDEATHSIG)`: that signal comes when the *thread* that started the
child ends, and the bot starts jobs from its scheduler's worker threads; it is Linux only as well.
This module imports nothing of the project, so it costs a few milliseconds.
"""

from __future__ import annotations

import os
import runpy
import signal
import sys
import threading

# The exit status of a job whose parent went away.
ORPHANED = 3


def hold(fd: int) -> None:
    """End this process, and its process group when it leads one, once nothing holds `fd`'s write end."""

    def watch() -> None:
        try:
            while os.read(fd, 4096):
                pass  # nothing is ever written; only the end of the pipe matters
        except OSError:
            pass
        if os.getpgid(0) == os.getpid():  # a job in a session of its own: its children go with it
            os.killpg(0, signal.SIGKILL)
        os._exit(ORPHANED)

    threading.Thread(target=watch, name="lifeline", daemon=True).start()


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 2 or not args[0].isdigit():
        sys.exit("usage: python -m bot.workers.lifeline FD MODULE [ARG...]")
    hold(int(args[0]))
    sys.argv = [args[1], *args[2:]]
    runpy.run_module(args[1], run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
