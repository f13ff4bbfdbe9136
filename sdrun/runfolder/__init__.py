"""The run folder and what keeps it whole, shared by sdrun and sdrun-transfer: opening it
(`run_folder.opened`: lock, resume check, numerics, seed), its state across sessions
(`run_state`: last.pt's contents, exact resume; `checkpoint`: atomic, checksummed files;
`resume_checks`: an untrusted checkpoint's structure), stops (`interrupt`), processes
(`distributed`), devices and AMP (`runtime`), metrics and loggers (`loggers`, `wandb_record`,
`run_plots`), and what identifies a run (`identity`).
"""
