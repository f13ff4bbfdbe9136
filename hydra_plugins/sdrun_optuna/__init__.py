"""sdrun's Optuna sweeper for Hydra (conf/hparams_search/sd_optuna.yaml): Hydra's own, made to
continue a stopped search (sdrun/sweeps/search.py). Hydra only loads sweepers from the hydra_plugins
namespace, hence this package; everything else lives in sdrun."""
