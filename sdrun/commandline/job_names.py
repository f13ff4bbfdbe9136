"""A multirun job's folder name."""

from __future__ import annotations

import hashlib
import re
from typing import Any

from sdrun.sweeps import sweep

MAX_DIRNAME = 240  # file systems allow 255 bytes per name; leave room for the job number


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
