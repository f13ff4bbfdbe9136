"""SD backbone's gain over each other backbone in the transfer table, compared like with like.

Two transfer rows are compared when they fine-tuned the same network on the same task the same
way, and their backbones were pre-trained with the same recipe apart from the method: the main
table's rule (identity.differences) applied to the backbones' own run identities. SD backbones
of 240 epochs at batch 128 against cosine backbones of 2 epochs at batch 64 measure the recipe,
not the method: such pairs are listed as not compared, with the settings that differ, as are
backbones whose recipe is not known (timm's weights, a checkpoint outside any run folder).

Each gain says its unit (transfer.py: `TransferRow.samples`): backbones against backbones (the
pre-training seed is the sample), or the fine-tuning runs of one backbone (fine-tuning spread
only: it says nothing about another pre-training seed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sdrun.report.identity import differences
from sdrun.report.stats import Difference
from sdrun.report.transfer import BACKBONE_UNIT, SD, TransferRow, gain


@dataclass
class TransferGain:
    sd: TransferRow
    other: TransferRow
    diff: Difference

    @property
    def unit(self) -> str:
        """What each side's samples are, in words."""
        sides = [_unit(row) for row in (self.sd, self.other)]
        text = sides[0] if sides[0] == sides[1] else f"{sides[0]} vs {sides[1]}"
        if BACKBONE_UNIT not in (self.sd.unit, self.other.unit):
            return f"{text}: fine-tuning spread only, not another pre-training seed"
        if self.sd.unit != self.other.unit:
            return f"{text}: mixes pre-training and fine-tuning spread"
        return text


def _unit(row: TransferRow) -> str:
    n = len(row.samples())
    if row.unit == BACKBONE_UNIT:
        return f"{n} backbones"
    return f"{n} fine-tuning run{'s' if n > 1 else ''} of one backbone"


@dataclass
class TransferNotCompared:
    sd: TransferRow
    other: TransferRow
    reasons: list[str]


def recipe_known(row: TransferRow) -> bool:
    """Whether every backbone of the row was identified by its pre-training run folder."""
    return all(bb.note is None and bb.seed is not None for bb in row.backbones.values())


def backbone_differences(sd: TransferRow, other: TransferRow) -> list[str]:
    """How the two rows' backbone pre-training recipes differ, the method aside."""
    unknown = [row.label for row in (sd, other) if not recipe_known(row)]
    if unknown:
        return [f"pre-training recipe not known for {', '.join(unknown)} (not an sdrun run "
                "folder the report was given): the gain could be the recipe's"]  # fmt: skip
    found = differences(dict(sd.backbone_recipe), dict(other.backbone_recipe))
    return [f"backbone {d}" for d in found]


def sd_gains(rows: Sequence[TransferRow]) -> tuple[list[TransferGain], list[TransferNotCompared]]:
    """SD's gain over every other backbone fine-tuned the same way on the same network, when
    the backbones' recipes agree; the other pairs with why."""
    gains, skipped = [], []
    for sd in (r for r in rows if r.method == SD):
        for other in rows:
            same = (other.task, other.model, other.recipe) == (sd.task, sd.model, sd.recipe)
            if not same or other.method == SD:
                continue
            reasons = backbone_differences(sd, other)
            if reasons:
                skipped.append(TransferNotCompared(sd, other, reasons))
            else:
                gains.append(TransferGain(sd, other, gain(sd, other)))
    return gains, skipped
