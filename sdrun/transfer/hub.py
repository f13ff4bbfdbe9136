"""timm's pretrained weights (`backbone=timm:<name>`) from the Hugging Face cache, or a fast
one-line failure when they are not there and cannot be fetched.

Left to itself, timm asks the hub for every file it might load and huggingface_hub retries each
request with back-off: without a network that is ~50 s and dozens of warning lines before the
error (a cluster node is often offline). So the cache is looked at first, without a network
(huggingface_hub's `try_to_load_from_cache`): weights found there are loaded in offline mode
(no request at all); otherwise, when `HF_HUB_OFFLINE` is set or the hub does not answer one
request, the run stops at once naming the fix. Weights that timm takes from a URL rather than
the hub (torch hub's own cache) are left to timm.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Optional

from sdrun.errors import ConfigError

PROBE_TIMEOUT_S = 10.0
# What timm's load_state_dict_from_hf asks for, in its order, unless the cfg names a file.
HUB_FILES = ("model.safetensors", "pytorch_model.bin")


def cached_weights(name: str, spec: str) -> Optional[str]:
    """The cached file of timm's weights for `name`; None when timm must fetch them (the hub
    answered); ConfigError when they are not cached and cannot be fetched."""
    from huggingface_hub import constants, try_to_load_from_cache
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    hub_id = getattr(cfg, "hf_hub_id", None)
    if not hub_id:
        return None
    repo, _, revision = hub_id.partition("@")
    files = (cfg.hf_hub_filename,) if getattr(cfg, "hf_hub_filename", None) else HUB_FILES
    for filename in files:
        found = try_to_load_from_cache(repo, filename, revision=revision or None)
        if isinstance(found, str):
            return found
    fix = (
        f"download them once where there is a network into the cache sdrun reads "
        f"({constants.HF_HUB_CACHE}, set by HF_HOME), or use backbone=scratch:{name}"
    )
    if constants.HF_HUB_OFFLINE:
        raise ConfigError(
            f"backbone={spec}: timm's pretrained weights ({repo}) are not in the Hugging Face "
            f"cache and HF_HUB_OFFLINE is set; {fix}"
        )
    problem = _unreachable(constants.ENDPOINT)
    if problem:
        raise ConfigError(
            f"backbone={spec}: timm's pretrained weights ({repo}) are not in the Hugging Face "
            f"cache and {constants.ENDPOINT} cannot be reached ({problem}); {fix}"
        )
    return None


def _unreachable(url: str) -> Optional[str]:
    """Why one request to the hub failed (no retries), or None when it answered."""
    from huggingface_hub import get_session

    try:
        get_session().head(url, timeout=PROBE_TIMEOUT_S)
    except Exception as err:  # noqa: BLE001 - requests and httpx raise their own types
        first = (str(err).strip().splitlines() or [""])[0][:120]
        return f"{type(err).__name__}: {first}" if first else type(err).__name__
    return None


@contextmanager
def offline_if_cached(path: Optional[str]) -> Iterator[None]:
    """Offline mode while timm loads weights found in the cache: it then reads them from there
    without asking the hub whether they changed."""
    if path is None:
        yield
        return
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before
