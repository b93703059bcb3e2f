"""Reading a config: `extends`, overrides and inheritance resolved once, validated, and written back as TOML."""

from kdkeras.config.paths import resolve_path
from kdkeras.config.resolution import Origins, read_tables, resolve
from kdkeras.config.schema import ConfigError, DistillConfig, EvaluateConfig, ExperimentConfig, SweepConfig, TrainConfig
from kdkeras.config.validation import build, check_data, check_values
from kdkeras.files import write_text_atomic

SECTIONS = {
    "teacher": TrainConfig,
    "student": TrainConfig,
    "distill": DistillConfig,
    "sweep": SweepConfig,
    "evaluate": EvaluateConfig,
}


def load_config(path, overrides=None, registries=True):
    """Reads and validates an experiment config.

    Args:
        path: Path of a `.toml` file, or the name of an experiment, looked up
            as `<name>.toml` along `search_path()` (`"quickstart"` reads the
            quickstart shipped with kdkeras unless `./experiments/` has one).
        overrides: Dotted keys to values applied before `[distill]` inherits
            `[student]`'s budget, e.g. `{"student.epochs": 3}`.
        registries: Also check names (loader, models, optimizers, losses)
            against the registries, which imports TensorFlow; False checks
            keys, types and ranges only, in a fraction of a second.

    Returns:
        An `ExperimentConfig`.

    Raises:
        ConfigError: for a missing file, invalid TOML, unknown keys, wrong
            types or out-of-range values; the message names the file the key
            came from and the key.
    """
    path = resolve_path(path)
    tables, origins = read_tables(path)
    config = _build(tables, overrides or {}, origins, path, registries)
    config.path = path
    return config


def from_dict(raw, source="<config>", registries=True):
    """Builds a validated `ExperimentConfig` from parsed TOML data.

    Args:
        raw: Mapping as read from TOML (without `extends`).
        source: Name of the origin, for error messages.
        registries: See `load_config`.

    Returns:
        An `ExperimentConfig`.
    """
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a table of config keys, got {raw!r}.")
    return _build(raw, {}, Origins(), source, registries)


def apply_overrides(config, overrides):
    """Returns a copy of `config` with dotted-key overrides applied and validated.

    The overrides join those `config` already carries and are resolved on
    its raw tables, so `{"student.epochs": 3}` also sets `distill.epochs`
    unless `[distill]` sets its own.

    Args:
        config: An `ExperimentConfig`.
        overrides: Mapping such as `{"distill.temperature": 6.0, "data.batch_size": 32}`.

    Returns:
        A new, validated `ExperimentConfig`.
    """
    # A config built in Python has no raw tables: its values stand in for them.
    tables = config.tables or config.to_dict()
    source = config.path or "<config>"
    updated = _build(tables, {**config.overrides, **overrides}, Origins(config.origins), source, True)
    updated.path = config.path
    return updated


def _build(tables, overrides, origins, source, registries):
    origins = Origins(origins)
    resolved = resolve(tables, overrides, origins)
    values = {}
    for key, value in resolved.items():
        if key in SECTIONS:
            values[key] = build(
                SECTIONS[key], value, f"{source}: [{key}]",
                locate=lambda k, table=key: f"{origins.where(source, table, k)}: [{table}]",
            )
        elif key == "data":
            values[key] = check_data(value, source, origins, registries)
        else:
            values[key] = value
    config = build(
        ExperimentConfig, values, source, nested=set(SECTIONS) | {"data"}, locate=lambda k: origins.where(source, None, k)
    )
    config.distillation_term = check_values(config, source, origins, registries)
    config.tables, config.overrides, config.origins = tables, dict(overrides), origins
    return config


def dump_toml(config):
    """Serializes a config to TOML text (the resolved config saved with each run)."""
    data = config.to_dict()
    lines = []
    for key, value in data.items():
        if not isinstance(value, (dict, list)) or (isinstance(value, list) and not _is_table_list(value)):
            lines.append(f"{key} = {toml_value(value)}")
    for key, value in data.items():
        if isinstance(value, dict):
            lines.append(f"\n[{key}]")
            # TOML has no null: an unset optional key (None) is left out, and reads back as unset.
            lines.extend(f"{k} = {toml_value(v)}" for k, v in value.items() if v is not None)
    for key, value in data.items():
        if isinstance(value, list) and _is_table_list(value):
            for row in value:
                lines.append(f"\n[[{key}]]")
                lines.extend(f"{k} = {toml_value(v)}" for k, v in row.items())
    return "\n".join(lines) + "\n"


def save_config(config, path):
    """Writes the resolved config as TOML, atomically."""
    write_text_atomic(path, dump_toml(config))


def _is_table_list(value):
    return bool(value) and all(isinstance(v, dict) for v in value)


def toml_value(value):
    """`value` written as a TOML value (`true`, `3`, `"text"`, `[1, 2]`, `{a = 1}`)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise ConfigError(f"Cannot write {value!r} ({type(value).__name__}) to TOML.")
