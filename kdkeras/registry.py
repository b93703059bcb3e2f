"""Named registries of the pieces a config can ask for by name.

One mechanism for every kind of piece (as timm's `register_model` or
torchdistill's registries): a module-level `Registry`, a decorator that
registers a class or a builder under a name, `get(name, **kwargs)` that builds
one, `names()` for validation and help. A registry lists the modules that fill
it, imported on first lookup, so `get("dist")` works without importing
`kdkeras.losses` first and `kdkeras list` shows everything.

Example:

```python
from kdkeras.registry import DISTILLATION_TERMS

@DISTILLATION_TERMS.register("my_term")
@keras.saving.register_keras_serializable(package="kdkeras")
class MyTerm(kdkeras.objective.DistillationTerm):
    ...

term = DISTILLATION_TERMS.get("my_term", temperature=2.0)
```
"""

import importlib

_REGISTRIES = {}


class Registry:
    """Builders of one kind of piece, by name, in registration order.

    Args:
        kind: What the registry holds, e.g. `"distillation_term"`; unique, it
            names the registry in errors and in `kdkeras list`.
        modules: Modules whose import registers the entries, imported on the
            first lookup.
    """

    def __init__(self, kind, modules=()):
        if kind in _REGISTRIES:
            raise ValueError(f"A registry of {kind!r} already exists; import it from kdkeras.registry.")
        self.kind = kind
        self._modules = tuple(modules)
        self._entries = {}
        _REGISTRIES[kind] = self

    def register(self, name):
        """A decorator registering a class or builder under `name`.

        Args:
            name: The name configs and `get` use, e.g. `"decoupled_kd"`.

        Returns:
            A decorator that returns its argument unchanged.

        Raises:
            ValueError: for a name that is already taken.
        """

        def decorator(entry):
            if name in self._entries and self._entries[name] is not entry:
                raise ValueError(
                    f"The {self.kind} name {name!r} is taken by {self._entries[name].__qualname__}; "
                    f"register {entry.__qualname__} under another name."
                )
            self._entries[name] = entry
            return entry

        return decorator

    def lookup(self, name):
        """The class or builder registered under `name`, not yet built.

        Raises:
            ValueError: for an unknown name, listing the registered ones.
        """
        self._populate()
        if name not in self._entries:
            raise ValueError(f"Unknown {self.kind} {name!r}. Registered: {', '.join(self._entries)}.")
        return self._entries[name]

    def get(self, name, **kwargs):
        """Builds the entry registered under `name` with `kwargs`."""
        return self.lookup(name)(**kwargs)

    def names(self):
        """The registered names, in registration order."""
        self._populate()
        return tuple(self._entries)

    def __contains__(self, name):
        return name in self.names()

    def _populate(self):
        for module in self._modules:
            importlib.import_module(module)

    def __repr__(self):
        return f"Registry({self.kind!r}, {len(self._entries)} entries)"


def registries():
    """Every registry, by kind, in creation order (for `kdkeras list`)."""
    return dict(_REGISTRIES)


def summary(entry):
    """The first line of an entry's docstring, for listings."""
    return (entry.__doc__ or "").strip().split("\n")[0]


DISTILLATION_TERMS = Registry("distillation_term", modules=("kdkeras.losses", "kdkeras.relations"))
FEATURE_LOSSES = Registry("feature_loss", modules=("kdkeras.features",))
OPTIMIZERS = Registry("optimizer", modules=("kdkeras.optimizers",))
# Loaders return `(train, val, test, info)`; `[data]`'s other keys are their arguments.
LOADERS = Registry("loader", modules=("kdkeras.data",))
