#!/usr/bin/env bash
# Run on the GPU machine, from the repo root (a copy of the checkout with .whl/ from
# `bash scripts/gpu_wheels.sh`): bash scripts/gpu_session.sh. Every GPU measurement and check
# in one go, within GPU_SESSION_BUDGET seconds (default 510, to fit a 10-minute slot): each step runs under
# `timeout`, a failed or timed-out step is logged and the next one runs, a step with too little
# time left is skipped (summary.txt says so). Steps, most important first:
#   gpu     python3 -m pytest -q -x tests/test_gpu.py                       -> pytest_gpu.log
#   bench   scripts/bench.py, ResNet-56, batch 128, 200 steps, 6 variants  -> bench.jsonl, bench.log
#   runs    short `python3 -m sdrun` trainings on CUDA (fake data)         -> runs.log
#   suite   the whole test suite with CUDA visible                          -> pytest_all.log
# GPU_SESSION_STEPS="runs suite" runs only those groups (a second call for what was skipped).
# $OUT (default ./gpu-out) gets at most 8 files: summary.txt, env.txt and the logs above.
set -uo pipefail # no -e: a failing step must not stop the next

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
OUT=${OUT:-$ROOT/gpu-out}
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
BUDGET=${GPU_SESSION_BUDGET:-510}
GROUPS_WANTED=" ${GPU_SESSION_STEPS:-gpu bench runs suite} "
PY=${PYTHON:-python3}
SITE=${SITE:-/tmp/site}
SCRATCH=$(mktemp -d /tmp/gpu-session.XXXXXX)
START=$SECONDS
SUMMARY=$OUT/summary.txt
ENVLOG=$OUT/env.txt
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled WANDB_SILENT=true PIP_ROOT_USER_ACTION=ignore
: >"$SUMMARY"
: >"$ENVLOG"

say() { echo "[gpu_session $((SECONDS - START))s] $*"; }
wanted() { [[ $GROUPS_WANTED == *" $1 "* ]]; }

# step NAME CAP LOG CMD...: CMD under timeout min(CAP, time left), output appended to LOG;
# one line in summary.txt (rc, seconds); sets LAST_RC (124/137: timed out; "skipped").
step() {
    local name=$1 cap=$2 log=$3
    shift 3
    local left=$((BUDGET - (SECONDS - START)))
    local limit=$((cap < left ? cap : left))
    if ((limit < 20)); then
        LAST_RC=skipped
        printf '%-34s rc=skipped (%ds of the %ds budget left)\n' "$name" "$left" "$BUDGET" >>"$SUMMARY"
        say "$name: skipped, ${left}s left"
        return
    fi
    say "$name (limit ${limit}s)"
    echo "===== $name: $* (limit ${limit}s)" >>"$log"
    local t0=$SECONDS
    timeout -k 5 "$limit" "$@" >>"$log" 2>&1
    LAST_RC=$?
    local note=""
    ((LAST_RC == 124 || LAST_RC == 137)) && note="  (timed out at ${limit}s)"
    echo "===== $name: rc=$LAST_RC in $((SECONDS - t0))s" >>"$log"
    printf '%-34s rc=%-3s %4ds%s\n' "$name" "$LAST_RC" "$((SECONDS - t0))" "$note" >>"$SUMMARY"
    say "$name: rc=$LAST_RC in $((SECONDS - t0))s"
}

# --- the missing packages (hydra, omegaconf, ...) from .whl/, and the repo itself ------------
say "installing .whl/ into $SITE"
if ls .whl/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE" .whl/*.whl >>"$ENVLOG" 2>&1 || echo "pip install of .whl/ FAILED" >>"$ENVLOG"
else
    echo "no .whl/ here: run scripts/gpu_wheels.sh there and carry .whl" | tee -a "$ENVLOG"
fi
export PYTHONPATH="$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
HAVE_WANDB=0
"$PY" -c "import wandb" 2>/dev/null && HAVE_WANDB=1

