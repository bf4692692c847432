"""Atomic file writes and safe reads: a killed run never leaves a half-written file behind, a
folder can be written beside and swapped in whole, and a folder has one writer at a time."""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import socket
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from nas.errors import FolderInUse, PoseNASError


def cache_folder() -> Path:
    """The user's cache (latency calibrations, regenerated images): $POSENAS_CACHE, else
    ~/.cache/posenas."""
    return Path(os.environ.get("POSENAS_CACHE") or Path.home() / ".cache" / "posenas")


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` then rename the temporary file onto ``path`` in one step."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def remove_stale_temp_files(folder: str | os.PathLike) -> None:
    """Delete what writes cut short by a kill left behind (the files they replace are whole);
    call it before a single writer starts on ``folder`` again."""
    for stale in Path(folder).glob(".*.tmp"):
        stale.unlink(missing_ok=True)


_HELD: set[Path] = set()  # the folders this process holds


@contextmanager
def writer_lock(folder: str | os.PathLike) -> Iterator[None]:
    """Hold ``folder`` for this process alone; a second writer gets one line naming the holder.
    The lock lies beside the folder (``.NAME.lock``, gone when released), so that the folder can
    be swapped whole; the kernel releases it when the holder ends, however it ends."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise PoseNASError(f"{folder}: exists and is not a folder")
    key = folder.resolve()
    if key in _HELD:  # a job of this process within another (a finetune's training): the lock is held
        yield
        return
    path = folder.parent / f".{folder.name}.lock"
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        fd = _locked(path, folder)
    except OSError as e:
        raise PoseNASError(f"{folder}: cannot write there ({e.strerror})") from None
    _HELD.add(key)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} ({' '.join(sys.argv[:3])[:200]})".encode(), 0)
        yield
    finally:
        _HELD.discard(key)
        path.unlink(missing_ok=True)  # before the lock goes: whoever opens the path next makes a new one
        os.close(fd)


def _locked(path: Path, folder: Path) -> int:
    """A descriptor of ``path`` holding its lock, the file still at ``path`` (a releasing holder
    may have unlinked the one opened)."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 300, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise FolderInUse(f"{folder}: in use by {holder}; wait for it to end or write elsewhere") from None
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


def replace_folder(new: str | os.PathLike, folder: str | os.PathLike) -> None:
    """Put the folder ``new`` (written beside ``folder``) in ``folder``'s place; the old one is
    kept aside until the new one is in (``recover_folder`` puts it back after a kill between)."""
    new, folder = Path(new), Path(folder)
    old = folder.parent / f".{folder.name}.old"
    if folder.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.rename(folder, old)
    os.rename(new, folder)
    shutil.rmtree(old, ignore_errors=True)


def recover_folder(folder: str | os.PathLike) -> None:
    """What a kill left of a ``replace_folder`` of ``folder``: the old folder goes back in place
    if the new one never came in; half-written new folders go. Call it holding ``writer_lock``."""
    folder = Path(folder)
    old = folder.parent / f".{folder.name}.old"
    if old.is_dir():
        if folder.exists():
            shutil.rmtree(old)
        else:
            os.rename(old, folder)
    for staged in folder.parent.glob(f".{folder.name}.*.tmp"):
        shutil.rmtree(staged, ignore_errors=True)


@contextmanager
def staged_folder(folder: str | os.PathLike) -> Iterator[Path]:
    """A fresh folder beside ``folder`` to write into; swapped in whole when the block ends
    without an error, removed otherwise. Hold ``writer_lock`` around it."""
    folder = Path(folder)
    recover_folder(folder)
    staged = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        yield staged
        replace_folder(staged, folder)
    finally:
        shutil.rmtree(staged, ignore_errors=True)


def write_text(path: str | os.PathLike, text: str) -> Path:
    def _write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    return atomic_write(path, _write)


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = None) -> Path:
    return write_text(path, json.dumps(obj, indent=indent))


def read_yaml(path: str | os.PathLike, what: str = "YAML file") -> dict:
    """Load a YAML mapping or raise a one-line error naming the file."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise PoseNASError(f"{what} not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise PoseNASError(f"{path}: malformed YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise PoseNASError(f"{path}: expected a mapping of settings")
    return data


def read_json(path: str | os.PathLike, what: str = "JSON file") -> Any:
    """Load JSON or raise a one-line error naming the file and the position of the fault."""
    path = Path(path)
    if not path.is_file():
        raise PoseNASError(f"{what} not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise PoseNASError(f"{path}: malformed JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    except UnicodeDecodeError:
        raise PoseNASError(f"{path}: not a UTF-8 text file") from None


def read_checkpoint(path: str | os.PathLike, required: tuple[str, ...], kind: str, device="cpu") -> dict:
    """A torch checkpoint loaded weights-only (nothing is unpickled) that holds ``required``;
    anything else is a one-line error naming the file."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise PoseNASError(f"{kind} not found: {path}")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same user error
        raise PoseNASError(f"{path}: not a readable PoseNAS {kind} ({type(e).__name__})") from None
    if not isinstance(ckpt, dict) or any(key not in ckpt for key in required):
        raise PoseNASError(f"{path}: not a PoseNAS {kind} (needs {', '.join(required)})")
    return ckpt


def sha256(path: str | os.PathLike) -> str:
    """A file's SHA-256, read in blocks: what cards bind their weights with."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
