"""jaxalign.io: containers, readers on the real files in ../shared/data, synthetic files, bad inputs."""

import json
import re
import warnings

import numpy as np
import pytest

from jaxalign import io
from jaxalign.timing import trim_mask

from _shared_data import need  # real data beside the project, read in place


# --------------------------------------------------------------------------
# containers
# --------------------------------------------------------------------------


def test_stimulus_validates_lengths():
    s = io.Stimulus(["a", "b", "c"], onsets=[0, 1, 2], offsets=[0.5, 1.5, 2.5], sentence_ids=[0, 0, 1], runs=[1, 1, 1])
    assert len(s) == 3 and s.onsets.dtype == np.float64
    np.testing.assert_array_equal(s.sentence_starts, [True, False, True])
    sub = s.select(np.array([False, True, True]))
    assert list(sub.words) == ["b", "c"] and sub.onsets.tolist() == [1.0, 2.0]
    with pytest.raises(ValueError, match="onsets has 2 entries but there are 3 words"):
        io.Stimulus(["a", "b", "c"], onsets=[0, 1])
    with pytest.raises(ValueError, match="runs has 4 entries"):
        io.Stimulus(["a", "b", "c"], runs=[0, 0, 0, 0])
    with pytest.raises(ValueError, match="precede"):
        io.Stimulus(["a"], onsets=[1.0], offsets=[0.5])
    with pytest.raises(ValueError, match="finite"):
        io.Stimulus(["a"], onsets=[np.nan])
    with pytest.raises(ValueError, match="strings"):
        io.Stimulus(["a", 3])
    with pytest.raises(ValueError, match="one string"):
        io.Stimulus("abc")


def test_recording_validates_shapes():
    r = io.Recording(np.zeros((4, 2), dtype=np.float32), "fmri", times=[0, 2, 4, 6], runs=[0, 0, 1, 1], target_names=["x", "y"], tr=2)
    assert r.n_samples == 4 and r.n_targets == 2 and r.data.dtype == np.float32
    np.testing.assert_array_equal(r.target("y"), np.zeros(4))
    assert r.select([0, 1]).n_samples == 2
    with pytest.raises(KeyError):
        r.target("z")
    with pytest.raises(ValueError, match="kind"):
        io.Recording(np.zeros((4, 2)), "eeg")
    with pytest.raises(ValueError, match="times has 3 entries but there are 4 samples"):
        io.Recording(np.zeros((4, 2)), "fmri", times=[0, 1, 2])
    with pytest.raises(ValueError, match="needs times"):
        io.Recording(np.zeros((4, 2)), "fmri")
    with pytest.raises(ValueError, match="target_names has 3 names"):
        io.Recording(np.zeros((4, 2)), "behaviour", target_names=["a", "b", "c"])
    with pytest.raises(ValueError, match="2-D"):
        io.Recording(np.zeros(4), "behaviour")
    with pytest.raises(ValueError, match="epoch_times"):
        io.Recording(np.zeros((4, 2, 3)), "meg")
    with pytest.raises(ValueError, match="mask selects 3 voxels"):
        io.Recording(np.zeros((4, 2)), "fmri", times=np.arange(4), mask=np.eye(3, dtype=bool)[:, :, None])
    with pytest.raises(ValueError, match="affine"):
        io.Recording(np.zeros((4, 2)), "behaviour", affine=np.eye(3))
    epochs = io.Recording(np.zeros((5, 2, 3)), "meg", epoch_times=[0, 0.025, 0.05])
    assert epochs.n_targets == 2


# --------------------------------------------------------------------------
# TextGrid
# --------------------------------------------------------------------------

LONG = '''File type = "ooTextFile"
Object class = "TextGrid"

xmin = 0
xmax = 3.5
tiers? <exists>
size = 2
item []:
    item [1]:
        class = "IntervalTier"
        name = "word"
        xmin = 0
        xmax = 3.5
        intervals: size = 5
        intervals [1]:
            xmin = 0
            xmax = 1.0
            text = "sp"
        intervals [2]:
            xmin = 1.0
            xmax = 1.5
            text = "say ""hi"""
        intervals [3]:
            xmin = 1.5
            xmax = 2
            text = ""
        intervals [4]:
            xmin = 2
            xmax = 3.25e0
            text = "naïve"
        intervals [5]:
            xmin = 3.25
            xmax = 3.5
            text = "sp"
    item [2]:
        class = "TextTier"
        name = "events"
        xmin = 0
        xmax = 3.5
        points: size = 1
        points [1]:
            number = 1.2
            mark = "beep"
'''