{
    echo "== date: $(date -u +%FT%TZ)  host: $(hostname)  cpus: $(nproc)"
    echo "== git: $(git rev-parse HEAD 2>/dev/null || echo 'no .git')"
    git status --short 2>/dev/null | head -40
    echo "== nvidia-smi"
    nvidia-smi 2>&1 || echo "nvidia-smi failed or missing"
    echo "== python packages"
    "$PY" - <<'EOF' 2>&1
import importlib.metadata as md
import platform

import torch

print("python", platform.python_version(), "| torch", torch.__version__, "| cuda", torch.version.cuda,
      "| cudnn", torch.backends.cudnn.version(), "| cuda available", torch.cuda.is_available())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("gpu", p.name, f"{p.total_memory / 2**30:.1f} GiB", p.multi_processor_count, "SMs")
for name in ("torchvision", "triton", "timm", "numpy", "hydra-core", "omegaconf", "pytest",
             "pytest-timeout", "wandb", "submitit", "hydra-submitit-launcher"):
    try:
        print(f"{name} {md.version(name)}")
    except md.PackageNotFoundError:
        print(f"{name} MISSING")
import hydra, omegaconf, sdrun  # noqa: E401,F401  the imports every step needs
print("import hydra, omegaconf, sdrun: ok")
EOF
} >>"$ENVLOG"
gpu=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1)
printf '%-34s %s\n' "device" "${gpu:-no GPU seen by nvidia-smi}" >>"$SUMMARY"
say "environment recorded in env.txt"

# --- a: the GPU tests (cpu and cuda parametrizations) ----------------------------------------
if wanted gpu; then
    step "pytest tests/test_gpu.py" 150 "$OUT/pytest_gpu.log" \
        "$PY" -m pytest -q -x -p no:cacheprovider tests/test_gpu.py
fi

# --- b: the benchmark matrix (ResNet-56, batch 128); the reference loop runs in `plain` only --
bench() { # bench VARIANT CAP EXTRA_ARGS...
    local variant=$1 cap=$2
    shift 2
    local log=$SCRATCH/bench_$variant.log
    local args=(--device cuda --model resnet56 --batch-size 128 --steps 200 --warmup 20 --json "$@")
    step "bench $variant" "$cap" "$log" "$PY" scripts/bench.py "${args[@]}"
    cat "$log" >>"$OUT/bench.log" 2>/dev/null
    "$PY" - "$variant" "$LAST_RC" "$log" "scripts/bench.py ${args[*]}" >>"$OUT/bench.jsonl" <<'EOF'
import json
import sys

variant, rc, log, command = sys.argv[1:5]
result = None
try:
    for line in open(log, errors="replace"):
        if line.startswith("{"):
            try:
                result = json.loads(line)
            except ValueError:
                pass
except OSError:
    pass
rc = int(rc) if rc.lstrip("-").isdigit() else rc
print(json.dumps({"variant": variant, "rc": rc, "command": command, "result": result}))
EOF
}
if wanted bench; then
    : >"$OUT/bench.jsonl"
    # Cheapest first, so a slow compile cannot starve them; compile variants share Inductor's
    # on-disk cache (the same student graphs), so the later ones compile faster.
    bench plain 150
    bench precompute 90 --skip-reference --teacher-precompute 1024
    bench fp16 90 --skip-reference --amp fp16
    bench compile 200 --skip-reference --compile
    bench compile_precompute 150 --skip-reference --compile --teacher-precompute 1024
    bench compile_reduce_overhead 150 --skip-reference --compile --compile-mode reduce-overhead
fi

# --- c: short real trainings through the CLI: fake data, ResNet-20, 2 cycles of 1 epoch (the
# second one distils from the first's snapshot); run dirs in scratch, their files in runs.log --
train() { # train NAME CAP EXTRA_OVERRIDES...
    local name=$1 cap=$2
    shift 2
    local dir=$SCRATCH/$name
    step "sdrun $name" "$cap" "$OUT/runs.log" "$PY" -m sdrun dataset=fake dataset.num_train=512 \
        dataset.num_test=256 dataset.batch_size=128 dataset.eval_batch_size=256 model=resnet20 \
        schedule.epochs=2 schedule.cycle_length=1 logger=none trainer.device=cuda \
        trainer.log_every=1 "hydra.run.dir=$dir" "$@"
    for f in metrics.jsonl summary.json; do
        echo "----- $name/$f" >>"$OUT/runs.log"
        cat "$dir/$f" >>"$OUT/runs.log" 2>&1
    done
    "$PY" - "$name" "$dir/summary.json" >>"$SUMMARY" 2>/dev/null <<'EOF'
import json
import sys

s = json.load(open(sys.argv[2]))
keys = ("student/top1", "teacher/top1", "ensemble/top1", "time/train_s", "time/wall_s")
print(f"  {sys.argv[1]}: " + ", ".join(f"{k} {s[k]:.2f}" for k in keys if k in s))
EOF
}
if wanted runs; then
    : >"$OUT/runs.log"
    train run_bf16 90 trainer.amp=bf16
    train run_fp16 90 trainer.amp=fp16
    train run_precompute 90 trainer.teacher_precompute=256
    train run_compile 180 trainer.compile=true
    train run_compile_reduce_overhead 150 trainer.compile=true trainer.compile_mode=reduce-overhead
