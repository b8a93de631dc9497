"""Alice in Wonderland fMRI (Brennan et al. 2016): SmolLM2 layers vs 6 language ROIs.

The full study: hidden states 0, 5, ..., 30 of SmolLM2-135M-Instruct against
every usable listener's ROI time courses. The pipeline lives in
:mod:`jaxalign.studies.alice` (its docstring lists every step and setting);
``jaxalign alice`` runs the same code with 4 layers (the README's main
command). Writes ``results.json`` (keys ``layers``, ``rois``,
``mean_r[layer][roi]``, ``p[layer][roi]``, ``p_fdr``, ``p_vs_baseline``,
per-subject r, settings) and ``layer_roi.png`` to ``--out``.

Run: ``python scripts/alice_encoding.py --out out/alice_full`` (about 2
minutes on a 2-core CPU; ``--subjects 4 --layers 0,15`` for a quick look).
"""

from __future__ import annotations

import sys

from jaxalign.cli import main as cli_main
from jaxalign.studies.alice import DEFAULT_LAYERS


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not any(a == "--layers" or a.startswith("--layers=") for a in argv):
        argv += ["--layers", ",".join(map(str, DEFAULT_LAYERS))]
    if not any(a == "--out" or a.startswith("--out=") for a in argv):
        argv += ["--out", "out/alice_full"]
    return cli_main(["alice"] + argv)


if __name__ == "__main__":
    sys.exit(main())
