"""Writing a file that a later step trusts: all of it, or nothing (the old file stays).

The bytes go to a temporary file in the same folder, are flushed and fsync'ed, and the
temporary file is renamed over the target (``os.replace``, atomic on POSIX and Windows within one
file system). A write that fails half-way (disk full, a file size limit, a read-only folder)
removes the temporary file and leaves the previous target byte for byte as it was.
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import threading
from pathlib import Path

from fpga.spec.errors import UserError


class WriteError(UserError, OSError):
    """A file could not be written; the message names the path and the reason."""


@contextlib.contextmanager
def _file_size_limit_as_error():
    """Under a file size limit (``ulimit -f``) the kernel sends SIGXFSZ, whose default action
    kills the process: ignored while writing, the write fails with EFBIG instead and is reported
    like any other failed write (signal handlers can only be set from the main thread)."""
    sigxfsz = getattr(signal, "SIGXFSZ", None)
    if sigxfsz is None or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(sigxfsz, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(sigxfsz, previous)


def atomic_write(path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically; :class:`WriteError` names the path on failure."""
    with _file_size_limit_as_error():
        _atomic_write(Path(path), data)


def _atomic_write(path: Path, data: bytes) -> None:
    folder = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise WriteError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if path.exists():
            # keep the permissions of the file being replaced (mkstemp makes it 0600)
            os.chmod(tmp, path.stat().st_mode & 0o7777)
        else:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise WriteError(f"cannot write {path}: {exc.strerror or exc}") from None
    if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable
        with contextlib.suppress(OSError):
            dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
