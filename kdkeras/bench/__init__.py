"""Benchmarks that back the numbers in BENCHMARKS.md, each a runnable module.

- `python -m kdkeras.bench.speed`: train steps per second of the Distiller
  against its floor (student step + teacher forward), `keras.distillation`,
  cached-logit distillation and the student alone, with and without XLA.
- `python -m kdkeras.bench.accuracy`: teacher, student alone and distilled
  student over several seeds on the bundled PneumoniaMNIST, mean and standard
  deviation beside MedMNIST v2's published rows.
- `kdkeras export`: SavedModel and TFLite files of the distilled student with
  their size, latency and accuracy (see `kdkeras.export`).
- `python -m kdkeras.bench.report`: assembles BENCHMARKS.md from their outputs.

`make bench` runs all four.
"""
