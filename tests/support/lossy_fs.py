"""A file system that keeps only what was fsynced: the power cut, for tests.

Mounted with FUSE (libfuse3 through mfusepy) over a backing directory, it
passes reads through and keeps every write, truncation and size change of a
file in memory (in 4 KiB blocks) until that file is fsynced; then, and only
then, they reach the backing file, which is itself fsynced. `drop` throws
away everything not yet fsynced, which is what a disk whose cache lost
power keeps: the test kills every process that had the files open, drops,
and starts again on what is left. Creating, renaming and removing files
takes effect at once (SQLite's durability rests on file contents; treating
names as synced is the lenient side, and says nothing about what the
gateway synced).

Caching: the kernel must not show a dropped write again, so attribute and
entry caches are off, and each open refetches the file's pages (libfuse's
default without `kernel_cache`); no process that had a file open lives past
a cut.

Run as its own process: `python -m tests.support.lossy_fs BACKING MOUNT
CONTROL_SOCKET`; `LossyFs` below starts it, mounts, and sends `drop` and
`stats` over the control socket.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

BLOCK = 4096


class Dirty:
    """What a file holds beyond its backing file: its size as written, the
    point past which the backing file's bytes no longer count (a
    truncation), and the blocks written since its last fsync."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.valid_upto = size  # backing bytes at or past this read as zeros
        self.blocks: dict[int, bytearray] = {}


