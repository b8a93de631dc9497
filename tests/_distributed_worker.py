"""A process of a jax.distributed ridge fit, started by tests/test_distributed.py.

argv: MODE PROCESS_ID NUM_PROCESSES PORT DATA.npz OUT.npz
MODE: "fit" (RidgeCV on DATA's X, Y, and ridge_cv_moments on each process's chunk of rows), "fit+nested" (and nested_cv on its layers), "die" (process 1 exits right after
joining), "versions" (process 1 pretends to run another jaxalign),
"unreachable" (no coordinator listens on PORT).
"""

import os
import sys


def main():
    mode, pid, n, port, data, out = sys.argv[1:7]
    pid, n = int(pid), int(n)

    import jaxalign
    import jaxalign.distributed as dist

    if mode == "versions" and pid == 1:
        jaxalign.__version__ = "0.0.0+other"
    timeout = 4 if mode == "unreachable" else 60
    dist.initialize(f"127.0.0.1:{port}", n, pid, timeout=timeout, heartbeat_timeout=5)
    if mode == "die" and pid == 1:
        os._exit(3)

    import jax
    import numpy as np

    from jaxalign.ridge import RidgeCV, nested_cv

    d = np.load(data)
    model = RidgeCV(alphas=d["alphas"], cv=5, fit_intercept=True, batch_size=int(d["batch"]))
    model.fit(d["X"], d["Y"])
    # samples sharded over the processes: each passes only its own contiguous chunk of rows
    from jaxalign.ridge import ContiguousKFold, ridge_cv_moments

    n_rows = d["X"].shape[0]
    chunk = np.array_split(np.arange(n_rows), n)[pid]
    mom = ridge_cv_moments(d["X"][chunk], d["Y"][chunk], d["alphas"], ContiguousKFold(5, gap=3),
                           fit_intercept=True, n_samples=n_rows, rows=chunk)
    extra = {"mom_coef": mom.coef, "mom_cv": mom.cv_scores, "mom_alpha": mom.best_alphas,
             "mom_icpt": mom.intercept}
    if mode == "fit+nested":  # several feature sets (layers) and outer folds
        res = nested_cv(d["XL"], d["Y"], d["alphas"], outer_cv=3, inner_cv=3)
        extra.update(nested_scores=res.scores, nested_pred=res.predictions)
    np.savez(out, best_alphas=model.best_alphas_, coef=model.coef_, intercept=model.intercept_,
             cv_scores=model.cv_scores_, n_devices=len(jax.devices()),
             n_local=len(jax.local_devices()), **extra)
    dist.shutdown()


if __name__ == "__main__":
    main()