SHORT = '''File type = "ooTextFile"
Object class = "TextGrid"

0
3.5
<exists>
2
"IntervalTier"
"word"
0
3.5
5
0
1.0
"sp"
1.0
1.5
"say ""hi"""
1.5
2
""
2
3.25e0
"naïve"
3.25
3.5
"sp"
"TextTier"
"events"
0
3.5
1
1.2
"beep"
'''


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16"])
def test_textgrid_long_and_short_formats_agree(tmp_path, encoding):
    out = {}
    for name, text in (("long", LONG), ("short", SHORT)):
        p = tmp_path / f"{name}.TextGrid"
        p.write_text(text, encoding=encoding)  # Python writes a BOM for utf-16
        out[name] = io.read_textgrid(p, tier="word")
    for s in out.values():
        assert list(s.words) == ['say "hi"', "naïve"]
        np.testing.assert_array_equal(s.onsets, [1.0, 2.0])
        np.testing.assert_array_equal(s.offsets, [1.5, 3.25])
    kept = io.read_textgrid(tmp_path / "short.TextGrid", tier=0, drop_pauses=False)
    assert list(kept.words) == ["sp", 'say "hi"', "", "naïve", "sp"]
    tiers = io.read_textgrid_tiers(tmp_path / "long.TextGrid")
    assert list(tiers) == ["word", "events"] and tiers["events"]["text"] == ["beep"]
    assert tiers["events"]["xmin"].tolist() == [1.2]


