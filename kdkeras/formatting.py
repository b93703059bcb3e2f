"""Numbers as kdkeras prints them, in one place: reports, exports, model summaries, benchmarks."""

COUNT_UNITS = ((1e9, "B"), (1e6, "M"), (1e3, "k"), (1, ""))
BYTE_UNITS = ((1e9, "GB"), (1e6, "MB"), (1e3, "kB"), (1, "B"))
FLOP_UNITS = ((1e9, "G"), (1e6, "M"), (1e3, "k"), (1, ""))


def format_quantity(value, units):
    """`value` in the largest unit it reaches, 3 significant digits: `162 k`, `742 kB`.

    Args:
        value: A number, or None ("n/a").
        units: `(scale, unit)` pairs from largest to smallest, e.g. `BYTE_UNITS`.
    """
    if value is None:
        return "n/a"
    scale, unit = units[-1]
    for larger_scale, larger_unit in units[:-1]:
        # Pick the unit after rounding to 3 significant digits: 999,999 is
        # "1 M", not "1e+03 k".
        if abs(value) >= larger_scale * 0.9995:
            scale, unit = larger_scale, larger_unit
            break
    return f"{value / scale:.3g} {unit}".rstrip()


def format_count(value):
    """A parameter count: `162 k`, `27.6 M`."""
    return format_quantity(value, COUNT_UNITS)


def format_bytes(value):
    """A size on disk in decimal units: `742 kB`."""
    return format_quantity(value, BYTE_UNITS)


def format_latency(latency):
    """The smallest batch of a `kdkeras.evaluation.profiling.measure_latency` result, per image: `1.33 ms/img`."""
    if not latency:
        return "n/a"
    batch = min(latency, key=int)
    ms = latency[batch]["ms_per_image"]
    if ms >= 1000.0:
        text = f"{ms / 1000.0:.3g} s/img"
    elif ms < 0.01:
        text = f"{ms * 1000.0:.3g} µs/img"
    else:
        text = f"{ms:.3g} ms/img"
    return text if int(batch) == 1 else f"{text} (batch {batch})"


def format_ratio(ratio):
    """A size ratio: `4.4x`, `52x`."""
    return f"{ratio:.0f}x" if ratio >= 10 else f"{ratio:.2g}x"


def format_metric(value):
    """A metric in [0, 1] with three decimals, as the MedMNIST papers print it."""
    return "n/a" if value is None else f"{value:.3f}"
