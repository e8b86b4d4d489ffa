"""Files that survive interruption: atomic writes, the cache folder, run locks and SIGTERM.

Medusa training and self-distillation run for minutes to hours; an interrupted run must never
leave a half-written file where a later run would trust it (DESIGN invariant 6). Every write in
`medusa_lib` goes through the helpers here: write to a temporary name next to the target,
then `os.replace`, which is atomic on one filesystem. A run folder is held by one run at a time
(`run_lock`), and a SIGTERM (a scheduler, `kill`, a closing Colab) stops a run the way Ctrl-C does
(`sigterm_as_interrupt`), so that it saves what it has.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import threading
from pathlib import Path


def cache_dir() -> Path:
    """`$MEDUSA_CACHE`, else `$XDG_CACHE_HOME/medusa_lib` (`~/.cache/medusa_lib`)."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "medusa_lib"
    path = Path(os.environ.get("MEDUSA_CACHE", default))
    if path.exists() and not path.is_dir():  # found now, not after an hour of self-distillation
        raise NotADirectoryError(f"the cache folder {path} is a file; point MEDUSA_CACHE at a folder "
                                 f"(or unset it for {default})")
    return path


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path next to `path`; on success it is renamed over `path`, else removed.

        with atomic_path(out / "heads.safetensors") as tmp:
            save_file(state, str(tmp))
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        tmp.chmod(0o666 & ~_umask())  # mkstemp makes 0600; a plain open() would have followed the umask
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def read_tensors(path, fix: str, weights_only: bool = True):
    """A saved tensor file, safetensors or `torch.save`'s, on the CPU. A missing or damaged file (truncated by a
    full disk or a killed copy) fails as a user error that names it and says `fix`, never as a raw traceback."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; {fix}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        import torch

        return torch.load(path, map_location="cpu", weights_only=weights_only)
    except Exception as e:  # a damaged file fails in many ways: header, zip, pickle, EOF
        raise ValueError(f"{path} is damaged ({type(e).__name__}: {e}); {fix}") from None


def check_writable(folder, what: str) -> Path:
    """Make `folder` and write a file in it, before any work: a file in its place, a read-only or a full place
    fails now, by name."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"{what} {folder} is a file; give a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(folder / ".write-test", "ok")
        (folder / ".write-test").unlink()
    except OSError as e:
        raise PermissionError(f"{what} {folder} is not writable: {e}") from e
    return folder


@contextlib.contextmanager
def atomic_dir(directory):
    """Yield a fresh temporary folder next to `directory`; on success it replaces `directory` whole.

    Two runs writing the same target never share a temporary name (mkdtemp), and a reader sees either
    the old folder or the new one, never a mix.
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=directory.name + ".", suffix=".tmp", dir=directory.parent))
    old = directory.with_name(f"{directory.name}.{tmp.name}.old")
    try:
        yield tmp
        tmp.chmod(0o777 & ~_umask())  # mkdtemp makes 0700
        if directory.exists():
            os.replace(directory, old)
        os.replace(tmp, directory)
    finally:
        if old.exists() and not directory.exists():  # interrupted between the two renames: put the old one back
            os.replace(old, directory)
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


LOCK_NAME = ".lock"


@contextlib.contextmanager
def run_lock(folder):
    """Hold `folder` for this process: a second run on it fails at once, naming the first one's pid.

    The lock is a file made with O_EXCL holding our pid; a lock left by a dead process is taken over.
    Taking a lock this process already holds is a no-op, so a command and the library both may lock."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / LOCK_NAME
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            holder = _lock_pid(lock)
            if holder == os.getpid():
                yield folder
                return
            if holder is not None and _alive(holder):
                raise FileExistsError(f"{folder} is in use by another run (pid {holder}); wait for it to end, "
                                      f"or choose another folder") from None
            lock.unlink(missing_ok=True)  # left by a run that died: take it over
            continue
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        try:
            yield folder
        finally:
            lock.unlink(missing_ok=True)
        return
    raise FileExistsError(f"could not lock {folder}: {lock} keeps coming back; is another run starting?")


def _lock_pid(lock: Path) -> int | None:
    try:
        return int(lock.read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


@contextlib.contextmanager
def sigterm_as_interrupt():
    """Within the block, SIGTERM raises KeyboardInterrupt (as Ctrl-C does), so `except KeyboardInterrupt`
    saves the run. Only the main thread can install a handler; elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt("SIGTERM")

    old = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)
