"""Multiruns and searches: what a sweep records and optimises (`sweep`), its space checked
before the first job (`space_check`), and the Optuna search that Hydra runs through
hydra_plugins/sdrun_optuna: its loop (`search`), its space as Optuna distributions (`space`),
its study, pruner and sampler (`study`), which process runs which trial (`claims`), a trial as
a job's checked overrides (`trials`), a job reporting to its trial (`pruning`), the best trial
(`results`) and its setting retrained on seeds (`retrain`).
"""

# The logger tag of the runs that retrain a search's best setting (`retrain`): sdrun-report
# labels their row "chosen on the validation split". Here, not in a module of its own: the
# report imports it, and imports nothing heavy (this file imports nothing).
CHOSEN_ON_VALIDATION = "chosen-on-val"
