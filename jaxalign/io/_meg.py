"""MEG / EEG through MNE-Python (optional): continuous Raw with word onsets, and Epochs.

Times follow one convention: 0 s is the first sample of the Raw object
(``raw.times[0]``), for the recording's ``times`` and the words' ``onsets``
alike, whatever ``raw.first_samp`` and the measurement date are. An event at
sample ``s`` of an MNE events array (samples counted from the start of the
acquisition, ``first_samp`` included) is at ``(s - raw.first_samp) / sfreq``
s, for :func:`read_mne_raw` and :func:`read_mne_epochs` alike (the latter
needs ``first_samp`` when the Epochs no longer hold their Raw).
"""

from __future__ import annotations

import os
import re
import warnings

import numpy as np

from jaxalign.io._formats import existing_file
from jaxalign.io._types import Recording, Stimulus

__all__ = ["read_mne_epochs", "read_mne_raw"]


def _mne():
    try:
        import mne
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError(
            "reading MEG/EEG files needs MNE-Python, an optional dependency of jaxalign: pip install mne "
            "(or pip install \"jaxalign[io]\")"
        ) from None
    return mne


def _picked(mne, inst, picks):
    """Channel names and Info of ``picks`` without copying the data."""
    probe = mne.io.RawArray(np.zeros((len(inst.ch_names), 1)), inst.info.copy(), verbose=False)
    probe.pick(picks)
    return list(probe.ch_names), probe.info


def _select_annotations(descriptions, description):
    if description is None:
        # MNE's own markers are not words
        return np.array([not d.upper().startswith(("BAD", "EDGE")) for d in descriptions], dtype=bool)
    if callable(description):
        return np.array([bool(description(d)) for d in descriptions], dtype=bool)
    if isinstance(description, str):
        rx = re.compile(description)
        return np.array([rx.fullmatch(d) is not None for d in descriptions], dtype=bool)
    allowed = set(description)
    return np.array([d in allowed for d in descriptions], dtype=bool)


