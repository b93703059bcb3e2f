"""Numbers about a trained model: metrics, calibration, operating points, fidelity, cost.

- `metrics`: ACC, AUC, balanced accuracy, per-class recall, ECE, with intervals.
- `calibration`: temperature scaling fitted on validation.
- `operating_point`: decision thresholds chosen on validation.
- `fidelity`: how closely a student agrees with its teacher.
- `explain`: Grad-CAM maps and their agreement.
- `profiling`: parameters, bytes on disk and CPU latency.
"""

# Importing the package registers its config checks (`kdkeras.registry.CHECKS`).
from kdkeras.evaluation import operating_point  # noqa: E402,F401
