"""Files a run leaves behind, written so that a crash or a hostile neighbour cannot tear or redirect them.

    write_atomic(run_dir / "progress.json", json.dumps(state))          # readers see the old or the new file
    write_atomic(checkpoints / "latest.pt", lambda f: torch.save(state, f))
    home = private_dir(orrery_home())                                    # 0700, ours, no symlink

``write_atomic`` is the one place that writes a file in place of another: the bytes go to a new
temporary file in the same directory (created exclusively and without following a symlink, so
a planted link cannot redirect the write), are fsynced, and the file is renamed over the target
(a rename replaces a symlink itself, never its target); then the directory entry is fsynced.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path
from typing import BinaryIO, Callable, Union

Content = Union[bytes, bytearray, memoryview, str, Callable[[BinaryIO], object]]


class UnsafePathError(OSError):
    """A directory Orrery keeps state in is a symlink, not ours, or writable by others; the message names it."""


def write_atomic(path: str | os.PathLike, content: Content, *, mode: int = 0o644) -> Path:
    """Replace ``path`` with ``content`` (bytes, text as UTF-8, or a function writing to a binary file).

    ``mode`` is the new file's permission bits (0o600 for anything secret). The parent
    directory must exist. Returns ``path``.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            if callable(content):
                content(handle)
            else:
                handle.write(content.encode() if isinstance(content, str) else content)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)  # the umask may have taken bits away; the caller's mode is what it asked for
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_directory(path.parent)
    return path


def private_dir(path: str | os.PathLike) -> Path:
    """``path`` as a directory only this user can write (created 0700 with its parents if missing).

    Raises UnsafePathError when it is a symlink, belongs to another user, or is writable by
    group or others: state kept there could be read, replaced or redirected by someone else.
    """
    path = Path(path)
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except FileExistsError:
        pass  # a dangling symlink or a file holds the name: the checks below say which, in one line
    except NotADirectoryError:
        raise UnsafePathError(f"{path}: one of its parents is not a directory; remove it or point ORRERY_HOME "
                              f"elsewhere") from None
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode):
        raise UnsafePathError(f"{path} is a symlink; Orrery keeps state only in a real directory: remove the link "
                              f"or point ORRERY_HOME elsewhere")
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafePathError(f"{path} is not a directory; remove it or point ORRERY_HOME elsewhere")
    if info.st_uid != os.getuid():
        raise UnsafePathError(f"{path} belongs to user id {info.st_uid}, not to you ({os.getuid()}); point "
                              f"ORRERY_HOME at a directory of your own")
    if info.st_mode & 0o022:
        raise UnsafePathError(f"{path} is writable by other users (mode {stat.S_IMODE(info.st_mode):o}); "
                              f"chmod go-w {path} or point ORRERY_HOME elsewhere")
    return path


def _fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