def read_mne_raw(raw, events=None, *, event_id=None, annotations=None, description=None, words=None, picks="data", preload=True) -> tuple[Stimulus, Recording]:
    """A continuous MEG/EEG recording and its word onsets, from an MNE Raw (or a file MNE reads).

    Word onsets come from ``events`` (an MNE events array) when given, else
    from annotations (``annotations`` or, by default, ``raw.annotations``).

    Parameters
    ----------
    raw : mne.io.BaseRaw, str or Path
        A Raw object, or a file for ``mne.io.read_raw`` (FIF, BrainVision,
        EDF, BDF, CTF, ...).
    events : ndarray, shape (n_events, 3), optional
        MNE events (sample incl. ``first_samp``, previous value, code).
    event_id : int, sequence of int or dict, optional
        Which event codes are word onsets (a dict maps names to codes; the
        names become the words when ``words`` is not given). Default: all.
    annotations : mne.Annotations, optional
        Word annotations to use instead of ``raw.annotations`` (not attached
        to the Raw, which is left untouched). As in MNE, onsets are relative
        to ``orig_time`` when it is set, else to the first sample.
    description : str (regex), sequence of str or callable, optional
        Which annotation descriptions are words. Default: all but MNE's
        "BAD..." / "EDGE..." markers. The descriptions become the words.
    words : sequence of str, optional
        The words, one per selected event/annotation, in the order of the
        events array / of the annotations (MNE keeps annotations sorted by
        onset); they override the labels.
    picks : str, list
        Channels (MNE ``picks``: "data", "meg", "eeg", "mag", names...).
    preload : bool
        Passed to ``mne.io.read_raw`` when ``raw`` is a path.

    Returns
    -------
    stimulus : Stimulus
        ``words`` and ``onsets`` in seconds from the first recorded sample,
        on ``raw.times``' clock (an event at sample ``s`` is at
        ``(s - raw.first_samp) / sfreq``, as in :func:`read_mne_epochs`;
        annotation ``offsets`` = onset + duration); words are sorted by onset.
    recording : Recording
        ``kind="meg"`` (used for EEG too), data (n_samples, n_channels) in SI
        units (T, T/m, V), ``times`` = ``raw.times``, ``sfreq``,
        ``target_names`` = channel names, ``channel_info`` = the picked
        ``mne.Info``; ``runs`` all 0.

    Raises
    ------
    ImportError
        Without MNE.
    FileNotFoundError
        A missing file.
    ValueError
        No word onsets found, malformed events, or ``words`` of a different
        length from the onsets.

    Notes
    -----
    Annotations attached to a Raw store onsets relative to the measurement
    date (or to sample 0 of the acquisition when there is none), so their
    onsets here are ``onset - raw.first_time``. Free-standing annotations
    with ``orig_time=None`` are relative to the first sample already; with an
    ``orig_time`` they are shifted by ``orig_time - meas_date`` too. Word
    onsets outside the recording are dropped with a warning.
    """
    mne = _mne()
    source = None
    if isinstance(raw, (str, os.PathLike)):
        p = existing_file(raw, "MEG/EEG file")
        source = str(p)
        raw = mne.io.read_raw(str(p), preload=preload, verbose="error")
    if not isinstance(raw, mne.io.BaseRaw):
        raise ValueError(f"raw must be an mne.io.Raw or a path, got {type(raw).__name__}")
    sfreq = float(raw.info["sfreq"])
    offsets = None
    if events is not None:
        ev = np.asarray(events)
        if ev.ndim != 2 or ev.shape[1] != 3 or ev.dtype.kind not in "iu":
            raise ValueError(f"events must be an integer array of shape (n_events, 3), got {ev.shape} {ev.dtype}")
        names = None
        if event_id is None:
            keep = np.ones(len(ev), dtype=bool)
        elif isinstance(event_id, dict):
            keep = np.isin(ev[:, 2], list(event_id.values()))
            names = {code: name for name, code in event_id.items()}
        else:
            keep = np.isin(ev[:, 2], np.atleast_1d(event_id))
        ev = ev[keep]
        onsets = (ev[:, 0] - raw.first_samp) / sfreq
        labels = [names[c] if names else str(c) for c in ev[:, 2]]
    else:
        if annotations is None:
            ann = raw.annotations
            shift = -raw.first_time
        else:
            ann = annotations
            if not isinstance(ann, mne.Annotations):
                raise ValueError(f"annotations must be an mne.Annotations, got {type(ann).__name__}")
            shift = 0.0
            if ann.orig_time is not None:
                meas_date = raw.info["meas_date"]
                if meas_date is None:
                    raise ValueError(
                        "the annotations have an orig_time but the recording has no measurement date; "
                        "create them with orig_time=None (onsets from the first sample)"
                    )
                shift = (ann.orig_time - meas_date).total_seconds() - raw.first_time
        labels_all = list(ann.description)
        keep = _select_annotations(labels_all, description)
        onsets = np.asarray(ann.onset, dtype=np.float64)[keep] + shift
        offsets = onsets + np.asarray(ann.duration, dtype=np.float64)[keep]
        labels = [d for d, k in zip(labels_all, keep) if k]
    if len(onsets) == 0:
        raise ValueError(
            "no word onsets: pass events= (an MNE events array) or annotations whose descriptions are the words"
        )
    if words is not None:
        words = [str(w) for w in words]
        if len(words) != len(onsets):
            raise ValueError(f"{len(words)} words but {len(onsets)} word onsets (events/annotations)")
        labels = words
    duration = raw.n_times / sfreq
    inside = (onsets >= 0) & (onsets < duration)
    if not inside.all():
        warnings.warn(
            f"{int((~inside).sum())} word onsets lie outside the recording (0 to {duration:g} s) and are dropped",
            UserWarning,
            stacklevel=2,
        )
        onsets = onsets[inside]
        offsets = None if offsets is None else offsets[inside]
        labels = [w for w, k in zip(labels, inside) if k]
        if not labels:
            raise ValueError(f"no word onset lies inside the recording (0 to {duration:g} s)")
    order = np.argsort(onsets, kind="stable")
    names, info = _picked(mne, raw, picks)
    data = raw.get_data(picks=names).T
    stimulus = Stimulus(
        words=np.asarray(labels, dtype=object)[order],
        onsets=onsets[order],
        offsets=None if offsets is None else offsets[order],
        info={"source": source},
    )
    recording = Recording(
        data=data,
        kind="meg",
        times=raw.times,
        runs=np.zeros(data.shape[0], dtype=np.int64),
        target_names=names,
        sfreq=sfreq,
        channel_info=info,
        info={"source": source, "first_samp": int(raw.first_samp)},
    )
    return stimulus, recording


