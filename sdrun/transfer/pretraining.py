"""How a run's checkpoint was pre-trained, for the label a transfer run and its report carry.

A checkpoint is labelled with the report's method name of its run (`sd`, `cyclic`, `cosine`,
`step`, `born-again-g<k>`) only when it holds what that method produces: the run's final
weights (`last.pt` after its last epoch). Anything else says what it is:

- a run that did not finish (killed, stopped, diverged: `last.pt` before the last epoch) is
  refused, unless `backbone_allow_incomplete=true`; it is then `<method>@epoch<k>` (k epochs
  done), and `<untaught>@epoch<k>` if no teacher had taught it yet (SD in its first cycle);
- a cycle checkpoint (`cycle<k>.pt`, the weights at the end of cycle k) is `<method>@cycle<k>`
  if a teacher taught that cycle, else `<untaught>@cycle<k>`: SD's cycle 1 has no teacher, so
  its `cycle1.pt` is `cyclic@cycle1` (what a cyclic-LR run without distillation gives).

`<untaught>` is the method's name without distillation (`cyclic` for SD's cyclic schedule).
Cycle checkpoints record whether a teacher taught them (`taught`, see
`sdrun.runfolder.run_state.save_cycle_snapshot`); one written by an older sdrun does not: its
first cycle is labelled by the method's rule (SD and no distillation: no teacher; KD: its
teacher), a later cycle of an SD run as `sd@cycle<k>-unverified` (a row of its own in the
report), with a warning.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from sdrun.errors import CheckpointError
from sdrun.runfolder.checkpoint import run_dir_of

log = logging.getLogger(__name__)

ALLOW_INCOMPLETE = "backbone_allow_incomplete"
UNVERIFIED = "-unverified"


@dataclass(frozen=True)
class Pretraining:
    label: str  # backbone/method: what the report groups by
    epoch: Optional[int]  # epochs the weights had trained
    epochs: Optional[int]  # epochs the run was to train
    cycle: Optional[int] = None  # a cycle checkpoint's cycle
    taught: Optional[bool] = None  # whether a teacher had taught the weights (None: unknown)

    @property
    def complete(self) -> bool:
        return self.cycle is None and self.epoch is not None and self.epoch == self.epochs

    def summary(self) -> dict[str, Any]:
        return {
            "backbone/complete": self.complete,
            "backbone/epoch": self.epoch,
            "backbone/epochs": self.epochs,
            "backbone/cycle": self.cycle,
            "backbone/taught": self.taught,
        }


def method_name(checkpoint: Path, config: dict[str, Any], taught: bool = True) -> str:
    """The report's name for how the run trained; with `taught=False`, the name of the same
    recipe without a teacher (what weights no teacher has taught yet are)."""
    from sdrun.report.runs import Run
    from sdrun.report.teachers import link_teachers

    if not taught:
        config = {**config, "distill.name": "none"}
    run = Run(run_dir_of(checkpoint) or checkpoint, config, {}, [])
    link_teachers([run])
    return run.method


def read_pretraining(
    spec: str, checkpoint: Path, payload: dict[str, Any], config: dict[str, Any],
    allow_incomplete: bool,
) -> Pretraining:  # fmt: skip
    """The label of `checkpoint` (`payload`, its flattened `config`); refuses a run that did
    not finish unless `allow_incomplete`."""
    epochs = _int(config.get("schedule.epochs"))
    epoch = _int(payload.get("epoch"))
    if "cycle" in payload and "optimizer" not in payload:  # a cycle checkpoint
        cycle = _int(payload.get("cycle"))
        if cycle is None:
            raise CheckpointError(f"backbone={spec}: {checkpoint} has a malformed 'cycle' entry")
        taught, label = _cycle_taught(checkpoint, payload, config, cycle)
        return Pretraining(label, epoch, epochs, cycle, taught)
    taught = payload.get("teacher") is not None or config.get("distill.name") == "kd"
    if epoch is not None and epoch == epochs and not payload.get("epoch_tally"):
        return Pretraining(method_name(checkpoint, config), epoch, epochs, taught=taught)
    label = f"{method_name(checkpoint, config, taught)}@epoch{epoch if epoch is not None else '?'}"
    if not allow_incomplete:
        done = f"after epoch {epoch} of {epochs}" if epoch is not None else "at an unknown epoch"
        raise CheckpointError(
            f"backbone={spec}: {checkpoint} is from a run that stopped {done} (killed, stopped "
            f"or diverged), not a finished {method_name(checkpoint, config)} backbone; finish "
            f"it with resume=, or pass {ALLOW_INCOMPLETE}=true to fine-tune it as {label}"
        )
    log.warning("backbone: %s stopped %s epoch(s) into %s: fine-tuned as %s (%s=true)",
                checkpoint, epoch, epochs, label, ALLOW_INCOMPLETE)  # fmt: skip
    return Pretraining(label, epoch, epochs, taught=taught)


def _cycle_taught(checkpoint: Path, payload: dict[str, Any], config: dict[str, Any],
                  cycle: int) -> tuple[Optional[bool], str]:  # fmt: skip
    recorded = payload.get("taught")
    if isinstance(recorded, bool):
        return recorded, f"{method_name(checkpoint, config, recorded)}@cycle{cycle}"
    distill = config.get("distill.name")
    if distill != "sd" or cycle == 1:  # KD teaches from the start, SD from cycle 2, none never
        taught = distill == "kd"
        return taught, f"{method_name(checkpoint, config, taught)}@cycle{cycle}"
    label = f"{method_name(checkpoint, config)}@cycle{cycle}{UNVERIFIED}"
    log.warning("backbone: %s was written by an older sdrun that did not record whether a "
                "teacher taught cycle %d: labelled %s", checkpoint, cycle, label)  # fmt: skip
    return None, label


def _int(value: Any) -> Optional[int]:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
