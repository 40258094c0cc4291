"""Writing files and folders so that a reader, or a crash, never sees half of one.

    >>> write_atomically(Path("state/x-cache/alice.jsonl"), text)
    >>> replace_folder(Path("models/.alice.partial-x1y2"), Path("models/alice"))

Both write beside the target and rename into place: a rename within one file system is atomic, so
another process sees the old version or the new one, and a crash leaves the old one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def write_atomically(path: str | os.PathLike, content: str | bytes) -> Path:
    """Write `content` (text as UTF-8, or bytes) to `path` through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content.encode("utf-8") if isinstance(content, str) else content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def partial_folder(target: str | os.PathLike) -> Path:
    """A new, empty folder beside `target` to build its next version in (see `replace_folder`)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))


def replace_folder(built: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Put the finished folder `built` where `target` is, replacing what was there.

    When `target` exists, the old one is moved aside first and removed after, so there is always a whole
    folder at `target` except for the instant between two renames.
    """
    built, target = Path(built), Path(target)
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.rename(target, old)
        os.rename(built, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(built, target)
    return target
