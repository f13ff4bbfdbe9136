"""From a command line to a checked config, on Hydra's side: where the configs are and how
pasted paths and `resume=` reach Hydra (`overrides`), a received run folder's saved overrides
and model settings read as data (`saved_overrides`, `model_files`), Hydra's errors as one line
(`hydra_errors`), the run directory guarded around the task (`run_dir_guard`), multirun job
folders (`job_names`).
"""
