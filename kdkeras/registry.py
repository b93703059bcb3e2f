"""Named registries of the pieces a config can ask for by name.

One mechanism for every kind of piece (as timm's `register_model` or
torchdistill's registries): a module-level `Registry`, a decorator that
registers a class or a builder under a name, `get(name, **kwargs)` that builds
one, `names()` for validation and help. A registry lists the modules that fill
it, imported on first lookup, so `get("dist")` works without importing
`kdkeras.distillation.losses` first and `kdkeras list` shows everything.

Example:

```python
from kdkeras.registry import DISTILLATION_TERMS

@DISTILLATION_TERMS.register("my_term")
@keras.saving.register_keras_serializable(package="kdkeras")
class MyTerm(kdkeras.distillation.objective.DistillationTerm):
    ...

term = DISTILLATION_TERMS.get("my_term", temperature=2.0)
```

A registry may ask each entry for keyword metadata, given at registration
and read back with `metadata(name)`: `MODELS` entries declare their role,
input sizes and whether ImageNet weights exist, as timm's `register_model`
does with its pretrained configs.
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
        metadata: Names of the keyword metadata every entry must declare in
            `register`; none by default.
    """

    def __init__(self, kind, modules=(), metadata=()):
        if kind in _REGISTRIES:
            raise ValueError(f"A registry of {kind!r} already exists; import it from kdkeras.registry.")
        self.kind = kind
        self._modules = tuple(modules)
        self._metadata_keys = tuple(metadata)
        self._entries = {}
        self._metadata = {}
        _REGISTRIES[kind] = self

    def register(self, name, **metadata):
        """A decorator registering a class or builder under `name`.

        Args:
            name: The name configs and `get` use, e.g. `"decoupled_kd"`.
            **metadata: The registry's metadata keys, e.g. `role="student"`
                for `MODELS`; `metadata(name)` returns them.

        Returns:
            A decorator that returns its argument unchanged.

        Raises:
            TypeError: for metadata keys the registry does not declare, or
                declared ones left out.
            ValueError: for a name that is already taken.
        """
        missing = [key for key in self._metadata_keys if key not in metadata]
        unknown = [key for key in metadata if key not in self._metadata_keys]
        if missing or unknown:
            raise TypeError(
                f"{self.kind} {name!r}: register() takes the metadata {', '.join(self._metadata_keys) or 'none'}; "
                f"missing: {', '.join(missing) or 'none'}, unknown: {', '.join(unknown) or 'none'}."
            )

        def decorator(entry):
            if name in self._entries and self._entries[name] is not entry:
                raise ValueError(
                    f"The {self.kind} name {name!r} is taken by {self._entries[name].__qualname__}; "
                    f"register {entry.__qualname__} under another name."
                )
            self._entries[name] = entry
            self._metadata[name] = metadata
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

    def metadata(self, name):
        """The keyword metadata `name` was registered with, as a new dict.

        Raises:
            ValueError: for an unknown name, listing the registered ones.
        """
        self.lookup(name)
        return dict(self._metadata[name])

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


DISTILLATION_TERMS = Registry(
    "distillation_term",
    modules=("kdkeras.distillation.losses", "kdkeras.distillation.relations", "kdkeras.distillation.standardization"),
)
FEATURE_LOSSES = Registry("feature_loss", modules=("kdkeras.distillation.features",))
OPTIMIZERS = Registry("optimizer", modules=("kdkeras.workflow.optimizers",))
# Loaders return `(train, val, test, info)`; `[data]`'s other keys are their arguments.
LOADERS = Registry("loader", modules=("kdkeras.data",))
# Model builders `(input_shape, num_classes, **options)`; build them through
# `kdkeras.models.get_model`, which checks the shape, options and weights first.
MODELS = Registry(
    "model",
    modules=("kdkeras.models.teachers", "kdkeras.models.students", "kdkeras.models.mobile"),
    metadata=(
        "role",  # "teacher" or "student"
        "default_input_shape",  # (height, width, channels) when none is given
        "min_input_size",  # smallest height and width the architecture takes
        "pretrained",  # whether weights="imagenet" exists
    ),
)
# Train-time augmentations `(seed) -> layer` that `[data] augment` names.
AUGMENTATIONS = Registry("augmentation", modules=("kdkeras.data.augment",))