def test_textgrid_bad_inputs(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.TextGrid"):
        io.read_textgrid(tmp_path / "nope.TextGrid")
    p = tmp_path / "two.TextGrid"
    p.write_text(LONG.replace('"word"', '"phones"').replace('"TextTier"', '"IntervalTier"').replace("points", "intervals").replace("number = 1.2", "xmin = 1.2\nxmax = 1.3").replace('mark = "beep"', 'text = "b"'))
    with pytest.raises(ValueError, match="which tier"):
        io.read_textgrid(p)
    with pytest.raises(ValueError, match="no tier named 'word'"):
        io.read_textgrid(p, tier="word")
    trunc = tmp_path / "trunc.TextGrid"
    trunc.write_text(SHORT[: SHORT.index('"naïve"')])
    with pytest.raises(ValueError, match="ends early"):
        io.read_textgrid(trunc)
    other = tmp_path / "other.TextGrid"
    other.write_text('File type = "ooTextFile"\nObject class = "Sound"\n')
    with pytest.raises(ValueError, match="not a Praat TextGrid"):
        io.read_textgrid(other)


@pytest.mark.parametrize("text", [LONG, SHORT], ids=["long", "short"])
def test_textgrid_size_line_smaller_than_the_tier_reads_all_and_warns(tmp_path, text):
    p = tmp_path / "under.TextGrid"
    under = text.replace("intervals: size = 5", "intervals: size = 3") if text is LONG else text.replace('3.5\n5\n0\n', '3.5\n3\n0\n')
    assert under != text
    p.write_text(under)
    with pytest.warns(UserWarning, match=r"under\.TextGrid: tier 'word' declares 3 intervals .* but holds 5; reading all 5"):
        s = io.read_textgrid(p, tier="word", drop_pauses=False)
    assert list(s.words) == ["sp", 'say "hi"', "", "naïve", "sp"]
    with pytest.warns(UserWarning, match="declares 3"):
        tiers = io.read_textgrid_tiers(p)
    assert list(tiers) == ["word", "events"] and tiers["events"]["text"] == ["beep"]


@pytest.mark.parametrize("text", [LONG, SHORT], ids=["long", "short"])
def test_textgrid_size_line_larger_than_the_tier_is_an_error(tmp_path, text):
    p = tmp_path / "over.TextGrid"
    over = text.replace("intervals: size = 5", "intervals: size = 7") if text is LONG else text.replace('3.5\n5\n0\n', '3.5\n7\n0\n')
    assert over != text
    p.write_text(over)
    with pytest.raises(ValueError, match=r"over\.TextGrid: tier 'word' declares 7 intervals .* but holds 5"):
        io.read_textgrid(p, tier="word")
    last = tmp_path / "last.TextGrid"  # the last tier: the file ends too soon
    last.write_text(text.replace("points: size = 1", "points: size = 2") if text is LONG else text.replace('3.5\n1\n1.2', '3.5\n2\n1.2'))
    with pytest.raises(ValueError, match=r"last\.TextGrid: tier 'events' declares 2 points .* but holds 1"):
        io.read_textgrid_tiers(last)


def test_textgrid_more_tiers_than_declared_warns(tmp_path):
    p = tmp_path / "tiers.TextGrid"
    p.write_text(LONG.replace("size = 2\n", "size = 1\n", 1))
    with pytest.warns(UserWarning, match=r"tiers\.TextGrid: the TextGrid declares 1 tiers .* ignored"):
        assert list(io.read_textgrid_tiers(p)) == ["word"]


def test_alice_textgrid_with_a_wrong_size_line_keeps_every_word(tmp_path):
    real = next(need("alice").glob("stimulus_*.TextGrid"))
    text = real.read_text()
    assert "intervals: size = 2423" in text
    bad = tmp_path / real.name
    bad.write_text(text.replace("intervals: size = 2423", "intervals: size = 2000"))
    with pytest.warns(UserWarning, match=rf"{re.escape(bad.name)}: tier 'word' declares 2000 intervals .* holds 2423"):
        s = io.read_textgrid(bad)
    assert len(s) == 2127 and s.words[-1] == "cake"


def test_alice_textgrid_real():
    root = need("alice")
    s = io.read_alice_stimulus(root)
    assert len(s) == 2127  # 2423 intervals - 290 "sp" - 6 empty
    assert " ".join(s.words[:12]) == "Alice was beginning to get very tired of sitting by her sister"
    assert np.all(np.diff(s.onsets) >= 0) and np.all(s.offsets >= s.onsets)
    assert s.onsets[0] == pytest.approx(20.05891632653599)
    assert s.words[-1] == "cake" and s.offsets[-1] == pytest.approx(743.3351068027995)
    assert not any(w in ("sp", "") for w in s.words)
    full = io.read_alice_stimulus(root, drop_pauses=False)
    assert len(full) == 2423 and full.words[0] == "sp"
    # intervals tile the tier
    np.testing.assert_allclose(full.onsets[1:], full.offsets[:-1])


# --------------------------------------------------------------------------
# Alice time courses
# --------------------------------------------------------------------------


@pytest.mark.parametrize("roi_size", ["6mm", "10mm"])
def test_alice_timecourses_real(roi_size):
    root = need("alice")
    subjects = io.list_alice_subjects(root, roi_size)
    assert len(subjects) == 28 and subjects[0] == "s18" and "s33" in subjects
    for sid in subjects:
        if sid == "s33":
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            r = io.read_alice_subject(sid, root, roi_size=roi_size)
        assert r.data.shape == (362, 6) and r.kind == "fmri" and not r.info["bad"]
        assert r.target_names == ("LATL", "RATL", "LPTL", "LIPL", "LPreM", "LIFG")
    assert r.times[0] == 20.0 and r.times[-1] == 20.0 + 2 * 361 and r.tr == 2.0


def test_alice_s33_all_zero_detected():
    root = need("alice")
    with pytest.warns(UserWarning, match="s33.*all values are zero"):
        r = io.read_alice_subject("s33", root)
    assert r.info["bad"] and r.data.shape == (362, 6) and not r.data.any()
    with pytest.raises(ValueError, match="all values are zero"):
        io.read_alice_subject(33, root, roi_size="10mm", on_bad="raise")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = io.read_alice_subject(root / "fmri" / "6mm" / "s33-timecourses.txt", on_bad="ignore")
    assert r.info["bad"]


def test_alice_bad_inputs(tmp_path):
    with pytest.raises(FileNotFoundError, match="s99-timecourses.txt"):
        io.read_alice_subject("s99", tmp_path)
    bad = tmp_path / "s01-timecourses.txt"
    bad.write_text("1 2 3\n4 5 6\n")
    with pytest.raises(ValueError, match="expected 6 columns"):
        io.read_alice_subject(bad)
    bad.write_text("1 2 3 4 5 6\n1 2 3 4 5\n")
    with pytest.raises(ValueError, match="line 2 has 5 columns"):
        io.read_alice_subject(bad)
    bad.write_text("1 2 3 4 5 6\n1 2 3 4 5 7\n")
    with pytest.raises(ValueError, match="constant ROI"):
        io.read_alice_subject(bad, on_bad="raise")
    with pytest.raises(ValueError, match="on_bad"):
        io.read_alice_subject(bad, on_bad="skip")


def test_alice_regressors_real_aligned():
    root = need("alice")
    reg = io.read_alice_regressors("s18", root)
    assert reg.data.shape == (362, 8) and reg.target_names == io.ALICE_REGRESSORS
    np.testing.assert_array_equal(reg.times, io.read_alice_subject("s18", root).times)
    # the 362-row rate file and the 372-row published predictors (first 10 rows
    # = dropped volumes) describe the same word rate once aligned
    pred = io.read_alice_predictors(root)
    assert pred.data.shape == (362, 12) and pred.target_names[0] == "rate_conv"
    assert np.corrcoef(pred.data[:, 0], reg.data[:, 0])[0, 1] > 0.95
    raw = np.loadtxt(next((root / "fmri").glob("sept18-generic-predictors*.txt")))
    np.testing.assert_array_equal(pred.data, raw[io.ALICE_DROPPED:])
    motion = np.loadtxt(next((root / "fmri").glob("s18-rp_*.txt")))
    np.testing.assert_array_equal(reg.data[:, 2:], motion[io.ALICE_DROPPED:])
    # misaligned by 10 rows, the word rates would not agree
    assert abs(np.corrcoef(raw[:-io.ALICE_DROPPED, 0], reg.data[:, 0])[0, 1]) < 0.5


def _write(path, rows):
    np.savetxt(path, rows)
    return path


def test_alice_regressors_bad_inputs(tmp_path):
    rng = np.random.default_rng(4)
    fmri = tmp_path / "fmri"
    fmri.mkdir()
    with pytest.raises(FileNotFoundError, match="s01-rate.txt"):
        io.read_alice_regressors("s01", tmp_path)
    _write(fmri / "s01-rate.txt", rng.standard_normal(362))
    _write(fmri / "s01-sndpwr.txt", rng.standard_normal(362))
    with pytest.raises(FileNotFoundError, match="head-motion"):
        io.read_alice_regressors("s01", tmp_path)
    _write(fmri / "s01-rp_a.txt", rng.standard_normal((372, 6)))
    reg = io.read_alice_regressors(1, tmp_path)
    assert reg.data.shape == (362, 8)
    _write(fmri / "s01-rp_a.txt", rng.standard_normal((300, 6)))
    with pytest.raises(ValueError, match="expected 362 rows .* found 300"):
        io.read_alice_regressors("s01", tmp_path)
    _write(fmri / "s01-rp_a.txt", rng.standard_normal((362, 5)))
    with pytest.raises(ValueError, match="expected 6 columns"):
        io.read_alice_regressors("s01", tmp_path)
    _write(fmri / "s01-rp_b.txt", rng.standard_normal((362, 6)))
    with pytest.raises(FileNotFoundError, match="expected one head-motion"):
        io.read_alice_regressors("s01", tmp_path)
    (fmri / "s01-rp_b.txt").unlink()
    _write(fmri / "s01-rp_a.txt", rng.standard_normal((362, 6)))
    bad = rng.standard_normal(362)
    bad[7] = np.nan
    _write(fmri / "s01-sndpwr.txt", bad)
    with pytest.raises(ValueError, match="non-finite"):
        io.read_alice_regressors("s01", tmp_path)
    with pytest.raises(FileNotFoundError, match="generic-predictors"):
        io.read_alice_predictors(tmp_path)


# --------------------------------------------------------------------------
# Natural Stories
# --------------------------------------------------------------------------


def test_natural_stories_real_sorted_text():
    folder = need("natural_stories")
    stim, rts = io.read_natural_stories(folder)
    assert len(stim) == rts.n_samples == 3103
    key = stim.runs * 10_000 + stim.info["zone"]
    assert np.all(np.diff(key) > 0)  # sorted by (item, zone), no duplicates
    assert np.bincount(stim.runs).tolist() == [0, 1073, 990, 1040]
    text = " ".join(stim.words[:10])
    assert text == "If you were to journey to the North of England,"
    for story, opening in ((2, "A clear and joyous day it was"), (3, "It was cold and nearly dark")):
        assert " ".join(stim.words[stim.runs == story][:6]) == " ".join(opening.split()[:6])
    # reads like text: sentences start with a capital (or a quote) and end with punctuation
    starts = np.flatnonzero(stim.sentence_starts)
    assert len(starts) > 100
    assert all(re.match(r"['\"A-Z0-9]", stim.words[i]) for i in starts)
    ends = np.r_[starts[1:] - 1, len(stim) - 1]
    assert np.mean([bool(re.search(r"[.!?]['\"]*$", stim.words[i])) for i in ends]) > 0.95
    assert stim.sentence_starts[np.flatnonzero(np.diff(stim.runs)) + 1].all()  # every story starts a sentence
    rt = rts.target("meanItemRT")
    assert rts.kind == "behaviour" and rts.target_names[0] == "meanItemRT"
    assert np.all((rt > 150) & (rt < 2000)) and 250 < rt.mean() < 450
    # the rows are shuffled in the file: the first row there is not the first word
    first_line = (folder / "processed_wordinfo.stories1-3.tsv").read_text().splitlines()[1]
    assert not first_line.startswith("If\t")
    words_only, _ = io.read_natural_stories(folder / "processed_wordinfo.stories1-3.tsv")
    assert list(words_only.words) == list(stim.words)


def test_natural_stories_synthetic_and_bad(tmp_path):
    info = tmp_path / "processed_wordinfo.tsv"
    info.write_text(
        "word\tzone\titem\tnItem\tmeanItemRT\n"
        "dog.\t3\t1\t10\t300\nThe\t1\t1\t10\t310\nA\t1\t2\t10\t320\nbig\t2\t1\t10\t330\ncat!\t2\t2\t10\t340\n"
    )
    stim, rts = io.read_natural_stories(info)
    assert list(stim.words) == ["The", "big", "dog.", "A", "cat!"]
    np.testing.assert_array_equal(rts.target("meanItemRT"), [310, 330, 300, 320, 340])
    np.testing.assert_array_equal(stim.sentence_ids, [0, 0, 0, 1, 1])
    tok = tmp_path / "all_stories.tok"
    tok.write_text("word\tzone\titem\nThe\t1\t1\nbig\t2\t1\ndog.\t3\t1\nA\t1\t2\n")
    with pytest.raises(ValueError, match="same \\(item, zone\\)"):
        io.read_natural_stories(info, tok)
    dup = tmp_path / "dup.tsv"
    dup.write_text("word\tzone\titem\tmeanItemRT\na\t1\t1\t300\nb\t1\t1\t310\n")
    with pytest.raises(ValueError, match="more than once"):
        io.read_natural_stories(dup)
    nocol = tmp_path / "nocol.tsv"
    nocol.write_text("word\tzone\titem\na\t1\t1\n")
    with pytest.raises(ValueError, match="missing columns \\['meanItemRT'\\]"):
        io.read_natural_stories(nocol)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="processed_wordinfo"):
        io.read_natural_stories(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="absent.tsv"):
        io.read_natural_stories(tmp_path / "absent.tsv")


