"""The teacher -> student -> distill workflow behind `kdkeras teacher|student|distill`.

- `phases`: builds a phase's data, models and Distiller from a config.
- `training`: `run_phase`, which fits, evaluates and writes the run's files.
- `runs`: the run folder and the names of its files; `callbacks`, `optimizers`,
  `fit_metrics`, `progress`: the pieces `fit` is given.
- `transfer`: unlabeled transfer sets; `sweep`: temperature x alpha grids.
"""
