"""The config's tables as dataclasses, their allowed values, and `ConfigError`."""

import dataclasses

MONITORS = ("val_loss", "val_accuracy", "val_auc")
CLASS_WEIGHTS = ("", "balanced")
SCHEDULES = ("constant", "cosine")
STRATEGIES = ("auto", "mirrored", "multiworker", "tpu", "none")
# How the two terms add up: "hinton" is alpha * CE + (1 - alpha) * KD (Hinton et al., keras.io,
# keras.distillation); "additive" is alpha * CE + KD, the objective of seed 002's article.
OBJECTIVES = ("hinton", "additive")
# Above this, float32 softmax(z / T) of teacher and student round to the same numbers: measured
# on logits of scale 3, the loss is off by 2e-5 at T = 1e3, 3% at 1e4 and negative at 1e5.
MAX_TEMPERATURE = 1000.0
# Where `[data] augment` runs: in the tf.data pipeline, or in the training step.
AUGMENT_ON = ("pipeline", "device")
BUNDLED = "@bundled"
# The training budget `[distill]` takes from `[student]` unless it sets it.
INHERITED_BY_DISTILL = (
    "epochs", "optimizer", "learning_rate", "weight_decay", "schedule", "early_stopping", "reduce_lr", "monitor",
    "class_weight", "image_size", "channels",
)
# Fields of `ExperimentConfig` that record where it came from; no TOML file sets them.
NOT_KEYS = ("path", "tables", "overrides", "origins")


class ConfigError(ValueError):
    """An experiment config that cannot run; the message names the key and the fix."""


@dataclasses.dataclass
class TrainConfig:
    """How one phase trains: its model, optimizer, schedule and callbacks.

    Attributes:
        model: Name in the `kdkeras.models` registry (`kdkeras models` lists them).
        weights: "" (random init), "imagenet", or a path to a weights file.
        image_size: The model's input size, an int or `[height, width]`; 0
            (the default) reads the data's. Teacher and student may differ:
            the data is decoded once at the largest size a model asks for,
            and each model gets its own resized view of every batch.
        channels: The model's input channels, 1 (gray) or 3 (RGB); 0 (the
            default) reads the data's. Gray is repeated to RGB, RGB becomes
            gray by BT.601 luminance.
        options: Extra keyword arguments of `kdkeras.models.get_model`.
        epochs: Maximum number of epochs.
        optimizer: A name in `kdkeras.registry.OPTIMIZERS` (`kdkeras list`).
        learning_rate: Initial learning rate.
        weight_decay: Decoupled weight decay (adamw, sgd); 0 disables it.
        early_stopping: Patience in epochs on `monitor` (best weights are
            restored at the end); 0 disables early stopping.
        schedule: The learning rate over epochs, one of `SCHEDULES`:
            "constant" (changed only by `reduce_lr`) or "cosine" (half a
            cosine from `learning_rate` towards 0 over `epochs`).
        reduce_lr: Patience of ReduceLROnPlateau on `monitor`; 0 disables it.
        monitor: Validation quantity for early stopping, LR reduction and
            best-weight restore: one of `MONITORS`.
        class_weight: "" (every example counts the same) or "balanced":
            weight each class by `n / (k * n_class)` of the train split, so
            a rare class weighs as much as a common one in every loss term.
    """

    model: str = ""
    weights: str = ""
    image_size: int | list = 0
    channels: int = 0
    options: dict = dataclasses.field(default_factory=dict)
    epochs: int = 10
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    schedule: str = "constant"
    early_stopping: int = 0
    reduce_lr: int = 0
    monitor: str = "val_auc"
    class_weight: str = ""


@dataclasses.dataclass
class DistillConfig(TrainConfig):
    """The distillation phase: a `TrainConfig` plus the KD hyper-parameters.

    The student architecture comes from `[student]` unless `model` is set here.

    Attributes:
        alpha: Weight of the student's own loss, in [0, 1]; unset (None)
            trains at the Distiller's default (`DEFAULT_ALPHA`, 0.1).
        temperature: Softening temperature, in (0, `MAX_TEMPERATURE`]; unset
            (None) trains at the loss's own default (4 for the KD family,
            1 for DIST).
        objective: How the terms add up, one of `OBJECTIVES`: "hinton" weighs
            the distillation term by `1 - alpha`, "additive" by 1 (seed 002).
        loss: Distillation loss name, one of
            `kdkeras.registry.DISTILLATION_TERMS` (`kdkeras list`); multi-label
            data need "multilabel_kd".
        loss_options: Extra arguments of the loss, e.g. `{tckd_weight = 1, nckd_weight = 8}`
            for "decoupled_kd".
        warmup_epochs: Epochs over which the distillation terms ramp up
            linearly from 0 (DKD uses 20); 0 disables the warm-up.
        features: Feature-distillation terms, tables with `student_layer`,
            `teacher_layer`, `loss` ("hint", "attention", "cosine") and `weight`.
        teachers: `.keras` teacher files to distil from together; empty means
            the experiment's own `teacher.keras`.
        teacher_weights: Weights of `teachers`' soft targets; empty means equal.
        cache_teacher: Compute the teacher's logits once and stream them with
            the data; needs a train pipeline without augmentation.
        transfer_set: Unlabeled images the student learns from through the
            teacher only (see `kdkeras.workflow.transfer`): "" (none), "train" (the
            train images whose labels `labeled_fraction` withholds), or a
            folder of images or an `.npz` with an `images` array.
        mixup: Concentration of mixup inside the distillation step, teacher
            and student seeing the same mixed images (`kdkeras.distillation.mixup`, Beyer
            et al. 2022); 0 disables it.
    """

    alpha: float | None = None
    temperature: float | None = None
    objective: str = "hinton"
    loss: str = "knowledge_distillation"
    loss_options: dict = dataclasses.field(default_factory=dict)
    warmup_epochs: float = 0.0
    features: list = dataclasses.field(default_factory=list)
    teachers: list = dataclasses.field(default_factory=list)
    teacher_weights: list = dataclasses.field(default_factory=list)
    cache_teacher: bool = False
    transfer_set: str = ""
    mixup: float = 0.0


