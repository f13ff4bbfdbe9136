"""Every file sdrun reads or writes in a run, sweep, search or report folder is opened here.

A folder may come from someone else (a collaborator's tarball, a paper's artifact), so what it
holds must not decide where sdrun writes or how much it reads:
- writes go to a temporary file created exclusively (`O_CREAT|O_EXCL|O_NOFOLLOW`, after removing
  a stale one: removing a link removes the link, never its target) in the target's folder, then
  `os.replace`, which replaces the directory entry: a symlink at the target is replaced, never
  written through;
- appends open the file `O_NOFOLLOW` and refuse anything but a regular file with one link;
- reads take regular files only (opened non-blocking, so a FIFO cannot hang the open, and
  checked with `fstat`), up to a size cap per kind; JSON has a nesting cap and YAML may hold no
  anchors or aliases (sdrun never writes them; an alias bomb is a few KB that expand to GBs).
Errors are `UnsafeFile`, one line naming the file and what to do.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Optional

import yaml

from sdrun.errors import SdrunError

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
# Caps per kind of file, far above what sdrun writes (a 240-epoch metrics.jsonl is ~200 KB, a
# config ~5 KB) and far below what would exhaust a machine.
CONFIG_CAP = 4 * MiB  # .hydra/*.yaml, sweep.yaml, small JSON records
METRICS_CAP = 256 * MiB  # metrics.jsonl, logs
LINE_CAP = 1 * MiB  # one JSON line of metrics.jsonl
CHECKPOINT_CAP = 64 * GiB  # a checkpoint is read by torch.load in weights-only mode
JSON_DEPTH = 32  # sdrun's JSON nests 3 levels

_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_APPEND = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_LOCK_NEW = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_LOCK = os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class UnsafeFile(SdrunError, OSError):
    """A file of a folder is not what sdrun reads or writes: a link, a special file, too large,
    or content of a shape sdrun never writes. An OSError too: wherever a file that cannot be
    read is handled (listed, skipped, bookkeeping not written), so is this one."""


def kind_of(mode: int) -> str:
    """What a file is, in words (for the one-line errors)."""
    for test, name in _KINDS:
        if test(mode):
            return name
    return "regular file"


_KINDS = (
    (stat.S_ISLNK, "symbolic link"),
    (stat.S_ISDIR, "folder"),
    (stat.S_ISFIFO, "FIFO"),
    (stat.S_ISSOCK, "socket"),
    (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"),
)


def _refuse(path: Path, what: str) -> UnsafeFile:
    return UnsafeFile(
        f"{path} is {what}; sdrun reads and writes only the regular files it made in a folder: "
        "replace it with a regular file or remove it"
    )


def _open_checked(path: Path, flags: int, mode: int = 0o644) -> int:
    """An fd of `path` if it is a regular file with one link (O_NOFOLLOW: not a symlink)."""
    try:
        fd = os.open(path, flags, mode)
    except OSError as err:
        if err.errno == errno.ELOOP:  # O_NOFOLLOW met a symlink
            raise _refuse(path, "a symbolic link") from None
        if err.errno == errno.ENXIO:  # a FIFO opened for writing with no reader
            raise _refuse(path, "a FIFO") from None
        raise
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink > 1:
        os.close(fd)
        what = "a hard link to another file" if stat.S_ISREG(info.st_mode) else None
        raise _refuse(path, what or f"a {kind_of(info.st_mode)}, not a regular file")
    return fd


def read_bytes(path: Path, cap: int = CONFIG_CAP) -> bytes:
    """The content of the regular file `path`, refused past `cap` bytes."""
    fd = _open_checked(Path(path), _READ)
    with os.fdopen(fd, "rb") as f:
        if os.fstat(fd).st_size > cap:
            raise _too_large(path, cap)
        data = f.read(cap + 1)
    if len(data) > cap:  # it grew while read
        raise _too_large(path, cap)
    return data


def _too_large(path: Path, cap: int) -> UnsafeFile:
    return UnsafeFile(
        f"{path} is larger than {_size(cap)}, more than sdrun ever writes there; it is not read: "
        "remove it or replace it with the file sdrun wrote"
    )


def _size(n: int) -> str:
    for unit, size in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= size:
            return f"{n / size:g} {unit}"
    return f"{n} bytes"


def read_text(path: Path, cap: int = CONFIG_CAP, errors: str = "strict") -> str:
    return read_bytes(path, cap).decode("utf-8", errors=errors)


@contextlib.contextmanager
def open_binary(path: Path, cap: int = CHECKPOINT_CAP) -> Iterator[IO[bytes]]:
    """A regular file open for reading (for readers that take a file object: torch.load)."""
    fd = _open_checked(Path(path), _READ)
    if os.fstat(fd).st_size > cap:
        os.close(fd)
        raise _too_large(path, cap)
    with os.fdopen(fd, "rb") as f:
        yield f


def loads_json(text: str, where: object, depth: int = JSON_DEPTH) -> Any:
    """JSON text as plain data, refused when nested deeper than `depth` (ValueError)."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise ValueError(f"{where}: JSON nested too deeply") from None
    if _depth(value, depth) > depth:
        raise ValueError(f"{where}: JSON nested deeper than {depth} levels")
    return value


