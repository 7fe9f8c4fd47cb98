"""Prophesee Gen1 reader on small files written by the test in the dataset's documented format."""

import numpy as np
import pytest
import torch

from spikequant.data import get_dataset
from spikequant.data.gen1 import read_bbox_npy, read_dat_events
from spikequant.errors import DatasetNotFoundError


def write_dat(path, events, *, height=240, width=304):
    """A Prophesee DAT file: '%' header lines, event type and size bytes, (t, word) pairs."""
    header = f"% Data file containing CD events.\n% Version 2\n% Height {height}\n% Width {width}\n"
    word = (
        events["x"].astype(np.int64)
        | (events["y"].astype(np.int64) << 14)
        | (events["p"].astype(np.int64) << 28)
    ).astype("<i4")
    body = np.empty(len(events), dtype=[("t", "<u4"), ("w", "<i4")])
    body["t"], body["w"] = events["t"], word
    path.write_bytes(header.encode() + bytes([12, 8]) + body.tobytes())


EVENTS = np.array(
    [(10_000, 5, 7, 1), (30_000, 303, 239, 0), (49_999, 100, 50, 1), (60_000, 1, 1, 1)],
    dtype=[("t", "<u4"), ("x", "<u2"), ("y", "<u2"), ("p", "u1")],
)
BOX_DTYPE = [
    ("ts", "<u8"),
    ("x", "<f4"),
    ("y", "<f4"),
    ("w", "<f4"),
    ("h", "<f4"),
    ("class_id", "u1"),
    ("confidence", "<f4"),
    ("track_id", "<u4"),
]


@pytest.fixture
def gen1_root(tmp_path):
    folder = tmp_path / "gen1" / "train"
    folder.mkdir(parents=True)
    write_dat(folder / "rec_a_td.dat", EVENTS)
    boxes = np.array(
        [
            (50_000, 10, 20, 30, 40, 0, 1.0, 1),
            (50_000, 100, 60, 8, 16, 1, 1.0, 2),
            (70_000, 0, 0, 5, 5, 1, 1.0, 2),
        ],
        dtype=BOX_DTYPE,
    )
    np.save(folder / "rec_a_bbox.npy", boxes)
    return tmp_path


def test_dat_events_decode_x_y_polarity_and_time(gen1_root):
    events, header = read_dat_events(gen1_root / "gen1" / "train" / "rec_a_td.dat")
    assert header["Height"] == "240" and header["Width"] == "304"
    assert events["t"].tolist() == EVENTS["t"].tolist()
    assert events["x"].tolist() == [5, 303, 100, 1]
    assert events["y"].tolist() == [7, 239, 50, 1]
    assert events["p"].tolist() == [1, 0, 1, 1]


def test_bbox_npy_with_the_first_release_ts_field(gen1_root):
    boxes = read_bbox_npy(gen1_root / "gen1" / "train" / "rec_a_bbox.npy")
    assert boxes["t"].tolist() == [50_000, 50_000, 70_000]
    assert boxes["class_id"].tolist() == [0, 1, 1]


def test_gen1_items_are_windows_before_each_labelled_instant(gen1_root):
    data = get_dataset("gen1", "train", root=str(gen1_root), window_us=50_000, timesteps=5)
    assert len(data) == 2  # instants 50 ms and 70 ms
    frames, target = data[0]
    assert frames.shape == (5, 2, 240, 304)
    # window [0, 50 ms): bins of 10 ms; the 60 ms event is outside
    assert frames.sum() == 3
    assert frames[1, 0, 7, 5] == 1  # t = 10 ms, ON
    assert frames[3, 1, 239, 303] == 1  # t = 30 ms, OFF
    assert frames[4, 0, 50, 100] == 1  # t = 49.999 ms, ON
    assert torch.equal(
        target["boxes"], torch.tensor([[10.0, 20.0, 40.0, 60.0], [100.0, 60.0, 108.0, 76.0]])
    )
    assert target["labels"].tolist() == [0, 1]
    frames, target = data[1]  # window [20 ms, 70 ms)
    assert frames.sum() == 3 and target["labels"].tolist() == [1]


def test_missing_gen1_folder_is_one_line(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        get_dataset("gen1", "test", root=str(tmp_path))
    message = str(info.value)
    assert "\n" not in message and "gen1/" in message and "_td.dat" in message


def test_a_time_window_reads_only_its_events(gen1_root):
    path = gen1_root / "gen1" / "train" / "rec_a_td.dat"
    everything, _ = read_dat_events(path)
    window, _ = read_dat_events(path, 10_000, 49_999)
    assert window.tolist() == everything[:2].tolist()  # 10 ms and 30 ms, not 49.999 ms
    assert len(read_dat_events(path, 70_000, 90_000)[0]) == 0
