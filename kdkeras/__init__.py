"""kdkeras: knowledge distillation of medical-image classifiers in Keras 3.

Example:

```python
import keras
import kdkeras

distiller = kdkeras.Distiller(student=student, teacher=teacher)
distiller.compile(optimizer=keras.optimizers.Adam(1e-3), metrics=["accuracy"])
distiller.fit(train_ds, validation_data=val_ds, epochs=10)
```
"""

__version__ = "0.1.0"

from kdkeras import losses
from kdkeras.distiller import Distiller

__all__ = ["Distiller", "losses", "__version__"]
