"""False discovery rate control: Benjamini-Hochberg and Benjamini-Yekutieli.

The family is every non-NaN p-value of the input, whatever its shape (e.g. all
channels x time windows of an MEG comparison). The arithmetic follows
``statsmodels.stats.multitest.fdrcorrection`` operation for operation, so the
results equal ``multipletests(method="fdr_bh" / "fdr_by")`` bit for bit and
``scipy.stats.false_discovery_control`` to rounding (scipy multiplies by
``m / i`` where statsmodels divides by ``i / m``).
"""

from __future__ import annotations

import numpy as np

__all__ = ["fdr_correction", "FDR_METHODS"]

FDR_METHODS = ("bh", "by")


def fdr_correction(pvals, alpha: float = 0.05, method: str = "bh"):
    r"""Benjamini-Hochberg / Benjamini-Yekutieli FDR correction.

    Let :math:`p_{(1)} \le \dots \le p_{(m)}` be the sorted p-values of the
    family (the ``m`` non-NaN entries of ``pvals``) and

    .. math::

        c(m) = 1 \;\;\text{(BH, independent or positively dependent tests)},
        \qquad c(m) = \sum_{j=1}^{m} 1/j \;\;\text{(BY, any dependence)}.

    The adjusted p-values are the step-up minima

    .. math::

        \tilde p_{(i)} = \min\Bigl(1,\; \min_{j \ge i} \frac{m\, c(m)}{j}\, p_{(j)}\Bigr),

    and the rejected hypotheses are :math:`H_{(1)}, \dots, H_{(k)}` with
    :math:`k = \max\{i : p_{(i)} \le \frac{i}{m\, c(m)}\,\alpha\}` (none if no
    such ``i``), i.e. those with :math:`\tilde p \le \alpha`.

    Parameters
    ----------
    pvals : array_like, any shape
        p-values in [0, 1]. NaN entries are not part of the family: they get
        NaN adjusted p-values and are never rejected.
    alpha : float, default 0.05
        Target false discovery rate, in (0, 1).
    method : {"bh", "by"}
        Benjamini-Hochberg (1995) or Benjamini-Yekutieli (2001).

    Returns
    -------
    reject : ndarray of bool, same shape as ``pvals``
    p_adjusted : ndarray of float64, same shape as ``pvals``

    Raises
    ------
    ValueError
        For p-values outside [0, 1] (or infinite), ``alpha`` outside (0, 1),
        or an unknown ``method``.

    Examples
    --------
    >>> reject, p_adj = fdr_correction([0.01, 0.04, 0.03, 0.20])
    >>> reject.tolist()
    [True, False, False, False]
    >>> p_adj.round(4).tolist()
    [0.04, 0.0533, 0.0533, 0.2]
    >>> fdr_correction([0.01, float("nan")], method="by")[1].tolist()
    [0.01, nan]
    """
    if not isinstance(method, str) or method.lower() not in FDR_METHODS:
        raise ValueError(f"method must be one of {FDR_METHODS}, got {method!r}")
    method = method.lower()
    try:
        alpha = float(alpha)
    except (TypeError, ValueError) as err:
        raise ValueError(f"alpha must be a number in (0, 1), got {alpha!r}") from err
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")

    p = np.asarray(pvals)
    if not (np.issubdtype(p.dtype, np.floating) or np.issubdtype(p.dtype, np.integer)):
        raise ValueError(f"pvals must be numeric, got dtype {p.dtype}")
    p = p.astype(np.float64)
    finite = ~np.isnan(p)
    bad = finite & ~((p >= 0.0) & (p <= 1.0))
    if bad.any():
        raise ValueError(
            f"p-values must lie in [0, 1] (NaN allowed, meaning 'not tested'); "
            f"{int(bad.sum())} do not, e.g. {p[bad].ravel()[0]!r}"
        )

    reject = np.zeros(p.shape, dtype=bool)
    p_adj = np.full(p.shape, np.nan)
    family = p[finite]
    m = family.size
    if m == 0:
        return reject, p_adj

    order = np.argsort(family)
    p_sorted = family[order]
    ecdffactor = np.arange(1, m + 1) / float(m)
    if method == "by":
        ecdffactor = ecdffactor / np.sum(1.0 / np.arange(1, m + 1))

    rej_sorted = p_sorted <= ecdffactor * alpha
    if rej_sorted.any():
        rej_sorted[: np.nonzero(rej_sorted)[0].max()] = True

    adj_sorted = np.minimum.accumulate((p_sorted / ecdffactor)[::-1])[::-1]
    adj_sorted = np.minimum(adj_sorted, 1.0)

    rej_family = np.empty(m, dtype=bool)
    adj_family = np.empty(m)
    rej_family[order] = rej_sorted
    adj_family[order] = adj_sorted
    reject[finite] = rej_family
    p_adj[finite] = adj_family
    return reject, p_adj
