"""What sdrun takes from a received folder (one whose signature does not verify: signing.py).

Its settings are still checked entry by entry (`commandline/saved_overrides.py`); on top of
that, none of those that reach beyond the folder is taken from it: where metrics and
checkpoints are sent (wandb mode, entity, project, checkpoint upload, the wandb run it would
continue), files outside it (a teacher checkpoint, a backbone, the data root), downloads
(pretrained weights, the data set) and how many processes it starts. Those come from the
command line or the defaults, and one line names what was not taken.

Whether a resumed folder was received is decided once, before Hydra writes into it (Hydra
rewrites `.hydra/overrides.yaml`, which the signature covers), and remembered for the process.
"""

from __future__ import annotations

import sys
from pathlib import Path

from sdrun.trust import signing

# Keys of either command that reach beyond the run folder.
BEYOND = (
    "logger.mode",
    "logger.entity",
    "logger.project",
    "logger.log_checkpoints",
    "distill.teacher_checkpoint",
    "dataset.root",
    "dataset.download",
    "dataset.num_workers",
    "model.pretrained",
    "backbone",
)

_received: set[Path] = set()


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def take(run_dir: Path, saved: list[str], prog: str) -> list[str]:
    """`run_dir`'s checked saved overrides that sdrun takes from it: all of them from the
    user's own folder; from a received one, all but those that reach beyond it (named in one
    line on stderr)."""
    if signing.is_own(run_dir):
        return saved
    _received.add(Path(run_dir).resolve())
    kept = [o for o in saved if _key(o) not in BEYOND]
    dropped = [o for o in saved if _key(o) in BEYOND]
    print(f"{prog}: {received_note(run_dir, dropped)}", file=sys.stderr)
    return kept


def received_note(run_dir: Path, dropped: list[str]) -> str:
    what = ", ".join(dropped) if dropped else "nothing of its settings"
    return (
        f"note: {run_dir} was not made by your sdrun (or was changed since), so it is treated "
        f"as received: not taken from it: {what}, nor the wandb run it logged to (they come "
        f"from your command line or the defaults); after looking at it, `sdrun-trust {run_dir}` "
        "makes it your own"
    )


def mark(run_dir: Path) -> None:
    """Remember `run_dir` as received (a resume whose folder failed the signature check)."""
    _received.add(Path(run_dir).resolve())


def is_received(run_dir: Path) -> bool:
    """Whether this process resumed `run_dir` as a received folder."""
    return Path(run_dir).resolve() in _received
