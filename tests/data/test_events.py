"""Event datasets: tiny recordings written in the real file formats, loaded through the loaders."""

from pathlib import Path

import numpy as np
import pytest
import torch

from spikequant.data import dataset_info, get_dataset, load_arrays
from spikequant.data.events import (
    CIFAR10_CLASSES,
    EventFrames,
    events_to_frames,
    time_first_collate,
)
from spikequant.errors import DatasetNotFoundError

T = 4


def random_events(seed, n=400, width=128, height=128, duration=100_000):
    rng = np.random.default_rng(seed)
    return {
        "x": rng.integers(0, width, n),
        "y": rng.integers(0, height, n),
        "t": np.sort(rng.integers(0, duration, n)),
        "p": rng.integers(0, 2, n),
    }


def reference_frames(ev, width, height, timesteps=T, size=48):
    """Independent restatement of the documented rule: scale and truncate coordinates, bins of
    width floor(span / T) from the first event, binary counts; channel = polarity."""
    frames = np.zeros((timesteps, 2, size, size), np.float32)
    xs = np.floor(ev["x"] * (size / width)).astype(int)
    ys = np.floor(ev["y"] * (size / height)).astype(int)
    t0 = ev["t"].min()
    bin_width = (ev["t"].max() - t0) // timesteps
    for x, y, t, p in zip(xs, ys, ev["t"], ev["p"], strict=True):
        k = (t - t0) // bin_width
        if k < timesteps:
            frames[k, p, y, x] = 1.0
    return frames


def write_aedat2(path: Path, ev) -> None:
    """AER-DAT 2.0 as in the CIFAR10-DVS release: text header, big-endian (address, timestamp)."""
    x_raw = 127 - np.asarray(ev["y"])
    y_raw = 127 - np.asarray(ev["x"])
    p_raw = 1 - np.asarray(ev["p"])
    address = (y_raw << 8) | (x_raw << 1) | p_raw
    records = np.empty(len(address), dtype=[("a", ">u4"), ("t", ">u4")])
    records["a"], records["t"] = address, ev["t"]
    header = (
        b"#!AER-DAT2.0\r\n# This is a raw AE data file - do not edit\r\n"
        b"# Data format is int32 address, int32 timestamp (8 bytes total), "
        b"repeated for each event\r\n"
        b"# Timestamps tick is 1 us\r\n"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + records.tobytes())


def write_ncaltech_bin(path: Path, ev) -> None:
    """N-Caltech101 / N-MNIST 40-bit events: x, y, then polarity bit + 23-bit timestamp."""
    t = np.asarray(ev["t"])
    raw = np.empty((len(t), 5), np.uint8)
    raw[:, 0] = ev["x"]
    raw[:, 1] = ev["y"]
    raw[:, 2] = (np.asarray(ev["p"]) << 7) | ((t >> 16) & 0x7F)
    raw[:, 3] = (t >> 8) & 0xFF
    raw[:, 4] = t & 0xFF
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(raw.tobytes())


