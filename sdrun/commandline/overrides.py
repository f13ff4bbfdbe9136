"""The command line as Hydra gets it: where the configs are, pasted paths quoted so that
Hydra's grammar reads them literally, a `resume=` completed with the run's own (checked) saved
overrides, and torchrun's processes joined before Hydra so they share one run directory.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from pathlib import Path
from typing import Optional

from omegaconf import OmegaConf

import sdrun
from sdrun.commandline.run_dir_guard import exit_with
from sdrun.commandline.saved_overrides import INTERPOLATION, SAVED, Command, read_saved_overrides
from sdrun.errors import ConfigError, SdrunError
from sdrun.methods.legacy import unread_overrides
from sdrun.runfolder import distributed
from sdrun.trust import received, signing
from sdrun.trust.folder import check_folder

CONFIG_PACKAGE = "sdrun.conf"


def _config_dir() -> str:
    """Where Hydra reads the configs: the package sdrun.conf, which pyproject.toml makes of the
    top-level conf/ folder, so editable and non-editable installs find them from any directory;
    or conf/ itself when sdrun is imported from a checkout it was not installed from (e.g.
    `python -m sdrun` inside a clone, next to a non-editable install)."""
    checkout_conf = Path(sdrun.__file__).resolve().parent.parent / "conf"
    if importlib.util.find_spec(CONFIG_PACKAGE) is None and checkout_conf.is_dir():
        return str(checkout_conf)
    return f"pkg://{CONFIG_PACKAGE}"


CONFIG_DIR = _config_dir()
# Overrides whose value is a path to something sdrun wrote: pasted as they are, with or without
# quotes (see `quote_paths`).
PATH_KEYS = ("resume", "distill.teacher_checkpoint")


def resume_overrides(argv: list[str], command: Command) -> list[str]:
    """With `resume=<run dir or its checkpoint>`, continue in that run dir with its overrides.

    The saved overrides are checked as data first (`saved_overrides.py`): a run folder may come
    from someone else. They go in just before `resume=` itself, so that the overrides stay
    one block after any flag (`sdrun --cfg job resume=X`)."""
    at = next((i for i, a in enumerate(argv) if _key(a) == "resume"), None)
    resume = None if at is None else override_value(argv[at])
    if at is None or not resume:
        return argv
    if any(_key(a) == "hydra.run.dir" for a in argv):
        _mark_if_received(Path(resume).expanduser())  # the command line gives every setting
        return argv
    path = Path(resume).expanduser()
    run_dir = path if path.is_dir() else path.parent.parent
    if not os.path.lexists(run_dir / SAVED):  # anything there (a FIFO, a link) is a run
        return argv  # a checkpoint outside a run dir: the command line must give the config
    try:
        check_folder(run_dir)  # before anything is written there, the lock included
        saved = received.take(run_dir, read_saved_overrides(run_dir, command, CONFIG_DIR),
                              command.prog)  # fmt: skip
        run_dir_override = f"hydra.run.dir={quote(hydra_run_dir(run_dir.resolve()))}"
    except SdrunError as err:
        exit_with(err, command.prog)
    saved, unread = unread_overrides(saved, run_dir)  # an older sdrun's keys the method lacks
    for entry in unread:
        print(f"{command.prog}: note: resume: {run_dir / SAVED} sets {entry}, which its method "
              "has no key for and never read; dropped", file=sys.stderr)  # fmt: skip
    given = {_key(a) for a in argv}
    old = [o for o in saved if _key(o) not in given]
    return [*argv[:at], *old, argv[at], run_dir_override, *argv[at + 1 :]]


# A descriptor this process holds open on a run folder is a path to it without its name.
FD_ALIAS = "/proc/self/fd/"


def hydra_run_dir(run_dir: Path) -> str:
    """`run_dir` as Hydra's hydra.run.dir. Hydra resolves its run directory twice: once from
    hydra.run.dir, then again from hydra.runtime.output_dir, which it sets from the first, so a
    `${` in a folder's name is read as an interpolation however it is escaped (and would print
    what it names, an environment variable too). Such a folder is given as /proc/self/fd/<n>, a
    descriptor held open on it for the process's life; `job_run_dir` turns it back."""
    text = str(run_dir)
    if "${" not in text:
        return text
    fd = os.open(run_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    alias = f"{FD_ALIAS}{fd}"
    if not os.path.isdir(alias):  # no /proc (not Linux)
        os.close(fd)
        raise ConfigError(
            f"{text!r} holds '${{', which Hydra reads as an interpolation in a run directory; "
            "rename the folder without it, then resume"
        )
    return alias


def job_run_dir(output_dir: str) -> Path:
    """The run folder of Hydra's hydra.runtime.output_dir (its own path for a `hydra_run_dir`
    alias)."""
    if output_dir.startswith(FD_ALIAS):
        return Path(os.path.realpath(output_dir))
    return Path(output_dir)


def _mark_if_received(path: Path) -> None:
    """A checkpoint's own folder, resumed with settings all given now: its wandb run is still
    the folder's, taken only from the user's own folder."""
    run_dir = path if path.is_dir() else path.parent.parent
    if os.path.lexists(run_dir / SAVED) and not signing.is_own(run_dir):
        received.mark(run_dir)


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def override_value(override: str) -> str:
    """The value of `key=value` as the config will hold it: quotes removed, escapes undone."""
    raw = override.split("=", 1)[1] if "=" in override else ""
    value = _read(override)
    if value is None:
        return raw  # not valid override syntax (Hydra will say so itself), or not a string
    if INTERPOLATION.search(value):
        return value  # resolved only when the config is: not a path known now
    # OmegaConf's escapes: n backslashes before `${` stand for n // 2 (an odd one escapes it)
    return re.sub(r"\\+(?=\$\{)", lambda m: "\\" * (len(m.group()) // 2), value)


def _read(override: str) -> Optional[str]:
    """The string value Hydra's grammar reads from `override`, None if it reads none."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        value = OverridesParser.create().parse_override(override).value()
    except Exception:  # noqa: BLE001 - any parse failure
        return None
    return value if isinstance(value, str) else None


def quote(value: str) -> str:
    """`value` as one quoted Hydra string that the config holds as exactly `value`: any
    character, `${` not an interpolation, backslashes (a trailing one too) kept."""
    # OmegaConf reads `\\${` as a backslash and an interpolation: double the backslashes before
    # each `${`, then escape it.
    text = re.sub(r"(\\*)\$\{", lambda m: m.group(1) * 2 + "\\${", value)
    mark = "'" if "'" not in value else '"'
    # Hydra reads the backslashes before a quote (an escaped one, or the closing one) in pairs.
    text = re.sub(rf"(\\*){mark}", lambda m: m.group(1) * 2 + "\\" + mark, text)
    text = re.sub(r"(\\+)$", lambda m: m.group(1) * 2, text)
    return f"{mark}{text}{mark}"


def quote_paths(argv: list[str], keys: tuple[str, ...] = PATH_KEYS) -> list[str]:
    """Make path overrides that Hydra's grammar cannot read as typed readable, unchanged in value.

    A pasted run folder may hold characters the grammar gives a meaning (Hydra multirun job
    folders of sdrun < 0.2 are named `0_a=1,b=2`; a `${...}` would be resolved, a trailing
    backslash escapes the closing quote). Such a value is quoted whole, or, when each of its
    comma-separated parts is an existing path (a sweep over run folders under -m), part by part.
    Values that Hydra reads as typed (quoted ones included) are left as they are.
    """
    out = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if sep and key.lstrip("+~") in keys:
            arg = f"{key}={_path_value(arg, value)}"
        out.append(arg)
    return out


def _path_value(override: str, value: str) -> str:
    """The text of a path override's `value` that Hydra reads as the path meant."""
    read = _read(override)
    literal = read is not None and not INTERPOLATION.search(read)
    if literal and (read == value or not _exists(value)):
        return value  # read as typed, or as the user quoted it
    if _exists(value):
        return quote(value)  # pasted as it is
    if read is not None and _exists(read):
        return quote(read)  # quoted by hand, but Hydra would still resolve its `${`
    if read is not None or _parses(override):
        return value  # a new path, a sweep, an interpolation meant: Hydra's to read
    parts = _existing_paths(value)
    return ",".join(quote(p) for p in parts) if parts else quote(value)


def _exists(path: str) -> bool:
    return Path(path).expanduser().exists()


def _existing_paths(value: str) -> Optional[list[str]]:
    """`value` cut at commas into two or more existing paths (names may hold commas), or None."""
    parts: list[str] = []
    current: Optional[str] = None
    for piece in value.split(","):
        current = piece if current is None else f"{current},{piece}"
        if _exists(current):
            parts.append(current)
            current = None
    return parts if current is None and len(parts) > 1 else None


def _parses(override: str) -> bool:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        OverridesParser.create().parse_override(override)
    except Exception:  # noqa: BLE001 - any parse failure
        return False
    return True


def distributed_overrides(argv: list[str]) -> list[str]:
    """Under torchrun, join the process group before Hydra so all ranks share one run dir.

    The run dir's timestamp comes from rank 0 (the `sdrun_now` resolver); ranks > 0 write no
    `.hydra/` files and no log file of their own.
    """
    info = distributed.from_env()
    stamp_fmt = {}

    def now(fmt: str) -> str:
        if fmt not in stamp_fmt:
            stamp_fmt[fmt] = distributed.shared_timestamp(fmt)
        return stamp_fmt[fmt]

    OmegaConf.register_new_resolver("sdrun_now", now, replace=True)
    if not info.enabled:
        return argv
    device_type = "cpu" if "trainer.device=cpu" in argv or not _cuda() else "cuda"
    distributed.init(device_type)
    if info.is_main:
        return argv
    return [*argv, "hydra.output_subdir=null", "hydra/job_logging=disabled",
            "hydra/hydra_logging=disabled"]  # fmt: skip


def show_resolved(argv: list[str]) -> list[str]:
    """`--cfg` prints the config with its values (schedule.cycles as the number a run uses),
    not the interpolations the files hold."""
    shows = any(a in ("--cfg", "-c") or a.startswith("--cfg=") for a in argv)
    if shows and "--resolve" not in argv:
        return [*argv, "--resolve"]
    return argv


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()
