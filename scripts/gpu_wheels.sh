#!/usr/bin/env bash
# Run on a machine with pip's index, from anywhere: puts into .whl/ (git-ignored) the wheels a
# GPU machine without network may lack, so that `bash scripts/gpu_session.sh` can run there
# (copy the checkout with .whl/). See docs/PERFORMANCE.md, "Measuring on a GPU".
#
# Assumed present on the GPU machine: torch, torchvision, timm, numpy, matplotlib, pyyaml, tqdm,
# pytest, packaging, cloudpickle, typing-extensions. Collected here:
# hydra-core, omegaconf, antlr4-python3-runtime (sdist only: built here as a pure-Python wheel),
# and, for tests/test_launcher.py, hydra-submitit-launcher and submitit. wandb is left out on
# purpose (about 20 MB plus a dozen dependencies); the GPU runs use logger=none and
# gpu_session.sh leaves out tests/test_loggers.py, which imports wandb.
#
# Versions are pinned to this repo's .venv (`make install`). Idempotent: a wheel already in
# .whl/ at the pinned version is kept, other versions of the same package are removed.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
WHL=$ROOT/.whl
PY=${PYTHON:-python3}        # any python with pip: the wheels are pure Python (py3-none-any)
VENV_PY=$ROOT/.venv/bin/python
[ -x "$VENV_PY" ] || { echo "gpu_wheels: no .venv here; run 'make install' first" >&2; exit 1; }

PACKAGES=(hydra-core omegaconf antlr4-python3-runtime submitit hydra-submitit-launcher)
SDIST_ONLY=" antlr4-python3-runtime "
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
           --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
           --platform manylinux1_x86_64)

export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1
pip_() { "$PY" -m pip "$@" 2> >(grep -v 'is ignored: it is neither' >&2); }  # local index noise

mkdir -p "$WHL"
for pkg in "${PACKAGES[@]}"; do
    ver=$("$VENV_PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$pkg")
    stem=$(echo "$pkg" | tr 'A-Z-' 'a-z_')       # wheel file names: lower case, '_' for '-'
    shopt -s nullglob
    for old in "$WHL/$stem"-*.whl; do            # one version of each, or the install stops
        case "$(basename "$old")" in "$stem-$ver-"*) ;; *) echo "removing $old"; rm -f "$old";; esac
    done
    have=("$WHL/$stem-$ver-"*.whl)
    shopt -u nullglob
    if [ ${#have[@]} -gt 0 ]; then
        echo "have     $(basename "${have[0]}")"
        continue
    fi
    if [[ $SDIST_ONLY == *" $pkg "* ]]; then
        echo "building $pkg==$ver"
        pip_ wheel -q --no-deps -w "$WHL" "$pkg==$ver"
    else
        echo "fetching $pkg==$ver"
        pip_ download -q --no-deps --only-binary=:all: \
            --python-version 3.12 --implementation cp "${PLATFORMS[@]}" -d "$WHL" "$pkg==$ver"
    fi
done

# Every wheel must run on the GPU machine's CPython 3.12: pure Python or a cp312 build.
for w in "$WHL"/*.whl; do
    tag=${w%.whl}; tag=${tag#*-*-}               # name-version-[build-]python-abi-platform
    case "$tag" in
        *py3-none-any|*cp312-*) ;;
        *) echo "gpu_wheels: $(basename "$w") will not install on CPython 3.12 x86-64" >&2; exit 1;;
    esac
done

# The install the GPU machine does, into a scratch folder, then imports from it with the venv's
# python (PYTHONPATH comes before the venv's own copies; the check asserts they came from there).
SITE=$(mktemp -d)
trap 'rm -rf "$SITE"' EXIT
pip_ install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHL"/*.whl
PYTHONPATH="$SITE:$ROOT" "$VENV_PY" - "$SITE" <<'EOF'
import sys

import antlr4
import hydra
import omegaconf
import submitit
from hydra_plugins import hydra_submitit_launcher

for mod in (hydra, omegaconf, antlr4, submitit, hydra_submitit_launcher):
    assert mod.__file__.startswith(sys.argv[1]), f"{mod.__name__} not from the wheels: {mod.__file__}"
print(f"imports ok from the wheels: hydra {hydra.__version__}, omegaconf {omegaconf.__version__}")
EOF
# ...and composes sdrun's config with them (Hydra, the schema, the config groups).
PYTHONPATH="$SITE:$ROOT" "$VENV_PY" -m sdrun --cfg job dataset=fake logger=none \
    trainer.device=cuda >/dev/null
echo "sdrun config composes with the wheels"

echo
for w in "$WHL"/*.whl; do printf '%10d  %s\n' "$(stat -c %s "$w")" "$(basename "$w")"; done
du -ch "$WHL"/*.whl | tail -1 | awk '{print "total " $1 " in .whl/ (carry it: carry=[\".whl\"])"}'
