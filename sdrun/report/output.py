"""Where sdrun-report writes: a report folder it made itself, and nothing else.

The default `<first PATH>/report` lies inside a folder that may come from someone else, so:
- the report folder must be new, empty, or one this user's sdrun-report made: it holds a
  manifest (`.sdrun-report.json`) listing the files the report wrote there, sealed with the
  user's key (trust/signing.py) over the folder's own path, so that a manifest copied from
  elsewhere or written by hand does not verify. Any other folder is refused in one line;
- the folder is checked once (trust/folder.py) before anything is written: a link, a special
  file or a hard link anywhere in it is refused, so no write lands outside it;
- every file is written through sdrun.trust.files (a temporary file, then `os.replace`: a link
  in the way is replaced, never written through), under a name the report made (`safe_name`:
  never a raw config value);
- the only files it ever removes are those its own manifest lists and this report did not write
  again (plots of runs that are gone), one by one with `files.remove_file`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sdrun.errors import SdrunError
from sdrun.report.escape import csv_cell
from sdrun.trust import files, signing
from sdrun.trust.folder import check_folder

MANIFEST = ".sdrun-report.json"
SUBFOLDERS = ("runs", "sweeps")
MAX_NAME = 120  # characters of a file name the report makes (a file system allows 255 bytes)
_PURPOSE = "report folder v1"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.,+=-]+")
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.,+=-]*")


class ReportFolderRefused(SdrunError):
    """The output folder is not one sdrun-report may write into."""


def safe_name(text: str, limit: int = MAX_NAME) -> str:
    """A file name made from `text` (a folder name, a data set's name): characters other than
    letters, digits and `_.,+=-` become `-` and it never starts with `.` or `-`; when anything
    was changed or cut, a hash of `text` is appended, so distinct texts keep distinct names."""
    name = _UNSAFE.sub("-", text).lstrip(".-") or "_"
    if name != text or len(name) > limit:
        digest = hashlib.sha1(text.encode("utf-8", "surrogateescape")).hexdigest()[:10]
        name = f"{name[: limit - 11]}_{digest}"
    return name


def valid_name(name: object) -> bool:
    """Whether `name` is one the report makes: `file` or `<runs|sweeps>/file`, safe parts."""
    if not isinstance(name, str):
        return False
    parts = name.split("/")
    if len(parts) > 2 or (len(parts) == 2 and parts[0] not in SUBFOLDERS):
        return False
    return all(_NAME.fullmatch(p) and len(p) <= MAX_NAME + 10 for p in parts)


class OutFolder:
    """The report folder: checked at once, made at the first write, its manifest at `finish`."""

    def __init__(self, path: Path, previous: Sequence[str]) -> None:
        self.path = path
        self.previous = list(previous)  # what this folder's manifest listed
        self.written: list[str] = []

    def file(self, name: str) -> Path:
        """The path to write `name` to (made by the report: see `safe_name`), recorded."""
        if not valid_name(name):
            raise ValueError(f"not a report file name: {name!r}")
        files.ensure_dir(self.path)
        if "/" in name:
            files.ensure_dir(self.path / name.split("/")[0])
        if name not in self.written:
            self.written.append(name)
        return self.path / name

    def write_text(self, name: str, text: str) -> Path:
        target = self.file(name)
        files.write_text(target, text)
        return target

    def write_csv(self, name: str, records: list[dict[str, Any]], columns: Sequence[str]) -> Path:
        """A CSV file: floats rounded to 4 decimals, None empty, text cells never formulas."""
        buffer = io.StringIO(newline="")
        writer = csv.DictWriter(buffer, fieldnames=list(columns))
        writer.writeheader()
        for record in records:
            writer.writerow({k: csv_cell(_csv_value(v)) for k, v in record.items()})
        return self.write_text(name, buffer.getvalue())

    def save_figure(self, name: str, fig: Any) -> Path:
        target = self.file(name)
        files.save_figure(fig, target)
        return target

    def finish(self) -> None:
        """Remove what the previous report wrote and this one did not, then record this one."""
        for name in self.previous:
            if name not in self.written and valid_name(name):
                files.remove_file(self.path / name)
        files.ensure_dir(self.path)
        files.write_text(self.path / MANIFEST, json.dumps(_manifest(self.path, self.written)))


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    return round(value, 4) if isinstance(value, float) else value


def _manifest(folder: Path, names: Sequence[str]) -> dict[str, Any]:
    record = {"made_by": "sdrun-report", "folder": str(folder), "files": sorted(names)}
    return {**record, "seal": signing.seal(_sealed(record), _PURPOSE)}


def _sealed(record: dict[str, Any]) -> bytes:
    keys = ("made_by", "folder", "files")
    return json.dumps({k: record.get(k) for k in keys}, sort_keys=True).encode()


def open_out(path: Path) -> OutFolder:
    """The report folder at `path` if sdrun-report may write there (nothing is written yet):
    missing, empty, or made by this user's sdrun-report; else ReportFolderRefused, one line."""
    path = Path(os.path.abspath(path))
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return OutFolder(path, [])
    if not stat.S_ISDIR(mode):
        raise _refuse(path, f"is a {files.kind_of(mode)}, not a folder")
    check_folder(path, "report folder")
    if not os.listdir(path):
        return OutFolder(path, [])
    try:
        record = files.read_json(path / MANIFEST)
    except (OSError, ValueError, UnicodeError) as err:
        why = "holds no report manifest" if isinstance(err, FileNotFoundError) else (
            f"has an unreadable report manifest ({err})")  # fmt: skip
        raise _refuse(path, why) from None
    if not _own(record, path):
        raise _refuse(path, f"has a {MANIFEST} that this user's sdrun-report did not write there")
    return OutFolder(path, record["files"])


def _own(record: Any, path: Path) -> bool:
    if not isinstance(record, dict) or record.get("folder") != str(path):
        return False
    names = record.get("files")
    if not isinstance(names, list) or not all(valid_name(n) for n in names):
        return False
    return signing.verifies(_sealed(record), _PURPOSE, record.get("seal"))


def _refuse(path: Path, why: str) -> ReportFolderRefused:
    return ReportFolderRefused(
        f"{path} {why}: sdrun-report writes only into a new or empty folder or one it made "
        "itself (it would overwrite what is there); give --out a new folder, or move that "
        "folder away"
    )
