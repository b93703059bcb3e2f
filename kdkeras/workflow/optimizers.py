"""The optimizers a config names (`[phase] optimizer`), registered in `kdkeras.registry.OPTIMIZERS`.

Each builder takes the phase's learning rate and decoupled weight decay (0
disables it); `kdkeras.workflow.phases.make_optimizer` calls the one a config names.
"""

import keras

from kdkeras.registry import OPTIMIZERS


@OPTIMIZERS.register("adam")
def adam(learning_rate, weight_decay=0.0):
    """Adam (Kingma and Ba 2015); `weight_decay` > 0 adds Keras's decoupled decay."""
    return keras.optimizers.Adam(learning_rate, weight_decay=weight_decay or None)


@OPTIMIZERS.register("adamw")
def adamw(learning_rate, weight_decay=0.0):
    """AdamW (Loshchilov and Hutter 2019), decoupled weight decay."""
    return keras.optimizers.AdamW(learning_rate, weight_decay=weight_decay)


@OPTIMIZERS.register("sgd")
def sgd(learning_rate, weight_decay=0.0):
    """SGD with Nesterov momentum 0.9, the schedule of most KD papers' CIFAR recipes."""
    return keras.optimizers.SGD(learning_rate, momentum=0.9, nesterov=True, weight_decay=weight_decay or None)


@OPTIMIZERS.register("rmsprop")
def rmsprop(learning_rate, weight_decay=0.0):
    """RMSprop, as the Keras 2 seed scripts used."""
    return keras.optimizers.RMSprop(learning_rate, weight_decay=weight_decay or None)