fi

# --- d: the whole suite with CUDA visible (test_gpu.py ran above; test_loggers.py imports wandb,
# which is not carried) ------------------------------------------------------------------------
if wanted suite; then
    skip=(--ignore=tests/test_gpu.py)
    ((HAVE_WANDB)) || skip+=(--ignore=tests/test_loggers.py)
    # The image has pytest-xdist (the suite passes under -n; it takes 10 minutes serially on 2
    # CPU cores) and pytest-timeout (one hung test must not eat the step).
    extra=()
    workers=${GPU_SESSION_SUITE_WORKERS:-8}
    ((workers > 0)) && "$PY" -c "import xdist" 2>/dev/null && extra+=(-n "$workers")
    "$PY" -c "import pytest_timeout" 2>/dev/null && extra+=(--timeout=200)
    step "pytest (whole suite)" 300 "$OUT/pytest_all.log" \
        "$PY" -m pytest -q -p no:cacheprovider "${skip[@]}" "${extra[@]}"
    last=$(grep -E '[0-9]+ (passed|failed|errors?)' "$OUT/pytest_all.log" 2>/dev/null | tail -1)
    echo "  ${last:-no pytest summary line (killed or skipped): see pytest_all.log}" >>"$SUMMARY"
fi

# --- summary: the bench ratios per variant ---------------------------------------------------
if [ -s "$OUT/bench.jsonl" ]; then
    "$PY" - "$OUT/bench.jsonl" >>"$SUMMARY" 2>&1 <<'EOF'
import json
import sys

rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
ref = next((r["result"]["reference"] for r in rows if r["result"] and "reference" in r["result"]), None)
first = next((r["result"] for r in rows if r["result"]), None) or {"model": "?", "batch_size": "?"}
print(f"\nbench ({first['model']}, batch {first['batch_size']}): sd/base = SD step time / baseline step time (target <= 1.15);"
      "\nbase/ref = baseline img/s / the plain run's reference img/s (>= 3); mem = SD / baseline peak"
      " memory (<= 1.10)")
print(f"{'variant':26} {'amp':>14} {'ref img/s':>9} {'base img/s':>10} {'sd img/s':>9} "
      f"{'base ms':>8} {'sd ms':>7} {'sd/base':>7} {'base/ref':>8} {'mem':>6}")
if ref:
    print(f"{'reference (fp32, eager)':26} {'':>14} {ref['img_per_s']:9.0f}")
for r in rows:
    res = r["result"]
    if not res:
        print(f"{r['variant']:26} no result (rc={r['rc']}; see bench.log)")
        continue
    b, s = res["baseline"], res["sd"]
    speed = b["img_per_s"] / ref["img_per_s"] if ref else float("nan")
    mem = (s["peak_mem_mb"] / b["peak_mem_mb"]) if b["peak_mem_mb"] and s["peak_mem_mb"] else float("nan")
    print(f"{r['variant']:26} {res['amp']:>14} {'':9} {b['img_per_s']:10.0f} {s['img_per_s']:9.0f} "
          f"{b['ms_per_step']:8.2f} {s['ms_per_step']:7.2f} {res['sd_over_baseline_time']:7.3f} "
          f"{speed:8.2f} {mem:6.3f}")
EOF
fi
printf '\n%-34s %ds (budget %ds)\n' "total" "$((SECONDS - START))" "$BUDGET" >>"$SUMMARY"
rm -rf "$SCRATCH"
say "done; files in $OUT:"
ls -la "$OUT"
cat "$SUMMARY"
