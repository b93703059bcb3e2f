"""Experiment configs: one TOML file per experiment, validated before any training.

A config has a top level (`name`, `seed`, `description`, `strategy`), a `[data]`
table whose `loader` names a loader of `kdkeras.registry.LOADERS`, whose optional
`augment_on` ("pipeline" or "device") says where `augment` runs, and whose
other keys are that function's arguments, and one table per phase: `[teacher]`,
`[student]` and `[distill]`, plus an optional `[sweep]` grid for `kdkeras sweep`
and an optional `[evaluate]` table (operating point, Grad-CAM layers).
See `experiments/quickstart.toml`; `search_path()` says where a name is looked up.

Configs share instead of repeating: `extends = "quickstart"` (a name or a
path, relative to the file) starts from another config and lays this file's
keys over it, table by table; a table that names another `loader`, or says
`replace = true`, replaces the parent's table instead, and `name` defaults to
the file's stem, never the parent's. Then overrides (`--set`, `apply_overrides`)
apply, and `[distill]` takes `[student]`'s training budget
(`INHERITED_BY_DISTILL`: epochs, optimizer, learning rate, schedule, early
stopping, class weights) unless it sets a key itself, so the student alone and
the distilled student train alike by default (`kdkeras.config.resolution`).
"""

from kdkeras.config.loading import apply_overrides, dump_toml, from_dict, load_config, save_config
from kdkeras.config.paths import resolve_path, search_path, shipped_experiments_dir
from kdkeras.config.resolution import MAX_EXTENDS_DEPTH
from kdkeras.config.schema import (
    AUGMENT_ON,
    BUNDLED,
    CLASS_WEIGHTS,
    INHERITED_BY_DISTILL,
    MAX_TEMPERATURE,
    MONITORS,
    OBJECTIVES,
    SCHEDULES,
    STRATEGIES,
    ConfigError,
    DistillConfig,
    EvaluateConfig,
    ExperimentConfig,
    SweepConfig,
    TrainConfig,
)
from kdkeras.config.validation import check_data_paths

__all__ = [
    "AUGMENT_ON",
    "BUNDLED",
    "CLASS_WEIGHTS",
    "ConfigError",
    "DistillConfig",
    "EvaluateConfig",
    "ExperimentConfig",
    "INHERITED_BY_DISTILL",
    "MAX_EXTENDS_DEPTH",
    "MAX_TEMPERATURE",
    "MONITORS",
    "OBJECTIVES",
    "SCHEDULES",
    "STRATEGIES",
    "SweepConfig",
    "TrainConfig",
    "apply_overrides",
    "check_data_paths",
    "dump_toml",
    "from_dict",
    "load_config",
    "resolve_path",
    "save_config",
    "search_path",
    "shipped_experiments_dir",
]
