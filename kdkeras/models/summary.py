"""The zoo as a table: name, role, parameters, input size and FLOPs of each model."""

import dataclasses

from kdkeras.formatting import FLOP_UNITS, format_quantity
from kdkeras.models.flops import count_flops
from kdkeras.models.registry import get_model, get_spec, list_models

_HEADER = ("name", "role", "params", "input", "FLOPs")


@dataclasses.dataclass(frozen=True)
class ModelRow:
    """One model of the table.

    Attributes:
        name: Zoo name.
        role: `"teacher"` or `"student"`.
        params: Total parameter count (`model.count_params()`, BatchNorm
            statistics included, as Keras and the seeds count them).
        input_shape: `(height, width, channels)` it was built with.
        flops: FLOPs of one image, see `count_flops`.
    """

    name: str
    role: str
    params: int
    input_shape: tuple
    flops: int


@dataclasses.dataclass(frozen=True)
class ModelTable:
    """Rows of `model_table`, printable as an aligned text table.

    Attributes:
        rows: The `ModelRow`s, in the order asked for.
        num_classes: Class count the models were built with.
    """

    rows: tuple
    num_classes: int

    def __iter__(self):
        return iter(self.rows)

    def __len__(self):
        return len(self.rows)

    def format(self):
        """Returns the table as text, one model a line, with a footnote on units."""
        cells = [_HEADER] + [
            (
                row.name,
                row.role,
                f"{row.params:,}",
                "x".join(str(dim) for dim in row.input_shape),
                format_quantity(row.flops, FLOP_UNITS),
            )
            for row in self.rows
        ]
        widths = [max(len(line[column]) for line in cells) for column in range(len(_HEADER))]
        numeric = {2, 4}
        lines = [
            "  ".join(
                cell.rjust(width) if column in numeric else cell.ljust(width)
                for column, (cell, width) in enumerate(zip(line, widths))
            ).rstrip()
            for line in cells
        ]
        lines.insert(1, "  ".join("-" * width for width in widths))
        lines.append(
            f"{self.num_classes} classes; FLOPs of one image = 2 x multiply-accumulates "
            "of conv and dense layers."
        )
        return "\n".join(lines)

    def __str__(self):
        return self.format()


def model_table(names=None, num_classes=2, role=None):
    """Builds each model at its default input size and measures it.

    Building the 224 px teachers takes a few seconds each (weights are
    random: nothing is downloaded).

    Args:
        names: Zoo names, in the order wanted; `None` for the whole zoo.
        num_classes: Class count to build the models with.
        role: Keep only `"teacher"` or `"student"` models; `None` keeps all.

    Returns:
        A `ModelTable`; `print(table)` shows it.

    Example:

    ```python
    print(model_table(["vgg16_transfer", "cnn296k"], num_classes=3))
    ```
    """
    allowed = list_models(role)
    specs = allowed if names is None else [get_spec(name) for name in names]
    specs = [spec for spec in specs if spec in allowed]
    rows = []
    for spec in specs:
        model = get_model(spec.name, num_classes=num_classes)
        rows.append(
            ModelRow(
                name=spec.name,
                role=spec.role,
                params=model.count_params(),
                input_shape=spec.default_input_shape,
                flops=count_flops(model),
            )
        )
    return ModelTable(rows=tuple(rows), num_classes=num_classes)
