"""The `sdrun` command: Hydra composes the config, sdrun validates it and runs it.

`resume=<run dir>` re-applies the overrides the run was started with (from its
`.hydra/overrides.yaml`) and writes into the same run directory, so `sdrun resume=outputs/X`
is all a user types to continue a killed run; overrides given now win over the old ones. The
saved overrides are read as data and checked first (`sdrun.saved_overrides`): a folder from
someone else can set sdrun's settings, never Hydra's flags, files or callbacks.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import re
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, Optional, TypeVar

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from sdrun import distributed, hydra_errors, run_lock, sweep
from sdrun.checkpoint import CHECKPOINT_DIR, LAST, guard_run_dir
from sdrun.config import Config, register_configs, validate
from sdrun.errors import ConfigError, SdrunError, TrainingDiverged
from sdrun.interrupt import RunStopped
from sdrun.saved_overrides import INTERPOLATION, SAVED, Command, read_saved_overrides

CONFIG_PACKAGE = "sdrun.conf"


def _config_dir() -> str:
    """Where Hydra reads the configs: the package sdrun.conf, which pyproject.toml makes of the
    top-level conf/ folder, so editable and non-editable installs find them from any directory;
    or conf/ itself when sdrun is imported from a checkout it was not installed from (e.g.
    `python -m sdrun` inside a clone, next to a non-editable install)."""
    checkout_conf = Path(__file__).resolve().parent.parent / "conf"
    if importlib.util.find_spec(CONFIG_PACKAGE) is None and checkout_conf.is_dir():
        return str(checkout_conf)
    return f"pkg://{CONFIG_PACKAGE}"


CONFIG_DIR = _config_dir()
EXIT_USER_ERROR = 2
# Overrides whose value is a path to something sdrun wrote: pasted as they are, with or without
# quotes (see `quote_paths`).
PATH_KEYS = ("resume", "distill.teacher_checkpoint")
MAX_DIRNAME = 240  # file systems allow 255 bytes per name; leave room for the job number

log = logging.getLogger("sdrun")


SDRUN = Command("sdrun", Config, "config", presets=("experiment",))

HYDRA_FILES = ("config.yaml", "overrides.yaml", "hydra.yaml")
# The copy of a resumed run's .hydra/ files made before Hydra wrote this session's over them,
# and the state of its last.pt then (a session that saved a checkpoint keeps its own files).
_resume_backup: Optional[Path] = None
_last_at_start: Optional[tuple[int, int]] = None
# The run dir and the outermost of its folders this command created (none existed before
# Hydra made them), or None.
_created_run_dir: Optional[tuple[Path, Path]] = None
# What Hydra (and the run folder's lock) put into a run dir before the task runs.
HYDRA_ONLY = {".hydra", "sdrun.log", run_lock.LOCK_FILE}


class RunDirGuard(Callback):
    """Checks the run dir before Hydra writes `.hydra/` into it (the task would be too late)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        global _resume_backup, _created_run_dir, _last_at_start
        _resume_backup = _created_run_dir = None
        run_dir = Path(config.hydra.run.dir)
        is_main = distributed.from_env().is_main
        created = None if run_dir.exists() else (run_dir, _first_missing(run_dir))
        try:
            if is_main:  # before Hydra writes a file: a second process must change nothing
                run_lock.acquire(run_dir)  # held until the task ends (`run_task`)
            guard_run_dir(run_dir, resuming=config.resume is not None)
        except SdrunError as err:
            run_lock.release_all(refused=True)
            _exit_with(err)
        if not is_main:
            return  # the run dir's files are rank 0's under torchrun: one backup, one undo
        _created_run_dir = created
        hydra_dir = run_dir / ".hydra"
        if (hydra_dir / "config.yaml").exists():  # resuming: keep what the run was started with
            _last_at_start = _stamp(run_dir / CHECKPOINT_DIR / LAST)
            backup = hydra_dir / f"before-resume-{time.strftime('%Y%m%d-%H%M%S')}"
            backup.mkdir(exist_ok=True)
            for name in HYDRA_FILES:
                if (hydra_dir / name).exists():
                    shutil.copy2(hydra_dir / name, backup / name)
            _resume_backup = backup

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        global _created_run_dir
        _created_run_dir = None


