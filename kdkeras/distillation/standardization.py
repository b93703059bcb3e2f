"""Logit standardization (Sun et al., CVPR 2024) as a registered term: `kd_ls`.

Any softmax term takes `standardize=True` (`kdkeras.distillation.objective.standardize_logits`
z-scores teacher and student logits per example first); `LogitStandardizedKD` is
that option on Hinton's KD at the paper's own base temperature.
"""

import keras

from kdkeras.distillation.losses import KnowledgeDistillation
from kdkeras.registry import DISTILLATION_TERMS

# The official logit-standardization recipe's base temperature (`--base-temp 2`).
LOGIT_STANDARDIZATION_TEMPERATURE = 2.0


@DISTILLATION_TERMS.register("kd_ls")
@keras.saving.register_keras_serializable(package="kdkeras")
class LogitStandardizedKD(KnowledgeDistillation):
    """KD on per-example z-scored logits: logit standardization (Sun et al., CVPR 2024).

    `KnowledgeDistillation(standardize=True)` at the paper's base temperature 2
    (`sunshangquan/logit-standardization-KD`, `--logit-stand --base-temp 2`):
    the student matches the teacher's relations between classes rather than
    its logit range, which a much smaller student may not reach. The paper
    weighs KD 9 and CE 0.1 on CIFAR-100; weigh the terms with `alpha` here.

    With two classes the z-scored logits are `+-1/sqrt(2)` for every image,
    so the soft target keeps only which class the teacher prefers.

    Args:
        temperature: Base temperature `T > 0`. Defaults to 2.0.
        t_squared: Multiply by `T**2`. Defaults to True.
        reduction: Keras loss reduction.
        name: Name of the loss.
        dtype: Dtype of the computation.
        standardize: Must stay True (present so `from_config` round-trips).
    """

    def __init__(
        self,
        temperature=LOGIT_STANDARDIZATION_TEMPERATURE,
        t_squared=True,
        reduction="sum_over_batch_size",
        name="kd_ls",
        dtype=None,
        standardize=True,
    ):
        if standardize is not True:
            raise ValueError("LogitStandardizedKD always standardizes; use KnowledgeDistillation for plain KD.")
        super().__init__(temperature, t_squared, reduction, name, dtype, standardize=True)
