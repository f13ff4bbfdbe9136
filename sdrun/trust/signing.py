"""Own versus received: which run folders this user's sdrun made.

As Jupyter signs the notebooks a user ran, sdrun signs the settings of every run folder it
makes: an HMAC-SHA256, with a per-user secret key (created on first use, mode 0600, in the
user's config folder), over the run's `.hydra/overrides.yaml`, kept in `.sdrun-signature`. A
folder whose signature verifies is the user's own; any other folder (from a collaborator, a
paper's artifact, or changed by hand) is received. From a received folder sdrun takes no setting
that reaches beyond the folder (`received.py`). `sdrun-trust <folder>` signs a folder the user
has looked at, so that it resumes as their own.

The key never leaves the machine, so nobody else can make a folder that verifies here; the
signature covers the settings sdrun would take from the folder, not the checkpoints and
metrics, which are checked on their own whoever made them.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from sdrun.trust import files

SIGNATURE = ".sdrun-signature"
SIGNED = Path(".hydra") / "overrides.yaml"
_KEY_ENV = "SDRUN_CONFIG_DIR"  # where the key lives (tests, several users on one account)
_DOMAIN = b"sdrun run folder v1\0"


def config_dir() -> Path:
    """The user's sdrun config folder: $SDRUN_CONFIG_DIR, else $XDG_CONFIG_HOME/sdrun, else
    ~/.config/sdrun."""
    if os.environ.get(_KEY_ENV):
        return Path(os.environ[_KEY_ENV])
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "sdrun"


def _key() -> bytes:
    """The per-user secret, made on first use (mode 0600, created exclusively: two processes
    starting at once agree on one key)."""
    path = config_dir() / "folder-signing.key"
    with contextlib.suppress(FileNotFoundError):
        return bytes.fromhex(files.read_text(path, cap=1024).strip())
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = secrets.token_bytes(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:  # another process made it first
        return bytes.fromhex(files.read_text(path, cap=1024).strip())
    with os.fdopen(fd, "w") as f:
        f.write(key.hex() + "\n")
    return key


def _mac(content: bytes) -> str:
    return hmac.new(_key(), _DOMAIN + content, hashlib.sha256).hexdigest()


def seal(content: bytes, purpose: str) -> str:
    """This user's HMAC of `content` for `purpose` (a domain of its own: a seal made for one
    purpose never verifies for another), e.g. sdrun-report's record of the files it wrote."""
    domain = f"sdrun {purpose}\0".encode()
    return hmac.new(_key(), domain + content, hashlib.sha256).hexdigest()


def verifies(content: bytes, purpose: str, saved: object) -> bool:
    """Whether `saved` is `seal(content, purpose)` (compared in constant time)."""
    return isinstance(saved, str) and hmac.compare_digest(saved, seal(content, purpose))


def sign(run_dir: Path) -> None:
    """Mark `run_dir`'s current settings as this user's (after Hydra wrote them)."""
    run_dir = Path(run_dir)
    content = files.read_bytes(run_dir / SIGNED) if (run_dir / SIGNED).exists() else b""
    files.write_text(run_dir / SIGNATURE, _mac(content) + "\n")


def is_own(run_dir: Path) -> bool:
    """Whether `run_dir`'s settings carry this user's signature. A folder with no signature,
    a wrong one, or unreadable files is received."""
    run_dir = Path(run_dir)
    try:
        saved = files.read_text(run_dir / SIGNATURE, cap=1024).strip()
        content = files.read_bytes(run_dir / SIGNED) if (run_dir / SIGNED).exists() else b""
    except (OSError, UnicodeError, files.UnsafeFile):
        return False
    return hmac.compare_digest(saved, _mac(content))
