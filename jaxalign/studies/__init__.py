"""Study pipelines built on the library: end-to-end analyses of real data.

config
    ``StudyConfig``: a whole study as one validated schema, the same in
    Python and in TOML (``StudyConfig.from_toml("examples/alice.toml")``);
    ``ConfigError`` lists every problem of a config, one line per key.
datasets
    ``load_dataset(cfg)``: the ``[dataset]`` section read and checked into a
    ``LoadedDataset`` (kind, stimulus, subject -> recording, features,
    confounds, info), through one adapter per kind registered in
    ``DATASETS``.
store
    ``ResultsStore``: one folder per study, one atomically written folder
    per finished unit of work, claims with leases so several processes
    share it; ``load_results(dir)`` reads it back as a tidy table
    (``.table``) and labelled arrays (``.arrays``).
encode
    ``encode(stimulus, recording, model, layers, config=cfg)``: one fMRI
    recording, LM layers (or given word features) -> held-out r, p and FDR
    per layer x target, every step set by the config (``EncodeResult``).
report
    ``report.make_report(dir)``: the figures of a results store (r along the
    layers per target with baseline, control and noise ceiling; a heat map
    of mean r with FDR stars), written atomically into ``dir/figures``
    (``jaxalign report DIR``).
alice
    Alice in Wonderland fMRI (Brennan et al. 2016): LM layers vs 6 language
    ROIs, nested ridge CV, group sign-flip tests (``jaxalign alice``).
launcher
    ``launch(cfg, out, launcher="slurm", jobs=N)``: the study's units
    computed by N workers sharing the store, as one SLURM job array or N
    local processes (submitit), resumable by resubmitting
    (``jaxalign run ... --launcher slurm --jobs N``).
natural_stories
    Natural Stories self-paced reading (Futrell et al. 2018): LM surprisal
    vs mean reading time, Pearson r per story and pooled with bootstrap CIs;
    ``analyse_dataset(dataset, surprisal)`` scores a loaded
    ``natural_stories`` dataset, ``analyse(root, out)`` runs the whole study
    (``scripts/natural_stories.py``).
natural_stories_probing
    The Pythia study's linguistic properties on Natural Stories: gold-parse
    labels per reading-time word, SmolLM2 layers, probe accuracy before /
    after removing each property and the reading-time alignment of the
    original and residual features (``scripts/probing_natural_stories.py``).
"""

from jaxalign.studies.config import ConfigError, StudyConfig
from jaxalign.studies.datasets import DATASETS, LoadedDataset, load_dataset
from jaxalign.studies.encode import EncodeResult, encode
from jaxalign.studies.launcher import launch
from jaxalign.studies.store import ResultsStore, load_results

__all__ = ["ConfigError", "DATASETS", "EncodeResult", "LoadedDataset", "ResultsStore", "StudyConfig", "encode",
           "launch", "load_dataset", "load_results"]
