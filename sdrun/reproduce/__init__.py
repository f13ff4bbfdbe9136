"""`make reproduce` (scripts/reproduce.py): a CIFAR-100 table of runs in fixed folders (`plan`),
run on this machine's CPU or GPUs (`here`) or as SLURM jobs (`slurm`, with `slurm_settings`)
through submitit (`job`: one run as a submitit job), what each run is doing (`board`), then
the report (`cli`)."""
