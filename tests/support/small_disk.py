"""A real, small file system for the full-disk tests: a tmpfs of a few MiB
mounted (as root, as `make test` runs) on a directory of the test's, and a
ballast file to fill it up to a chosen point and to free it again."""

from __future__ import annotations

import os
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def small_filesystem(path: Path, size_mb: int) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(path)],
                          capture_output=True, text=True)
    assert done.returncode == 0, f"could not mount a {size_mb} MiB tmpfs on {path} (root needed): {done.stderr}"
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def fill_until(path: Path, leave_bytes: int, name: str = "ballast") -> Path:
    """Write a ballast file so that about `leave_bytes` stay free."""
    ballast = path / name
    size = max(free_bytes(path) - leave_bytes, 0)
    with open(ballast, "wb") as f:
        chunk = b"\0" * (1 << 20)
        while size > 0:
            f.write(chunk[: min(size, len(chunk))])
            size -= min(size, len(chunk))
    return ballast
