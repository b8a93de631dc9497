"""jaxalign.studies.datasets: one adapter per [dataset] kind, on the real data and on files written here.

Real Alice and Natural Stories data (../shared/data beside the project root)
are compared with what the io readers give directly; the other kinds load
small files in the formats their readers take. Every error names the config
key at fault and the path. No language model is loaded.
"""

import warnings

import numpy as np
import pytest

from jaxalign import io
from jaxalign.studies import DATASETS, LoadedDataset, StudyConfig, load_dataset
from jaxalign.studies.config import DATASET_KINDS
from jaxalign.studies.datasets import GROUP

from _shared_data import need  # real data beside the project, read in place


def ds(kind, **fields):
    """A [dataset] section of this kind (validated as a study config would)."""
    return DATASET_KINDS[kind](kind=kind, **fields)


# ------------------------------------------------------------------ registry


def test_every_config_kind_has_an_adapter():
    assert set(DATASETS) == set(DATASET_KINDS), (
        f"kinds without an adapter: {sorted(set(DATASET_KINDS) - set(DATASETS))}; "
        f"adapters without a config kind: {sorted(set(DATASETS) - set(DATASET_KINDS))}")
    assert all(callable(a) for a in DATASETS.values())


def test_unknown_kind_and_bad_loaded_kind():
    class Fake:
        kind = "nope"

    with pytest.raises(ValueError, match="dataset.kind: no adapter for 'nope'"):
        load_dataset(Fake())
    with pytest.raises(ValueError, match="kind must be one of"):
        LoadedDataset("continuous", None, {"a": None})


# --------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def alice():
    root = need("alice")
    with pytest.warns(UserWarning, match="dataset.root: skipping Alice subject s33"):
        loaded = load_dataset(ds("alice", root=str(root)))
    return root, loaded


def test_alice_real_matches_the_io_readers(alice):
    root, d = alice
    assert d.kind == "fmri" and d.features is None
    stim = io.read_alice_stimulus(root)
    assert list(d.stimulus.words) == list(stim.words)
    np.testing.assert_array_equal(d.stimulus.onsets, stim.onsets)
    expected = [s for s in io.list_alice_subjects(root) if s != "s33"]
    assert d.subjects == expected and len(expected) == 27
    assert d.info["skipped"] == {"s33": "all values are zero"}
    for sid in (expected[0], expected[-1]):
        rec = io.read_alice_subject(sid, root)
        np.testing.assert_array_equal(d.recordings[sid].data, rec.data)
        np.testing.assert_array_equal(d.recordings[sid].times, rec.times)
        np.testing.assert_array_equal(d.confounds[sid], io.read_alice_regressors(sid, root).data)
    assert d.info["confound_names"] == list(io.ALICE_REGRESSORS)
    assert d.info["shared_sampling"] is True and d.info["paths"]["dataset.root"] == str(root)
    # the last word (742.98 s) falls inside the last scan's TR (742-744 s)
    assert d.info["words_after_last_scan"] == 0 and d.info["words_before_first_scan"] == 0