def test_sentence_ids_from_punctuation():
    words = ["Mr.", "Smith", "came.", "'Hello!'", "he", "said.", "Then", "left"]
    np.testing.assert_array_equal(io.sentence_ids_from_punctuation(words), [0, 0, 0, 1, 1, 1, 2, 2])
    np.testing.assert_array_equal(io.sentence_ids_from_punctuation(["x", "y", "z."], runs=[1, 2, 2]), [0, 1, 1])


# --------------------------------------------------------------------------
# PIQA / Social IQa
# --------------------------------------------------------------------------


def _count_lines(p):
    return sum(1 for line in p.read_text().splitlines() if line.strip())


def test_piqa_real():
    folder = need("piqa")
    mc = io.read_piqa(folder)
    assert len(mc) == _count_lines(folder / "dev-labels.lst") == _count_lines(folder / "dev.jsonl") == 1838
    assert mc.n_choices == 2 and set(np.unique(mc.labels)) == {0, 1}
    raw = [int(x) for x in (folder / "dev-labels.lst").read_text().split()]
    np.testing.assert_array_equal(mc.labels, raw)  # already 0-based
    first = json.loads((folder / "dev.jsonl").read_text().splitlines()[0])
    assert mc.prompts[0] == first["goal"] and mc.choices[0] == (first["sol1"], first["sol2"])
    assert mc.ids[0] == first["id"]


