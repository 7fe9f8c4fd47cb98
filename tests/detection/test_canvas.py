"""digits_canvas / digits_canvas_events: real mnist5k digits pasted as detection scenes."""

import numpy as np
import pytest
import torch

from spikequant.data import get_dataset
from spikequant.data.canvas import (
    DigitsCanvas,
    _digit_patch,
    detection_collate,
    frames_to_events,
)


@pytest.fixture(scope="module")
def canvas():
    return get_dataset("digits_canvas", "test", length=40)


def test_scenes_are_deterministic_per_index_and_seed(canvas):
    again = DigitsCanvas("test", length=40)
    for i in (0, 7, 39):
        x1, t1 = canvas[i]
        x2, t2 = again[i]
        assert torch.equal(x1, x2) and torch.equal(t1["boxes"], t2["boxes"])
        assert torch.equal(t1["labels"], t2["labels"])
    other = DigitsCanvas("test", length=40, seed=1)
    assert any(not torch.equal(canvas[i][0], other[i][0]) for i in range(5))


def test_each_box_is_the_tight_box_of_its_digit_and_digits_do_not_overlap(canvas):
    counts = set()
    for i in range(len(canvas)):
        image, target = canvas[i]
        layout = canvas.layout(i)
        boxes, labels = target["boxes"].long(), target["labels"]
        counts.add(len(boxes))
        assert image.shape == (1, 64, 64) and len(labels) == len(layout)
        ink = image[0] > 0
        covered = torch.zeros_like(ink)
        for d, (x1, y1, x2, y2), label in zip(layout, boxes.tolist(), labels.tolist(), strict=True):
            assert label == int(canvas.labels[d["source"]])
            # the digit's own pixels, placed where the scene put it
            mine = torch.zeros_like(ink)
            patch = torch.from_numpy(_digit_patch(canvas.images[d["source"]], d["side"]) > 0)
            mine[d["y"] : d["y"] + d["side"], d["x"] : d["x"] + d["side"]] = patch
            rows, cols = torch.nonzero(mine, as_tuple=True)
            assert (x1, y1, x2, y2) == (
                int(cols.min()),
                int(rows.min()),
                int(cols.max()) + 1,
                int(rows.max()) + 1,
            )
            # the box holds this digit's ink and no other digit's
            assert torch.equal(ink[y1:y2, x1:x2], mine[y1:y2, x1:x2])
            assert not (covered & mine).any()
            covered |= mine
        assert torch.equal(covered, ink)  # nothing but the digits is inked
    assert counts == {1, 2, 3}


def test_test_scenes_use_test_digits_and_include_source_i():
    ds = DigitsCanvas("test", length=5)
    assert len(ds.images) == 1000
    assert [ds.layout(i)[0]["source"] for i in range(5)] == [0, 1, 2, 3, 4]


def test_frames_to_events_polarity():
    frames = torch.zeros(3, 2, 2)
    frames[1, 0, 0] = 1.0  # pixel (0, 0) turns on at step 1 and off at step 2
    frames[2, 1, 1] = 0.05  # below the threshold: no event
    events = frames_to_events(frames, threshold=0.1)
    assert events.shape == (2, 2, 2, 2)
    assert events[0, 0, 0, 0] == 1 and events[0, 1].sum() == 0  # ON at t = 0
    assert events[1, 1, 0, 0] == 1 and events[1, 0].sum() == 0  # OFF at t = 1
    assert events.sum() == 2


def test_event_scenes_shape_polarity_and_last_frame_boxes():
    ds = get_dataset("digits_canvas_events", "train", length=6, timesteps=5)
    events, target = ds[3]
    assert events.shape == (5, 2, 64, 64)
    assert set(events.unique().tolist()) <= {0.0, 1.0} and events.sum() > 0
    frames, boxes, _ = ds.frames(3)
    assert torch.equal(events, frames_to_events(torch.from_numpy(frames)))
    assert torch.equal(target["boxes"], boxes)
    last = frames[-1] > 0
    for x1, y1, x2, y2 in boxes.long().tolist():
        region = last[y1:y2, x1:x2]
        assert region.any(axis=0)[[0, -1]].all() and region.any(axis=1)[[0, -1]].all()
    # every digit moves (a digit at rest makes no events), so both polarities occur
    assert all(d["velocity"] != (0, 0) for i in range(len(ds)) for d in ds.layout(i))
    assert events[:, 0].sum() > 0 and events[:, 1].sum() > 0


def test_collate_keeps_variable_box_counts_and_time_first_events():
    static = DigitsCanvas("test", length=4)
    x, targets = detection_collate([static[i] for i in range(4)])
    assert x.shape == (4, 1, 64, 64) and len(targets) == 4
    ev = DigitsCanvas("test", length=3, timesteps=4)
    x, targets = detection_collate([ev[i] for i in range(3)])
    assert x.shape == (4, 3, 2, 64, 64)
    assert [len(t["boxes"]) for t in targets] == [len(ev[i][1]["labels"]) for i in range(3)]
    assert np.all([t["boxes"].dtype == torch.float32 for t in targets])
