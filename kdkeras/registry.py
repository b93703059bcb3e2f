"""Named registries of the pieces a config can ask for by name.

One mechanism for every kind of piece (as timm's `register_model` or
torchdistill's registries): a module-level `Registry`, a decorator that
registers a class or a builder under a name, `get(name, **kwargs)` that builds
one, `names()` for validation and help. Each package registers its own members
when it is imported (its `__init__` imports the modules that hold them); a
registry names the packages that fill it and imports them on first lookup, so
`get("dist")` works without importing `kdkeras.distillation` first and
`kdkeras list` shows everything. This module imports no library code, so
`kdkeras.config` can check names against the registries from below them.

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
does with its pretrained configs; `LOADERS` entries which `[data]` keys are
local paths. `CHECKS` holds the value checks of the library that the config
validation runs (`kdkeras list` leaves it out: it is not a piece to ask for).
"""

import importlib

_REGISTRIES = {}


class Registry:
    """Builders of one kind of piece, by name, in registration order.

    Args:
        kind: What the registry holds, e.g. `"distillation_term"`; unique, it
            names the registry in errors and in `kdkeras list`.
        packages: Packages whose import registers the entries, imported on the
            first lookup.
        metadata: The keyword metadata of `register`: a tuple of names every
            entry must declare, or a dict of optional names and their
            defaults; none by default.
        listed: Whether `kdkeras list` shows the registry.
    """

    def __init__(self, kind, packages=(), metadata=(), listed=True):
        if kind in _REGISTRIES:
            raise ValueError(f"A registry of {kind!r} already exists; import it from kdkeras.registry.")
        self.kind = kind
        self.listed = listed
        self._packages = tuple(packages)
        self._defaults = dict(metadata) if isinstance(metadata, dict) else {}
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
        missing = [key for key in self._metadata_keys if key not in metadata and key not in self._defaults]
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
            self._metadata[name] = {**self._defaults, **metadata}
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
        for package in self._packages:
            importlib.import_module(package)

    def __repr__(self):
        return f"Registry({self.kind!r}, {len(self._entries)} entries)"


def registries(listed=True):
    """The registries by kind, in creation order: those `kdkeras list` shows, or (False) all."""
    return {kind: r for kind, r in _REGISTRIES.items() if r.listed or not listed}


def summary(entry):
    """The first line of an entry's docstring, for listings."""
    return (entry.__doc__ or "").strip().split("\n")[0]


DISTILLATION_TERMS = Registry("distillation_term", packages=("kdkeras.distillation",))
FEATURE_LOSSES = Registry("feature_loss", packages=("kdkeras.distillation",))
OPTIMIZERS = Registry("optimizer", packages=("kdkeras.workflow",))
# Loaders return `(train, val, test, info)`; `[data]`'s other keys are their arguments.
LOADERS = Registry(
    "loader",
    packages=("kdkeras.data",),
    metadata={
        "local_paths": (),  # the [data] keys that name local files, checked before anything loads
        "resolve": None,  # `(data table) -> data table` spelling out aliases such as root = "@bundled"
    },
)
# Model builders `(input_shape, num_classes, **options)`; build them through
# `kdkeras.models.get_model`, which checks the shape, options and weights first.
MODELS = Registry(
    "model",
    packages=("kdkeras.models",),
    metadata=(
        "role",  # "teacher" or "student"
        "default_input_shape",  # (height, width, channels) when none is given
        "min_input_size",  # smallest height and width the architecture takes
        "pretrained",  # whether weights="imagenet" exists
    ),
)
# Train-time augmentations `(seed) -> layer` that `[data] augment` names.
AUGMENTATIONS = Registry("augmentation", packages=("kdkeras.data",))
# The library's checks of config values, `check(value, ...)` raising ValueError:
# `kdkeras.config.validation` runs them by name without importing the library.
CHECKS = Registry(
    "check",
    packages=("kdkeras.data", "kdkeras.models", "kdkeras.distillation", "kdkeras.evaluation"),
    listed=False,
)
