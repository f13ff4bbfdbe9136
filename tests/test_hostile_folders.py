"""A run folder crafted as a collaborator's tarball or a paper's artifact can be: links at every
path sdrun or Hydra writes, a link to a folder, FIFOs, devices, hard links, a wandb redirect.
Each `resume=` of one is refused in one line before anything is written, and files outside the
folder (the victims) stay as they were (sdrun/trust/)."""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from helpers import sdrun_here

from sdrun.trust import received, signing

# Every path a resume writes (sdrun itself, Hydra's files and log, the temporary files).
WRITTEN = (".sdrun.lock", "sdrun.log", ".hydra/config.yaml", ".hydra/hydra.yaml",
           ".hydra/overrides.yaml", "checkpoints/.last.pt.tmp", "checkpoints/.heartbeat.json.tmp",
           ".metrics.jsonl.tmp", ".summary.json.tmp", ".wandb.json.tmp", "curves.png",
           "metrics.jsonl", "summary.json", "checkpoints/last.pt")  # fmt: skip


def victims(tmp_path: Path) -> Path:
    """Files outside the folder that a crafted folder points at."""
    home = tmp_path / "home"
    (home / "pictures").mkdir(parents=True)
    (home / ".bashrc").write_text("# the user's shell\n")
    (home / "pictures" / "cat.png").write_bytes(b"\x89PNG not really")
    return home


