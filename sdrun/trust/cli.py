"""`sdrun-trust <folder> ...`: make run folders from elsewhere the user's own, after looking.

A received folder (signing.py) resumes without the settings that reach beyond it (wandb
destination, outside paths, downloads: received.py). Once the user has read its
`.hydra/overrides.yaml` and agrees with it, this signs it with their key, so that it resumes
with all of its settings, as a folder their own sdrun made. A folder that holds links or
special files is refused, as `resume=` would refuse it. `--check` only says which folders are
own and which received.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sdrun.errors import SdrunError
from sdrun.trust import signing
from sdrun.trust.folder import check_folder


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sdrun-trust",
        description="Sign run folders from elsewhere as your own, after you have looked at "
        "their .hydra/overrides.yaml: they then resume with all of their settings (wandb "
        "destination, teacher checkpoint, data root included).",
    )
    parser.add_argument("folders", nargs="+", type=Path, help="run folders to trust")
    parser.add_argument(
        "--check", action="store_true", help="only print whether each folder is own or received"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    for folder in args.folders:
        if not (folder / signing.SIGNED).is_file():
            print(f"sdrun-trust: error: {folder} is not a run folder (no {signing.SIGNED})",
                  file=sys.stderr)  # fmt: skip
            return 2
        if args.check:
            print(f"{'own' if signing.is_own(folder) else 'received'}: {folder}")
            continue
        try:
            check_folder(folder)
        except SdrunError as err:
            print(f"sdrun-trust: error: {err}", file=sys.stderr)
            return 2
        signing.sign(folder)
        print(f"trusted: {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