def test_siqa_real_zero_based():
    folder = need("siqa")
    mc = io.read_siqa(folder / "dev.jsonl", folder / "dev-labels.lst")
    assert len(mc) == _count_lines(folder / "dev-labels.lst") == 1954
    raw = np.array([int(x) for x in (folder / "dev-labels.lst").read_text().split()])
    assert set(np.unique(raw)) == {1, 2, 3}
    np.testing.assert_array_equal(mc.labels, raw - 1)
    first = json.loads((folder / "dev.jsonl").read_text().splitlines()[0])
    assert mc.prompts[0] == f"{first['context']} {first['question']}"
    assert mc.choices[0][mc.labels[0]] == first["answer" + "ABC"[raw[0] - 1]]
    assert mc.ids is None


def test_multiple_choice_bad_inputs(tmp_path):
    data = tmp_path / "dev.jsonl"
    data.write_text('{"goal": "g", "sol1": "a", "sol2": "b"}\n{"goal": "h", "sol1": "c", "sol2": "d"}\n')
    labels = tmp_path / "dev-labels.lst"
    labels.write_text("0\n")
    with pytest.raises(ValueError, match="1 labels but .* 2 records"):
        io.read_piqa(tmp_path)
    labels.write_text("0\n2\n")
    with pytest.raises(ValueError, match="label 2, expected 0..1"):
        io.read_piqa(tmp_path)
    labels.write_text("1\n0\n")
    assert io.read_piqa(tmp_path).labels.tolist() == [1, 0]
    assert io.read_piqa(data).labels is None  # no label file given
    with pytest.raises(FileNotFoundError, match="missing.lst"):
        io.read_piqa(data, tmp_path / "missing.lst")
    with pytest.raises(ValueError, match="lacks the fields"):
        io.read_siqa(data)
    data.write_text("{not json\n")
    with pytest.raises(ValueError, match="line 1 is not valid JSON"):
        io.read_piqa(data)


# --------------------------------------------------------------------------
# Harry Potter (Toneva & Wehbe format)
# --------------------------------------------------------------------------


def test_harry_potter_words_real():
    p = need("harry_potter", "stimuli_words.npy")
    s = io.read_harry_potter_words(p)
    assert len(s) == 5176 and " ".join(s.words[:4]) == "Harry had never believed"