def digest(tree: Path) -> dict[str, str]:
    return {str(p.relative_to(tree)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(tree.rglob("*")) if p.is_file()}  # fmt: skip


def copy_of(sd_run: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "received"
    shutil.copytree(sd_run, folder)
    return folder


def refused(folder: Path, tmp_path: Path, *extra: str) -> str:
    """`sdrun resume=<folder>`: exit code 2 and one line on stderr, which is returned."""
    result = sdrun_here(f"resume={folder}", *extra, cwd=tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]
    return lines[0]


@pytest.mark.parametrize("name", WRITTEN)
def test_a_link_at_any_written_path_is_refused_before_anything_is_written(
    name: str, sd_run: Path, tmp_path: Path
):
    home = victims(tmp_path)
    folder = copy_of(sd_run, tmp_path)
    link = folder / name
    link.unlink(missing_ok=True)
    link.symlink_to(home / ".bashrc")
    before, inside = digest(home), digest(folder)
    line = refused(folder, tmp_path, "seed=5")  # a refused resume too: it changed the lock's target
    assert str(link) in line and "symbolic link" in line
    assert digest(home) == before and digest(folder) == inside
    assert not list((folder / ".hydra").glob("before-resume-*"))


def test_a_link_to_a_folder_and_special_files_are_refused(sd_run: Path, tmp_path: Path):
    home = victims(tmp_path)
    cases = [
        ("wandb", lambda p: p.symlink_to(home / "pictures", target_is_directory=True)),
        ("metrics.jsonl", lambda p: (p.unlink(), os.mkfifo(p))),
        ("summary.json", lambda p: (p.unlink(), p.symlink_to("/dev/zero"))),
        ("checkpoints/prev.pt", lambda p: (p.unlink(missing_ok=True),
                                           os.link(home / ".bashrc", p))),
        # the saved overrides themselves: still a run folder, not "a checkpoint outside one"
        (".hydra/overrides.yaml", lambda p: (p.unlink(), os.mkfifo(p))),
        (".hydra/overrides.yaml", lambda p: (p.unlink(), p.symlink_to(home / "missing"))),
    ]  # fmt: skip
    for i, (name, make) in enumerate(cases):
        folder = copy_of(sd_run, tmp_path / f"case{i}")
        make(folder / name)
        before = digest(home)
        line = refused(folder, tmp_path)
        assert str(folder / name) in line, line
        assert digest(home) == before


def test_the_hydra_config_as_a_link_to_a_login_script_is_never_written(
    sd_run: Path, tmp_path: Path
):
    """A saved logger.project holding a shell line (no `${`: it passes the overrides' filter)
    with .hydra/config.yaml -> ~/.bashrc: Hydra would write the line into the login script."""
    home = victims(tmp_path)
    folder = copy_of(sd_run, tmp_path)
    saved = folder / ".hydra" / "overrides.yaml"
    entries = yaml.safe_load(saved.read_text()) + ["logger.project='$(touch PWNED)'"]
    saved.write_text(yaml.safe_dump(entries))
    (folder / ".hydra" / "config.yaml").unlink()
    (folder / ".hydra" / "config.yaml").symlink_to(home / ".bashrc")
    refused(folder, tmp_path)
    assert (home / ".bashrc").read_text() == "# the user's shell\n"


def test_wandbs_own_links_inside_wandb_are_allowed(sd_run: Path, tmp_path: Path):
    """wandb links `wandb/latest-run` and `debug*.log` itself (and replaces them, never writes
    through them): a folder with wandb's links resumes."""
    folder = copy_of(sd_run, tmp_path)
    run = folder / "wandb" / "offline-run-1"
    (run / "logs").mkdir(parents=True)
    (folder / "wandb" / "latest-run").symlink_to("offline-run-1")
    (run / "logs" / "debug-core.log").symlink_to(tmp_path / "cache-core.log")
    from sdrun.trust.folder import check_folder

    check_folder(folder)  # no error


SENDER = ["distill=kd", "logger=wandb", "logger.mode=online", "logger.entity=sender",
          "logger.project=theirs", "logger.log_checkpoints=true",
          "distill.teacher_checkpoint=/home/sender/t.pt", "dataset.num_workers=64"]  # fmt: skip


def _with_sender_settings(sd_run: Path, tmp_path: Path) -> Path:
    folder = copy_of(sd_run, tmp_path)
    saved = folder / ".hydra" / "overrides.yaml"
    own = [o for o in yaml.safe_load(saved.read_text()) if not o.startswith(("logger", "distill"))]
    saved.write_text(yaml.safe_dump(own + SENDER))
    return folder


def test_a_received_folder_does_not_choose_where_metrics_go(sd_run: Path, tmp_path: Path):
    folder = _with_sender_settings(sd_run, tmp_path)
    result = sdrun_here("--cfg", "job", f"resume={folder}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    cfg = yaml.safe_load(result.stdout)
    assert cfg["logger"]["mode"] == "offline" and cfg["logger"]["entity"] is None
    assert cfg["logger"]["project"] == "sdrun" and cfg["logger"]["log_checkpoints"] is False
    assert cfg["distill"]["teacher_checkpoint"] is None and cfg["dataset"]["num_workers"] == 8
    note = [line for line in result.stderr.splitlines() if "received" in line]
    assert len(note) == 1 and "logger.mode=online" in note[0] and "sdrun-trust" in note[0]
    assert received.is_received(folder)
    # Once trusted (sdrun-trust), the same folder resumes with every setting it holds.
    from sdrun.trust.cli import main as trust

    assert trust([str(folder)]) == 0
    result = sdrun_here("--cfg", "job", f"resume={folder}", cwd=tmp_path)
    cfg = yaml.safe_load(result.stdout)
    assert (cfg["logger"]["mode"], cfg["logger"]["project"]) == ("online", "theirs")


def test_the_users_own_folder_resumes_with_all_its_settings(sd_run: Path, tmp_path: Path):
    assert signing.is_own(sd_run)  # made by this user's sdrun (the suite's key)
    folder = _with_sender_settings(sd_run, tmp_path)
    assert not signing.is_own(folder)  # its settings changed since sdrun signed them
    signing.sign(folder)
    assert signing.is_own(folder)
    result = sdrun_here("--cfg", "job", f"resume={folder}", cwd=tmp_path)
    cfg = yaml.safe_load(result.stdout)
    assert cfg["logger"]["entity"] == "sender" and "treated as received" not in result.stderr


def test_the_signing_key_is_private_and_made_once(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("SDRUN_CONFIG_DIR", str(tmp_path / "config"))
    folder = tmp_path / "run"
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text("- seed=1\n")
    signing.sign(folder)
    key = tmp_path / "config" / "folder-signing.key"
    assert key.stat().st_mode & 0o777 == 0o600
    assert signing.is_own(folder)
    monkeypatch.setenv("SDRUN_CONFIG_DIR", str(tmp_path / "another-user"))
    assert not signing.is_own(folder)  # another user's key: received


def test_escaped_literals_stay_literal_in_what_is_stored(monkeypatch, tmp_path: Path):
    """`logger.project=\\${oc.env:...}` is a literal: composed, the config holds the text
    `${oc.env:...}`, and storing the config must not resolve it (it would put the secret into
    last.pt and wandb's config)."""
    from helpers import tiny_config

    from sdrun.training.parts import config_dict

    monkeypatch.setenv("SDRUN_TEST_SECRET", "hunter2")
    cfg = tiny_config(tmp_path)
    cfg.logger.project = "${oc.env:SDRUN_TEST_SECRET}"  # as Hydra composes the escaped value
    assert config_dict(cfg)["logger"]["project"] == "${oc.env:SDRUN_TEST_SECRET}"


def test_reads_are_bounded(tmp_path: Path):
    """What a folder holds decides neither how long sdrun waits nor how much it reads."""
    from sdrun.trust import files

    fifo = tmp_path / "summary.json"
    os.mkfifo(fifo)
    done = threading.Event()

    def read() -> None:
        with pytest.raises(files.UnsafeFile, match="FIFO"):
            files.read_json(fifo)
        done.set()

    threading.Thread(target=read, daemon=True).start()
    assert done.wait(10), "reading a FIFO hung"
    bomb = tmp_path / "config.yaml"
    levels = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    levels += [f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]"
               for p, c in zip("abcdefghijklmnopqrs", "bcdefghijklmnopqrst")]  # fmt: skip
    bomb.write_text("\n".join(levels) + "\n")
    with pytest.raises(yaml.YAMLError, match="anchor or alias"):
        files.read_yaml(bomb)
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError, match="nested"):
        files.read_json(deep)
    big = tmp_path / "metrics.jsonl"
    with open(big, "wb") as f:
        f.truncate(files.CONFIG_CAP + 1)  # sparse: no disk used
    with pytest.raises(files.UnsafeFile, match="larger than"):
        files.read_json(big)


def bomb_yaml(levels: int = 20) -> str:
    """A few hundred bytes of YAML whose aliases expand to 9**levels items."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def test_every_yaml_a_folder_holds_is_read_through_the_boundary(tmp_path: Path):
    """The saved overrides `resume=` reads, an old folder's saved config, a sweep job's
    hydra.yaml: a FIFO there does not hang sdrun, an alias bomb does not expand."""
    from sdrun.cli import SDRUN
    from sdrun.commandline.saved_overrides import read_saved_overrides
    from sdrun.errors import ConfigError
    from sdrun.methods.legacy import _saved_method
    from sdrun.sweeps.trials import job_folder

    folder = tmp_path / "sweep" / "0"
    (folder / ".hydra").mkdir(parents=True)
    readers = {
        ".hydra/overrides.yaml": lambda: read_saved_overrides(folder, SDRUN, "pkg://sdrun.conf"),
        ".hydra/config.yaml": lambda: _saved_method(folder),
        ".hydra/hydra.yaml": lambda: job_folder(tmp_path / "sweep", 0),
    }
    for name, read in readers.items():
        for make in (os.mkfifo, lambda p: p.write_text(bomb_yaml())):
            path = folder / name
            path.unlink(missing_ok=True)
            make(path)
            outcome = outcome_within(read, ConfigError, seconds=10)
            assert outcome, f"reading {name} hung or expanded"
            if outcome[0] is not None:
                assert "FIFO" in str(outcome[0]) or "anchor or alias" in str(outcome[0])


def outcome_within(read: Callable[[], object], refusal: type, seconds: float) -> list[object]:
    """[what `read` returned or the `refusal` it raised], or [] when it took longer."""
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(read())
        except refusal as err:
            outcome.append(err)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    return outcome


def test_writes_replace_a_link_and_never_follow_it(tmp_path: Path):
    from sdrun.trust import files

    home = victims(tmp_path)
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "summary.json").symlink_to(home / ".bashrc")
    (folder / ".metrics.jsonl.tmp").symlink_to(home / ".bashrc")
    files.write_text(folder / "summary.json", "{}\n")
    files.write_text(folder / "metrics.jsonl", "{}\n")
    assert (folder / "summary.json").read_text() == "{}\n"
    assert not (folder / "summary.json").is_symlink()
    (folder / "log").symlink_to(home / ".bashrc")
    with pytest.raises(files.UnsafeFile, match="symbolic link"):
        files.append_text(folder / "log", "x\n")
    assert (home / ".bashrc").read_text() == "# the user's shell\n"


def test_a_folder_named_with_an_interpolation_resumes_and_reveals_nothing(
    sd_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Hydra resolves its run directory a second time (hydra.runtime.output_dir): a `${` in a
    folder's name would be read as an interpolation, here one that names a secret."""
    monkeypatch.setenv("SDRUN_TEST_SECRET", "hunter2")
    folder = tmp_path / "x${oc.env:SDRUN_TEST_SECRET}"
    shutil.copytree(sd_run, folder)
    before = (folder / "sdrun.log").stat().st_size
    result = sdrun_here(f"resume={folder}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (folder / "sdrun.log").stat().st_size > before  # this session logged there
    assert sorted(p.name for p in tmp_path.iterdir()) == [folder.name]  # nothing beside it
    assert "hunter2" not in result.stdout + result.stderr
    assert not any(b"hunter2" in p.read_bytes() for p in folder.rglob("*") if p.is_file())


# Reads outside sdrun/trust/ that are not of a run, sweep, search or report folder, each with
# why: the user's dataset files (checked by the dataset code), sdrun's own config package, the
# user's ~/.netrc, and a checkpoint's file object, opened through the boundary's open_binary.
RAW_READS_ALLOWED = {
    ("sdrun/commandline/saved_overrides.py", "yaml.safe_load"),  # sdrun's own config package
    ("sdrun/commandline/saved_overrides.py", "read_text"),
    ("sdrun/reproduce/slurm_settings.py", "read_text"),  # sdrun's own launcher config
    ("sdrun/runfolder/loggers.py", "read_text"),  # ~/.netrc: is wandb logged in?
    ("sdrun/data/cifar.py", "open"),  # the dataset's files
    ("sdrun/data/cifar.py", "load"),  # its restricted unpickler (no globals)
    ("sdrun/data/cifar_writer.py", "open"),
    ("sdrun/data/folder.py", "open"),
    ("sdrun/data/folder.py", "Image.open"),
    ("sdrun/transfer/voc.py", "Image.open"),
    ("sdrun/runfolder/checkpoint.py", "torch.load"),  # weights_only, on files.open_binary's f
}
READERS = {"open", "Image.open", "torch.load"}  # called by these names
READ_METHODS = {"read_text", "read_bytes", "safe_load", "load"}  # as a method of anything


def raw_reads() -> set[tuple[str, str]]:
    """(module, call) for every call outside sdrun/trust/ that reads a file by itself."""
    import ast

    import sdrun

    root = Path(sdrun.__file__).parent
    found = set()
    for path in root.rglob("*.py"):
        if path.parent.name == "trust":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            call = ast.unparse(node.func)
            short = call.rsplit(".", 1)[-1]
            if call.startswith(("files.", "os.", "self.", "archive.", "Ledger(")):
                continue  # the boundary itself, descriptors it checks, zip members, own methods
            dotted = "." in call  # a bare `load(...)` is one of sdrun's own functions
            name = call if call in READERS else short if dotted and short in READ_METHODS else None
            if name == "safe_load" or call == "yaml.safe_load":
                name = "yaml.safe_load"
            if name:
                found.add((f"sdrun/{path.relative_to(root).as_posix()}", name))
    return found


def test_no_module_reads_a_file_around_the_boundary():
    """A new reader of a folder's file goes through sdrun/trust/files.py, not around it."""
    found = raw_reads()
    assert ("sdrun/data/folder.py", "Image.open") in found  # the scan sees calls
    assert found - RAW_READS_ALLOWED == set()


def test_a_checkpoint_resumed_into_another_folder_is_received_whatever_its_overrides_are(
    sd_run: Path, tmp_path: Path
):
    """`resume=<its last.pt> hydra.run.dir=<elsewhere>`: a folder whose saved overrides are a
    FIFO is not the user's own, so nothing of it (its wandb run) is taken."""
    from sdrun.commandline.overrides import _mark_if_received

    folder = copy_of(sd_run, tmp_path)
    saved = folder / ".hydra" / "overrides.yaml"
    saved.unlink()
    os.mkfifo(saved)
    _mark_if_received(folder / "checkpoints" / "last.pt")
    assert received.is_received(folder)