def _undo_resume_files() -> None:
    """A refused resume leaves the run's .hydra/ as it was: Hydra has already written this
    session's composition over it, and the next `resume=` reads its overrides from there."""
    global _resume_backup
    if _resume_backup is None or not _resume_backup.is_dir():
        return
    if _stamp(_resume_backup.parent.parent / CHECKPOINT_DIR / LAST) != _last_at_start:
        # this session got as far as a checkpoint: the checkpoint holds its config now, and so
        # must .hydra/ (what the next resume= reads)
        _resume_backup = None
        return
    for name in HYDRA_FILES:
        if (_resume_backup / name).exists():
            shutil.copy2(_resume_backup / name, _resume_backup.parent / name)
    shutil.rmtree(_resume_backup, ignore_errors=True)
    _resume_backup = None


def _stamp(path: Path) -> Optional[tuple[int, int]]:
    """A file's (mtime in ns, size), None if absent: enough to tell it was rewritten."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size


def _first_missing(path: Path) -> Path:
    """The outermost folder of `path` that does not exist yet."""
    top = path.absolute()
    while not top.parent.exists():
        top = top.parent
    return top


def _drop_unused_run_dir() -> None:
    """A run refused before it wrote anything (a bad config, missing data) leaves no folder
    behind, which sdrun-report would otherwise list as an incomplete run. Only folders this
    command created are removed: the run dir if it holds nothing but Hydra's own files, then
    its parents that it created and that are empty."""
    global _created_run_dir
    created, _created_run_dir = _created_run_dir, None
    if created is None or not created[0].is_dir():
        return
    run_dir, top = created
    if not {p.name for p in run_dir.iterdir()} <= HYDRA_ONLY:
        return
    shutil.rmtree(run_dir, ignore_errors=True)
    for folder in run_dir.absolute().parents:
        if not folder.is_relative_to(top):
            break
        try:
            folder.rmdir()  # only when empty: another run may have appeared beside it
        except OSError:
            break


def _exit_with(err: SdrunError, prog: str = "sdrun") -> NoReturn:
    _log_to_files(f"{prog}: error: {err}")
    print(f"{prog}: error: {err}", file=sys.stderr)
    sys.exit(EXIT_USER_ERROR)


def _log_to_files(message: str) -> None:
    """The reason a run stopped, into its sdrun.log too (Hydra's file handler), so that the
    folder says why it ended; the console has it once already, on stderr."""
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, message, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


T = TypeVar("T")


def run_task(work: Callable[[], T], prog: str = "sdrun") -> T:
    """Run a command's Hydra task body: a user error becomes one line on stderr and exit code 2
    (a stop signal: its own code), and a refused resume leaves the run folder as it was."""
    try:
        return work()
    except RunStopped as err:
        print(f"{prog}: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    except TrainingDiverged as err:  # it trained with this config: that stays on record
        _exit_with(err, prog)
    except SdrunError as err:
        _undo_resume_files()  # refused (a changed key, a bad file...): the run stays as it was
        run_lock.release_all(refused=True)
        _drop_unused_run_dir()
        _exit_with(err, prog)
    finally:
        run_lock.release_all()  # the run is over (a process that lives on must not hold it)


def _task(dict_cfg: DictConfig) -> float:
    def work() -> float:
        cfg: Config = OmegaConf.to_object(dict_cfg)
        validate(cfg)  # before any data or model is built: a typo costs a second
        from sdrun.runner import run

        try:
            summary = run(cfg, Path(HydraConfig.get().runtime.output_dir))
        except TrainingDiverged as err:
            if not sweep.in_search():
                raise
            # A failed trial, not a failed search: Optuna records it and goes on.
            log.error("trial failed: %s", err)  # in the trial's own sdrun.log
            raise sweep.TrialFailed(str(err)) from None
        return sweep.objective(summary)

    return run_task(work)


def resume_overrides(argv: list[str], command: Command = SDRUN) -> list[str]:
    """With `resume=<run dir or its checkpoint>`, continue in that run dir with its overrides.

    The saved overrides are checked as data first (`sdrun.saved_overrides`): a run folder may
    come from someone else. They go in just before `resume=` itself, so that the overrides stay
    one block after any flag (`sdrun --cfg job resume=X`)."""
    at = next((i for i, a in enumerate(argv) if _key(a) == "resume"), None)
    resume = None if at is None else override_value(argv[at])
    if at is None or not resume or any(_key(a) == "hydra.run.dir" for a in argv):
        return argv
    path = Path(resume).expanduser()
    run_dir = path if path.is_dir() else path.parent.parent
    if not (run_dir / SAVED).is_file():
        return argv  # a checkpoint outside a run dir: the command line must give the config
    try:
        saved = read_saved_overrides(run_dir, command, CONFIG_DIR)
    except ConfigError as err:
        _exit_with(err, command.prog)
    given = {_key(a) for a in argv}
    old = [o for o in saved if _key(o) not in given]
    run_dir_override = f"hydra.run.dir={quote(str(run_dir.resolve()))}"
    return [*argv[:at], *old, argv[at], run_dir_override, *argv[at + 1 :]]


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


def job_dirname(num: Any, overrides: str, *, _root_: Any = None) -> str:
    """A multirun job's folder: `<num>_<key>-<value>__<key>-<value>...` (from Hydra's
    override_dirname, configured with those separators in conf/config.yaml), the keys the
    multirun varies first (`sweep.swept_first`; `_root_`: the job's config, which OmegaConf
    passes to the resolver).

    Brackets and quotes are dropped and other characters Hydra's override grammar or file
    systems give a meaning (`=`, `,`, `/`, spaces) become `-`, so the folder can be pasted into
    `resume=` as it is; a name too long for a file system keeps its start (the swept values
    that tell the jobs apart) and a hash of the rest.
    """
    if _root_ is not None:
        overrides = sweep.swept_first(_root_.hydra, str(overrides))
    name = re.sub(r"[\[\](){}'\"]", "", str(overrides))
    name = re.sub(r"[^\w.+@%-]+", "-", name, flags=re.ASCII).strip("-")
    if len(name) > MAX_DIRNAME:
        digest = hashlib.sha256(name.encode()).hexdigest()[:10]
        name = f"{name[: MAX_DIRNAME - 11]}-{digest}"
    return f"{num}_{name}" if name else str(num)


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


def launch(
    task: Callable[[DictConfig], Any], config_name: str, argv: list[str], prog: str = "sdrun"
) -> None:
    """Run a command's Hydra task on `argv` (already checked and completed): Hydra's
    composition errors are one line, and the run-folder lock and the process group are given
    back however the task ends. Shared by sdrun and sdrun-transfer."""
    sys.argv = [sys.argv[0], *argv]
    try:
        hydra_errors.run(
            hydra.main(config_path=CONFIG_DIR, config_name=config_name, version_base="1.3")(task)
        )
    except ConfigError as err:  # Hydra's composition errors (the task reports its own)
        _exit_with(err, prog)
    finally:
        run_lock.release_all()
        distributed.shutdown()


def main() -> None:
    register_configs()
    OmegaConf.register_new_resolver("sdrun_job", job_dirname, replace=True)
    argv = distributed_overrides(resume_overrides(quote_paths(sys.argv[1:])))
    problem = sweep.missing_search_plugin(argv)
    if problem:
        _exit_with(ConfigError(problem))
    launch(_task, "config", show_resolved(argv))


if __name__ == "__main__":
    main()