def test_alice_real_options_and_errors(alice, tmp_path):
    root, _ = alice
    d = load_dataset(ds("alice", root=str(root), n_subjects=3, roi_size="10mm"))  # s33 not reached
    first3 = io.list_alice_subjects(root, "10mm")[:3]
    assert d.subjects == first3 and d.info["roi_size"] == "10mm" and "s33" not in first3
    np.testing.assert_array_equal(d.recordings[first3[1]].data,
                                  io.read_alice_subject(first3[1], root, roi_size="10mm").data)
    with pytest.warns(UserWarning, match="s33"), pytest.raises(ValueError, match="dataset.n_subjects: 40 listeners"):
        load_dataset(ds("alice", root=str(root), n_subjects=40))
    with pytest.raises(FileNotFoundError, match=f"dataset.root: .*{tmp_path / 'nowhere'}"):
        load_dataset(ds("alice", root=str(tmp_path / "nowhere")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="dataset.root: no Alice data at .*empty"):
        load_dataset(ds("alice", root=str(tmp_path / "empty")))
    with pytest.raises(ValueError, match="dataset.source: 'synthetic'"):
        load_dataset(ds("alice", source="synthetic"))


def test_natural_stories_real_matches_the_io_reader():
    root = need("natural_stories")
    stim, rec = io.read_natural_stories(root)
    d = load_dataset(ds("natural_stories", root=str(root)))
    assert d.kind == "behaviour" and d.subjects == [GROUP]
    assert list(d.stimulus.words) == list(stim.words) and len(stim) == 3103
    r = d.recordings[GROUP]
    assert r.target_names == ("meanItemRT",)
    np.testing.assert_array_equal(r.data[:, 0], rec.target("meanItemRT"))
    np.testing.assert_array_equal(d.info["keep"], ~stim.sentence_starts)
    assert d.info["excluded"]["sentence_start"] == int(stim.sentence_starts.sum())
    assert d.info["stories"] == [1, 2, 3]

    one = load_dataset(ds("natural_stories", root=str(root), stories=[2], target="gmeanItemRT",
                          exclude_sentence_starts=False))
    in2 = stim.runs == 2
    assert list(one.stimulus.words) == list(stim.words[in2])
    np.testing.assert_array_equal(one.recordings[GROUP].data[:, 0], rec.target("gmeanItemRT")[in2])
    assert one.info["keep"].all() and one.info["stories"] == [2]

    with pytest.raises(ValueError, match=r"dataset.stories: stories \[7\] are not in .*natural_stories"):
        load_dataset(ds("natural_stories", root=str(root), stories=[1, 7]))


def test_natural_stories_missing_root(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"dataset.root: Natural Stories folder not found: {tmp_path / 'x'}"):
        load_dataset(ds("natural_stories", root=str(tmp_path / "x")))
    (tmp_path / "x").mkdir()
    with pytest.raises(FileNotFoundError, match="dataset.root: no Natural Stories word-info"):
        load_dataset(ds("natural_stories", root=str(tmp_path / "x")))


# ------------------------------------------------------------------- arrays


def test_arrays_load_and_relative_paths(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((3, 40, 5)).astype(np.float32)
    Y = rng.standard_normal((40, 2))
    g = np.repeat(["b", "a"], 20)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "Y.npy", Y)
    np.save(tmp_path / "g.npy", g)
    d = load_dataset(ds("arrays", features="X.npy", targets="Y.npy", groups="g.npy"), base_dir=tmp_path)
    assert d.kind == "features" and d.stimulus is None and d.subjects == [GROUP]
    np.testing.assert_array_equal(d.features, X)
    np.testing.assert_array_equal(d.recordings[GROUP].data, Y)
    np.testing.assert_array_equal(d.recordings[GROUP].runs, np.repeat([1, 0], 20))
    assert d.info["group_labels"] == ["a", "b"]
    assert d.info["paths"]["dataset.targets"] == str(tmp_path / "Y.npy")
    # a study file: relative paths are relative to its folder, whatever the working directory
    study = tmp_path / "study.toml"
    study.write_text('[dataset]\nkind = "arrays"\nfeatures = "X.npy"\ntargets = "Y.npy"\n'
                     '[encoding]\nmethod = "ridge"\n[timing]\nkind = "none"\n[stats]\ntest = "none"\n')
    d2 = load_dataset(StudyConfig.from_toml(study))
    np.testing.assert_array_equal(d2.features, X)
    assert d2.recordings[GROUP].runs is None and d2.info["paths"]["dataset.features"] == str(tmp_path / "X.npy")
    # 2-D features and a 1-D target
    np.save(tmp_path / "X2.npy", X[0])
    np.save(tmp_path / "y1.npy", Y[:, 0])
    d3 = load_dataset(ds("arrays", features=str(tmp_path / "X2.npy"), targets=str(tmp_path / "y1.npy")))
    assert d3.features.shape == (40, 5) and d3.recordings[GROUP].data.shape == (40, 1)


def test_arrays_errors_name_the_key_and_file(tmp_path):
    rng = np.random.default_rng(1)
    np.save(tmp_path / "X.npy", rng.standard_normal((30, 4)))
    np.save(tmp_path / "Y.npy", rng.standard_normal((29, 2)))
    np.save(tmp_path / "Y30.npy", rng.standard_normal((30, 2)))

    def load(**kw):
        return load_dataset(ds("arrays", **{"features": "X.npy", "targets": "Y30.npy", **kw}), base_dir=tmp_path)

    with pytest.raises(ValueError, match=r"dataset.targets: .*Y.npy has 29 rows but dataset.features .* 30 samples"):
        load(targets="Y.npy")
    with pytest.raises(FileNotFoundError, match=f"dataset.features: features .npy not found: {tmp_path / 'none.npy'}"):
        load(features="none.npy")
    with pytest.raises(FileNotFoundError, match="dataset.groups: .*found a folder"):
        load(groups=".")
    np.save(tmp_path / "g.npy", np.zeros(29))
    with pytest.raises(ValueError, match=r"dataset.groups: .*g.npy must be 1-D with one label per sample \(30\)"):
        load(groups="g.npy")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}] * 30, dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="dataset.features: cannot read .*obj.npy as a plain numeric .npy"):
        load(features="obj.npy")
    np.save(tmp_path / "X1.npy", np.zeros(30))
    with pytest.raises(ValueError, match=r"dataset.features: .*X1.npy must be a numeric \(samples, features\)"):
        load(features="X1.npy")
    bad = rng.standard_normal((30, 2))
    bad[3, 1] = np.nan
    np.save(tmp_path / "Ynan.npy", bad)
    with pytest.raises(ValueError, match="dataset.targets: .*Ynan.npy has 1 non-finite"):
        load(targets="Ynan.npy")
    (tmp_path / "junk.npy").write_text("not numpy")
    with pytest.raises(ValueError, match="dataset.targets: cannot read .*junk.npy"):
        load(targets="junk.npy")


