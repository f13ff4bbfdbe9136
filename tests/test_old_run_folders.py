"""Run folders and checkpoints of an sdrun before each method had its own settings (sdrun up
to 6dfa10d: one flat `distill` block of every method's twelve keys, and command lines that
could set a key the method never read) resume bitwise, are compared on what their method reads
and report as they did (sdrun/methods/legacy.py).

The old layout is made here from a run of today's code: its `.hydra/config.yaml`,
`.hydra/overrides.yaml` and every checkpoint's `config` carry the flat block as that sdrun
wrote it (`OLD_DISTILL`, its DistillConfig's defaults, pinned)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from helpers import sdrun_here, train
from resume_helpers import Killed, assert_same_run, interrupt_at, kill, last
from test_config import compose_cfg

from sdrun.errors import CheckpointError
from sdrun.methods import default_settings
from sdrun.report import build_report
from sdrun.runfolder.run_state import check_same_run, method_defaults
from sdrun.trust import signing

# sdrun <= 6dfa10d's DistillConfig: every method's keys in one block, whatever the method.
OLD_DISTILL = {"name": "sd", "temperature": 2.0, "ce_weight": 1.0, "kd_weight": 1.0,
               "smooth": "teacher", "teacher_checkpoint": None, "eps": 0.1, "alpha": 0.1,
               "multiplier": 100.0, "correct_prob": 0.99, "alpha_T": 0.8,
               "feature_weight": 1.28e-4}  # fmt: skip


def pskd_args(root: Path) -> list[str]:
    """`distill=pskd`, 2 epochs of one 32-image step, deterministic on the CPU."""
    return [f"dataset.root={root}", "dataset.download=false", "dataset.limit_train=32",
            "dataset.limit_test=32", "dataset.batch_size=32", "dataset.eval_batch_size=32",
            "model=resnet20", "distill=pskd", "schedule.epochs=2", "schedule.lr_min=0.001",
            "optim.lr=0.05", "logger=none", "trainer.device=cpu",
            "trainer.deterministic=true"]  # fmt: skip


def to_old_layout(run_dir: Path, overrides: list[str], block: dict, seed: int = 0) -> None:
    """Rewrite a run folder as the old sdrun wrote it: `block` as its `distill`, `overrides`
    as its command line, in its saved config and every checkpoint's."""
    hydra = run_dir / ".hydra"
    config = yaml.safe_load((hydra / "config.yaml").read_text())
    config["distill"], config["seed"] = block, seed
    (hydra / "config.yaml").write_text(yaml.safe_dump(config))
    (hydra / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    for path in (run_dir / "checkpoints").glob("*.pt"):
        payload = torch.load(path, weights_only=True)
        payload["config"]["distill"], payload["config"]["seed"] = block, seed
        torch.save(payload, path)


@pytest.fixture(scope="module")
def reference(cifar100_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted pskd run, in today's layout."""
    run_dir = tmp_path_factory.mktemp("old_folders") / "reference"
    train(compose_cfg(*pskd_args(cifar100_root)), run_dir)
    return run_dir


def test_an_old_folder_resumes_bitwise_and_drops_a_key_its_method_never_read(
    reference: Path, cifar100_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    args = pskd_args(cifar100_root)
    old = tmp_path / "old"
    interrupt_at(monkeypatch, "pskd", 2, kill)  # epoch 2's step: last.pt is epoch 1's
    with pytest.raises(Killed):
        train(compose_cfg(*args), old)
    monkeypatch.undo()
    assert last(old)["epoch"] == 1
    # the old sdrun accepted a key pskd never reads, and saved it in the flat block
    to_old_layout(old, [*args, "distill.temperature=3"], {**OLD_DISTILL, "name": "pskd",
                                                          "temperature": 3.0})  # fmt: skip

    signing.sign(old)  # the user's own folder (an older sdrun signed none: sdrun-trust)
    changed = sdrun_here(f"resume={old}", "distill.alpha_T=0.5", cwd=tmp_path)
    assert changed.returncode != 0  # what pskd reads is still compared with the checkpoint
    assert "distill.alpha_T=0.5" in changed.stderr and "0.8" in changed.stderr

    proc = sdrun_here(f"resume={old}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    note = [line for line in proc.stderr.splitlines() if "distill.temperature=3" in line]
    assert len(note) == 1 and "dropped" in note[0] and "never read" in note[0]
    assert_same_run(reference, old)


def test_an_old_folder_is_the_same_report_row_as_todays(reference: Path, tmp_path: Path):
    """An old folder of seed 1 (whose flat block holds a temperature pskd never read) and
    today's seed 0 are one row of two seeds, labelled as before."""
    old = tmp_path / "old"
    shutil.copytree(reference, old)
    to_old_layout(old, [], {**OLD_DISTILL, "name": "pskd", "temperature": 3.0}, seed=1)
    summary = json.loads((old / "summary.json").read_text())
    (old / "summary.json").write_text(json.dumps({**summary, "seed": 1}))
    report = build_report([reference, old], tmp_path / "report")
    assert [(row.label, len(row.runs)) for row in report.rows] == [("pskd", 2)]


def test_a_method_key_newer_than_a_checkpoint_resumes_at_its_default(tmp_path: Path):
    """A checkpoint written before a method had a key ran what the key's default computes:
    that value resumes, any other is refused (the runner passes the method's defaults)."""
    saved = {"distill": {"name": "pskd"}}  # alpha_T not yet a key when it was written
    defaults = method_defaults(default_settings("pskd"))
    assert defaults == {"distill.name": "pskd", "distill.alpha_T": 0.8}
    check_same_run(
        {"distill": {"name": "pskd", "alpha_T": 0.8}}, saved, tmp_path, defaults=defaults
    )
    with pytest.raises(CheckpointError, match="distill.alpha_T=0.5"):
        check_same_run({"distill": {"name": "pskd", "alpha_T": 0.5}}, saved, tmp_path,
                       defaults=defaults)  # fmt: skip
