from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile
import torch

from spikequant.data import dataset_info, load_arrays, speech
from spikequant.data.speech import GSC_FOLDER, GSC_WORDS, NUM_FRAMES
from spikequant.errors import DatasetNotFoundError

RATE = 16000


def _tone(freq, seconds, seed):
    t = np.arange(int(seconds * RATE)) / RATE
    noise = np.random.default_rng(seed).normal(0, 0.01, t.shape)
    return (0.3 * np.sin(2 * np.pi * freq * t) + noise).astype(np.float32)


def make_gsc(root: Path) -> dict[str, np.ndarray]:
    """A miniature speech_commands_v0.02 folder: 3 words, 8 clips, lists, background noise."""
    base = root / GSC_FOLDER
    clips = {
        "yes/aaaa_nohash_0.wav": _tone(300, 1.0, 0),
        "yes/bbbb_nohash_0.wav": _tone(320, 0.5, 1),  # short: padded to 1 s
        "yes/cccc_nohash_1.wav": _tone(340, 1.0, 2),
        "no/aaaa_nohash_0.wav": _tone(600, 1.25, 3),  # long: trimmed to 1 s
        "no/dddd_nohash_0.wav": _tone(620, 1.0, 4),
        "up/eeee_nohash_0.wav": _tone(900, 1.0, 5),
        "up/ffff_nohash_0.wav": _tone(950, 0.8, 6),
        "zero/gggg_nohash_0.wav": _tone(1200, 1.0, 7),
        "_background_noise_/white_noise.wav": _tone(50, 3.0, 8),
    }
    for rel, samples in clips.items():
        (base / rel).parent.mkdir(parents=True, exist_ok=True)
        soundfile.write(base / rel, samples, RATE, subtype="PCM_16")
    (base / "validation_list.txt").write_text("yes/cccc_nohash_1.wav\nup/ffff_nohash_0.wav\n")
    (base / "testing_list.txt").write_text("no/dddd_nohash_0.wav\nzero/gggg_nohash_0.wav\n")
    (base / "LICENSE").write_text("CC-BY-4.0\n")
    return clips


def _reference_mfcc(path: Path) -> np.ndarray:
    """The documented front end written out step by step, independent of the loader."""
    samples, rate = soundfile.read(path, dtype="float32")
    assert rate == RATE
    clip = np.zeros(RATE, np.float32)
    clip[: min(RATE, len(samples))] = samples[:RATE]
    padded = np.pad(clip, (320, 320))
    mfcc = librosa.feature.mfcc(
        y=padded, sr=RATE, n_mfcc=10, n_fft=1024, win_length=640, hop_length=320, center=False
    )
    return mfcc.T


def test_frame_count_is_49_by_10():
    assert NUM_FRAMES == 1 + (16000 + 640 - 1024) // 320 == 49
    assert dataset_info("gsc").input_shape == (1, 49, 10)
    assert len(GSC_WORDS) == 35 and list(GSC_WORDS) == sorted(GSC_WORDS)


def test_splits_labels_and_features(tmp_path):
    make_gsc(tmp_path)
    X, y = load_arrays("gsc", "train", root=tmp_path)
    assert X.shape == (4, 1, 49, 10) and X.dtype == torch.float32 and y.dtype == torch.int64
    train_files = speech.split_files(tmp_path, "train")
    assert train_files == [
        "no/aaaa_nohash_0.wav",
        "up/eeee_nohash_0.wav",
        "yes/aaaa_nohash_0.wav",
        "yes/bbbb_nohash_0.wav",
    ]
    assert y.tolist() == [GSC_WORDS.index(w) for w in ("no", "up", "yes", "yes")]
    base = tmp_path / GSC_FOLDER
    for i, rel in enumerate(train_files):  # includes a trimmed and a padded clip
        np.testing.assert_allclose(
            X[i, 0].numpy(), _reference_mfcc(base / rel), rtol=1e-5, atol=1e-4
        )
    Xv, yv = load_arrays("gsc", "val", root=tmp_path)
    Xt, yt = load_arrays("gsc", "test", root=tmp_path)
    assert yv.tolist() == [GSC_WORDS.index("up"), GSC_WORDS.index("yes")]
    assert yt.tolist() == [GSC_WORDS.index("no"), GSC_WORDS.index("zero")]
    assert Xv.shape == (2, 1, 49, 10) and Xt.shape == (2, 1, 49, 10)


def test_cache_is_written_and_reused(tmp_path, monkeypatch):
    make_gsc(tmp_path)
    X1, y1 = load_arrays("gsc", "test", root=tmp_path)
    caches = list((tmp_path / ".spikequant_cache").glob("gsc-test-*.npz"))
    assert len(caches) == 1

    def boom(_clips):
        raise AssertionError("cache was not used")

    monkeypatch.setattr(speech, "mfcc_features", boom)
    X2, y2 = load_arrays("gsc", "test", root=tmp_path)
    assert torch.equal(X1, X2) and torch.equal(y1, y2)
    # a different front end parameter gets a different cache file (and recomputes)
    monkeypatch.setitem(speech.FRONT_END, "n_mels", 64)
    with pytest.raises(AssertionError, match="cache was not used"):
        load_arrays("gsc", "test", root=tmp_path)


def test_normalize_uses_training_statistics(tmp_path):
    make_gsc(tmp_path)
    Xtr, _ = load_arrays("gsc", "train", root=tmp_path, normalize=True)
    mean = Xtr.mean(dim=(0, 1, 2))
    torch.testing.assert_close(mean, torch.zeros(10), atol=1e-4, rtol=0)
    raw_train, _ = load_arrays("gsc", "train", root=tmp_path)
    raw_test, _ = load_arrays("gsc", "test", root=tmp_path)
    norm_test, _ = load_arrays("gsc", "test", root=tmp_path, normalize=True)
    mu = raw_train.mean(dim=(0, 1, 2))
    sd = raw_train.std(dim=(0, 1, 2), unbiased=False) + 1e-6
    torch.testing.assert_close(norm_test, (raw_test - mu) / sd, atol=1e-4, rtol=1e-4)


def test_missing_and_partial_folders(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        load_arrays("gsc", "train", root=tmp_path)
    assert "validation_list.txt" in str(info.value) and "\n" not in str(info.value)
    make_gsc(tmp_path)
    (tmp_path / GSC_FOLDER / "testing_list.txt").unlink()
    with pytest.raises(DatasetNotFoundError, match="missing testing_list.txt"):
        load_arrays("gsc", "train", root=tmp_path)


def test_listed_file_missing_and_bad_rate(tmp_path):
    make_gsc(tmp_path)
    (tmp_path / GSC_FOLDER / "zero" / "gggg_nohash_0.wav").unlink()
    with pytest.raises(DatasetNotFoundError, match="zero/gggg_nohash_0.wav"):
        load_arrays("gsc", "test", root=tmp_path)
    soundfile.write(
        tmp_path / GSC_FOLDER / "zero" / "gggg_nohash_0.wav", np.zeros(8000, np.float32), 8000
    )
    with pytest.raises(DatasetNotFoundError, match="8000 Hz"):
        load_arrays("gsc", "test", root=tmp_path, cache=False)
    (tmp_path / GSC_FOLDER / "zero" / "gggg_nohash_0.wav").write_bytes(b"RIFF not really")
    with pytest.raises(DatasetNotFoundError, match="cannot read"):
        load_arrays("gsc", "test", root=tmp_path, cache=False)