# ------------------------------------------------- words/onsets TSV, BIDS events


def test_read_words_tsv(tmp_path):
    p = tmp_path / "words.tsv"
    p.write_text("word\tonset\tduration\trun\tpos\n"
                 "b\t1.5\t0.2\t1\tX\nthe\t0.5\t0.3\t1\tD\n\nfirst\t0.25\t0.1\t2\tN\n")
    s = io.read_words_tsv(p)
    assert list(s.words) == ["the", "b", "first"] and s.info["reordered"] is True
    np.testing.assert_allclose(s.onsets, [0.5, 1.5, 0.25])
    np.testing.assert_allclose(s.offsets, [0.8, 1.7, 0.35])
    np.testing.assert_array_equal(s.runs, [1, 1, 2])
    q = tmp_path / "plain.tsv"
    q.write_text("onset\tword\n0.1\tHello,\n0.4\t\"world\"\n")
    s = io.read_words_tsv(q)
    assert list(s.words) == ["Hello,", '"world"'] and s.offsets is None and s.runs is None
    assert s.info["reordered"] is False

    for text, msg in (("word\tstart\na\t1\n", r"missing columns \['onset'\]"),
                      ("word\tonset\na\tsoon\n", "column 'onset', data row 1: not a number"),
                      ("word\tonset\na\tn/a\n", "column 'onset' must be a number on every row"),
                      ("word\tonset\n\t1\n", "column 'word' is empty on data row 1"),
                      ("word\tonset\tduration\na\t1\t-1\n", "'duration' must be >= 0"),
                      ("word\tonset\tduration\na\t1\tn/a\n", "'duration' is missing on 1 rows"),
                      ("word\tonset\trun\na\t1\t1.5\n", "column 'run' must hold integers"),
                      ("word\tonset\n", "no data rows")):
        bad = tmp_path / "bad.tsv"
        bad.write_text(text)
        with pytest.raises(ValueError, match=msg) as info:
            io.read_words_tsv(bad)
        assert str(bad) in str(info.value)
    with pytest.raises(FileNotFoundError, match="absent.tsv"):
        io.read_words_tsv(tmp_path / "absent.tsv")


def test_read_bids_events(tmp_path):
    p = tmp_path / "sub-01_task-story_events.tsv"
    p.write_text("onset\tduration\ttrial_type\tword\n"
                 "0.0\t2.0\tfixation\tn/a\n"
                 "2.5\t0.3\tword\tOnce\n"
                 "2.8\t0.25\tword\tupon\n"
                 "3.05\tn/a\tsentence\tn/a\n"
                 "3.1\t0.2\tword\ta\n")
    s = io.read_bids_events(p)
    assert list(s.words) == ["Once", "upon", "a"]
    np.testing.assert_allclose(s.onsets, [2.5, 2.8, 3.1])
    np.testing.assert_allclose(s.offsets, [2.8, 3.05, 3.3])
    assert s.info["dropped"] == {"trial_type": 0, "no_word": 2}
    only = io.read_bids_events(p, trial_type="word")
    assert list(only.words) == ["Once", "upon", "a"] and only.info["dropped"]["trial_type"] == 2
    types = io.read_bids_events(p, word_column="trial_type", trial_type=["fixation", "sentence"])
    assert list(types.words) == ["fixation", "sentence"] and types.offsets is None
    assert types.info["missing_durations"] == 1
    with pytest.raises(ValueError, match=r"no word column 'text' \(columns: \['onset'"):
        io.read_bids_events(p, word_column="text")
    with pytest.raises(ValueError, match="no word events left of 5 rows"):
        io.read_bids_events(p, trial_type="response")
    q = tmp_path / "no_types_events.tsv"
    q.write_text("onset\tduration\tword\n1\t0\ta\n")
    with pytest.raises(ValueError, match="has no 'trial_type' column"):
        io.read_bids_events(q, trial_type="word")


