"""A run folder from someone else never runs code: `resume=` reads its `.hydra/overrides.yaml` as
data (sdrun and sdrun-transfer, and scripts/reproduce.py through them), and a refused entry is
one line before Hydra runs; pasted folder names are never interpolated; model settings that name
files are not taken from a received checkpoint."""

from __future__ import annotations

import os
import pickle
import shutil
import traceback
from pathlib import Path

import pytest
import torch
import yaml
from helpers import CONF, load_script, sdrun_here
from transfer_helpers import transfer

from sdrun.cli import SDRUN
from sdrun.commandline.overrides import quote, quote_paths
from sdrun.commandline.saved_overrides import entry_problem, shipped_options
from sdrun.errors import ConfigError
from sdrun.transfer.cli import TRANSFER
from sdrun.trust import signing


class MakesMarker:
    """Unpickling this creates a folder: what a crafted pickle does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (str(self.marker),))


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def received(
    tmp_path: Path, command: str, sd_run: Path, with_checkpoint: bool, attack: str
) -> tuple[Path, str, Path]:
    """A run folder as someone could send it: the command's own overrides plus one attack entry;
    returns the folder, the entry and the marker the entry would create."""
    folder = tmp_path / "received" / "run"
    hydra_dir = folder / ".hydra"
    hydra_dir.mkdir(parents=True)
    marker = tmp_path / "code-ran"
    if attack == "flag":  # Hydra unpickles the file given to --experimental-rerun
        (hydra_dir / "config.pickle").write_bytes(pickle.dumps(MakesMarker(marker)))
        entry = f"--experimental-rerun={hydra_dir / 'config.pickle'}"
    else:  # a group option that is a path: Hydra loads that YAML and instantiates its callbacks
        callback = {"_target_": "os.makedirs", "name": str(marker)}
        text = "# @package _global_\n" + yaml.safe_dump({"hydra": {"callbacks": {"x": callback}}})
        (hydra_dir / "x.yaml").write_text(text)
        group = "experiment" if command == "sdrun" else "task"
        up = os.path.relpath(hydra_dir / "x", CONF / group)
        entry = f"+experiment={up}" if command == "sdrun" else f"task={up}"
    if command == "sdrun":
        own = yaml.safe_load((sd_run / ".hydra" / "overrides.yaml").read_text())
    else:  # the crafted task= takes the place of the run's own
        task = ["task=detection"] if attack == "flag" else []
        own = [*task, f"backbone={sd_run}", "logger=none"]
    # first: before the old code's other overrides, a flag there reached Hydra's argument parser
    (hydra_dir / "overrides.yaml").write_text(yaml.safe_dump([entry, *own]))
    if with_checkpoint:
        (folder / "checkpoints").mkdir()
        shutil.copy2(sd_run / "checkpoints" / "last.pt", folder / "checkpoints" / "last.pt")
    return folder, entry, marker


def run(
    command: str, args: list[str], cwd: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> tuple[int, str, str]:
    """`command ARGS` in this process: exit code, stdout, stderr."""
    if command == "sdrun":
        result = sdrun_here(*args, cwd=cwd)
        return result.returncode, result.stdout, result.stderr
    monkeypatch.chdir(cwd)
    try:
        code = transfer(monkeypatch, *args)
    except Exception:  # noqa: BLE001 - what a crashing process would print
        traceback.print_exc()
        code = 1
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("attack", ["flag", "group_path"])
@pytest.mark.parametrize("with_checkpoint", [True, False], ids=["checkpoint", "no_checkpoint"])
@pytest.mark.parametrize("command", ["sdrun", "sdrun-transfer"])
def test_resume_of_a_crafted_folder_runs_no_code(
    command: str, with_checkpoint: bool, attack: str, sd_run: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
):  # fmt: skip
    folder, entry, marker = received(tmp_path, command, sd_run, with_checkpoint, attack)
    before = snapshot(folder)
    code, _, err = run(command, [f"resume={folder}"], tmp_path, monkeypatch, capsys)
    assert not marker.exists()
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith(
        f"{command}: error: {folder / '.hydra' / 'overrides.yaml'}: entry {entry!r} is "
    )
    assert "delete the entry" in lines[0]
    assert snapshot(folder) == before  # nothing written, nothing backed up


@pytest.mark.parametrize("extra", [[], ["+experiment=cifar100/resnet20_sd"]], ids=["run", "preset"])
def test_a_folder_sdrun_made_resumes_with_a_flag(extra: list[str], sd_run: Path, tmp_path: Path):
    """The saved overrides pass the checks (a preset's too), and a Hydra flag given with resume=
    works: `sdrun --cfg job resume=X` prints the run's config."""
    folder = tmp_path / "run"
    shutil.copytree(sd_run, folder)
    saved = folder / ".hydra" / "overrides.yaml"
    saved.write_text(yaml.safe_dump(extra + yaml.safe_load(saved.read_text())))
    proc = sdrun_here("--cfg", "job", f"resume={folder}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    cfg = yaml.safe_load(proc.stdout)
    assert cfg["model"]["name"] == "resnet20" and cfg["schedule"]["epochs"] == 4
    assert cfg["resume"] == str(folder)
    if extra:  # the preset's own setting, which the run's overrides do not change
        assert cfg["distill"]["temperature"] == 2.0 and cfg["optim"]["weight_decay"] == 5e-4


def test_the_transfer_resume_takes_its_groups_and_keys(
    sd_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
):
    folder = tmp_path / "run"
    (folder / ".hydra").mkdir(parents=True)
    own = ["task=segmentation", f"backbone={sd_run}", "logger=none", "dataset.limit_train=4"]
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(own))
    signing.sign(folder)  # the user's own folder: its backbone, outside it, is taken
    code, out, err = run(
        "sdrun-transfer", ["--cfg", "job", f"resume={folder}"], tmp_path, monkeypatch, capsys
    )
    assert code == 0, err
    cfg = yaml.safe_load(out)
    assert (cfg["task"]["name"], cfg["backbone"], cfg["dataset"]["limit_train"]) == (
        "segmentation", str(sd_run), 4)  # fmt: skip


def test_the_search_trials_saved_overrides_pass(val_run: Path):
    """A folder a search made (hparams_search, its sampled values) resumes: every entry passes."""
    entries = yaml.safe_load((val_run / ".hydra" / "overrides.yaml").read_text())
    assert any(e.startswith("optim.lr=") for e in entries)  # a value the search drew
    groups = shipped_options(CONF, SDRUN)
    assert [e for e in entries if entry_problem(e, SDRUN, groups)] == []


REFUSED = {
    "-m": "flag",
    "--experimental-rerun=x.pickle": "flag",
    "+experiment=../x": "configs sdrun ships",
    "+experiment=/abs/x": "configs sdrun ships",
    "model=../../x": "configs sdrun ships",
    "hydra.callbacks.x._target_=os.system": "Hydra's own",
    "hydra/launcher=slurm": "Hydra's own",
    "hydra={callbacks: {}}": "Hydra's own",
    "+hydra.searchpath=[file:///tmp]": "Hydra's own",
    "model@hydra=resnet20": "package",
    "seed=0,1": "sweep",
    "seed=range(3)": "sweep",
    "model=glob(*)": "sweep",
    "seed=${oc.env:HOME}": "interpolation",
    "dataset.root=[a,'${oc.env:HOME}']": "interpolation",
    "dataset.root='\\\\${oc.env:HOME}'": "interpolation",  # an escaped backslash, then ${
    "dataset.rooot=x": "not a setting",
    "+foo=1": "not a setting",
    "+model.kwargs.checkpoint_path=/tmp/x.pt": "names a file",
    "+model.kwargs={pretrained_cfg_overlay: {file: /tmp/x.pth}}": "names a file",
    "+model.kwargs.cache_dir=.hydra": "names a file",
    "+model.kwargs.weights_path=x": "names a file",
    "+model.kwargs.act_layer=../x": "path or URL",
    "model.name=hf-hub:timm/resnet18": "plain timm model name",
    "model.name=local-dir:/tmp/x": "plain timm model name",
    "not an override": "Hydra can read",
}


@pytest.mark.parametrize("entry", list(REFUSED))
def test_an_entry_that_is_not_a_plain_setting_is_refused(entry: str):
    problem = entry_problem(entry, SDRUN, shipped_options(CONF, SDRUN))
    assert problem and REFUSED[entry] in problem


@pytest.mark.parametrize(
    "entry",
    ["model=resnet20", "+experiment=cifar100/resnet20_sd", "hparams_search=sd_optuna",
     "distill=null", "~model.kwargs", "++seed=3", "schedule.milestones=[0.5,0.75]",
     "+model.kwargs.drop_rate=0.3", "+model.kwargs.act_layer=gelu", "logger.tags=[a,b]",
     "distill.teacher_checkpoint='/runs/x\\${oc.env:HOME}'", "dataset.root=/data/cifar"],
)  # fmt: skip
def test_plain_settings_pass(entry: str):
    assert entry_problem(entry, SDRUN, shipped_options(CONF, SDRUN)) is None


def test_transfer_takes_its_own_groups_only():
    groups = shipped_options(CONF, TRANSFER)
    assert entry_problem("task=detection", TRANSFER, groups) is None
    assert "configs sdrun ships" in entry_problem("task=../../x", TRANSFER, groups)
    assert "not a setting" in entry_problem("+experiment=cifar100/resnet20_sd", TRANSFER, groups)
    assert "not a setting" in entry_problem("model=resnet20", TRANSFER, groups)


def test_a_file_that_is_not_a_list_of_strings_is_refused(sd_run: Path, tmp_path: Path):
    folder = tmp_path / "run"
    (folder / ".hydra").mkdir(parents=True)
    for text, what in (("{a: 1}", "not a list"), ("[1]", "not an override string"),
                       ("[a: [", "not readable as YAML")):  # fmt: skip
        (folder / ".hydra" / "overrides.yaml").write_text(text)
        proc = sdrun_here(f"resume={folder}", cwd=tmp_path)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and what in lines[0], proc.stderr


def test_reproduce_does_not_resume_a_tampered_folder(
    sd_run: Path, tmp_path: Path, capfd: pytest.CaptureFixture
):
    """scripts/reproduce.py resumes a folder with a checkpoint and no summary through
    `sdrun resume=`: a crafted entry in it stops that run in one line, and nothing runs."""
    reproduce = load_script("reproduce")
    out = tmp_path / "out"
    folder = out / "cifar100" / "resnet20" / "sd" / "seed0"
    shutil.copytree(sd_run, folder)
    (folder / "summary.json").unlink()  # as if killed: reproduce resumes it
    marker = tmp_path / "code-ran"
    (folder / ".hydra" / "config.pickle").write_bytes(pickle.dumps(MakesMarker(marker)))
    entry = f"--experimental-rerun={folder / '.hydra' / 'config.pickle'}"
    saved = folder / ".hydra" / "overrides.yaml"
    saved.write_text(yaml.safe_dump([entry, *yaml.safe_load(saved.read_text())]))
    args = ["--models", "resnet20", "--methods", "sd", "--seeds", "1", "--out", str(out)]
    assert reproduce.main(args) == 1
    err = capfd.readouterr().err
    assert not marker.exists()
    assert f"sdrun: error: {saved}: entry {entry!r} is a command-line flag" in err
    assert "Traceback" not in err


def read_back(override: str) -> str:
    """What the config holds for `override`'s value once Hydra and OmegaConf have read it."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    value = OverridesParser.create().parse_override(override).value()
    return OmegaConf.create({"v": value}).v


# Pasted folder names: `${...}` stays literal, a trailing backslash works.
ODD_NAMES = ["x${oc.env:HOME}", "x\\", "a'b${x}\\", "0_a=1,b=${oc.env:HOME}"]


@pytest.mark.parametrize("name", ODD_NAMES)
def test_quote_reads_back_as_the_folder_name(name: str):
    assert read_back(f"resume={quote(name)}") == name


@pytest.fixture(scope="module")
def odd_folders(sd_run: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Copies of a finished run in folders with odd names."""
    root = tmp_path_factory.mktemp("odd")
    folders = [root / name for name in ODD_NAMES]
    for folder in folders:
        shutil.copytree(sd_run, folder)
    return folders


@pytest.mark.parametrize("index", range(len(ODD_NAMES)), ids=ODD_NAMES)
@pytest.mark.parametrize("quoted", [False, True], ids=["pasted", "quoted"])
def test_resume_and_teacher_take_a_folder_name_literally(
    odd_folders: list[Path], index: int, quoted: bool, tmp_path: Path
):
    folder = odd_folders[index]
    value = quote(str(folder)) if quoted else str(folder)
    args = ["--cfg", "job", "--resolve", f"resume={value}", "distill=kd",
            f"distill.teacher_checkpoint={value}"]  # fmt: skip
    proc = sdrun_here(*args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    cfg = yaml.safe_load(proc.stdout)
    assert cfg["resume"] == cfg["distill"]["teacher_checkpoint"] == str(folder)
    assert cfg["model"]["name"] == "resnet20"  # the folder's own overrides were read


def test_a_hand_quoted_folder_name_is_not_interpolated(odd_folders: list[Path]):
    folder = str(odd_folders[0])  # x${oc.env:HOME}: Hydra's quotes alone do not escape ${
    (override,) = quote_paths([f"resume='{folder}'"])
    assert read_back(override) == folder


def test_backbone_takes_a_folder_name_literally(
    odd_folders: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
):
    folder = str(odd_folders[0])
    code, out, err = run(
        "sdrun-transfer", ["--cfg", "job", "--resolve", f"backbone={folder}"], tmp_path,
        monkeypatch, capsys,
    )  # fmt: skip
    assert code == 0, err
    assert yaml.safe_load(out)["backbone"] == folder


# Model settings in a received checkpoint that would make timm read a file.
@pytest.mark.parametrize(
    "kwargs",
    [{"checkpoint_path": "{pickle}"}, {"pretrained_cfg_overlay": {"file": "{pickle}"}},
     {"cache_dir": "{folder}"}],
    ids=["checkpoint_path", "pretrained_cfg_overlay", "cache_dir"],
)  # fmt: skip
def test_backbone_refuses_model_kwargs_that_name_files(kwargs: dict, sd_run: Path, tmp_path: Path):
    from sdrun.transfer.backbone import create_features, open_backbone

    marker = tmp_path / "code-ran"
    pickle_file = tmp_path / "weights.pth"
    torch.save({"x": MakesMarker(marker)}, pickle_file)
    text = yaml.safe_dump(kwargs).replace("{pickle}", str(pickle_file))
    filled = yaml.safe_load(text.replace("{folder}", str(tmp_path)))
    payload = torch.load(sd_run / "checkpoints" / "last.pt", weights_only=True)
    payload["config"]["model"]["kwargs"] = filled
    crafted = tmp_path / "crafted.pt"
    torch.save(payload, crafted)
    with pytest.raises(ConfigError) as refused:
        create_features(open_backbone(str(crafted)), None, None)
    message = str(refused.value)
    assert message.startswith(f"backbone: {crafted}: model.kwargs.{next(iter(kwargs))}")
    assert "names a file" in message and "\n" not in message
    assert not marker.exists()
