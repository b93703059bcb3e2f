"""The one-sentence verdict of `compare_models`, with its evidence (interval, test, p-value)."""


def verdict(result):
    """One sentence stating which model is better on ACC and AUC, and by how much.

    Args:
        result: A `compare_models` result whose entries carry `significant`,
            `difference`, the interval and the test's `p_value`.

    Returns:
        e.g. "The distilled student is better than the student alone by +1.6
        ACC points (95% CI +0.3 to +2.9, McNemar p = 0.021), with no
        significant difference in AUC (+0.002, 95% CI -0.003 to +0.007,
        DeLong p = 0.41)."
    """
    name_a, name_b, alpha = result["name_a"], result["name_b"], result["alpha"]
    better, worse, unclear = [], [], []
    for metric in ("acc", "auc"):
        entry = result[metric]
        if entry is None:
            continue
        if entry["significant"]:
            (better if entry["difference"] > 0 else worse).append(_by_clause(metric, entry, alpha))
        else:
            unclear.append(_no_difference_clause(metric, entry, alpha))
    subject = name_a[:1].upper() + name_a[1:]
    if not better and not worse:
        unclear = " or ".join(unclear)
        return f"No significant difference in {unclear} between {name_a} and {name_b}."
    if better and worse:
        sentence = f"{subject} is better than {name_b} {better[0]} but worse {worse[0]}"
    elif better:
        sentence = f"{subject} is better than {name_b} {' and '.join(better)}"
    else:
        sentence = f"{subject} is worse than {name_b} {' and '.join(worse)}"
    if unclear:
        sentence += f", with no significant difference in {unclear[0]}"
    return sentence + "."


def _by_clause(metric, entry, alpha):
    # "by +1.6 ACC points (95% CI +0.3 to +2.9, McNemar p = 0.021)"; a loss is
    # stated as its size ("worse by 1.6 ACC points"), its interval keeps the sign.
    size = _signed(entry["difference"], metric)
    if entry["difference"] < 0:
        size = size[1:]
    unit = "ACC points" if metric == "acc" else metric.upper()
    return f"by {size} {unit} ({_evidence(entry, alpha)})"


def _no_difference_clause(metric, entry, alpha):
    # "ACC (-0.3 points, 95% CI -1.9 to +1.3, McNemar p = 0.81)"
    unit = " points" if metric == "acc" else ""
    size = _signed(entry["difference"], metric)
    return f"{metric.upper()} ({size}{unit}, {_evidence(entry, alpha)})"


def _evidence(entry, alpha):
    ci = (
        f"{100 * entry['confidence']:g}% CI {_signed(entry['low'], entry['metric'])} to "
        f"{_signed(entry['high'], entry['metric'])}"
    )
    if entry["test"] is None:
        return ci
    test = entry["test"].split()[0]
    if entry["p_value"] is None:
        return f"{ci}, {test} test undefined (zero standard error)"
    return f"{ci}, {test} p {_format_p(entry['p_value'], alpha)}"


def _signed(difference, metric):
    # ACC differences in percentage points, AUC differences on their own scale.
    if metric == "acc":
        return f"{100.0 * difference:+.1f}"
    return f"{difference:+.3f}"


def _format_p(p_value, alpha):
    if p_value < 0.001:
        return "< 0.001"
    # Two significant digits, more if rounding would carry p across alpha.
    for digits in range(2, 7):
        text = f"{p_value:.{digits}g}"
        if (float(text) < alpha) == (p_value < alpha):
            break
    if "." not in text:
        text += ".0"
    return f"= {text}"
