"""kdkeras: knowledge distillation of medical-image classifiers in Keras 3."""

__version__ = "0.1.0"
