"""Parametric tests: Pearson p-values, Student/Welch t-tests, across-model correlations.

Everything here is closed-form and cheap, so it runs in float64 numpy/scipy
(exact agreement with ``scipy.stats``), except the correlations themselves,
which come from the library's one Pearson implementation,
:func:`jaxalign.ridge.pearson_r` (float32).

NaN policy: NaN inputs propagate to NaN outputs (scipy's
``nan_policy="propagate"``); nothing is silently dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats as _st

from jaxalign.ridge import pearson_r
from jaxalign.stats._fdr import fdr_correction

__all__ = [
    "ALTERNATIVES",
    "ModelCorrelation",
    "correlate_across_models",
    "pearson_pvalue",
    "student_ttest",
    "welch_ttest",
]

ALTERNATIVES = ("two-sided", "greater", "less")

# |r| may exceed 1 by float32 rounding (pearson_r works in float32).
_R_TOL = 1e-5


def _check_alternative(alternative: str) -> str:
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative must be one of {ALTERNATIVES}, got {alternative!r}")
    return alternative


def _t_pvalue(t, df, alternative: str):
    """p-value of Student t statistics ``t`` with ``df`` degrees of freedom."""
    if alternative == "greater":
        return _st.t.sf(t, df)
    if alternative == "less":
        return _st.t.cdf(t, df)
    return 2.0 * _st.t.sf(np.abs(t), df)


def _scalar_or_array(x):
    x = np.asarray(x)
    return x[()] if x.ndim == 0 else x


def pearson_pvalue(r, n, alternative: str = "two-sided"):
    r"""p-value of a Pearson correlation ``r`` from ``n`` paired samples.

    Under the null hypothesis of no correlation (bivariate normal data)

    .. math::

        t = r \sqrt{\frac{n - 2}{1 - r^2}} \sim t_{n-2},

    and the p-value is :math:`P(T \ge t)` ("greater", positive correlation),
    :math:`P(T \le t)` ("less") or :math:`2 P(T \ge |t|)` ("two-sided").
    This equals the p-value of ``scipy.stats.pearsonr`` (which writes the
    same distribution as a beta distribution of ``r``).

    Parameters
    ----------
    r : array_like
        Correlations in [-1, 1] (values beyond by less than 1e-5, float32
        rounding, are clipped). NaN gives a NaN p-value.
    n : int or array_like of int
        Number of samples behind each correlation, >= 3; broadcast with ``r``.
    alternative : {"two-sided", "greater", "less"}

    Returns
    -------
    p : float or ndarray of float64 (shape of ``broadcast(r, n)``)
        ``|r| = 1`` gives p = 0 (or 1 for the opposite one-sided tail).

    Examples
    --------
    >>> round(float(pearson_pvalue(0.8, 5)), 6)
    0.104088
    >>> pearson_pvalue([0.5, -0.5], 20, alternative="greater").round(4).tolist()
    [0.0124, 0.9876]
    """
    _check_alternative(alternative)
    r = np.asarray(r, dtype=np.float64)
    n_arr = np.asarray(n)
    if not (np.issubdtype(n_arr.dtype, np.integer) or np.issubdtype(n_arr.dtype, np.floating)):
        raise ValueError(f"n must be numeric, got dtype {n_arr.dtype}")
    n_arr = n_arr.astype(np.float64)
    if not np.isfinite(n_arr).all() or (n_arr != np.round(n_arr)).any():
        raise ValueError("n must be whole numbers")
    if (n_arr < 3).any():
        raise ValueError(f"n must be >= 3 for a correlation p-value, got min n = {n_arr.min():g}")
    if (np.abs(r) > 1.0 + _R_TOL).any():
        raise ValueError(f"correlations must lie in [-1, 1], got {r[np.abs(r) > 1 + _R_TOL].ravel()[0]!r}")
    r, n_arr = np.broadcast_arrays(np.clip(r, -1.0, 1.0), n_arr)
    df = n_arr - 2.0
    with np.errstate(divide="ignore", invalid="ignore"):
        t = r * np.sqrt(df / ((1.0 - r) * (1.0 + r)))
    return _scalar_or_array(_t_pvalue(t, df, alternative))


def _two_samples(a, b, axis: int, min_each: int, min_total: int, name: str):
    a = np.asarray(a)
    b = np.asarray(b)
    for arr, nm in ((a, "a"), (b, "b")):
        if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
            raise ValueError(f"{name}: {nm} must be numeric, got dtype {arr.dtype}")
        if arr.ndim == 0:
            raise ValueError(f"{name}: {nm} must have at least one dimension")
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    try:
        a = np.moveaxis(a, axis, 0)
        b = np.moveaxis(b, axis, 0)
    except np.exceptions.AxisError as err:
        raise ValueError(f"{name}: axis {axis} out of range for shapes {a.shape}, {b.shape}") from err
    try:
        np.broadcast_shapes(a.shape[1:], b.shape[1:])
    except ValueError as err:
        raise ValueError(
            f"{name}: a and b must have the same shape apart from `axis` "
            f"(or broadcast), got {a.shape} and {b.shape} (axis moved first)"
        ) from err
    na, nb = a.shape[0], b.shape[0]
    if na < min_each or nb < min_each or na + nb < min_total:
        raise ValueError(
            f"{name} needs >= {min_each} observations per group and >= {min_total} "
            f"in total, got {na} and {nb}"
        )
    return a, b, na, nb


def _ttest(a, b, alternative, axis, equal_var):
    name = "student_ttest" if equal_var else "welch_ttest"
    _check_alternative(alternative)
    a, b, na, nb = _two_samples(a, b, axis, 1 if equal_var else 2, 3, name)
    ma, mb = a.mean(axis=0), b.mean(axis=0)
    # ddof=1 of a single observation is 0/0; only reachable for Student,
    # where its weight (na - 1) is 0, so define it as 0.
    va = a.var(axis=0, ddof=1) if na > 1 else np.zeros_like(ma)
    vb = b.var(axis=0, ddof=1) if nb > 1 else np.zeros_like(mb)
    with np.errstate(divide="ignore", invalid="ignore"):
        if equal_var:
            df = np.full(np.broadcast_shapes(ma.shape, mb.shape), na + nb - 2.0)
            svar = ((na - 1) * va + (nb - 1) * vb) / (na + nb - 2.0)
            denom = np.sqrt(svar * (1.0 / na + 1.0 / nb))
        else:
            vna, vnb = va / na, vb / nb
            df = (vna + vnb) ** 2 / (vna**2 / (na - 1) + vnb**2 / (nb - 1))
            # scipy's convention when both variances are 0 (df = 0/0)
            df = np.where(np.isnan(df), 1.0, df)
            denom = np.sqrt(vna + vnb)
        t = (ma - mb) / denom
    p = _t_pvalue(t, df, alternative)
    return _scalar_or_array(t), _scalar_or_array(p)


def welch_ttest(a, b, alternative: str = "two-sided", axis: int = 0):
    r"""Welch's unequal-variance two-sample t-test (vectorised).

    With group means :math:`\bar a, \bar b`, unbiased variances
    :math:`s_a^2, s_b^2` and sizes :math:`n_a, n_b`:

    .. math::

        t = \frac{\bar a - \bar b}{\sqrt{s_a^2/n_a + s_b^2/n_b}}, \qquad
        \nu = \frac{(s_a^2/n_a + s_b^2/n_b)^2}
                   {\frac{(s_a^2/n_a)^2}{n_a - 1} + \frac{(s_b^2/n_b)^2}{n_b - 1}},

    p from Student's t with :math:`\nu` (Welch-Satterthwaite) degrees of
    freedom. "greater" tests mean(a) > mean(b). Equals
    ``scipy.stats.ttest_ind(a, b, equal_var=False, alternative=..., axis=...)``,
    including its conventions for degenerate data: both groups constant gives
    t = +-inf (p = 0) if the means differ, NaN if they are equal; NaN inputs
    propagate.

    Parameters
    ----------
    a, b : array_like
        Samples along ``axis``; the other dimensions must match (or broadcast).
        At least 2 observations per group.
    alternative : {"two-sided", "greater", "less"}
    axis : int, default 0

    Returns
    -------
    t, p : float or ndarray (the shape without ``axis``)

    Examples
    --------
    >>> t, p = welch_ttest([1.0, 2.0, 3.0, 4.0], [3.0, 5.0, 7.0])
    >>> round(float(t), 4), round(float(p), 4)
    (-1.8898, 0.1485)
    """
    return _ttest(a, b, alternative, axis, equal_var=False)


def student_ttest(a, b, alternative: str = "two-sided", axis: int = 0):
    r"""Student's equal-variance two-sample t-test (vectorised).

    .. math::

        s_p^2 = \frac{(n_a - 1) s_a^2 + (n_b - 1) s_b^2}{n_a + n_b - 2}, \qquad
        t = \frac{\bar a - \bar b}{\sqrt{s_p^2 (1/n_a + 1/n_b)}},

    p from Student's t with :math:`n_a + n_b - 2` degrees of freedom.
    "greater" tests mean(a) > mean(b). Equals
    ``scipy.stats.ttest_ind(a, b, equal_var=True, alternative=..., axis=...)``
    (same degenerate-data conventions as :func:`welch_ttest`).

    Parameters
    ----------
    a, b : array_like
        Samples along ``axis``; the other dimensions must match (or broadcast).
        At least 1 observation per group and 3 in total.
    alternative : {"two-sided", "greater", "less"}
    axis : int, default 0

    Returns
    -------
    t, p : float or ndarray (the shape without ``axis``)

    Examples
    --------
    >>> t, p = student_ttest([1.0, 2.0, 3.0, 4.0], [3.0, 5.0, 7.0], alternative="less")
    >>> round(float(t), 4), round(float(p), 4)
    (-2.03, 0.0491)
    """
    return _ttest(a, b, alternative, axis, equal_var=True)


@dataclass(frozen=True)
class ModelCorrelation:
    """Result of :func:`correlate_across_models`.

    Attributes
    ----------
    r, p, p_fdr : ndarray of float64
        Pearson r, two-sided p-value and FDR-adjusted p-value per
        (score column, property column) pair; shape ``(k, q)``, with the ``k``
        axis absent for 1-D ``scores`` and the ``q`` axis absent for 1-D
        ``properties`` (both 1-D: 0-d arrays).
    reject : ndarray of bool
        ``p_fdr``-based rejections at ``alpha`` (never for NaN pairs).
    n_models : int
    fdr_method : str
    alpha : float
    """

    r: np.ndarray
    p: np.ndarray
    p_fdr: np.ndarray
    reject: np.ndarray
    n_models: int
    fdr_method: str
    alpha: float


def _models_matrix(x, name: str) -> tuple[np.ndarray, bool]:
    x = np.asarray(x)
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise ValueError(f"{name} must be numeric, got dtype {x.dtype}")
    if x.ndim not in (1, 2):
        raise ValueError(f"{name} must be (n_models,) or (n_models, k), got shape {x.shape}")
    if np.isinf(x).any():
        raise ValueError(f"{name} contains inf")
    vector = x.ndim == 1
    x = x.astype(np.float64)
    return (x[:, None] if vector else x), vector


def correlate_across_models(scores, properties, fdr_method: str = "bh", alpha: float = 0.05):
    r"""Pearson r across models between alignment scores and model properties.

    For every score column :math:`s_i` (e.g. brain alignment on a benchmark)
    and property column :math:`x_j` (e.g. log10 parameter count, MMLU), over
    the ``n`` models:

    .. math::

        r_{ij} = \frac{\sum_m (s_{mi} - \bar s_i)(x_{mj} - \bar x_j)}
                      {\sqrt{\sum_m (s_{mi} - \bar s_i)^2 \sum_m (x_{mj} - \bar x_j)^2}},
        \qquad p_{ij} = 2 P(T_{n-2} \ge |t_{ij}|),\;
        t_{ij} = r_{ij}\sqrt{(n-2)/(1-r_{ij}^2)},

    then FDR (:func:`fdr_correction`) over all ``k x q`` pairs. r comes from
    :func:`jaxalign.ridge.pearson_r` (float32: r agrees with scipy to ~1e-6);
    the p-values are computed in float64 from that r.

    NaN handling: a pair involving a NaN value or a constant column has
    r = p = p_fdr = NaN, is left out of the FDR family and is never rejected
    (no pairwise deletion: drop models with missing values beforehand if a
    complete-case analysis is wanted).

    Parameters
    ----------
    scores : array_like, (n_models,) or (n_models, k)
    properties : array_like, (n_models,) or (n_models, q)
    fdr_method : {"bh", "by"}
    alpha : float, default 0.05
        FDR level for ``reject``.

    Returns
    -------
    ModelCorrelation

    Raises
    ------
    ValueError
        Fewer than 3 models, mismatched model counts, non-numeric or infinite
        input, bad ``fdr_method`` / ``alpha``.

    Examples
    --------
    >>> import numpy as np
    >>> log_params = np.log10([124e6, 355e6, 774e6, 1.5e9, 7e9])
    >>> alignment = np.array([0.30, 0.33, 0.34, 0.36, 0.40])
    >>> res = correlate_across_models(alignment, log_params)
    >>> round(float(res.r), 3), bool(res.reject)
    (0.996, True)
    """
    S, s_vec = _models_matrix(scores, "scores")
    P, p_vec = _models_matrix(properties, "properties")
    n = S.shape[0]
    if P.shape[0] != n:
        raise ValueError(f"scores and properties have different numbers of models: {n} vs {P.shape[0]}")
    if n < 3:
        raise ValueError(f"need at least 3 models to correlate, got {n}")
    if S.shape[1] < 1 or P.shape[1] < 1:
        raise ValueError("scores and properties need at least one column each")
    # validate the FDR arguments before any work
    fdr_correction(np.zeros(0), alpha=alpha, method=fdr_method)

    k, q = S.shape[1], P.shape[1]
    left = np.broadcast_to(S[:, :, None], (n, k, q))
    right = np.broadcast_to(P[:, None, :], (n, k, q))
    r = np.asarray(pearson_r(left, right), dtype=np.float64)  # (k, q); NaN if constant
    # any NaN model value makes the pair undefined (not a silent deletion)
    r = np.where(np.isnan(left).any(0) | np.isnan(right).any(0), np.nan, r)
    r = np.clip(r, -1.0, 1.0)
    p = np.asarray(pearson_pvalue(r, n, alternative="two-sided"), dtype=np.float64)
    reject, p_fdr = fdr_correction(p, alpha=alpha, method=fdr_method)

    def shape(a):
        if s_vec:
            a = a[0]
        if p_vec:
            a = a[..., 0]
        return np.asarray(a)

    return ModelCorrelation(
        r=shape(r), p=shape(p), p_fdr=shape(p_fdr), reject=shape(reject),
        n_models=n, fdr_method=fdr_method.lower(), alpha=float(alpha),
    )
