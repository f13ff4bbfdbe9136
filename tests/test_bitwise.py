"""Refactors change no number sdrun produces: tiny deterministic CPU runs of every training path
(sd, none on SD's cycles, step, kd from a saved teacher, ls, tfkd, cskd, pskd, dlb, byot;
sdrun-transfer detection and segmentation) end with the recorded final weights (sha256) and
metrics.jsonl values, bitwise.

The reference is tests/data/bitwise_reference.json, written by tests/bitwise_record.py (which
also defines the runs). A failure names the run and the first key that differs.
"""

from __future__ import annotations

import json
from pathlib import Path

from bitwise_record import REFERENCE, record_all


def first_difference(expected: dict, got: dict) -> list[str]:
    """`case: key: expected vs got` for every differing key, in a stable order."""
    out = []
    for case in sorted(set(expected) | set(got)):
        want, have = expected.get(case, {}), got.get(case, {})
        for key in sorted(set(want) | set(have)):
            if want.get(key, "<missing>") != have.get(key, "<missing>"):
                out.append(f"{case}: {key}: {want.get(key, '<missing>')} vs "
                           f"{have.get(key, '<missing>')}")  # fmt: skip
    return out


def test_every_training_path_reproduces_the_recorded_numbers_bitwise(
    cifar100_root: Path, voc_root: Path, tmp_path: Path
):
    expected = json.loads(REFERENCE.read_text())
    got = json.loads(json.dumps(record_all(tmp_path, cifar100_root, voc_root)))
    differences = first_difference(expected, got)
    assert not differences, (
        f"{len(differences)} value(s) differ from {REFERENCE.name} (expected vs got); first: "
        + "; ".join(differences[:5])
    )