def read_mne_epochs(epochs, *, words=None, word_column: str = "word", picks="data", first_samp=None) -> tuple[Stimulus, Recording]:
    """Word-locked MEG/EEG epochs (words, channels, time) from an ``mne.Epochs`` (or a -epo.fif file).

    Words: ``words`` if given, else ``epochs.metadata[word_column]`` if
    present, else the event names.

    Times follow the module's one convention, the same as
    :func:`read_mne_raw`: seconds from the first recorded sample of the Raw
    the epochs were cut from (``raw.times``' clock), i.e. ``(event sample -
    raw.first_samp) / sfreq``. MNE's ``epochs.events`` count samples from the
    start of the acquisition (``first_samp`` included) and an Epochs object
    does not keep the Raw's ``first_samp`` once its data are loaded, hence
    the ``first_samp`` argument.

    Parameters
    ----------
    epochs : mne.Epochs, str or Path
    words : sequence of str, optional
    word_column : str
    picks : str, list
        Channels (MNE ``picks``).
    first_samp : int or mne.io.Raw, optional
        The Raw's ``first_samp`` (or the Raw itself). Default: taken from the
        Raw that non-preloaded Epochs still hold; when there is none (preloaded
        Epochs, -epo.fif files) 0 is used with a warning: the onsets are then
        on the acquisition clock, shifted by ``first_samp / sfreq`` from
        :func:`read_mne_raw`'s. Pass ``first_samp=0`` to use that clock
        without the warning.

    Returns
    -------
    stimulus : Stimulus
        ``words``; ``onsets`` = ``(epochs.events[:, 0] - first_samp) / sfreq``.
    recording : Recording
        ``kind="meg"``, data (n_epochs, n_channels, n_times), ``times`` = the
        onsets, ``epoch_times`` = ``epochs.times``; ``info["first_samp"]``
        the value used.
    """
    mne = _mne()
    source = None
    if isinstance(epochs, (str, os.PathLike)):
        p = existing_file(epochs, "epochs file")
        source = str(p)
        epochs = mne.read_epochs(str(p), preload=True, verbose="error")
    if not isinstance(epochs, mne.BaseEpochs):
        raise ValueError(f"epochs must be an mne.Epochs or a path, got {type(epochs).__name__}")
    names, info = _picked(mne, epochs, picks)
    data = epochs.get_data(picks=names)
    n = data.shape[0]
    if words is None:
        md = epochs.metadata
        if md is not None and word_column in md.columns:
            words = [str(w) for w in md[word_column]]
        else:
            inv = {code: name for name, code in epochs.event_id.items()}
            words = [inv.get(c, str(c)) for c in epochs.events[:, 2]]
    words = [str(w) for w in words]
    if len(words) != n:
        raise ValueError(f"{len(words)} words but {n} epochs")
    sfreq = float(epochs.info["sfreq"])
    if first_samp is None:
        held = getattr(epochs, "_raw", None)  # the Raw of non-preloaded Epochs (MNE keeps it there)
        if isinstance(held, mne.io.BaseRaw):
            first_samp = held.first_samp
        else:
            first_samp = 0
            warnings.warn(
                f"{source or 'these epochs'}: the Epochs do not record their Raw's first_samp, so the word onsets "
                "are event samples / sfreq on the acquisition clock, not on raw.times' clock as read_mne_raw's; "
                "pass first_samp=raw.first_samp (or the Raw) to align them, or first_samp=0 to keep this clock",
                UserWarning,
                stacklevel=2,
            )
    elif isinstance(first_samp, mne.io.BaseRaw):
        first_samp = first_samp.first_samp
    if isinstance(first_samp, bool) or not isinstance(first_samp, (int, np.integer)) or first_samp < 0:
        raise ValueError(f"first_samp must be an integer >= 0 or an mne Raw, got {first_samp!r}")
    onsets = (epochs.events[:, 0] - int(first_samp)) / sfreq
    stimulus = Stimulus(words=words, onsets=onsets, info={"source": source})
    recording = Recording(
        data=data,
        kind="meg",
        times=onsets,
        target_names=names,
        sfreq=sfreq,
        epoch_times=epochs.times,
        channel_info=info,
        info={"source": source, "first_samp": int(first_samp)},
    )
    return stimulus, recording
