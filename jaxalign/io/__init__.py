"""Reading stimuli and recordings: words with timing, fMRI, MEG, reading times, tasks.

Every reader returns plain containers (:class:`Stimulus`, :class:`Recording`,
:class:`MultipleChoice`) of numpy arrays; nothing here knows about language
models. Missing files raise ``FileNotFoundError`` naming the path; malformed
or inconsistent inputs raise ``ValueError`` saying what is wrong. Readers that
return both return ``(stimulus, recording)``.

Readers
-------
read_textgrid, read_textgrid_tiers, read_alice_stimulus
    Praat TextGrid word tiers (long and short formats), pauses dropped by default.
read_alice_subject, list_alice_subjects, read_alice_regressors, read_alice_predictors
    Alice in Wonderland ROI time courses (Brennan et al. 2016), bad-file
    detection; word-rate, sound-power and head-motion regressors and the 12
    published predictors, aligned with the time-course rows.
read_columns
    Whitespace-separated numeric text files.
read_words_tsv, read_bids_events
    Word timing tables: a words/onsets TSV (word, onset[, duration][, run])
    and BIDS ``events.tsv`` (onset, duration, trial_type, a word column).
read_natural_stories
    Natural Stories reading times in story order, with sentence ids.
read_piqa, read_siqa, read_multiple_choice
    JSONL multiple-choice sets with 0-based labels.
read_harry_potter_fmri, read_harry_potter_meg, read_harry_potter_words
    Harry Potter fMRI / MEG arrays in the Toneva & Wehbe format.
read_nifti, targets_to_nifti
    4-D NIfTI runs + mask (needs nibabel), and score maps back to images.
read_mne_raw, read_mne_epochs
    MEG/EEG through MNE (needs mne): continuous data + word onsets, epochs.

Simulation
----------
simulate_word_locked_meg, SimulatedMEG, sensor_info
    Word-locked MEG driven by known features with a planted strength per
    channel x window, in the Harry Potter MEG format (``save``) and as MNE
    Epochs on a real sensor layout (needs mne >= 1.12, no download).
"""

from jaxalign.io._types import KINDS, MultipleChoice, Recording, Stimulus
from jaxalign.io._formats import read_columns
from jaxalign.io._alice import (
    ALICE_DROPPED,
    ALICE_FIRST_SCAN,
    ALICE_PREDICTORS,
    ALICE_REGRESSORS,
    ALICE_ROIS,
    ALICE_TR,
    list_alice_subjects,
    read_alice_predictors,
    read_alice_regressors,
    read_alice_subject,
)
from jaxalign.io._events import read_bids_events, read_words_tsv
from jaxalign.io._natural_stories import read_natural_stories, sentence_ids_from_punctuation
from jaxalign.io._textgrid import PAUSE_LABELS, read_alice_stimulus, read_textgrid, read_textgrid_tiers
from jaxalign.io._harry_potter import read_harry_potter_fmri, read_harry_potter_meg, read_harry_potter_words
from jaxalign.io._mc import read_multiple_choice, read_piqa, read_siqa
from jaxalign.io._nifti import read_nifti, targets_to_nifti
from jaxalign.io._meg import read_mne_epochs, read_mne_raw
from jaxalign.io._simulate import SENSOR_LAYOUTS, SimulatedMEG, sensor_info, simulate_word_locked_meg

__all__ = [
    "ALICE_DROPPED",
    "ALICE_FIRST_SCAN",
    "ALICE_PREDICTORS",
    "ALICE_REGRESSORS",
    "ALICE_ROIS",
    "ALICE_TR",
    "KINDS",
    "MultipleChoice",
    "PAUSE_LABELS",
    "SENSOR_LAYOUTS",
    "SimulatedMEG",
    "Recording",
    "Stimulus",
    "list_alice_subjects",
    "read_alice_predictors",
    "read_alice_regressors",
    "read_alice_stimulus",
    "read_alice_subject",
    "read_bids_events",
    "read_columns",
    "read_harry_potter_fmri",
    "read_harry_potter_meg",
    "read_harry_potter_words",
    "read_mne_epochs",
    "read_mne_raw",
    "read_multiple_choice",
    "read_natural_stories",
    "read_nifti",
    "read_piqa",
    "read_siqa",
    "read_textgrid",
    "read_textgrid_tiers",
    "read_words_tsv",
    "sensor_info",
    "simulate_word_locked_meg",
    "sentence_ids_from_punctuation",
    "targets_to_nifti",
]
