"""Where an experiment name is looked up: `./experiments`, then the experiments shipped with kdkeras."""

import os

from kdkeras.config.schema import ConfigError


def resolve_path(path):
    """Maps an experiment name to its file along `search_path()`; checks that the file exists.

    A value ending in `.toml` or holding a path separator is a path and is
    used as given; anything else is a name.
    """
    path = os.fspath(path)
    if path.endswith(".toml") or os.sep in path or (os.altsep and os.altsep in path):
        if not os.path.isfile(path):
            raise ConfigError(f"Experiment config {path!r} not found.{_shipped_hint()}")
        return path
    for folder in search_path():
        candidate = os.path.join(folder, f"{path}.toml")
        if os.path.isfile(candidate):
            return candidate
    raise ConfigError(
        f"Experiment config {path!r} not found in {', '.join(search_path())}.{_shipped_hint()}"
    )


def search_path():
    """The folders where an experiment name is looked up, in order.

    1. `./experiments`, relative to the working directory: your own
       experiments, which shadow shipped ones of the same name;
    2. `shipped_experiments_dir()`: the experiments that come with kdkeras.

    Returns:
        List of folder paths (the second only if it exists).
    """
    folders = [os.path.join(os.curdir, "experiments")]
    shipped = shipped_experiments_dir()
    if shipped and os.path.abspath(shipped) != os.path.abspath(folders[0]):
        folders.append(shipped)
    return folders


def shipped_experiments_dir():
    """The experiments that come with kdkeras, or None if there are none.

    An installed kdkeras carries them as package data in
    `kdkeras/experiments/` (setup.cfg maps the repository's `experiments/`
    there); a source checkout, imported in place, reads its `experiments/`.
    """
    # This file is kdkeras/config/loading.py; the package is two folders up.
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    installed = os.path.join(package, "experiments")
    if os.path.isdir(installed):
        return installed
    checkout = os.path.dirname(package)
    # Only a folder beside setup.cfg is kdkeras's own: an installed copy sits in
    # site-packages, where an `experiments` folder would belong to someone else.
    if os.path.isfile(os.path.join(checkout, "setup.cfg")) and os.path.isdir(os.path.join(checkout, "experiments")):
        return os.path.join(checkout, "experiments")
    return None


def _shipped_hint():
    shipped = shipped_experiments_dir()
    names = sorted(f[:-5] for f in os.listdir(shipped) if f.endswith(".toml")) if shipped else []
    if not names:
        return " Pass the path of a .toml file."
    return f" Pass a .toml path or one of the shipped experiments: {', '.join(names)}."


MODEL_SUFFIXES = (".keras", ".h5", ".hdf5")


def is_model_path(name):
    """Whether a `model` value names a model file or SavedModel folder rather than an architecture."""
    if not isinstance(name, str) or not name or name.startswith(("keras:", "hub:")):
        return False
    # Zoo names hold no slash, so any path with one is a file the user means.
    return name.endswith(MODEL_SUFFIXES) or "/" in name or os.sep in name or os.path.isdir(name)
