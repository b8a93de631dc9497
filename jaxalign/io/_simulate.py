r"""Simulated word-locked MEG with planted, known responses (no language MEG recording is offline).

The generator writes what the Harry Potter MEG readers read (an array
``(words, channels, time)`` and its words; ``meg.npy`` + ``words.npy`` +
``info.json`` for the ``Wehbe2014-MEG`` benchmark folder) and the same data
as ``mne.EpochsArray`` on a real sensor layout (MNE's canonical Neuromag
Vectorview or CTF sensor definitions, shipped with MNE >= 1.12: nothing is
downloaded).

The model
---------
Windows ``k = 0 .. K-1`` of ``width`` seconds follow word onset (sample
``j`` at ``t_j = j / sfreq``; window ``k`` holds the samples with
``k w <= t_j < (k+1) w``, as ``jaxalign.timing.window_edges`` cuts them).
Each feature set ``s`` (``F_s``, words x ``p_s``, columns z-scored) drives
every window ``k`` and channel ``c`` through its own random weights
``w_{s,k,c} ~ N(0, I_{p_s})``:

.. math::

    z_{s,i,k,c} = \frac{(F_s w_{s,k,c})_i - \text{mean}}{\text{std over words}}, \qquad
    Y_{i,c,j} = \sigma \Bigl(\sum_s a_{s,k,c}\, z_{s,i,k,c} + \sqrt{n_k}\, \epsilon_{i,c,j}\Bigr)
    \quad (j \in \text{window } k)

with ``epsilon`` i.i.d. standard normal and ``n_k`` the samples of window
``k``. The driven response is constant within a window, so the window mean
(what the word-locked encoding model fits, ``timing.word_locked_windows``)
is ``sigma (sum_s a_s z_s + e)`` with ``e ~ N(0, 1)`` exactly: the strength
``a_{s,k,c}`` is the standard deviation of feature set ``s``'s response in
units of the noise of a window mean, whatever the sample rate. With one
feature set the best possible Pearson r of a window mean is
``a / sqrt(a^2 + 1)``; with several independent sets, set ``s`` alone
reaches at most ``a_s / sqrt(sum_s a_s^2 + 1)``. ``sigma`` (``noise``) is the
scale of the data: 1e-12 (tesla) by default.

Everything is drawn from named streams of one seed
(``jaxalign._core.seeds.rng``): the same seed gives the same data.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from jaxalign._core.files import atomic_write, atomic_write_text
from jaxalign._core.seeds import rng as _rng
from jaxalign._core.validation import check_finite, check_int

__all__ = ["SENSOR_LAYOUTS", "SimulatedMEG", "sensor_info", "simulate_word_locked_meg"]

#: Sensor layouts: name -> MNE canonical system (``mne.channels.read_meg_canonical_info``).
SENSOR_LAYOUTS = {"neuromag": "neuromag", "ctf275": "ctf275", "ctf151": "ctf151"}

_MIN_MNE = "1.12"


def _mne():
    try:
        import mne
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError("simulated MEG needs MNE-Python for its sensor layout: pip install \"mne>=1.12\" "
                          "(or pip install \"jaxalign[io]\")") from None
    if not hasattr(mne.channels, "read_meg_canonical_info"):  # pragma: no cover - old MNE
        raise ImportError(f"simulated MEG needs MNE >= {_MIN_MNE} (mne.channels.read_meg_canonical_info, the "
                          f"offline sensor definitions); this is MNE {mne.__version__}: pip install -U mne")
    return mne


def sensor_info(layout: str = "neuromag", picks="meg", sfreq: float = 1000.0):
    """An ``mne.Info`` of real MEG sensors (positions, orientations, coil types), offline.

    ``layout``: one of :data:`SENSOR_LAYOUTS`; ``picks``: ``"meg"`` (all),
    ``"mag"``, ``"grad"`` or a list of channel names (in the layout's order).
    """
    mne = _mne()
    if layout not in SENSOR_LAYOUTS:
        raise ValueError(f"layout must be one of {sorted(SENSOR_LAYOUTS)}, got {layout!r}")
    canon = mne.channels.read_meg_canonical_info(SENSOR_LAYOUTS[layout], verbose="error")
    types = canon.get_channel_types()
    if isinstance(picks, str):
        if picks not in ("meg", "mag", "grad"):
            raise ValueError(f"picks must be 'meg', 'mag', 'grad' or a list of channel names, got {picks!r}")
        keep = [i for i, t in enumerate(types) if picks == "meg" or t == picks]
        if not keep:
            raise ValueError(f"picks={picks!r}: the {layout} layout has no such channel (it has {sorted(set(types))})")
    else:
        names = [str(n) for n in picks]
        index = {n: i for i, n in enumerate(canon.ch_names)}
        missing = [n for n in names if n not in index]
        if missing or not names:
            raise ValueError(f"picks: {missing[:5] if missing else 'no channel'} not in the {layout} layout "
                             f"(e.g. {canon.ch_names[:3]})")
        keep = [index[n] for n in names]
    info = mne.create_info([canon.ch_names[i] for i in keep], float(sfreq), [types[i] for i in keep])
    for ch, i in zip(info["chs"], keep):
        src = canon["chs"][i]
        for key in ("loc", "coil_type", "coord_frame", "unit"):
            ch[key] = src[key].copy() if key == "loc" else src[key]
    return info


def _window_edges(sfreq: float, n_windows: int, width: float) -> np.ndarray:
    """Sample edges ``(n_windows, 2)`` of windows ``[k w, (k+1) w)`` from onset at sample 0.

    The rule of ``jaxalign.timing.window_edges`` (io sits above timing, so it
    is applied here and the two are tested equal)."""
    bounds = np.arange(n_windows + 1) * width
    idx = np.ceil(bounds * sfreq - 1e-6).astype(np.int64)
    edges = np.column_stack([idx[:-1], idx[1:]])
    if (edges[:, 1] <= edges[:, 0]).any():
        raise ValueError(f"window_width={width:g} s holds no sample at sfreq={sfreq:g} Hz; use a higher sfreq")
    return edges


def _feature_sets(features, strength):
    single = not isinstance(features, (list, tuple))
    feats = [features] if single else list(features)
    strs = [strength] if single else strength
    if not feats:
        raise ValueError("features is empty: give one (n_words, p) array or a list of them")
    if not single and (not isinstance(strs, (list, tuple)) or len(strs) != len(feats)):
        raise ValueError(f"strength must be a list with one entry per feature set ({len(feats)}) when features "
                         f"is a list, got {type(strength).__name__}")
    out = []
    n = None
    for s, f in enumerate(feats):
        name = "features" if single else f"features[{s}]"
        a = np.asarray(f)
        if a.dtype == object or a.dtype.kind not in "biuf":
            raise TypeError(f"{name} must be a numeric array, got dtype {a.dtype}")
        if a.ndim == 1:
            a = a[:, None]
        if a.ndim != 2 or a.shape[0] < 3 or a.shape[1] < 1:
            raise ValueError(f"{name} must be (n_words, n_features) with at least 3 words, got shape {a.shape}")
        check_finite(a, name)
        if n is None:
            n = a.shape[0]
        elif a.shape[0] != n:
            raise ValueError(f"{name} has {a.shape[0]} words but features[0] has {n}")
        out.append(a.astype(np.float64))
    return out, strs, single


def _strength(value, name, n_windows, n_channels):
    a = np.asarray(value, dtype=np.float64)
    try:
        a = np.broadcast_to(a, (n_windows, n_channels)).copy()
    except ValueError:
        raise ValueError(f"{name} of shape {a.shape} does not broadcast to (n_windows, n_channels) = "
                         f"({n_windows}, {n_channels})") from None
    if not np.isfinite(a).all() or (a < 0).any():
        raise ValueError(f"{name} must be finite and >= 0 (a response's standard deviation in noise units)")
    return a


@dataclass(eq=False)
class SimulatedMEG:
    """Word-locked MEG from :func:`simulate_word_locked_meg`, with what was planted.

    Attributes
    ----------
    data : (n_words, n_channels, n_times) ndarray
        The recording (the Harry Potter MEG layout), in units of ``noise``.
    words : (n_words,) object array of str
    sfreq : float
        Sample rate (Hz); sample ``j`` is ``j / sfreq`` s after word onset.
    window_width : float
        Window length (s); ``window_edges`` (n_windows, 2) sample edges.
    info : mne.Info
        The sensors (names, positions, coil types) at ``sfreq``.
    strength : list of (n_windows, n_channels) arrays
        Each feature set's planted strength (response std / noise std of a window mean).
    signal : (n_windows, n_words, n_channels) ndarray
        The noise-free window means, ``noise * sum_s a_s z_s`` (``timing.word_locked_windows`` layout).
    noise : float
        The scale ``sigma``.
    seed : int
    """

    data: np.ndarray
    words: np.ndarray
    sfreq: float
    window_width: float
    window_edges: np.ndarray
    info: object = field(repr=False)
    strength: list = field(repr=False)
    signal: np.ndarray = field(repr=False)
    noise: float = 1e-12
    seed: int = 0
    soa: float = 0.5

    @property
    def n_windows(self) -> int:
        return int(self.window_edges.shape[0])

    @property
    def ch_names(self) -> list[str]:
        return list(self.info.ch_names)

    @property
    def times(self) -> np.ndarray:
        """Time of every sample after word onset (s)."""
        return np.arange(self.data.shape[2]) / self.sfreq

    def best_r(self, feature_set: int = 0) -> np.ndarray:
        """(n_windows, n_channels): the Pearson r of a window mean that feature set ``feature_set``
        alone can reach in expectation, ``a_s / sqrt(sum_s a_s^2 + 1)`` (module doc)."""
        total = sum(np.square(a) for a in self.strength)
        return self.strength[feature_set] / np.sqrt(total + 1.0)

    def to_epochs(self):
        """The recording as ``mne.EpochsArray``: one epoch per word (``metadata["word"]``), onsets every
        ``soa`` s (event ``"word"``), tmin 0; ``jaxalign.io.read_mne_epochs`` reads it back."""
        import pandas as pd

        mne = _mne()
        n = self.data.shape[0]
        first = int(round(self.soa * self.sfreq))
        samples = first + np.round(np.arange(n) * self.soa * self.sfreq).astype(np.int64)
        events = np.column_stack([samples, np.zeros(n, np.int64), np.ones(n, np.int64)])
        return mne.EpochsArray(self.data, self.info.copy(), events=events, tmin=0.0, event_id={"word": 1},
                               metadata=pd.DataFrame({"word": list(self.words)}), verbose="error")

    def save(self, folder, *, fif: bool = False) -> dict[str, Path]:
        """Write the Harry Potter MEG format into ``folder``: ``meg.npy`` (words, channels, time),
        ``words.npy`` (unicode, loads without pickle) and ``info.json`` (sfreq, tmin, channels, what was
        planted: the ``Wehbe2014-MEG`` benchmark folder); ``fif=True`` adds ``meg-epo.fif``. Returns
        the paths by name. Atomic writes."""
        folder = Path(os.fspath(folder))
        folder.mkdir(parents=True, exist_ok=True)
        paths = {"data": folder / "meg.npy", "words": folder / "words.npy", "info": folder / "info.json"}
        atomic_write(paths["data"], lambda f: np.save(f, self.data))
        atomic_write(paths["words"], lambda f: np.save(f, np.asarray(self.words, dtype=str)))
        meta = {"sfreq": self.sfreq, "tmin": 0.0, "window_width": self.window_width,
                "n_windows": self.n_windows, "channels": self.ch_names, "noise": self.noise, "seed": self.seed,
                "simulated": "jaxalign.io.simulate_word_locked_meg"}
        atomic_write_text(paths["info"], json.dumps(meta, indent=1) + "\n")
        if fif:
            paths["fif"] = folder / "meg-epo.fif"
            self.to_epochs().save(paths["fif"], overwrite=True, verbose="error")
        return paths


def simulate_word_locked_meg(features, strength, *, words=None, layout: str = "neuromag", picks="meg",
                             n_windows: int = 20, window_width: float = 0.025, sfreq: float = 200.0,
                             noise: float = 1e-12, soa: float = 0.5, dtype=np.float64,
                             seed: int = 0) -> SimulatedMEG:
    """Word-locked MEG epochs whose window means are driven by known features (module doc).

    Parameters
    ----------
    features : (n_words, p) array, or a list of them (several feature sets, each with its own strength)
    strength : array broadcastable to (n_windows, n_channels), or a list (one per feature set)
        Standard deviation of each set's response in a window mean, in units of that mean's noise
        (0: the set does not drive that channel in that window). E.g. ``np.zeros((20, n_ch))`` with a
        block of 0.5 plants a response in some channels and windows only.
    words : sequence of str, optional
        Default ``"w0", "w1", ...``.
    layout, picks : the sensors (:func:`sensor_info`): default all 306 Neuromag Vectorview channels
        (102 magnetometers, 204 planar gradiometers; ``picks="mag"`` keeps the 102 magnetometers).
    n_windows, window_width : windows after onset (default 20 of 25 ms: 0-500 ms).
    sfreq : sample rate (Hz), default 200 (5 samples per 25 ms window).
    noise : scale of the data (default 1e-12, tesla; gradiometers get the same number in T/m).
    soa : word onset spacing (s) for the events of :meth:`SimulatedMEG.to_epochs`.
    dtype : of ``data`` (float64 default; float32 halves memory).
    seed : int

    Returns
    -------
    SimulatedMEG
    """
    feats, strs, _ = _feature_sets(features, strength)
    n_words = feats[0].shape[0]
    n_windows = check_int(n_windows, "n_windows", 1)
    seed = check_int(seed, "seed", 0)
    for name, v in (("window_width", window_width), ("sfreq", sfreq), ("noise", noise), ("soa", soa)):
        if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)) or not (
                np.isfinite(v) and v > 0):
            raise ValueError(f"{name} must be a positive finite number, got {v!r}")
    if np.dtype(dtype) not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64, got {dtype!r}")
    info = sensor_info(layout, picks, sfreq)
    n_ch = len(info.ch_names)
    strs = [_strength(a, "strength" if len(feats) == 1 else f"strength[{s}]", n_windows, n_ch)
            for s, a in enumerate(strs)]
    if words is None:
        words = [f"w{i}" for i in range(n_words)]
    if isinstance(words, str):
        raise ValueError("words must be a sequence of strings, not one string")
    words = np.asarray([str(w) for w in words], dtype=object)
    if words.shape != (n_words,):
        raise ValueError(f"words has {words.shape[0] if words.ndim else 0} entries but features have {n_words} words")
    edges = _window_edges(float(sfreq), n_windows, float(window_width))
    n_times = int(edges[-1, 1])

    signal = np.zeros((n_windows, n_words, n_ch))
    for s, (f, a) in enumerate(zip(feats, strs)):
        sd = f.std(axis=0)
        fz = (f - f.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
        w = _rng(seed, "simulated meg weights", str(s)).standard_normal((f.shape[1], n_windows * n_ch))
        z = fz @ w
        zs = z.std(axis=0)
        z = (z - z.mean(axis=0)) / np.where(zs > 0, zs, 1.0)
        signal += a[:, None, :] * z.reshape(n_words, n_windows, n_ch).transpose(1, 0, 2)

    data = np.empty((n_words, n_ch, n_times), dtype=dtype)
    gen = _rng(seed, "simulated meg noise")
    for k, (lo, hi) in enumerate(edges):
        eps = gen.standard_normal((n_words, n_ch, hi - lo)) * np.sqrt(hi - lo)
        data[:, :, lo:hi] = noise * (signal[k][:, :, None] + eps)
    return SimulatedMEG(data=data, words=words, sfreq=float(sfreq), window_width=float(window_width),
                        window_edges=edges, info=info, strength=strs, signal=noise * signal,
                        noise=float(noise), seed=seed, soa=float(soa))