class Unsynced:
    """The rule, without FUSE: per path, the writes since the last fsync."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.dirty: dict[str, Dirty] = {}
        self.dropped_bytes = 0
        self.synced_bytes = 0
        self.syncs = 0
        self.drops = 0

    # -- reads and writes, on a backing descriptor -------------------------

    def _block(self, d: Dirty, fd: int, index: int) -> bytearray:
        block = d.blocks.get(index)
        if block is None:
            start = index * BLOCK
            base = bytearray(os.pread(fd, BLOCK, start)) if start < d.valid_upto else bytearray()
            keep = max(0, min(BLOCK, d.valid_upto - start))
            del base[keep:]
            base.extend(bytes(BLOCK - len(base)))
            block = d.blocks[index] = base
        return block

    def size(self, path: str, backing_size: int) -> int:
        with self.lock:
            d = self.dirty.get(path)
            return backing_size if d is None else d.size

    def write(self, path: str, fd: int, data: bytes, offset: int) -> int:
        with self.lock:
            d = self.dirty.get(path)
            if d is None:
                d = self.dirty[path] = Dirty(os.fstat(fd).st_size)
            pos, view = offset, memoryview(data)
            while view:
                index, within = divmod(pos, BLOCK)
                n = min(BLOCK - within, len(view))
                self._block(d, fd, index)[within:within + n] = view[:n]
                view = view[n:]
                pos += n
            d.size = max(d.size, offset + len(data))
            return len(data)

    def truncate(self, path: str, fd: int, length: int) -> None:
        with self.lock:
            d = self.dirty.get(path)
            if d is None:
                d = self.dirty[path] = Dirty(os.fstat(fd).st_size)
            for index in [i for i in d.blocks if i * BLOCK >= length]:
                del d.blocks[index]
            index, within = divmod(length, BLOCK)
            if index in d.blocks:
                d.blocks[index][within:] = bytes(BLOCK - within)
            d.valid_upto = min(d.valid_upto, length)
            d.size = length

    def read(self, path: str, fd: int, size: int, offset: int) -> bytes:
        with self.lock:
            d = self.dirty.get(path)
            if d is None:
                return os.pread(fd, size, offset)
            size = max(0, min(size, d.size - offset))
            out = bytearray()
            pos = offset
            while len(out) < size:
                index, within = divmod(pos, BLOCK)
                n = min(BLOCK - within, size - len(out))
                out += self._block_view(d, fd, index)[within:within + n]
                pos += n
            return bytes(out)

    def _block_view(self, d: Dirty, fd: int, index: int) -> bytes:
        block = d.blocks.get(index)
        if block is not None:
            return bytes(block)
        start = index * BLOCK
        base = os.pread(fd, BLOCK, start) if start < d.valid_upto else b""
        base = base[:max(0, min(BLOCK, d.valid_upto - start))]
        return base + bytes(BLOCK - len(base))

    # -- fsync and the cut ---------------------------------------------------

    def fsync(self, path: str, fd: int) -> None:
        with self.lock:
            d = self.dirty.pop(path, None)
            if d is not None:
                if os.fstat(fd).st_size > d.valid_upto:
                    os.ftruncate(fd, d.valid_upto)
                for index, block in d.blocks.items():
                    start = index * BLOCK
                    n = max(0, min(BLOCK, d.size - start))
                    if n:
                        os.pwrite(fd, bytes(block[:n]), start)
                        self.synced_bytes += n
                os.ftruncate(fd, d.size)
            os.fsync(fd)
            self.syncs += 1

    def forget(self, path: str) -> None:
        with self.lock:
            self.dirty.pop(path, None)

    def rename(self, old: str, new: str) -> None:
        with self.lock:
            self.dirty.pop(new, None)
            if old in self.dirty:
                self.dirty[new] = self.dirty.pop(old)

    def drop(self) -> int:
        """The power cut: every write not fsynced is gone. Returns the bytes lost."""
        with self.lock:
            lost = sum(len(d.blocks) * BLOCK for d in self.dirty.values())
            self.dirty.clear()
            self.dropped_bytes += lost
            self.drops += 1
            return lost

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {"unsynced_files": len(self.dirty),
                    "unsynced_bytes": sum(len(d.blocks) * BLOCK for d in self.dirty.values()),
                    "dropped_bytes": self.dropped_bytes, "synced_bytes": self.synced_bytes,
                    "syncs": self.syncs, "drops": self.drops}


def make_operations(backing: str, state: Unsynced) -> Any:
    import mfusepy as fuse

    class LossyOperations(fuse.Operations):
        use_ns = True

        def _real(self, path: str) -> str:
            return os.path.join(backing, path.lstrip("/"))

        def getattr(self, path: str, fh: Any = None) -> dict[str, Any]:
            try:
                st = os.lstat(self._real(path))
            except OSError as exc:
                raise fuse.FuseOSError(exc.errno) from None
            attrs = {k: getattr(st, k) for k in ("st_mode", "st_nlink", "st_uid", "st_gid", "st_size",
                                                   "st_atime_ns", "st_mtime_ns", "st_ctime_ns")}
            attrs = {("st_" + k[3:-3] if k.endswith("_ns") else k): v for k, v in attrs.items()}
            attrs["st_size"] = state.size(path, st.st_size)
            return attrs

        def readdir(self, path: str, fh: int) -> Any:
            return [".", ".."] + os.listdir(self._real(path))

        def access(self, path: str, amode: int) -> int:
            if not os.access(self._real(path), amode):
                raise fuse.FuseOSError(errno.EACCES)
            return 0

        def mkdir(self, path: str, mode: int) -> int:
            os.mkdir(self._real(path), mode)
            return 0

        def rmdir(self, path: str) -> int:
            os.rmdir(self._real(path))
            return 0

        def chmod(self, path: str, mode: int) -> int:
            os.chmod(self._real(path), mode)
            return 0

        def chown(self, path: str, uid: int, gid: int) -> int:
            os.chown(self._real(path), uid, gid)
            return 0

        def utimens(self, path: str, times: Any = None) -> int:
            os.utime(self._real(path), ns=times) if times else os.utime(self._real(path))
            return 0

        def open(self, path: str, flags: int) -> int:
            try:
                return os.open(self._real(path), os.O_RDWR)
            except OSError:
                return os.open(self._real(path), os.O_RDONLY)

        def create(self, path: str, mode: int, fi: Any = None) -> int:
            fd = os.open(self._real(path), os.O_RDWR | os.O_CREAT, mode)
            return fd

        def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
            return state.read(path, fh, size, offset)

        def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
            return state.write(path, fh, bytes(data), offset)

        def truncate(self, path: str, length: int, fh: Any = None) -> int:
            if fh is None:
                fd = os.open(self._real(path), os.O_RDWR)
                try:
                    state.truncate(path, fd, length)
                finally:
                    os.close(fd)
            else:
                state.truncate(path, fh, length)
            return 0

        def fsync(self, path: str, datasync: int, fh: int) -> int:
            state.fsync(path, fh)
            return 0

        def fsyncdir(self, path: str, datasync: int, fh: int) -> int:
            return 0

        def flush(self, path: str, fh: int) -> int:
            return 0

        def release(self, path: str, fh: int) -> int:
            os.close(fh)
            return 0

        def unlink(self, path: str) -> int:
            os.unlink(self._real(path))
            state.forget(path)
            return 0

        def rename(self, old: str, new: str) -> int:
            os.rename(self._real(old), self._real(new))
            state.rename(old, new)
            return 0

        def statfs(self, path: str) -> dict[str, Any]:
            st = os.statvfs(backing)
            return {k: getattr(st, k) for k in ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail",
                                                "f_files", "f_ffree", "f_favail", "f_flag", "f_namemax")}

    return LossyOperations()


def _serve_control(path: str, state: Unsynced) -> None:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(4)
    while True:
        conn, _ = server.accept()
        with conn:
            command = conn.recv(64).decode().strip()
            if command == "drop":
                reply = {"dropped": state.drop()}
            else:
                reply = state.stats()
            conn.sendall(json.dumps(reply).encode())


def main(backing: str, mountpoint: str, control: str) -> None:
    import mfusepy as fuse

    state = Unsynced()
    threading.Thread(target=_serve_control, args=(control, state), daemon=True).start()
    fuse.FUSE(make_operations(backing, state), mountpoint, foreground=True, nothreads=False,
              attr_timeout=0, entry_timeout=0, negative_timeout=0)


class LossyFs:
    """The file system as a test uses it: `with LossyFs(workdir) as fs:`,
    files under `fs.mount`, `fs.drop()` at the cut."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.backing = workdir / "backing"
        self.mount = workdir / "mount"
        self.control = workdir / "lossy.sock"
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "LossyFs":
        if not os.path.exists("/dev/fuse"):
            # The kernel has FUSE but the device node is missing (a minimal
            # /dev): make it, as root (`make test` runs as root).
            os.mknod("/dev/fuse", 0o666 | stat.S_IFCHR, os.makedev(10, 229))
        self.backing.mkdir(parents=True, exist_ok=True)
        self.mount.mkdir(parents=True, exist_ok=True)
        root = Path(__file__).resolve().parents[2]
        with open(self.workdir / "lossy_fs.log", "wb") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen([sys.executable, "-m", "tests.support.lossy_fs", str(self.backing),
                                          str(self.mount), str(self.control)], cwd=root, stdout=log, stderr=log)
        deadline = time.monotonic() + 10
        while not os.path.ismount(self.mount):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the lossy file system did not mount on {self.mount}: "
                                   f"{(self.workdir / 'lossy_fs.log').read_text(errors='replace')[-2000:]}")
            time.sleep(0.02)
        while not self.control.exists():
            time.sleep(0.01)
        return self

    def _ask(self, command: str) -> dict[str, Any]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(str(self.control))
            s.sendall(command.encode())
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        return json.loads(data)

    def drop(self) -> int:
        """Throw away every unsynced write (call with no process holding a file open)."""
        return int(self._ask("drop")["dropped"])

    def stats(self) -> dict[str, Any]:
        return self._ask("stats")

    def __exit__(self, *exc: Any) -> None:
        subprocess.run(["umount", "-l", str(self.mount)], capture_output=True)
        if self.proc is not None:
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


if __name__ == "__main__":
    main(*sys.argv[1:4])