def write_hp(folder, *, run_lengths=(50, 55, 60, 52), trimmed=True, n_vox=7, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(exist_ok=True)
    n_scans = sum(run_lengths)
    time_fmri = 2.0 * np.arange(n_scans)
    runs_fmri = np.repeat(np.arange(1, len(run_lengths) + 1), run_lengths)
    n_rows = n_scans - len(run_lengths) * 35 if trimmed else n_scans
    data = rng.standard_normal((n_rows, n_vox)).astype(np.float32)
    word_times = np.round(np.sort(rng.uniform(20.0, time_fmri[-1], size=300)) * 2) / 2
    words = np.array([f"w{i}" for i in range(300)])  # <U4, like stimuli_words.npy's <U14
    np.save(folder / "data_subject_F.npy", data)
    np.save(folder / "time_fmri.npy", time_fmri)
    np.save(folder / "runs_fmri.npy", runs_fmri)
    np.save(folder / "time_words_fmri.npy", word_times)
    np.save(folder / "words_fmri.npy", words)
    return data, time_fmri, runs_fmri, word_times, words


@pytest.mark.parametrize("trimmed", [True, False])
def test_harry_potter_fmri_round_trip(tmp_path, trimmed):
    data, time_fmri, runs_fmri, word_times, words = write_hp(tmp_path / "hp", trimmed=trimmed)
    stim, rec = io.read_harry_potter_fmri(tmp_path / "hp", "F")
    np.testing.assert_array_equal(rec.data, data)
    keep = trim_mask(runs_fmri, 20, 15) if trimmed else np.ones(time_fmri.size, bool)
    np.testing.assert_array_equal(rec.times, time_fmri[keep])
    np.testing.assert_array_equal(rec.runs, runs_fmri[keep])
    assert rec.tr == 2.0 and rec.info["trimmed"] is trimmed and rec.kind == "fmri"
    assert list(stim.words) == list(words)
    np.testing.assert_array_equal(stim.onsets, word_times)
    expected_runs = [runs_fmri[max(j for j in range(time_fmri.size) if time_fmri[j] < t)] for t in word_times]
    np.testing.assert_array_equal(stim.runs, expected_runs)
    same, _ = io.read_harry_potter_fmri(tmp_path / "hp", tmp_path / "hp" / "data_subject_F.npy")
    assert len(same) == 300


def test_harry_potter_fmri_bad_inputs(tmp_path):
    folder = tmp_path / "hp"
    write_hp(folder)
    with pytest.raises(FileNotFoundError, match="data_subject_Z.npy"):
        io.read_harry_potter_fmri(folder, "Z")
    np.save(folder / "data_subject_G.npy", np.zeros((100, 3)))
    with pytest.raises(ValueError, match="expected 217 \\(untrimmed\\) or 77"):
        io.read_harry_potter_fmri(folder, "G")
    np.save(folder / "words_fmri.npy", np.array(["a", "b"]))
    with pytest.raises(ValueError, match="2 words .* but 300 word times"):
        io.read_harry_potter_fmri(folder, "F")
    (folder / "time_fmri.npy").unlink()
    with pytest.raises(FileNotFoundError, match="time_fmri.npy"):
        io.read_harry_potter_fmri(folder, "F")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        io.read_harry_potter_fmri(tmp_path / "nowhere", "F")


def test_harry_potter_meg_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    meg = rng.standard_normal((12, 306, 20)).astype(np.float32)
    words = np.array([f"w{i}" for i in range(12)])
    np.save(tmp_path / "meg.npy", meg)
    np.save(tmp_path / "words.npy", words)
    stim, rec = io.read_harry_potter_meg(tmp_path / "meg.npy", tmp_path / "words.npy", sfreq=40.0)
    np.testing.assert_array_equal(rec.data, meg)
    assert rec.kind == "meg" and rec.n_targets == 306 and list(stim.words) == list(words)
    np.testing.assert_allclose(rec.epoch_times, np.arange(20) * 0.025)
    with pytest.raises(ValueError, match="11 words but the MEG array has 12 rows"):
        io.read_harry_potter_meg(meg, words[:11])
    with pytest.raises(ValueError, match="3-D"):
        io.read_harry_potter_meg(meg[0])
    with pytest.raises(FileNotFoundError, match="absent.npy"):
        io.read_harry_potter_meg(tmp_path / "absent.npy")


# --------------------------------------------------------------------------
# NIfTI (nibabel) and MNE (optional dependencies)
# --------------------------------------------------------------------------


def test_nifti_round_trip(tmp_path):
    nib = pytest.importorskip("nibabel", reason="nibabel is optional (pip install nibabel)")
    rng = np.random.default_rng(0)
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    vols = [rng.standard_normal((4, 5, 3, n)).astype(np.float32) for n in (6, 4)]
    paths = []
    for k, v in enumerate(vols):
        img = nib.Nifti1Image(v, affine)
        img.header.set_zooms((3.0, 3.0, 3.0, 2.0))
        img.header.set_xyzt_units("mm", "sec")
        paths.append(tmp_path / f"run{k}.nii.gz")
        nib.save(img, paths[-1])
    mask = np.zeros((4, 5, 3), dtype=bool)
    mask[1:3, 2:5, 1] = True
    mask[0, 0, 0] = True
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), affine), tmp_path / "mask.nii.gz")
    rec = io.read_nifti(paths, tmp_path / "mask.nii.gz")
    assert rec.data.shape == (10, 7) and rec.tr == 2.0
    np.testing.assert_array_equal(rec.data[:6], vols[0][mask].T)
    np.testing.assert_array_equal(rec.data[6:], vols[1][mask].T)
    np.testing.assert_array_equal(rec.runs, [0] * 6 + [1] * 4)
    np.testing.assert_array_equal(rec.times, np.r_[np.arange(6), np.arange(4)] * 2.0)
    np.testing.assert_array_equal(rec.mask, mask)
    back = io.targets_to_nifti(rec.data[0], rec)
    np.testing.assert_array_equal(np.asarray(back.dataobj)[mask], rec.data[0])
    np.testing.assert_array_equal(back.affine, affine)
    full = io.read_nifti(paths[1], tr=1.5)
    assert full.data.shape == (4, 60) and full.tr == 1.5
    with pytest.raises(ValueError, match="mask shape"):
        io.read_nifti(paths[0], np.ones((4, 5, 2), bool))
    with pytest.raises(FileNotFoundError, match="none.nii"):
        io.read_nifti(tmp_path / "none.nii")
    nib.save(nib.Nifti1Image(vols[0][..., 0], affine), tmp_path / "three_d.nii.gz")
    with pytest.raises(ValueError, match="4-D"):
        io.read_nifti(tmp_path / "three_d.nii.gz")


