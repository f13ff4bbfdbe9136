"""What `make reproduce` prints about its runs: one line per run and event, each written in
one piece, so lines never interleave however many runs go at once."""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Optional, TextIO

from sdrun.reproduce.plan import Job
from sdrun.trust import files


class Board:
    """Each run's `[i/n] <model> <method> seed <s>` head, and the lines about it."""

    def __init__(self, jobs: list[Job]) -> None:
        width = len(str(len(jobs)))
        self.heads = {job.run_dir: f"[{i:>{width}}/{len(jobs)}] {job.name}"
                      for i, job in enumerate(jobs, start=1)}  # fmt: skip
        self._lock = threading.Lock()

    def say(self, job: Job, text: str, *more: str) -> None:
        """`<head>: text`, and indented lines under it."""
        self.write(sys.stdout, f"{self.heads[job.run_dir]}: {text}", *(f"    {m}" for m in more))

    def warn(self, job: Job, text: str, *more: str) -> None:
        """As `say`, on stderr."""
        self.write(sys.stderr, f"{self.heads[job.run_dir]}: {text}", *(f"    {m}" for m in more))

    def error(self, text: str) -> None:
        self.write(sys.stderr, f"reproduce: {text}")

    def note(self, text: str) -> None:
        self.write(sys.stdout, f"reproduce: {text}")

    def write(self, stream: TextIO, *lines: str) -> None:
        with self._lock:
            stream.write("".join(f"{line}\n" for line in lines))
            stream.flush()


def last_line(log: Path) -> Optional[str]:
    """The last non-empty line of a run's log (a failed sdrun's one-line error), if any."""
    try:
        with files.open_binary(log) as f:
            f.seek(max(0, f.seek(0, 2) - 8192))  # the end is enough, however long the log is
            tail = f.read().decode(errors="replace")
    except OSError:
        return None
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    return lines[-1] if lines else None


def failure(board: Board, job: Job, why: str, log: Optional[Path]) -> None:
    """A failed run: what ended it, its log's last line, and where its log is."""
    quoted = last_line(log) if log is not None else None
    board.warn(job, f"failed ({why})", *([quoted] if quoted else []),
              f"its log: {log}" if log is not None else "it did not start")  # fmt: skip
