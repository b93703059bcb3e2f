"""kdkeras: knowledge distillation of medical-image classifiers in Keras 3.

Submodules load on first use, so `import kdkeras` stays cheap until TensorFlow
is needed (and the `kdkeras` command can configure TensorFlow's logging first).

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

__version__ = "0.1.0"

_SUBMODULES = (
    "callbacks",
    "config",
    "data",
    "distribute",
    "export",
    "features",
    "losses",
    "metrics",
    "models",
    "profiling",
    "reporting",
    "sweep",
    "teacher_cache",
    "training",
)
__all__ = ["Distiller", *_SUBMODULES, "__version__"]


def __getattr__(name):
    if name == "Distiller":
        from kdkeras.distiller import Distiller

        return Distiller
    if name in _SUBMODULES:
        return importlib.import_module(f"kdkeras.{name}")
    raise AttributeError(f"module 'kdkeras' has no attribute {name!r}")