@dataclasses.dataclass
class SweepConfig:
    """A grid over the distillation temperature and alpha, run by `kdkeras sweep`.

    An empty list leaves that axis at the `[distill]` value.

    Attributes:
        temperatures: Temperatures to try, each > 0.
        alphas: Weights of the student's own loss to try, each in [0, 1].
    """

    temperatures: list = dataclasses.field(default_factory=list)
    alphas: list = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class EvaluateConfig:
    """How the trained models are read out: decision threshold and Grad-CAM layers.

    Attributes:
        operating_point: Binary tasks: `{}` keeps the 0.5 threshold;
            `{sensitivity = 0.95}`, `{specificity = 0.9}` or `{youden = true}`
            picks the threshold on the validation split (see
            `kdkeras.evaluation.operating_point`).
        gradcam_layers: Feature layer of the Grad-CAM maps per model, e.g.
            `{teacher = "stage4_block2_out"}`; a model left out uses its last
            spatial layer.
    """

    operating_point: dict = dataclasses.field(default_factory=dict)
    gradcam_layers: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class ExperimentConfig:
    """A whole experiment: data, the three phases and where it came from.

    Attributes:
        name: Run folder name under the runs directory.
        description: One line for the report.
        seed: Global seed (Python, NumPy, TensorFlow, shuffles).
        strategy: `tf.distribute` strategy, one of `STRATEGIES`.
        deterministic: Make every op deterministic
            (`tf.config.experimental.enable_op_determinism`), so that a seeded
            phase repeats bit for bit on the same machine and software.
        labeled_fraction: Fraction of the train split whose labels the
            student and distill phases see (a seeded, stratified choice); the
            teacher trains on every label. See `kdkeras.workflow.transfer`.
        data: Loader name under `loader` plus that loader's keyword arguments.
        teacher: The teacher phase.
        student: The student-alone phase (the baseline).
        distill: The distillation phase.
        sweep: The temperature x alpha grid of `kdkeras sweep`.
        evaluate: Operating point and Grad-CAM layers of the read-out.
        published: Rows of published numbers to print beside ours.
        data_source: Where to get the dataset of a loader that reads local
            files (shown when `[data]` points at a missing path).
        path: The file it was read from (not a TOML key).
        tables: The raw tables it was resolved from, after `extends` and
            before overrides and inheritance (not a TOML key).
        overrides: The dotted-key overrides it was resolved with, e.g.
            `{"student.epochs": 3}` (not a TOML key; runs record them).
        origins: Which file or override each key came from (not a TOML key).
        distillation_term: The term validation built from `[distill]`, which
            the distill phase reuses; None for a config built without the
            registries, or by hand (the phase then builds it).
    """

    name: str = "experiment"
    description: str = ""
    data_source: str = ""
    seed: int = 0
    strategy: str = "auto"
    deterministic: bool = False
    labeled_fraction: float = 1.0
    data: dict = dataclasses.field(default_factory=dict)
    teacher: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    student: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    distill: DistillConfig = dataclasses.field(default_factory=DistillConfig)
    sweep: SweepConfig = dataclasses.field(default_factory=SweepConfig)
    evaluate: EvaluateConfig = dataclasses.field(default_factory=EvaluateConfig)
    published: list = dataclasses.field(default_factory=list)
    path: str = ""
    tables: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)
    overrides: dict = dataclasses.field(default_factory=dict, compare=False)
    origins: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)
    # Not a dataclass field: a Keras object that `to_dict` and `dataclasses.replace` leave out.
    distillation_term = None

    def to_dict(self):
        """The config as plain TOML-compatible data (without the fields of `NOT_KEYS`)."""
        data = dataclasses.asdict(self)
        for key in NOT_KEYS:
            data.pop(key)
        return data

    def phase(self, name):
        """The `TrainConfig` of phase `name`: "teacher", "student" or "distill"."""
        if name not in ("teacher", "student", "distill"):
            raise ConfigError(f"Unknown phase {name!r}; use teacher, student or distill.")
        return getattr(self, name)

    def student_model(self):
        """(model name, options) of the distilled student."""
        if self.distill.model:
            return self.distill.model, self.distill.options
        return self.student.model, self.student.options
