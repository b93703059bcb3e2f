"""kdkeras: knowledge distillation of medical-image classifiers in Keras 3.

Submodules load on first use, so `import kdkeras` stays cheap until TensorFlow
is needed; Keras still finds kdkeras's classes when it loads a saved file
(`kdkeras.serializable`). TensorFlow's C++ start-up lines are hidden when
kdkeras imports it first; set `TF_CPP_MIN_LOG_LEVEL=0` to see them
(`kdkeras.quiet`).

Example:

```python
import keras
import kdkeras

distiller = kdkeras.Distiller(student=student, teacher=teacher)
distiller.compile(optimizer=keras.optimizers.Adam(1e-3), metrics=["accuracy"])
distiller.fit(train_ds, validation_data=val_ds, epochs=10)
```
"""

import importlib
import warnings

from kdkeras import quiet, serializable

__version__ = "0.2.0.dev0"

_SUBMODULES = (
    "config",
    "data",
    "distillation",
    "distribute",
    "evaluation",
    "export",
    "models",
    "reporting",
    "stats",
    "workflow",
)
# Modules that sat at the top of the package before 0.2; the old names keep working.
_MOVED = {
    "callbacks": "kdkeras.workflow.callbacks",
    "features": "kdkeras.distillation.features",
    "losses": "kdkeras.distillation.losses",
    "metrics": "kdkeras.evaluation.metrics",
    "objective": "kdkeras.distillation.objective",
    "profiling": "kdkeras.evaluation.profiling",
    "relations": "kdkeras.distillation.relations",
    "sweep": "kdkeras.workflow.sweep",
    "teacher_cache": "kdkeras.distillation.teacher_cache",
    "training": "kdkeras.workflow.training",
}
__all__ = ["Distiller", *_SUBMODULES, "__version__"]

# Saved kdkeras files load after `import kdkeras` alone, without importing TensorFlow now.
serializable.install()
# TensorFlow's C++ start-up lines stay hidden unless TF_CPP_MIN_LOG_LEVEL=0 (see kdkeras.quiet).
quiet.hide_tensorflow_startup_lines()


def __getattr__(name):
    if name == "Distiller":
        from kdkeras.distillation.distiller import Distiller

        return Distiller
    if name in _SUBMODULES:
        return importlib.import_module(f"kdkeras.{name}")
    if name in _MOVED:
        warnings.warn(
            f"kdkeras.{name} moved to {_MOVED[name]} in kdkeras 0.2; the old name will be removed.",
            DeprecationWarning,
            stacklevel=2,
        )
        return importlib.import_module(_MOVED[name])
    raise AttributeError(f"module 'kdkeras' has no attribute {name!r}")
