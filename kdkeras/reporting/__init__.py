"""Figures, comparison table and markdown report of a distillation run.

`write_report` reads a run folder (see `kdkeras.runs`: each model's metrics,
history and test predictions) and writes `report.md` with its PNG figures.
Every number in the report is recomputed from the saved predictions, so the
report can be checked, or regenerated, without the models.

Each `plot_*` writes a PNG; its `*_figure` twin returns the same
`matplotlib.figure.Figure` unsaved (to show in a notebook, or inspect).

Modules: `figures` (the plots and their shared style), `roc` (ROC curves), `history` (reading
training histories), `tables` (markdown), `report` (`write_report`).
"""

from kdkeras.reporting.figures import (
    confusion_matrix_figure,
    history_figure,
    plot_confusion_matrix,
    plot_history,
    plot_prediction_grid,
    plot_validation_overlay,
    prediction_grid_figure,
    validation_overlay_figure,
)
from kdkeras.reporting.report import write_report
from kdkeras.reporting.roc import plot_roc_curves, roc_curves_figure
from kdkeras.reporting.tables import comparison_table

__all__ = [
    "comparison_table",
    "confusion_matrix_figure",
    "history_figure",
    "plot_confusion_matrix",
    "plot_history",
    "plot_prediction_grid",
    "plot_roc_curves",
    "plot_validation_overlay",
    "prediction_grid_figure",
    "roc_curves_figure",
    "validation_overlay_figure",
    "write_report",
]
