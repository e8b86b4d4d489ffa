"""Files that survive interruption: atomic writes and the cache folder.

Medusa training and self-distillation run for minutes to hours; an interrupted run must never
leave a half-written file where a later run would trust it (DESIGN invariant 6). Every write in
`medusa_lib` goes through the two helpers here: write to a temporary name next to the target,
then `os.replace`, which is atomic on one filesystem.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
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
