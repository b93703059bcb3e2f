"""How faithfully a student imitates its teacher, whatever the labels say.

Stanton et al. (NeurIPS 2021, "Does knowledge distillation really work?")
measure fidelity by the top-1 agreement between student and teacher and by
the KL divergence of the teacher's predictive distribution from the
student's. A distilled student should agree with its teacher more than the
same architecture trained alone.
"""

import numpy as np
from scipy import special


def fidelity(student_logits, teacher_logits, task="multi-class"):
    """Top-1 agreement and mean KL(teacher || student), both at temperature 1.

    Args:
        student_logits: float array `(N, C)`.
        teacher_logits: float array `(N, C)`, the same examples in the same order.
        task: One of `kdkeras.evaluation.metrics.TASKS`. Multi-label (and one-logit
            binary) models are compared label by label: agreement of the
            `p > 0.5` decisions and the Bernoulli KL, both averaged over labels.

    Returns:
        `{"top1_agreement": float in [0, 1], "kl_teacher_student": float >= 0 (nats), "n": int}`.

    Raises:
        ValueError: On logits of different shapes or non-finite values.

    Example:

    ```python
    fidelity(distilled_test_logits, teacher_test_logits)
    # {'top1_agreement': 0.97, 'kl_teacher_student': 0.021, 'n': 624}
    ```
    """
    s = np.asarray(student_logits, dtype=np.float64)
    t = np.asarray(teacher_logits, dtype=np.float64)
    if s.shape != t.shape or s.ndim != 2 or len(s) == 0:
        raise ValueError(
            f"student and teacher logits must have the same shape (N, C) with N > 0, got "
            f"{s.shape} and {t.shape}: evaluate both models on the same examples."
        )
    if not (np.all(np.isfinite(s)) and np.all(np.isfinite(t))):
        raise ValueError("student or teacher logits hold NaN or infinite values.")
    if task.startswith("multi-label") or s.shape[1] == 1:
        log_ps1, log_ps0 = -np.logaddexp(0.0, -s), -np.logaddexp(0.0, s)
        log_pt1, log_pt0 = -np.logaddexp(0.0, -t), -np.logaddexp(0.0, t)
        kl = np.exp(log_pt1) * (log_pt1 - log_ps1) + np.exp(log_pt0) * (log_pt0 - log_ps0)
        agreement = np.mean((s > 0) == (t > 0))
        kl_mean = np.mean(kl)
    else:
        log_ps = special.log_softmax(s, axis=1)
        log_pt = special.log_softmax(t, axis=1)
        kl_mean = np.mean(np.sum(np.exp(log_pt) * (log_pt - log_ps), axis=1))
        agreement = np.mean(np.argmax(s, axis=1) == np.argmax(t, axis=1))
    # Rounding can leave a KL of identical distributions at -1e-17.
    return {"top1_agreement": float(agreement), "kl_teacher_student": float(max(kl_mean, 0.0)), "n": len(s)}
