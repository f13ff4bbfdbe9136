# sdrun: `make train` and `make test` set everything up themselves (a .venv made here).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ARGS ?=

.PHONY: install train test bench reproduce reproduce-transfer bench-transfer lint format clean

$(BIN)/sdrun: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

install: $(BIN)/sdrun

# The headline experiment; downloads CIFAR-100 into data/ on first use. Extra overrides: ARGS="..."
train: install
	$(BIN)/sdrun dataset=cifar100 model=resnet56 $(ARGS)

test: install
	$(BIN)/python -m pytest -q $(ARGS)

# The CIFAR-100 table of docs/REPRODUCE.md, then outputs/reproduce/report/RESULTS.md. TABLE=selfkd:
# the self-distillation table instead (sd cyclic cosine ls tfkd cskd pskd dlb byot; default
# TABLE=paper: sd cyclic cosine step born-again), in the same folders: shared runs train once.
# Select with MODELS="resnet56 resnet110" METHODS="sd cosine" (of the table's) SEEDS=3 (a count)
# or SEEDS=0,2; SMOKE=1: tiny data, 2 epochs, on the CPU. Run it again to continue: finished
# runs are skipped, killed ones resumed.
# Where the runs go, LAUNCHER=
#   local      (the default where a GPU is visible) one run per GPU at a time, each seeing only
#              its own GPU; GPUS=0,1,2,3 picks them (default: all visible)
#   slurm      every run a SLURM job (submitit); job settings from conf/hydra/launcher/slurm.yaml,
#              changed with SLURM='partition=gpu account=lab timeout_min=1440 qos=high' (any key
#              of that file; quote a value with spaces: SLURM='"setup=[module load cuda]"');
#              a born-again generation waits in SLURM for its teacher's job (afterok); WAIT=0:
#              submit and return (make reproduce again says where each run is and writes the
#              report once all have ended). A job preempted or at its time limit is requeued
#              and continues from its checkpoint.
#   processes  (the default without a GPU) JOBS=N runs at a time as child processes
TABLE ?=
MODELS ?=
METHODS ?=
SEEDS ?=
GENERATIONS ?= 2
OUT ?=
LAUNCHER ?=
GPUS ?=
SLURM ?=
WAIT ?= 1
JOBS ?= 1
SMOKE ?=
reproduce: install
	$(BIN)/python scripts/reproduce.py --table "$(TABLE)" --models "$(MODELS)" --methods "$(METHODS)" \
		--seeds "$(SEEDS)" --generations $(GENERATIONS) --out "$(OUT)" --launcher "$(LAUNCHER)" \
		--gpus "$(GPUS)" --slurm '$(SLURM)' $(if $(filter 0 no false,$(WAIT)),--no-wait) \
		--jobs $(JOBS) $(if $(filter 1 true yes,$(SMOKE)),--smoke) -- $(ARGS)

# Transfer to PASCAL VOC (docs/TRANSFER.md): fine-tune the backbones of a finished `make reproduce`
# tree (FROM, default outputs/reproduce; or BACKBONES="<run dirs> timm:resnet101 ...") on detection
# and segmentation, then FROM/transfer/report/RESULTS.md. Select with MODELS, METHODS, TASKS,
# SEEDS (fine-tuning seeds; default: each backbone's own); SMOKE=1: a tiny VOC tree, on the CPU.
FROM ?=
BACKBONES ?=
TASKS ?=
reproduce-transfer: install
	$(BIN)/python scripts/reproduce_transfer.py --from "$(FROM)" --backbones "$(BACKBONES)" \
		--models "$(MODELS)" --methods "$(METHODS)" --tasks "$(TASKS)" --seeds "$(SEEDS)" \
		--out "$(OUT)" --jobs $(JOBS) $(if $(filter 1 true yes,$(SMOKE)),--smoke) -- $(ARGS)

# Fine-tuning throughput of sdrun-transfer's loop, detection and segmentation (docs/PERFORMANCE.md).
bench-transfer: install
	$(BIN)/python scripts/bench_transfer.py $(ARGS)

# Training throughput: conventional loop vs sdrun vs sdrun + SD teacher, and each self-distillation
# method's step beside the CE baseline (docs/PERFORMANCE.md): `family` is every registered
# self-distillation method; BENCH_METHODS=pskd times one, BENCH_METHODS= none of them.
BENCH_METHODS ?= family
bench: install
	$(BIN)/python scripts/bench.py $(if $(BENCH_METHODS),--methods $(BENCH_METHODS)) $(ARGS)

lint: install
	$(BIN)/ruff check sdrun hydra_plugins tests scripts
	$(BIN)/ruff format --check sdrun hydra_plugins tests scripts

format: install
	$(BIN)/ruff format sdrun hydra_plugins tests scripts
	$(BIN)/ruff check --fix sdrun hydra_plugins tests scripts

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
