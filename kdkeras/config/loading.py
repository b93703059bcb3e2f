"""Reading a config: where a name is looked up, `extends`, overrides, and writing it back as TOML."""

import copy
import os
import tomllib

from kdkeras.config.schema import INHERITED_BY_DISTILL
from kdkeras.config.schema import ConfigError
from kdkeras.config.schema import DistillConfig
from kdkeras.config.schema import EvaluateConfig
from kdkeras.config.schema import ExperimentConfig
from kdkeras.config.schema import SweepConfig
from kdkeras.config.schema import TrainConfig
from kdkeras.config.validation import build
from kdkeras.config.validation import check_data
from kdkeras.config.validation import check_values
from kdkeras.files import write_text_atomic


def load_config(path):
    """Reads and validates an experiment config.

    Args:
        path: Path of a `.toml` file, or the name of an experiment, looked up
            as `<name>.toml` along `search_path()` (`"quickstart"` reads the
            quickstart shipped with kdkeras unless `./experiments/` has one).

    Returns:
        An `ExperimentConfig`.

    Raises:
        ConfigError: for a missing file, invalid TOML, unknown keys, wrong
            types or out-of-range values; the message names the key.
    """
    path = resolve_path(path)
    config = from_dict(_read_extended(path, ()), source=path)
    config.path = path
    return config


def _read_extended(path, chain):
    """The TOML of `path`, laid over the config it `extends` (recursively)."""
    if path in chain:
        raise ConfigError(f"{path}: `extends` loops: {' -> '.join((*chain, path))}.")
    with open(path, "rb") as f:
        data = f.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ConfigError(
            f"{path} line {line}: byte {data[e.start:e.start + 1]!r} is not UTF-8, which TOML "
            "requires. Save the file as UTF-8."
        ) from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from None
    parent = raw.pop("extends", None)
    if parent is None:
        return raw
    if not isinstance(parent, str) or not parent:
        raise ConfigError(f"{path}: extends = {parent!r} must name an experiment or a .toml path.")
    # A relative path is read beside the file that names it, as an include would be.
    beside = os.path.join(os.path.dirname(path), parent)
    base = _read_extended(resolve_path(beside if os.path.exists(beside) else parent), (*chain, path))
    return _merge(base, raw)


def _merge(base, override):
    """`override` laid over `base`: tables merge key by key, anything else is replaced."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and key != "options":
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


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


def from_dict(raw, source="<config>"):
    """Builds a validated `ExperimentConfig` from parsed TOML data.

    Args:
        raw: Mapping as read from TOML.
        source: Name of the origin, for error messages.

    Returns:
        An `ExperimentConfig`.
    """
    raw = copy.deepcopy(raw)
    if isinstance(raw.get("student"), dict) and isinstance(raw.get("distill", {}), dict):
        # The distilled student trains on the student's budget unless [distill] says otherwise:
        # a fair comparison by default, and no repeated lines.
        inherited = {k: v for k, v in raw["student"].items() if k in INHERITED_BY_DISTILL}
        raw["distill"] = {**inherited, **raw.get("distill", {})}
    sections = {
        "teacher": TrainConfig,
        "student": TrainConfig,
        "distill": DistillConfig,
        "sweep": SweepConfig,
        "evaluate": EvaluateConfig,
    }
    values = {}
    for key, value in raw.items():
        if key in sections:
            values[key] = build(sections[key], value, f"{source}: [{key}]")
        elif key == "data":
            values[key] = check_data(value, source)
        else:
            values[key] = value
    config = build(ExperimentConfig, values, source, nested=set(sections) | {"data"})
    check_values(config, source)
    return config


def apply_overrides(config, overrides):
    """Returns a copy of `config` with dotted-key overrides applied and validated.

    Args:
        config: An `ExperimentConfig`.
        overrides: Mapping such as `{"distill.temperature": 6.0, "data.batch_size": 32}`.

    Returns:
        A new, validated `ExperimentConfig`.
    """
    raw = config.to_dict()
    for dotted, value in overrides.items():
        node = raw
        *parents, leaf = dotted.split(".")
        for part in parents:
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"Override {dotted!r}: {part!r} is not a config table.")
            node = node[part]
        node[leaf] = value
    updated = from_dict(raw, source=f"{config.path or '<config>'} (with overrides)")
    updated.path = config.path
    return updated


def dump_toml(config):
    """Serializes a config to TOML text (the resolved config saved with each run)."""
    data = config.to_dict()
    lines = []
    for key, value in data.items():
        if not isinstance(value, (dict, list)) or (isinstance(value, list) and not _is_table_list(value)):
            lines.append(f"{key} = {_toml_value(value)}")
    for key, value in data.items():
        if isinstance(value, dict):
            lines.append(f"\n[{key}]")
            # TOML has no null: an unset optional key (None) is left out, and reads back as unset.
            lines.extend(f"{k} = {_toml_value(v)}" for k, v in value.items() if v is not None)
    for key, value in data.items():
        if isinstance(value, list) and _is_table_list(value):
            for row in value:
                lines.append(f"\n[[{key}]]")
                lines.extend(f"{k} = {_toml_value(v)}" for k, v in row.items())
    return "\n".join(lines) + "\n"


def save_config(config, path):
    """Writes the resolved config as TOML, atomically."""
    write_text_atomic(path, dump_toml(config))


def _is_table_list(value):
    return bool(value) and all(isinstance(v, dict) for v in value)


def _toml_value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise ConfigError(f"Cannot write {value!r} ({type(value).__name__}) to TOML.")