def test_nifti_nan_in_the_mask_is_outside_it(tmp_path):
    nib = pytest.importorskip("nibabel", reason="nibabel is optional (pip install nibabel)")
    affine = np.eye(4)
    vol = np.arange(4 * 5 * 3 * 2, dtype=np.float32).reshape(4, 5, 3, 2)
    nib.save(nib.Nifti1Image(vol, affine), tmp_path / "run.nii.gz")
    mask = np.zeros((4, 5, 3), np.float32)
    mask[1, 2, 0] = mask[3, 4, 2] = 1.0
    mask[0, :, :] = np.nan  # 15 NaN voxels (a resampled mask's border, say)
    nib.save(nib.Nifti1Image(mask, affine), tmp_path / "mask.nii.gz")
    with pytest.warns(UserWarning, match=r"mask\.nii\.gz has 15 NaN voxels: treated as outside the mask"):
        rec = io.read_nifti(tmp_path / "run.nii.gz", tmp_path / "mask.nii.gz")
    assert rec.data.shape == (2, 2) and rec.mask.sum() == 2
    np.testing.assert_array_equal(rec.data, vol[mask == 1].T)
    with pytest.warns(UserWarning, match=r"mask \(array\) has 15 NaN voxels"):
        assert io.read_nifti(tmp_path / "run.nii.gz", mask).n_targets == 2
    only_nan = np.full((4, 5, 3), np.nan)
    with pytest.warns(UserWarning, match="NaN voxels"), pytest.raises(ValueError, match="selects no voxel"):
        io.read_nifti(tmp_path / "run.nii.gz", only_nan)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_nifti_truncated_file_is_named(tmp_path, suffix):
    nib = pytest.importorskip("nibabel", reason="nibabel is optional (pip install nibabel)")
    rng = np.random.default_rng(0)
    nib.save(nib.Nifti1Image(rng.standard_normal((8, 8, 8, 20)).astype(np.float32), np.eye(4)), tmp_path / f"full{suffix}")
    data = (tmp_path / f"full{suffix}").read_bytes()
    for cut in (len(data) - 50, len(data) // 2, 200, 10):
        path = tmp_path / f"cut{cut}{suffix}"
        path.write_bytes(data[:cut])
        with pytest.raises(ValueError, match=rf"{re.escape(str(path))}.*truncated or corrupt"):
            io.read_nifti(path)
        with pytest.raises(ValueError, match=rf"mask image {re.escape(str(path))}.*truncated or corrupt"):
            io.read_nifti(tmp_path / f"full{suffix}", path)


@pytest.fixture
def mne():
    mne = pytest.importorskip("mne", reason="mne is optional (pip install mne)")
    mne.set_log_level("ERROR")
    return mne


def make_raw(mne, meas_date=None):
    rng = np.random.default_rng(0)
    info = mne.create_info(["MEG 001", "MEG 002", "EEG 001", "STI 014"], 100.0, ["mag", "grad", "eeg", "stim"])
    raw = mne.io.RawArray(rng.standard_normal((4, 1000)), info, first_samp=250)
    if meas_date is not None:
        raw.set_meas_date(meas_date)
    return raw


def test_mne_raw_annotations(mne):
    raw = make_raw(mne)
    raw.set_annotations(mne.Annotations(onset=[1.0, 2.5, 4.0, 5.0], duration=[0.3, 0.2, 0.0, 0.1], description=["the", "cat", "BAD_seg", "sat"]))
    stim, rec = io.read_mne_raw(raw)
    assert list(stim.words) == ["the", "cat", "sat"]
    np.testing.assert_allclose(stim.onsets, [1.0, 2.5, 5.0])
    np.testing.assert_allclose(stim.offsets, [1.3, 2.7, 5.1])
    assert rec.data.shape == (1000, 3) and rec.target_names == ("MEG 001", "MEG 002", "EEG 001")
    np.testing.assert_array_equal(rec.data, raw.get_data(picks=[0, 1, 2]).T)
    np.testing.assert_allclose(rec.times, raw.times)
    assert rec.sfreq == 100.0 and rec.kind == "meg"
    # the same onsets as MNE's own conversion to events
    events, ids = mne.events_from_annotations(raw, event_id={"the": 1, "cat": 2, "sat": 3})
    np.testing.assert_allclose((events[:, 0] - raw.first_samp) / 100.0, stim.onsets)
    # free-standing annotations, relative to the first sample, plus a word list
    stim2, _ = io.read_mne_raw(raw, annotations=mne.Annotations([0.5, 0.25], 0.0, ["b", "a"]), picks="meg")
    assert list(stim2.words) == ["a", "b"] and stim2.onsets.tolist() == [0.25, 0.5]
    # events out of order with their words: sorted by onset together
    ev = np.array([[250 + 300, 0, 1], [250 + 100, 0, 1]])
    stim3, _ = io.read_mne_raw(raw, ev, words=["late", "early"])
    assert list(stim3.words) == ["early", "late"] and stim3.onsets.tolist() == [1.0, 3.0]


def test_mne_raw_with_meas_date_and_events(mne, tmp_path):
    raw = make_raw(mne, meas_date=1_000_000)
    raw.set_annotations(mne.Annotations(onset=[2.5 + 1.0, 2.5 + 3.0], duration=0.0, description=["x", "y"], orig_time=raw.info["meas_date"]))
    stim, _ = io.read_mne_raw(raw)
    np.testing.assert_allclose(stim.onsets, [1.0, 3.0])
    ev = np.array([[250 + 100, 0, 5], [250 + 420, 0, 7], [250 + 600, 0, 5]])
    stim, rec = io.read_mne_raw(raw, ev, event_id={"word": 5}, picks="eeg")
    np.testing.assert_allclose(stim.onsets, [1.0, 6.0])
    assert list(stim.words) == ["word", "word"] and rec.n_targets == 1
    fif = tmp_path / "test_raw.fif"
    raw.save(fif)
    stim, rec = io.read_mne_raw(fif)
    np.testing.assert_allclose(stim.onsets, [1.0, 3.0])
    np.testing.assert_allclose(rec.data, raw.get_data(picks="data").T, rtol=1e-6)
    with pytest.raises(ValueError, match="2 words but 3"):
        io.read_mne_raw(raw, ev, words=["a", "b"])
    with pytest.raises(ValueError, match="no word onsets"):
        io.read_mne_raw(make_raw(mne))
    with pytest.warns(UserWarning, match="outside the recording"):
        stim, _ = io.read_mne_raw(raw, np.array([[250 + 10, 0, 1], [250 + 5000, 0, 1]]))
    assert len(stim) == 1
    with pytest.raises(FileNotFoundError, match="missing_raw.fif"):
        io.read_mne_raw(tmp_path / "missing_raw.fif")


def test_mne_epochs(mne):
    raw = make_raw(mne)
    ev = np.array([[300, 0, 1], [500, 0, 2], [700, 0, 1]])
    epochs = mne.Epochs(raw, ev, event_id={"the": 1, "cat": 2}, tmin=-0.1, tmax=0.5, baseline=None, preload=True)
    stim, rec = io.read_mne_epochs(epochs, first_samp=raw.first_samp)
    assert list(stim.words) == ["the", "cat", "the"]
    assert rec.data.shape == (3, 3, 61) and rec.epoch_times[0] == pytest.approx(-0.1)
    from jaxalign.timing import word_locked_windows

    win = word_locked_windows(rec.data, rec.sfreq, tmin=-0.1, n_windows=10, width=0.05)
    assert win.shape == (10, 3, 3)


def test_mne_raw_and_epochs_share_one_clock(mne, tmp_path):
    raw = make_raw(mne)  # first_samp = 250 at 100 Hz: the recording starts 2.5 s into the acquisition
    assert raw.first_samp == 250
    ev = np.array([[250 + 100, 0, 1], [250 + 420, 0, 2], [250 + 600, 0, 1]])  # MNE events: first_samp included
    event_id = {"the": 1, "cat": 2}
    stim_raw, rec_raw = io.read_mne_raw(raw, ev, event_id=event_id)
    np.testing.assert_allclose(stim_raw.onsets, [1.0, 4.2, 6.0])
    # the convention is raw.times': each onset is the time of its event's sample in the Raw
    np.testing.assert_allclose(stim_raw.onsets, rec_raw.times[ev[:, 0] - raw.first_samp])
    lazy = mne.Epochs(raw, ev, event_id=event_id, tmin=-0.1, tmax=0.3, baseline=None, preload=False)
    loaded = mne.Epochs(raw, ev, event_id=event_id, tmin=-0.1, tmax=0.3, baseline=None, preload=True)
    loaded.save(tmp_path / "test-epo.fif")
    runs = {
        "lazy (first_samp from the Raw it holds)": lambda: io.read_mne_epochs(lazy),
        "preloaded, first_samp=raw": lambda: io.read_mne_epochs(loaded, first_samp=raw),
        "file, first_samp=int": lambda: io.read_mne_epochs(tmp_path / "test-epo.fif", first_samp=raw.first_samp),
    }
    for how, read in runs.items():
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            stim_ep, rec_ep = read()
        assert list(stim_ep.words) == list(stim_raw.words), how
        np.testing.assert_allclose(stim_ep.onsets, stim_raw.onsets, err_msg=how)
        np.testing.assert_allclose(rec_ep.times, stim_raw.onsets, err_msg=how)
        assert rec_ep.info["first_samp"] == 250
    # the first epoch's data are the Raw's samples around the first onset
    start = int(round((stim_raw.onsets[0] - 0.1) * 100))
    np.testing.assert_allclose(rec_ep.data[0], rec_raw.data[start : start + rec_ep.data.shape[2]].T)
    # when first_samp cannot be known, the other clock is used and said
    with pytest.warns(UserWarning, match=r"test-epo\.fif: the Epochs do not record their Raw's first_samp"):
        stim_acq, _ = io.read_mne_epochs(tmp_path / "test-epo.fif")
    np.testing.assert_allclose(stim_acq.onsets, stim_raw.onsets + 2.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        io.read_mne_epochs(loaded, first_samp=0)
    with pytest.raises(ValueError, match="first_samp must be"):
        io.read_mne_epochs(loaded, first_samp=-1)


@pytest.mark.parametrize("module,call", [("nibabel", lambda p: io.read_nifti(p)), ("mne", lambda p: io.read_mne_raw(p))])
def test_optional_dependency_missing_says_how_to_install(monkeypatch, tmp_path, module, call):
    monkeypatch.setitem(__import__("sys").modules, module, None)  # import now fails
    with pytest.raises(ImportError, match=rf'pip install {module} \(or pip install "jaxalign\[io\]"\)'):
        call(tmp_path / "any.file")
