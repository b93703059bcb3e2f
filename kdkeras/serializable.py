"""Lets `keras.models.load_model` find kdkeras's classes after a plain `import kdkeras`.

kdkeras registers its layers, losses, metrics, terms, models and the
Distiller with `keras.saving.register_keras_serializable(package="kdkeras")`,
which runs when the module defining a class is imported. `import kdkeras`
imports none of them (that would import TensorFlow, 5-15 s), so a file saved by
kdkeras would not load in a fresh process that only did `import keras, kdkeras`.

Keras looks every registered name up in one dict,
`keras.src.saving.object_registration.GLOBAL_CUSTOM_OBJECTS`, through
`name in GLOBAL_CUSTOM_OBJECTS` (`get_registered_object`). `install()` puts a
dict there that, asked for a `"kdkeras>..."` name it lacks, first imports the
modules of `MODULES`, whose import registers every kdkeras class. It is
installed right after Keras's registry module is imported
(`kdkeras.import_hooks`), or at once if Keras is already loaded, so
`import kdkeras` imports neither Keras nor TensorFlow.
"""

import importlib
import sys

from kdkeras import import_hooks

# The modules that define every class registered under package "kdkeras"
# (tests/test_loading.py checks the list against the source).
MODULES = (
    "kdkeras.data.augment",
    "kdkeras.data.transforms",
    "kdkeras.distillation.distiller",
    "kdkeras.distillation.features",
    "kdkeras.distillation.losses",
    "kdkeras.distillation.relations",
    "kdkeras.distillation.standardization",
    "kdkeras.distillation.term",
    "kdkeras.models.applications",
    "kdkeras.models.hub",
    "kdkeras.models.preprocessing",
    "kdkeras.workflow.fit_metrics",
)
PREFIX = "kdkeras>"
_KERAS_REGISTRY = "keras.src.saving.object_registration"


class _RegisteringDict(dict):
    """Keras's custom-object dict that imports kdkeras's classes when one is asked for."""

    def __contains__(self, name):
        if not super().__contains__(name) and isinstance(name, str) and name.startswith(PREFIX):
            register_all()
        return super().__contains__(name)


def register_all():
    """Imports every module of `MODULES`, registering all kdkeras classes with Keras."""
    for module in MODULES:
        importlib.import_module(module)


def _install(registry_module):
    current = registry_module.GLOBAL_CUSTOM_OBJECTS
    if not isinstance(current, _RegisteringDict):
        # Keras reads the dict through the module attribute at every call
        # (register, get, deserialize), so swapping the attribute is enough.
        registry_module.GLOBAL_CUSTOM_OBJECTS = _RegisteringDict(current)


def _exec_then_install(exec_module, module):
    exec_module(module)
    _install(module)


def install():
    """Makes `kdkeras>` names loadable: now if Keras is loaded, else when it is."""
    if _KERAS_REGISTRY in sys.modules:
        _install(sys.modules[_KERAS_REGISTRY])
    else:
        import_hooks.around_import(_KERAS_REGISTRY, _exec_then_install)
