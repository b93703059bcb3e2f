"""Model zoo: the seeds' teachers and students, by name, from raw pixels to logits.

Example:

```python
from kdkeras.models import get_model, list_models

teacher = get_model("vgg16_transfer", (224, 224, 3), num_classes=3, weights="imagenet")
student = get_model("cnn296k", (224, 224, 3), num_classes=3)
print([spec.name for spec in list_models("student")])
```
"""

# Importing the package registers the zoo (`kdkeras.registry.MODELS`).
from kdkeras.models import checks, mobile, students, teachers  # noqa: F401
from kdkeras.models.flops import count_flops
from kdkeras.models.preprocessing import InputPreprocessing
from kdkeras.models.registry import ModelSpec, get_model, get_spec, list_models
from kdkeras.models.summary import ModelRow, ModelTable, model_table
from kdkeras.models.weights import WeightsUnavailableError

__all__ = [
    "InputPreprocessing",
    "ModelRow",
    "ModelSpec",
    "ModelTable",
    "WeightsUnavailableError",
    "count_flops",
    "get_model",
    "get_spec",
    "list_models",
    "model_table",
]
