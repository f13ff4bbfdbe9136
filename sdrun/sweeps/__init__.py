"""Multiruns and searches: what a sweep records and optimises (`sweep`), its space checked
before the first job (`space_check`), and an Optuna search that continues where it stopped
(`search`, loaded by Hydra through hydra_plugins/sdrun_optuna).
"""