def write_gesture_npy(path: Path, ev) -> None:
    """tonic's DVSGesture release: [N, 4] columns x, y, p, t (ms)."""
    table = np.stack([ev["x"], ev["y"], ev["p"], ev["t"] // 1000], axis=1).astype(np.float64)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, table)


@pytest.fixture
def dvs_cifar(tmp_path):
    recordings = {}
    for c in ("airplane", "cat", "truck"):
        for i in range(10):
            ev = random_events(hash((c, i)) % 1000)
            write_aedat2(tmp_path / "CIFAR10DVS" / c / f"cifar10_{c}_{i}.aedat", ev)
            recordings[(c, i)] = ev
    return tmp_path, recordings


def test_dvs_cifar10_frames_match_reference(dvs_cifar):
    root, recordings = dvs_cifar
    test = get_dataset("dvs_cifar10", "test", root=root, timesteps=T, cache=False)
    assert len(test) == 3  # index 0 of each class
    x, y = test[1]
    assert x.shape == (T, 2, 48, 48) and x.dtype == torch.float32
    assert int(y) == CIFAR10_CLASSES.index("cat")
    expected = reference_frames(recordings[("cat", 0)], 128, 128)
    assert torch.equal(x, torch.from_numpy(expected))
    assert set(torch.unique(x).tolist()) <= {0.0, 1.0} and x.sum() > 0


def test_dvs_cifar10_splits_and_cache(dvs_cifar):
    root, recordings = dvs_cifar
    train = EventFrames("dvs_cifar10", "train", root=root, timesteps=T)
    assert len(train) == 27
    assert [p.name for p in train.files[:2]] == [
        "cifar10_airplane_1.aedat",
        "cifar10_airplane_2.aedat",
    ]
    assert list((root / ".spikequant_cache").glob("dvs_cifar10-train-*.npz"))
    uncached = EventFrames("dvs_cifar10", "train", root=root, timesteps=T, cache=False)
    for i in (0, 13, 26):
        assert torch.equal(train[i][0], uncached[i][0])
    val = EventFrames("dvs_cifar10", "val", root=root, timesteps=T)
    assert [p.name for p in val.files] == [
        f"cifar10_{c}_9.aedat" for c in ("airplane", "cat", "truck")
    ]
    X, y = load_arrays("dvs_cifar10", "test", root=root, timesteps=T)
    assert X.shape == (3, T, 2, 48, 48) and y.tolist() == [0, 3, 9]


def test_ncaltech101_bin_files(tmp_path):
    recordings = {}
    for c in ("Faces_easy", "accordion"):
        for i in range(1, 6):
            ev = random_events(i, width=200, height=150, duration=300_000)
            ev["x"][0], ev["y"][0] = 0, 0  # make the shift to a zero minimum a no-op
            write_ncaltech_bin(
                tmp_path / "NCALTECH101" / "Caltech101" / c / f"image_{i:04d}.bin", ev
            )
            recordings[(c, i)] = ev
    test = get_dataset("ncaltech101", "test", root=tmp_path, timesteps=T, cache=False)
    assert len(test) == 2  # 10 % of 5 files rounds to 1 per class
    x, y = test[1]
    assert int(y) == 1  # sorted class folders: Faces_easy, accordion
    assert torch.equal(
        x, torch.from_numpy(reference_frames(recordings[("accordion", 1)], 240, 180))
    )
    assert dataset_info("ncaltech101").num_classes == 101


def test_dvs_gesture_npy_official_split(tmp_path):
    recordings = {}
    for part, users in (("ibmGestureTrain", (1, 2)), ("ibmGestureTest", (24,))):
        for user in users:
            for label in (0, 4, 10):
                ev = random_events(user * 100 + label, duration=2_000_000)
                ev["t"] = ev["t"] // 1000 * 1000  # the release stores milliseconds
                write_gesture_npy(
                    tmp_path / "DVSGesture" / part / f"user{user:02d}_fluorescent" / f"{label}.npy",
                    ev,
                )
                recordings[(part, user, label)] = ev
    train = get_dataset("dvs_gesture", "train", root=tmp_path, timesteps=T)
    test = get_dataset("dvs_gesture", "test", root=tmp_path, timesteps=T)
    assert len(train) == 6 and len(test) == 3
    assert sorted(train.labels.tolist()) == [0, 0, 4, 4, 10, 10]
    x, y = test[2]
    assert int(y) == 10
    assert torch.equal(
        x, torch.from_numpy(reference_frames(recordings[("ibmGestureTest", 24, 10)], 128, 128))
    )


def test_binning_edge_cases():
    structured = np.zeros(0, dtype=[("x", "i8"), ("y", "i8"), ("t", "i8"), ("p", "i8")])
    assert events_to_frames(structured, (128, 128), T).sum() == 0
    same_time = np.array([(5, 6, 7, 1), (127, 127, 7, 0)], dtype=structured.dtype)
    frames = events_to_frames(same_time, (128, 128), T)
    assert frames[0, 1, 2, 1] == 1 and frames[0, 0, 47, 47] == 1 and frames.sum() == 2
    short = np.array([(0, 0, 10, 0), (3, 3, 11, 1), (6, 6, 12, 1)], dtype=structured.dtype)
    frames = events_to_frames(short, (128, 128), T)  # span 2 < T: every event kept
    assert (
        frames.sum() == 3
        and frames[0, 0, 0, 0] == 1
        and frames[1, 1, 1, 1] == 1
        and frames[2, 1, 2, 2] == 1
    )


def test_missing_and_damaged(tmp_path):
    for name, part in (
        ("dvs_cifar10", "CIFAR10DVS"),
        ("ncaltech101", "Caltech101"),
        ("dvs_gesture", "ibmGestureTrain"),
    ):
        with pytest.raises(DatasetNotFoundError) as info:
            get_dataset(name, "train", root=tmp_path)
        assert part in str(info.value) and "\n" not in str(info.value)
    bad = tmp_path / "CIFAR10DVS" / "dog" / "cifar10_dog_0.aedat"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"\x00\x01garbage")
    (bad.parent / "cifar10_dog_1.aedat").write_bytes(b"\x00\x01garbage")
    with pytest.raises(DatasetNotFoundError, match="cannot read"):
        get_dataset("dvs_cifar10", "test", root=tmp_path, timesteps=T)


def test_time_first_collate(dvs_cifar):
    root, _ = dvs_cifar
    ds = EventFrames("dvs_cifar10", "test", root=root, timesteps=T)
    loader = torch.utils.data.DataLoader(ds, batch_size=3, collate_fn=time_first_collate)
    x, y = next(iter(loader))
    assert x.shape == (T, 3, 2, 48, 48) and y.tolist() == [0, 3, 9]
    assert torch.equal(x[:, 1], ds[1][0])
