"""One run's training: the runner (`runner.run`) builds a run's parts (`parts`), walks the
cycle plan (`schedule`) and calls the one epoch loop (`engine.train_one_epoch`) with a method's
per-batch step (`batch_step`, `sdrun.methods`). Where the teacher comes from and when it is
swapped in is `teaching.py` (`take_snapshot`), its frozen, BN-folded copy `frozen_teacher.py`
and `folding.py`; test/validation scores `evaluation.py`, the snapshot ensemble `ensemble.py`, the
summary `summary.py`.
"""
