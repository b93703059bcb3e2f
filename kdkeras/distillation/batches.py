"""The batch conventions a `Distiller` step reads.

- Cached teacher logits: `x` is `{"inputs": images, "teacher_logits": z}`
  (`kdkeras.distillation.teacher_cache.with_teacher_logits`), and the teacher does not run.
- Unlabeled images of a transfer set (`kdkeras.workflow.transfer`) carry the sparse
  label -1: the student loss and the metrics skip them.
- Under a distribution strategy each replica sees its share of the global batch.
"""

import tensorflow as tf


def split_inputs(inputs):
    """`(model_inputs, cached_teacher_logits or None)` of a batch's `x`."""
    if isinstance(inputs, dict) and "teacher_logits" in inputs:
        if set(inputs) != {"inputs", "teacher_logits"}:
            raise ValueError(
                "A batch with cached teacher logits must be ({'inputs': x, 'teacher_logits': z}, y); "
                f"got the keys {sorted(inputs)}. Build it with kdkeras.distillation.teacher_cache.with_teacher_logits."
            )
        return inputs["inputs"], inputs["teacher_logits"]
    return inputs, None


def labeled(y, logits, sample_weight):
    """`(y, logits, sample_weight)` of the batch's labeled examples.

    Sparse labels < 0 mark unlabeled images; multi-hot labels are always labeled.
    """
    if y is None or y.dtype.is_floating:
        return y, logits, sample_weight
    mask = tf.reduce_all(tf.reshape(y >= 0, [tf.shape(y)[0], -1]), axis=1)
    return (
        tf.boolean_mask(y, mask),
        tf.boolean_mask(logits, mask),
        None if sample_weight is None else tf.boolean_mask(sample_weight, mask),
    )


def replicas(dtype):
    """The number of replicas a global batch is split over, as a tensor of `dtype`.

    Keras losses divide a replica's batch mean by it, so that gradients summed
    across replicas are the global batch's; logged values are multiplied back.
    """
    return tf.cast(tf.distribute.get_strategy().num_replicas_in_sync, dtype)
