"""Google Speech Commands v2 (35 words) from its wav folder, with the ATIF paper's MFCC front end.

Expected layout (the ``speech_commands_v0.02.tar.gz`` archive, extracted)::

    <root>/speech_commands_v0.02/<word>/<speaker>_nohash_<n>.wav  (35 word folders, 16 kHz mono)
    <root>/speech_commands_v0.02/validation_list.txt  (lines like "bed/0a7c2a8d_nohash_0.wav")
    <root>/speech_commands_v0.02/testing_list.txt

``<root>`` is the ``root`` argument, else ``$SPIKEQUANT_DATA``, else ``./data``. Splits follow the
official lists: ``val`` = files in validation_list.txt, ``test`` = files in testing_list.txt,
``train`` = every other wav of the 35 words; ``_background_noise_`` is never read. Labels are
the index of the word in :data:`GSC_WORDS` (sorted), so they do not depend on which folders exist.

Front end (ATIF paper: 10 MFCCs, FFT 1024, window 640, hop 320, padding 320 on both sides):

1. each clip is zero-padded at the end or trimmed to exactly 1 s (16,000 samples);
2. 320 zeros are added on both sides (16,640 samples);
3. ``librosa.feature.mfcc(sr=16000, n_mfcc=10, n_fft=1024, win_length=640, hop_length=320,
   center=False)`` (librosa defaults otherwise: Hann window, 128 Slaney mel bands, power
   spectrum, ``power_to_db`` with ``top_db=80``, orthonormal DCT-II).

Frame count: ``1 + floor((16000 + 2*320 - 1024) / 320) = 1 + floor(48.8) = 49`` frames, so one
sample is ``[1, 49, 10]`` (channel, time, coefficient). The paper reports 48 x 10; no
combination of these parameters gives 48 with librosa (``center=True`` on top of the explicit
padding gives 53, ``center=True`` without it 51), so we keep the 49 frames the stated
parameters produce. Features are cached in ``<root>/.spikequant_cache/gsc-<split>-<hash>.npz``,
where the hash covers the front-end parameters and the list of files with their sizes.
``normalize=True`` standardises each coefficient with the mean/std of the training split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .._optional import require
from ..errors import DatasetNotFoundError
from .paths import cache_path, data_root, load_cached, save_cached
from .registry import register_dataset

GSC_FOLDER = "speech_commands_v0.02"
GSC_WORDS = (
    "backward", "bed", "bird", "cat", "dog", "down", "eight", "five", "follow", "forward", "four",
    "go", "happy", "house", "learn", "left", "marvin", "nine", "no", "off", "on", "one", "right",
    "seven", "sheila", "six", "stop", "three", "tree", "two", "up", "visual", "wow", "yes", "zero",
)  # fmt: skip
SAMPLE_RATE = 16000
CLIP_SAMPLES = SAMPLE_RATE  # 1 s
FRONT_END = {
    "sr": SAMPLE_RATE,
    "clip_samples": CLIP_SAMPLES,
    "n_mfcc": 10,
    "n_fft": 1024,
    "win_length": 640,
    "hop_length": 320,
    "padding": 320,
    "n_mels": 128,
    "center": False,
}
NUM_FRAMES = (
    1 + (CLIP_SAMPLES + 2 * FRONT_END["padding"] - FRONT_END["n_fft"]) // FRONT_END["hop_length"]
)
LAYOUT = (
    f"<root>/{GSC_FOLDER}/<word>/*.wav (35 word folders, 16 kHz), "
    f"<root>/{GSC_FOLDER}/validation_list.txt and <root>/{GSC_FOLDER}/testing_list.txt"
)
_CHUNK = 512


def _not_found(root: Path, problem: str) -> DatasetNotFoundError:
    return DatasetNotFoundError(
        f"Google Speech Commands v2 {problem}; expected under {root}: {LAYOUT} "
        f"(set root= or $SPIKEQUANT_DATA to the folder holding {GSC_FOLDER}/)"
    )


def _read_list(path: Path) -> set[str]:
    return {
        line.strip().replace("\\", "/") for line in path.read_text().splitlines() if line.strip()
    }


def split_files(root: Path, split: str) -> list[str]:
    """Relative wav paths (``word/file.wav``) of one split, sorted."""
    base = root / GSC_FOLDER
    if not base.is_dir():
        raise _not_found(root, f"folder {base} does not exist")
    missing = [
        name for name in ("validation_list.txt", "testing_list.txt") if not (base / name).is_file()
    ]
    if missing:
        raise _not_found(root, f"folder {base} is incomplete (missing {', '.join(missing)})")
    validation = _read_list(base / "validation_list.txt")
    testing = _read_list(base / "testing_list.txt")
    all_wavs = sorted(
        f"{word}/{path.name}"
        for word in GSC_WORDS
        if (base / word).is_dir()
        for path in (base / word).glob("*.wav")
    )
    if not all_wavs:
        raise _not_found(root, f"folder {base} holds no <word>/*.wav files")
    present = set(all_wavs)
    for list_name, listed in (("validation_list.txt", validation), ("testing_list.txt", testing)):
        absent = sorted(listed - present)
        if absent:
            raise _not_found(
                root, f"{len(absent)} file(s) named in {list_name} are missing, e.g. {absent[0]}"
            )
    if split == "val":
        files = sorted(validation)
    elif split == "test":
        files = sorted(testing)
    else:
        files = [f for f in all_wavs if f not in validation and f not in testing]
    if not files:
        raise _not_found(root, f"the {split} split is empty")
    return files


def _read_clip(path: Path, root: Path) -> np.ndarray:
    """Mono float32 samples padded with zeros at the end or trimmed to exactly 1 s."""
    soundfile = require("soundfile", "the gsc dataset")
    try:
        samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises its own error types for corrupt files
        raise _not_found(root, f"cannot read {path.name} ({type(exc).__name__}: {exc})") from None
    if rate != SAMPLE_RATE:
        raise _not_found(root, f"{path.name} is sampled at {rate} Hz, not {SAMPLE_RATE} Hz")
    clip = samples[:CLIP_SAMPLES, 0]
    if len(clip) < CLIP_SAMPLES:
        clip = np.pad(clip, (0, CLIP_SAMPLES - len(clip)))
    return clip


def mfcc_features(clips: np.ndarray) -> np.ndarray:
    """``[N, 16000]`` clips -> float32 ``[N, 49, 10]`` MFCCs (time, coefficient)."""
    librosa = require("librosa", "the gsc dataset's MFCC front end")
    pad = FRONT_END["padding"]
    padded = np.pad(np.asarray(clips, dtype=np.float32), ((0, 0), (pad, pad)))
    coefficients = librosa.feature.mfcc(
        y=padded,
        sr=FRONT_END["sr"],
        n_mfcc=FRONT_END["n_mfcc"],
        n_fft=FRONT_END["n_fft"],
        win_length=FRONT_END["win_length"],
        hop_length=FRONT_END["hop_length"],
        n_mels=FRONT_END["n_mels"],
        center=FRONT_END["center"],
    )
    return np.ascontiguousarray(coefficients.transpose(0, 2, 1), dtype=np.float32)


def _split_features(root: Path, split: str, cache: bool) -> tuple[np.ndarray, np.ndarray]:
    files = split_files(root, split)
    base = root / GSC_FOLDER
    key = {"front_end": FRONT_END, "files": [(f, (base / f).stat().st_size) for f in files]}
    path = cache_path(root, f"gsc-{split}", key)
    if cache:
        cached = load_cached(path)
        if cached is not None and cached.get("x", np.empty(0)).shape == (
            len(files),
            NUM_FRAMES,
            FRONT_END["n_mfcc"],
        ):
            return cached["x"], cached["y"].astype(np.int64)
    labels = np.array([GSC_WORDS.index(f.split("/", 1)[0]) for f in files], dtype=np.int64)
    features = np.empty((len(files), NUM_FRAMES, FRONT_END["n_mfcc"]), dtype=np.float32)
    for start in range(0, len(files), _CHUNK):
        chunk = files[start : start + _CHUNK]
        features[start : start + len(chunk)] = mfcc_features(
            np.stack([_read_clip(base / f, root) for f in chunk])
        )
    if cache:
        save_cached(path, {"x": features, "y": labels.astype(np.int16)})
    return features, labels


@register_dataset(
    "gsc",
    num_classes=len(GSC_WORDS),
    input_shape=(1, NUM_FRAMES, FRONT_END["n_mfcc"]),
    bundled=False,
    description="Google Speech Commands v2, 35 words, 49 x 10 MFCCs (official val/test lists)",
    layout=LAYOUT,
)
def load_speech_commands(split: str, root=None, normalize: bool = False, cache: bool = True):
    """``(X, y)``: X float32 ``[N, 1, 49, 10]`` MFCCs, y int64 word index into :data:`GSC_WORDS`."""
    folder = data_root(root).resolve()
    features, labels = _split_features(folder, split, cache)
    if normalize:
        train = features if split == "train" else _split_features(folder, "train", cache)[0]
        mean = train.mean(axis=(0, 1), keepdims=True)
        std = train.std(axis=(0, 1), keepdims=True) + 1e-6
        features = (features - mean) / std
    return torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32)).unsqueeze(
        1
    ), torch.from_numpy(labels)
