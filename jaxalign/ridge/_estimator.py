"""scikit-learn style estimator over the functional engine."""

from __future__ import annotations

import numpy as np

from jaxalign.ridge._engine import ridge_cv
from jaxalign.ridge._scores import pearson_r
from jaxalign.ridge._validation import check_design, check_targets

__all__ = ["RidgeCV"]


class RidgeCV:
    """Multi-target ridge regression, one penalty per target chosen by CV.

    Parameters
    ----------
    alphas : sequence of float > 0, default ``np.logspace(-2, 8, 11)``
    cv : int or splitter or list of (train, val) pairs, default 5
        ``5`` means 5 contiguous folds in sample order (no shuffling), the
        right default for time series; pass
        :class:`~jaxalign.ridge.ContiguousKFold` with ``gap`` to drop samples
        at fold boundaries, or any scikit-learn splitter.
    scoring : {"pearson", "r2", "neg_mse"}, default "pearson"
    fit_intercept : bool, default False
    method : {"auto", "primal", "dual"}, default "auto"
    memory_budget : int or str, optional
        Device bytes per target batch (e.g. ``"2GiB"``); default from the
        device's free memory.
    batch_size : int, optional
        Force the number of targets per batch.
    devices : None, int or list of devices
        Targets are sharded over several devices.
    progress : bool, optional
    precision : {"auto", "accurate", "fast"}, default "auto"
        See :func:`~jaxalign.ridge.ridge_cv`: "auto" uses the fast target
        projection only for well-conditioned designs.
    penalty_sweep : {"auto", "partial_fractions", "direct"}, default "auto"
        See :func:`~jaxalign.ridge.ridge_cv`: how each fold scores the grid
        (partial fractions: one float64 product per target for all penalties).
    folds_from : {"auto", "grams", "rows"}, default "auto"
        See :func:`~jaxalign.ridge.ridge_cv`: "grams" forms each fold from
        per-block Gram matrices and cross-products computed once (fast when
        there are many more samples than features).

    Attributes
    ----------
    best_alphas_ : (n_targets,)
    coef_ : (n_features, n_targets)
    intercept_ : (n_targets,)
    cv_scores_ : (n_alphas, n_targets)
        CV score of every penalty, averaged over folds.
    result_ : RidgeCVResult with everything else (splits, method, batch size).

    Examples
    --------
    >>> import numpy as np
    >>> from jaxalign.ridge import RidgeCV
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((200, 10)).astype("float32")
    >>> Y = X @ rng.standard_normal((10, 3)) + rng.standard_normal((200, 3))
    >>> model = RidgeCV(alphas=np.logspace(-2, 4, 7), cv=5).fit(X, Y)
    >>> model.coef_.shape, model.cv_scores_.shape
    ((10, 3), (7, 3))
    >>> bool((model.score(X, Y) > 0.9).all())
    True
    """

    def __init__(
        self,
        alphas=np.logspace(-2, 8, 11),
        cv=5,
        scoring="pearson",
        fit_intercept=False,
        method="auto",
        memory_budget=None,
        batch_size=None,
        devices=None,
        progress=None,
        precision="auto",
        penalty_sweep="auto",
        folds_from="auto",
    ):
        self.alphas = alphas
        self.cv = cv
        self.scoring = scoring
        self.fit_intercept = fit_intercept
        self.method = method
        self.memory_budget = memory_budget
        self.batch_size = batch_size
        self.devices = devices
        self.progress = progress
        self.precision = precision
        self.penalty_sweep = penalty_sweep
        self.folds_from = folds_from

    def get_params(self, deep=True):
        return {k: getattr(self, k) for k in (
            "alphas", "cv", "scoring", "fit_intercept", "method", "memory_budget",
            "batch_size", "devices", "progress", "precision", "penalty_sweep", "folds_from")}

    def set_params(self, **params):
        for k, v in params.items():
            if k not in self.get_params():
                raise ValueError(f"invalid parameter {k!r} for RidgeCV")
            setattr(self, k, v)
        return self

    def __repr__(self):
        alphas = np.asarray(self.alphas)
        a = f"[{alphas.min():g}..{alphas.max():g}] ({alphas.size})" if alphas.size > 3 else alphas.tolist()
        return (f"RidgeCV(alphas={a}, cv={self.cv!r}, scoring={self.scoring!r}, "
                f"fit_intercept={self.fit_intercept})")

    def fit(self, X, Y, groups=None):
        """Choose each target's penalty by CV, then refit on all samples."""
        X = check_design(X)
        if X.ndim != 2:
            raise ValueError(
                f"RidgeCV takes X of shape (n_samples, n_features), got {X.shape}; "
                "for several feature sets use jaxalign.ridge.ridge_cv"
            )
        Y, ravel = check_targets(Y, X.shape[0])
        res = ridge_cv(
            X, Y, self.alphas, self.cv, groups=groups, scoring=self.scoring,
            fit_intercept=self.fit_intercept, method=self.method,
            memory_budget=self.memory_budget, batch_size=self.batch_size,
            devices=self.devices, progress=self.progress, precision=self.precision,
            penalty_sweep=self.penalty_sweep, folds_from=self.folds_from,
        )
        self.result_ = res
        self.n_features_in_ = X.shape[1]
        self._ravel = ravel
        self.best_alphas_ = res.best_alphas
        self.coef_ = res.coef
        self.intercept_ = res.intercept
        self.cv_scores_ = res.cv_scores
        if ravel:
            self.best_alphas_ = self.best_alphas_[0]
            self.coef_ = self.coef_[:, 0]
            self.intercept_ = self.intercept_[0]
            self.cv_scores_ = self.cv_scores_[:, 0]
        return self

    def _check_fitted(self):
        if not hasattr(self, "result_"):
            raise RuntimeError("this RidgeCV is not fitted yet: call fit(X, Y) first")

    def predict(self, X):
        """Predictions (n_samples, n_targets) in float64 (1-D if fitted on 1-D
        targets)."""
        self._check_fitted()
        X = check_design(X)
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X must have shape (n_samples, {self.n_features_in_}), got {X.shape}"
            )
        # float64 on the host: a small signal on a large intercept (raw BOLD
        # ~1000) and coefficients at extreme scales keep their precision
        pred = np.asarray(X, np.float64) @ self.result_.coef.astype(np.float64)
        pred += self.result_.intercept
        return pred[:, 0] if self._ravel else pred

    def score(self, X, Y):
        """Pearson r per target between ``Y`` and the predictions on ``X``."""
        pred = self.predict(X)
        Y, _ = check_targets(Y, np.asarray(X).shape[0])
        r = np.asarray(pearson_r(Y, pred.reshape(Y.shape)))
        return r[0] if self._ravel else r
