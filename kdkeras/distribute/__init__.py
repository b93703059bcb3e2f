"""Running a phase on several devices or machines.

- `strategy`: picks the `tf.distribute` strategy a config asks for, batches
  per replica and synchronises BatchNorm.
- `multiworker`: the `TF_CONFIG` a worker reads and the checks it needs.
- `launch`: `kdkeras launch`, which starts one process per worker on this machine.

The strategy functions are re-exported here (`kdkeras.distribute.get_strategy`);
they load TensorFlow on first use, so `kdkeras launch` starts without it.
"""

import importlib

_STRATEGY_NAMES = (
    "Batching",
    "StrategyError",
    "batching",
    "check_tf_config",
    "describe",
    "drops_remainder",
    "get_strategy",
    "is_tpu_strategy",
    "prepare_dataset",
    "replica_batch_size",
    "synchronize_batch_norm",
    "tpu_address",
)
__all__ = list(_STRATEGY_NAMES)


def __getattr__(name):
    if name in _STRATEGY_NAMES:
        return getattr(importlib.import_module("kdkeras.distribute.strategy"), name)
    raise AttributeError(f"module 'kdkeras.distribute' has no attribute {name!r}")