def _depth(value: Any, limit: int) -> int:
    """How deep `value` nests (stops counting past `limit`)."""
    if limit < 0 or not isinstance(value, (dict, list)):
        return 0
    items = value.values() if isinstance(value, dict) else value
    return 1 + max((_depth(v, limit - 1) for v in items), default=0)


def read_json(path: Path, cap: int = CONFIG_CAP) -> Any:
    """A JSON file as plain data. Raises UnsafeFile for a file sdrun never writes, ValueError
    for content that is not JSON."""
    return loads_json(read_text(path, cap), path)


def read_json_lines(path: Path, cap: int = METRICS_CAP) -> tuple[list[dict[str, Any]], int]:
    """(the JSON objects of a .jsonl file, the number of unreadable lines): a kill can cut the
    last line short; a line that is not an object, too long or too deep counts as unreadable."""
    records, bad = [], 0
    for line in read_text(path, cap, errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            record = loads_json(line, path) if len(line) <= LINE_CAP else None
        except ValueError:
            record = None
        if isinstance(record, dict):
            records.append(record)
        else:
            bad += 1
    return records, bad


# libyaml's safe loader when PyYAML has it: the same safe subset (no Python objects), several
# times faster; reading configs is most of a large report's time.
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def loads_yaml(text: str, where: object) -> Any:
    """YAML text as plain data: no Python objects (safe loader) and no anchors or aliases, which
    sdrun never writes and which let a few KB expand to gigabytes. Raises yaml.YAMLError."""
    if "&" in text or "*" in text:  # only then can it hold an anchor or alias: check the events
        for event in yaml.parse(io.StringIO(text), Loader=_SafeLoader):
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                raise yaml.YAMLError(f"{where}: holds a YAML anchor or alias (sdrun writes none)")
    return yaml.load(text, Loader=_SafeLoader)  # noqa: S506 - a safe loader


def read_yaml(path: Path, cap: int = CONFIG_CAP) -> Any:
    """A YAML file as plain data (`loads_yaml`). Raises UnsafeFile or yaml.YAMLError."""
    return loads_yaml(read_text(path, cap), path)


def _fresh(tmp: Path) -> int:
    """Create `tmp` exclusively (a stale one, or a link in its place, is removed first)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    return os.open(tmp, _CREATE, 0o644)


@contextlib.contextmanager
def atomic_file(
    path: Path,
    mode: str = "w",
    newline: Optional[str] = None,
    keep_previous: Optional[Path] = None,
) -> Iterator[IO]:
    """A file object whose content becomes `path` when the block ends without error (written to
    `.<name>.<writer>.tmp` beside it, flushed to disk, then `os.replace`d over `path`); on an error
    `path` is left as it was. With `keep_previous`, what `path` held becomes that file, once
    the new content is complete on disk."""
    path = Path(path)
    # one name per writer (two search workers may write the same file at once); a stale one of
    # a killed writer with the same id is replaced
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_native_id()}.tmp")
    fd = _fresh(tmp)
    try:
        with os.fdopen(fd, mode, newline=newline) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        if keep_previous is not None and os.path.lexists(path):
            os.replace(path, keep_previous)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_text(path: Path, text: str) -> None:
    """`path` replaced by `text` atomically, without following a link at `path`."""
    with atomic_file(path) as f:
        f.write(text)


def write_bytes(path: Path, data: bytes) -> None:
    with atomic_file(path, "wb") as f:
        f.write(data)


def save_figure(fig: Any, path: Path) -> None:
    """A matplotlib figure written to `path` as `write_bytes` writes (format from the suffix)."""
    with atomic_file(path, "wb") as f:
        fig.savefig(f, format=Path(path).suffix.lstrip(".") or "png")


def open_append(path: Path) -> IO[bytes]:
    """The regular file `path` (created if absent) open for appending (a log a child process
    writes to)."""
    return os.fdopen(_open_checked(Path(path), _APPEND), "ab")


def append_text(path: Path, text: str) -> None:
    """`text` appended to the regular file `path` (created if absent), flushed."""
    with open_append(path) as f:
        f.write(text.encode())
        f.flush()


def open_lock_file(path: Path) -> tuple[int, bool]:
    """(fd, created) of a lock file opened read-write, never through a link."""
    try:
        return _open_checked(Path(path), _LOCK_NEW), True
    except FileExistsError:
        return _open_checked(Path(path), _LOCK), False


def ensure_dir(path: Path) -> Path:
    """`path` as a folder (made if missing), refused if it is a link or not a folder."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    mode = os.lstat(path).st_mode
    if not stat.S_ISDIR(mode):
        raise _refuse(path, f"a {kind_of(mode)}, not a folder")
    return path


def remove_file(path: Path) -> bool:
    """Remove `path` if it is a regular file (a link is removed as a link, never its target);
    False when there was nothing to remove."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return False
    if stat.S_ISDIR(mode):
        raise _refuse(Path(path), "a folder where sdrun wrote a file")
    os.unlink(path)
    return True