# -------------------------------------------------------------------- NIfTI


def write_nifti(folder, nib, n_vols=(12, 10), tr=2.0, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(exist_ok=True)
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    paths = []
    for k, n in enumerate(n_vols):
        img = nib.Nifti1Image(rng.standard_normal((3, 4, 2, n)).astype(np.float32), affine)
        img.header.set_zooms((3.0, 3.0, 3.0, tr))
        paths.append(folder / f"sub-01_run-{k + 1}_bold.nii.gz")
        nib.save(img, str(paths[-1]))
    mask = np.zeros((3, 4, 2), np.uint8)
    mask[1:, 1:3, 0] = 1
    nib.save(nib.Nifti1Image(mask, affine), str(folder / "mask.nii.gz"))
    return paths


def test_nifti_images_mask_and_words(tmp_path):
    nib = pytest.importorskip("nibabel", reason="nibabel is optional (pip install nibabel)")
    images = write_nifti(tmp_path / "bids", nib)
    words = tmp_path / "bids" / "words.tsv"
    words.write_text("word\tonset\trun\n" + "".join(f"w{i}\t{0.5 + 1.7 * i}\t{r}\n"
                                                      for r in (1, 2) for i in range(10)))
    cfg = ds("nifti", images=[str(p.relative_to(tmp_path)) for p in images], words="bids/words.tsv",
             mask="bids/mask.nii.gz")
    d = load_dataset(cfg, base_dir=tmp_path)
    ref = io.read_nifti(images, tmp_path / "bids" / "mask.nii.gz")
    assert d.kind == "fmri" and d.subjects == ["sub-01_run-1_bold"]
    rec = d.recordings["sub-01_run-1_bold"]
    np.testing.assert_array_equal(rec.data, ref.data)
    assert rec.data.shape == (22, 4) and rec.tr == 2.0
    np.testing.assert_array_equal(d.stimulus.runs, np.repeat([0, 1], 10))  # run labels 1, 2 -> images 0, 1
    assert d.info["run_labels"] == [1, 2] and d.info["words_after_last_scan"] == 0
    assert d.info["paths"]["dataset.images[1]"] == str(images[1])

    # run 2 has 10 scans (its last TR ends at 20 s): words at 21.9 s and later are outside
    late = tmp_path / "bids" / "late.tsv"
    late.write_text("word\tonset\trun\n" + "".join(f"w{i}\t{0.5 + 2.35 * i}\t{r}\n"
                                                     for r in (1, 2) for i in range(10)))
    with pytest.warns(UserWarning, match="dataset.words: 1 of 20 words come after the last scan"):
        d = load_dataset(cfg.model_copy(update={"words": str(late)}), base_dir=tmp_path)
    assert d.info["words_after_last_scan"] == 1 and d.info["words_before_first_scan"] == 0


def test_nifti_errors_name_the_key(tmp_path):
    nib = pytest.importorskip("nibabel", reason="nibabel is optional (pip install nibabel)")
    images = [str(p) for p in write_nifti(tmp_path, nib)]
    plain = tmp_path / "plain.tsv"
    plain.write_text("word\tonset\na\t1.0\n")
    with pytest.raises(ValueError, match="dataset.words: .*plain.tsv has no 'run' column but dataset.images lists 2"):
        load_dataset(ds("nifti", images=images, words=str(plain)))
    three = tmp_path / "three.tsv"
    three.write_text("word\tonset\trun\na\t1.0\t0\nb\t1.0\t1\nc\t1.0\t2\n")
    with pytest.raises(ValueError, match=r"dataset.words: .*has runs \[0, 1, 2\] but dataset.images lists 2"):
        load_dataset(ds("nifti", images=images, words=str(three)))
    with pytest.raises(FileNotFoundError, match=f"dataset.mask: mask image not found: {tmp_path / 'm.nii'}"):
        load_dataset(ds("nifti", images=images, words=str(plain), mask=str(tmp_path / "m.nii")))
    with pytest.raises(FileNotFoundError, match=r"dataset.images\[1\]: NIfTI image not found: .*gone.nii"):
        load_dataset(ds("nifti", images=[images[0], str(tmp_path / "gone.nii")], words=str(plain)))
    with pytest.raises(FileNotFoundError, match="dataset.words: words/onsets TSV not found"):
        load_dataset(ds("nifti", images=images[:1], words=str(tmp_path / "w.tsv")))
    d = load_dataset(ds("nifti", images=images[:1], words=str(plain), tr=1.5))  # one run: no run column needed
    assert d.recordings[d.subjects[0]].tr == 1.5 and d.stimulus.runs.tolist() == [0]
    (tmp_path / "broken.nii.gz").write_bytes(b"\x1f\x8b not really")
    with pytest.raises(ValueError, match="dataset.images: cannot read the NIfTI image .*broken.nii.gz"):
        load_dataset(ds("nifti", images=[str(tmp_path / "broken.nii.gz")], words=str(plain)))


# -------------------------------------------------------------- Harry Potter


def write_hp(folder, subjects=("F", "H"), run_lengths=(50, 55, 60, 52), n_vox=7, late_words=0, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(exist_ok=True)
    n_scans = sum(run_lengths)
    time_fmri = 2.0 * np.arange(n_scans)
    runs_fmri = np.repeat(np.arange(1, len(run_lengths) + 1), run_lengths)
    word_times = np.round(np.sort(rng.uniform(20.0, time_fmri[-1], size=120)) * 2) / 2
    word_times[len(word_times) - late_words:] += 1000.0 * (late_words > 0)
    np.save(folder / "time_fmri.npy", time_fmri)
    np.save(folder / "runs_fmri.npy", runs_fmri)
    np.save(folder / "time_words_fmri.npy", word_times)
    np.save(folder / "words_fmri.npy", np.array([f"w{i}" for i in range(120)]))
    for s in subjects:  # trimmed 20 + 15 per run, as distributed
        np.save(folder / f"data_subject_{s}.npy", rng.standard_normal((n_scans - 35 * len(run_lengths), n_vox)))


def test_harry_potter_fmri_subjects_share_one_stimulus(tmp_path):
    write_hp(tmp_path / "hp")
    d = load_dataset(ds("harry_potter_fmri", root="hp", subjects=["F", "H"]), base_dir=tmp_path)
    assert d.kind == "fmri" and d.subjects == ["F", "H"] and d.info["shared_sampling"] is True
    for s in ("F", "H"):
        stim, rec = io.read_harry_potter_fmri(tmp_path / "hp", s)
        np.testing.assert_array_equal(d.recordings[s].data, rec.data)
        np.testing.assert_array_equal(d.recordings[s].times, rec.times)
    np.testing.assert_array_equal(d.stimulus.onsets, stim.onsets)
    assert list(d.stimulus.words) == list(stim.words) and d.info["words_after_last_scan"] == 0

    with pytest.raises(FileNotFoundError, match=r"dataset.subjects: no data for subject\(s\) \['Z'\] in .*hp"):
        load_dataset(ds("harry_potter_fmri", root=str(tmp_path / "hp"), subjects=["F", "Z"]))
    with pytest.raises(FileNotFoundError, match="dataset.root: Harry Potter fMRI folder not found"):
        load_dataset(ds("harry_potter_fmri", root=str(tmp_path / "none")))
    np.save(tmp_path / "hp" / "data_subject_G.npy", np.zeros((100, 3)))
    with pytest.raises(ValueError, match=r"dataset.root: .*data_subject_G.npy: 100 rows, but time_fmri.npy has 217"):
        load_dataset(ds("harry_potter_fmri", root=str(tmp_path / "hp"), subjects=["G"]))

    write_hp(tmp_path / "late", subjects=("F",), late_words=3)
    with pytest.warns(UserWarning, match=r"dataset.root: 3 of 120 words come after .* subject\(s\) \['F'\]"):
        d = load_dataset(ds("harry_potter_fmri", root=str(tmp_path / "late"), subjects=["F"]))
    assert d.info["words_after_last_scan"] == 3


def test_harry_potter_meg(tmp_path):
    rng = np.random.default_rng(0)
    meg = rng.standard_normal((12, 5, 8)).astype(np.float32)
    np.save(tmp_path / "meg_A.npy", meg)
    np.save(tmp_path / "words.npy", np.array([f"w{i}" for i in range(12)]))
    np.save(tmp_path / "words11.npy", np.array([f"w{i}" for i in range(11)]))
    d = load_dataset(ds("harry_potter_meg", data="meg_A.npy", words="words.npy", sfreq=40.0, tmin=-0.1),
                     base_dir=tmp_path)
    assert d.kind == "meg" and d.subjects == ["meg_A"]
    rec = d.recordings["meg_A"]
    np.testing.assert_array_equal(rec.data, meg)
    np.testing.assert_allclose(rec.epoch_times, -0.1 + np.arange(8) / 40.0)
    assert list(d.stimulus.words) == [f"w{i}" for i in range(12)]
    with pytest.raises(ValueError, match="dataset.data: 11 words but the MEG array has 12 rows"):
        load_dataset(ds("harry_potter_meg", data="meg_A.npy", words="words11.npy", sfreq=40.0), base_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="dataset.words: MEG word list .*not found: .*nope.npy"):
        load_dataset(ds("harry_potter_meg", data="meg_A.npy", words="nope.npy", sfreq=40.0), base_dir=tmp_path)


# ---------------------------------------------------------------------- MNE


@pytest.fixture
def mne():
    mne = pytest.importorskip("mne", reason="mne is optional (pip install mne)")
    mne.set_log_level("ERROR")
    return mne


def make_raw(mne):
    rng = np.random.default_rng(0)
    info = mne.create_info(["MEG 001", "MEG 002", "EEG 001", "STI 014"], 100.0, ["mag", "grad", "eeg", "stim"])
    raw = mne.io.RawArray(rng.standard_normal((4, 600)) * 1e-12, info)
    raw.set_annotations(mne.Annotations(onset=[1.0, 2.5, 3.0, 4.0], duration=[0.3, 0.2, 0.0, 0.1],
                                        description=["the", "cat", "BAD_seg", "sat"]))
    return raw


def test_mne_raw_and_epochs_files(mne, tmp_path):
    raw = make_raw(mne)
    fif = tmp_path / "sub-01_raw.fif"
    raw.save(fif)
    d = load_dataset(ds("mne", path="sub-01_raw.fif", data="raw", picks="meg"), base_dir=tmp_path)
    stim, rec = io.read_mne_raw(fif, picks="meg")
    assert d.kind == "meg" and d.info["recording_kind"] == "continuous" and d.subjects == ["sub-01_raw"]
    assert list(d.stimulus.words) == ["the", "cat", "sat"] == list(stim.words)
    np.testing.assert_allclose(d.stimulus.onsets, [1.0, 2.5, 4.0])
    np.testing.assert_array_equal(d.recordings["sub-01_raw"].data, rec.data)
    assert d.recordings["sub-01_raw"].target_names == ("MEG 001", "MEG 002")

    import pandas as pd

    events = np.array([[100, 0, 1], [250, 0, 1], [400, 0, 1]])
    epochs = mne.Epochs(raw, events, tmin=-0.1, tmax=0.3, baseline=None, preload=True,
                        metadata=pd.DataFrame({"token": ["a", "big", "dog"]}))
    epo = tmp_path / "sub-01-epo.fif"
    epochs.save(epo)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        d = load_dataset(ds("mne", path=str(epo), word_column="token"))
    assert not [w for w in caught if "first_samp" in str(w.message)]  # the adapter states the clock
    assert d.kind == "meg" and d.info["recording_kind"] == "meg"
    rec = d.recordings["sub-01-epo"]
    assert list(d.stimulus.words) == ["a", "big", "dog"] and rec.data.shape == (3, 3, 41)
    np.testing.assert_allclose(rec.data, epochs.get_data(picks="data"))

    with pytest.raises(FileNotFoundError, match=f"dataset.path: MEG/EEG file not found: {tmp_path / 'x_raw.fif'}"):
        load_dataset(ds("mne", path=str(tmp_path / "x_raw.fif"), data="raw"))
    bare = mne.io.RawArray(np.zeros((1, 100)), mne.create_info(["EEG 001"], 100.0, "eeg"))
    bare.save(tmp_path / "bare_raw.fif")
    with pytest.raises(ValueError, match="dataset.path: no word onsets"):
        load_dataset(ds("mne", path=str(tmp_path / "bare_raw.fif"), data="raw"))
