"""Durable state on disk: the one place potforge writes files that must survive a crash.

* atomic writes — a reader sees the old file or the whole new one, never half of it: the data
  goes to a temporary file with a unique name beside the target (two writers never share one),
  is flushed to disk (fsync), then renamed over the target, and the directory entry is synced;
* stage locks — an exclusive ``flock`` on a directory, released by the kernel if its holder dies;
* markers — a stage's ``DONE.json`` (its summary, written last: present means finished) and its
  ``status.json`` (progress, rewritten as the stage runs).

Everything that records campaign state (oracle results, stage summaries, checkpoints, metrics,
reports) goes through these functions.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

#: A finished stage's summary; written last, so its presence means the stage is done.
DONE_FILE = "DONE.json"
#: A running stage's progress, rewritten as it goes.
STATUS_FILE = "status.json"
LOCK_FILE = ".lock"


def _sync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # some filesystems cannot open directories; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_bytes(path: str | Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically and durably (parent directories are created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a unique name (two writers never share a temporary), created with the umask's permissions
    # (mkstemp would make every file private)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(6)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _sync_directory(path.parent)


def write_text(path: str | Path, text: str) -> None:
    """Replace ``path`` with ``text`` (UTF-8) atomically and durably."""
    write_bytes(path, text.encode())


def write_json(path: str | Path, payload: Any, *, indent: int | None = None) -> None:
    """Replace ``path`` with ``payload`` as JSON atomically and durably."""
    write_text(path, json.dumps(payload, indent=indent))


def write_torch(path: str | Path, obj: Any) -> None:
    """``torch.save(obj)`` into ``path`` atomically and durably."""
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_bytes(path, buffer.getvalue())


def save_figure(fig: Any, path: str | Path, **kwargs: Any) -> Path:
    """Save a matplotlib figure atomically (format from the suffix); returns ``path``."""
    path = Path(path)
    buffer = io.BytesIO()
    fig.savefig(buffer, format=path.suffix.lstrip(".") or "png", **kwargs)
    write_bytes(path, buffer.getvalue())
    return path


def read_json(path: str | Path) -> Any | None:
    """The JSON in ``path``, or None when it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def stage_lock(directory: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on ``directory`` (created if needed); the OS releases it if the
    holder dies, so a crashed stage never blocks the next run."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / LOCK_FILE, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def mark_done(directory: str | Path, summary: dict[str, Any]) -> dict[str, Any]:
    """Record a stage as finished with ``summary``; returns the summary."""
    write_json(Path(directory) / DONE_FILE, summary)
    return summary


def read_done(directory: str | Path) -> dict[str, Any] | None:
    """A finished stage's summary, or None while it is not finished."""
    path = Path(directory) / DONE_FILE
    return json.loads(path.read_text()) if path.exists() else None


def write_status(directory: str | Path, status: dict[str, Any]) -> None:
    """A running stage's progress (read by whoever waits for it)."""
    write_json(Path(directory) / STATUS_FILE, status)
