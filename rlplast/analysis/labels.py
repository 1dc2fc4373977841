"""Human labels for quantities in figures: a column key → a readable title and an axis label with units.

Titles may hold matplotlib mathtext (``$…$``). Figures never show raw keys such as ``collapse/nc1_greedy``: :func:`metric_title` gives
"NC1 (greedy actions)" and :func:`metric_unit` "ratio". Keys are looked up without their group
prefix (``collapse/``, ``plasticity/``, ``train/``, …), so the supervised track's bare keys
(``nc1``, ``srank``, ``online_acc``) get the same labels as the RL columns. A ``_greedy`` /
``_taken`` suffix names the NC labeling, a ``/<layer>`` suffix the layer. A key not in
:data:`LABELS` (a user metric, a new intervention key) falls back to the key itself as the title
and no unit, so nothing is mislabelled.

Example:
    >>> metric_title("collapse/nc1_greedy"), metric_unit("collapse/nc1_greedy")
    ('NC1 (greedy actions)', 'ratio')
    >>> metric_title("plasticity/dormant_fraction/q_net.1"), metric_unit("plasticity/dormant_fraction")
    ('dormant units, layer q_net.1', 'fraction of units')
    >>> metric_title("custom/score"), metric_unit("custom/score")
    ('custom/score', '')
"""

from __future__ import annotations

__all__ = ["LABELS", "axis_label", "metric_title", "metric_unit"]

#: Base key (no group prefix, no labeling or layer suffix) → (title, unit).
LABELS: dict[str, tuple[str, str]] = {
    # return quantities (rlplast.analysis.scores)
    "mean_return": ("mean return per episode", "return"),
    "auc": ("step-weighted mean return", "return"),
    "end_return": ("end-of-task return", "return"),
    "return_drop": ("return drop vs task 0", "return"),
    "ep_return_mean": ("episode return", "return"),
    # neural collapse (rlplast.metrics.collapse)
    "nc1": ("NC1", "ratio"),
    "nc1_quotient": (r"NC1 quotient $\mathrm{Tr}\,\Sigma_W / \mathrm{Tr}\,\Sigma_B$", "ratio"),
    "nc1_batch": ("batch NC1 (regularizer)", "ratio"),
    "nc2_equinorm_means": ("NC2 equinorm, class means", "coeff. of variation"),
    "nc2_equinorm_weights": ("NC2 equinorm, weights", "coeff. of variation"),
    "nc2_equiangular": ("NC2 equiangularity", "std of cosines"),
    "nc2_maxangle": ("NC2 max-angle", "mean |cos + 1/(C−1)|"),
    "nc2_etf_error": ("NC2 ETF error", "Frobenius distance"),
    "nc3": ("NC3 self-duality", "squared distance"),
    "nc3_etf_error": ("NC3 ETF error", "Frobenius distance"),
    "nc4_mismatch": ("NC4 mismatch", "fraction of samples"),
    "nc4_agreement": ("NC4 agreement", "fraction of samples"),
    "c_eff": ("classes kept", "count"),
    # plasticity (rlplast.metrics.plasticity, probe)
    "srank": ("srank", "singular values"),
    "effective_rank": ("effective rank", "exp(entropy)"),
    "feature_rank": ("feature rank", "singular values"),
    "dormant_fraction": ("dormant units", "fraction of units"),
    "dormant_units": ("dormant units", "count"),
    "dead_fraction": ("dead units", "fraction of units"),
    "dead_units": ("dead units", "count"),
    "weight_magnitude": ("mean |weight|", "absolute value"),
    "distance_from_init": ("distance from init ‖θ − θ₀‖", "L2 norm"),
    "feature_norm": ("feature norm ‖h‖", "L2 norm"),
    "probe_loss": ("probe loss, trained net", "MSE"),
    "probe_loss_fresh": ("probe loss, fresh net", "MSE"),
    "probe_ratio": ("probe ratio", "trained / fresh loss"),
    # interventions
    "nc_reg_loss": ("NC regularizer term", "loss"),
    "nc_reg_skipped": ("NC regularizer skipped batches", "count"),
    "resets": ("last-layer resets", "count"),
    "full_resets": ("full resets", "count"),
    "shrink_perturbs": ("shrink-and-perturb events", "count"),
    "redo_dormant_fraction": ("ReDo dormant units", "fraction of units"),
    "redo_units_reset": ("ReDo units reset", "count"),
    "redo_checks": ("ReDo checks", "count"),
    # supervised track (rlplast.supervised)
    "online_acc": ("online accuracy", "fraction correct"),
    "online_acc_last_epoch": ("online accuracy, last pass", "fraction correct"),
    "train_acc": ("training accuracy", "fraction correct"),
    "test_acc": ("test accuracy", "fraction correct"),
    "warmup_acc": ("warm-up accuracy", "fraction correct"),
    "warmup_test_acc": ("test accuracy at the checkpoint", "fraction correct"),
    "final_test_acc": ("final test accuracy", "fraction correct"),
    "final_train_acc": ("final training accuracy", "fraction correct"),
}
_LABELINGS = {"greedy": "greedy actions", "taken": "taken actions"}


def _split(key: str) -> tuple[str, str, str]:
    """``(base, labeling, layer)`` of a key: ``collapse/nc1_greedy`` → ``("nc1", "greedy", "")``."""
    parts = key.split("/")
    layer = ""
    if len(parts) >= 3:  # group/name/layer
        layer = "/".join(parts[2:])
        name = parts[1]
    else:
        name = parts[-1]
    head, _, tail = name.rpartition("_")
    if tail in _LABELINGS and head in LABELS:
        return head, tail, layer
    if name.startswith("count_") and tail in _LABELINGS:  # collapse/count_<c>_<labeling>
        return name[: -len(tail) - 1], tail, layer
    return name, "", layer


def metric_title(key: str) -> str:
    """A readable title for a column key (the key itself when unknown)."""
    base, labeling, layer = _split(key)
    if base in LABELS:
        title = LABELS[base][0]
    elif base.startswith("count_"):
        title = f"samples of class {base[len('count_') :]}"
    else:
        return key
    if labeling:
        title += f" ({_LABELINGS[labeling]})"
    if layer:
        title += f", layer {layer}"
    return title


def metric_unit(key: str) -> str:
    """The unit of a column key's values ("" when unknown)."""
    base, _, _ = _split(key)
    if base in LABELS:
        return LABELS[base][1]
    return "count" if base.startswith("count_") else ""


def axis_label(key: str, log: bool = False) -> str:
    """An axis label: the unit (or the title when the unit is unknown), ``, log scale`` on a log axis."""
    text = metric_unit(key) or metric_title(key)
    return f"{text}, log scale" if log else text
