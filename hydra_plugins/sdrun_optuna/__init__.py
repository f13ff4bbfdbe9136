"""sdrun's Optuna sweeper for Hydra (conf/hydra/sweeper/sdrun_optuna.yaml, used by the
hparams_search presets): Hydra instantiates sweepers of this namespace only, hence this package;
the search itself lives in sdrun/sweeps/."""
