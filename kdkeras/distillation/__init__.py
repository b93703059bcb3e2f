"""Everything the Distiller's loss is made of, in one package.

- `distiller`: `Distiller(keras.Model)`, its `compile`, `train_step` and `test_step`.
- `objective`: the weighted sum of distillation terms and the resolver that builds it.
- `losses`: logit terms (Hinton KD, DKD, DIST, ...); `relations`: relation terms;
  `features`: feature and hint terms with their adapters.
- `arguments`: the checks of `Distiller` and `compile` arguments and the
  `keras.distillation` mapping; `batches`: batch conventions (cached logits, weights).
- `mixup`: one mixed view for teacher and student; `teacher_cache`: precomputed logits.
"""

# Importing the package registers its terms, feature losses and checks (`kdkeras.registry`).
from kdkeras.distillation import features, losses, objective, relations, standardization  # noqa: E402,F401
