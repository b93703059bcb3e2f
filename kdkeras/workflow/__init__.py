"""The teacher -> student -> distill workflow behind `kdkeras teacher|student|distill`.

- `phases`: builds a phase's data, models and Distiller from a config.
- `training`: `run_phase`, which fits, evaluates and writes the run's files.
- `callbacks`, `optimizers`, `fit_metrics`, `progress`: the pieces `fit` is given
  (the run folder and its file names are `kdkeras.runs`, below reporting).
- `transfer`: unlabeled transfer sets; `sweep`: temperature x alpha grids.
"""

# Importing the package registers its optimizers (`kdkeras.registry.OPTIMIZERS`).
from kdkeras.workflow import optimizers  # noqa: E402,F401
