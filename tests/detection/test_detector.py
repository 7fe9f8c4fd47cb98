"""spiking_yolo_tiny: shapes, state reset, decoding + NMS, the loss, and COCO mAP."""

import sys

import pytest
import torch

import spikequant as sq
from spikequant.data.canvas import DigitsCanvas, detection_collate
from spikequant.detection import (
    assign_targets,
    batched_nms,
    box_iou,
    detection_loss,
    generalized_iou,
    nms,
)
from spikequant.detection.evaluate import mean_average_precision
from spikequant.errors import ShapeError

SMALL = {"widths": (4, 8, 8, 8, 8), "timesteps": 2}


def test_iou_giou_and_nms_on_hand_computed_boxes():
    a = torch.tensor([[0.0, 0, 10, 10]])
    b = torch.tensor([[5.0, 0, 15, 10], [20, 0, 30, 10]])
    assert torch.allclose(box_iou(a, b), torch.tensor([[50 / 150, 0.0]]))
    # disjoint: IoU 0, hull 30 x 10 = 300, union 200 -> GIoU = -100/300
    assert torch.allclose(generalized_iou(a[0], b[1]), torch.tensor(-1 / 3))
    boxes = torch.tensor([[0.0, 0, 10, 10], [1, 0, 11, 10], [20, 0, 30, 10], [0, 0, 10, 9]])
    scores = torch.tensor([0.5, 0.9, 0.3, 0.8])
    # 1 (0.9) keeps; 3 overlaps 1 by 81/119 > 0.5 -> dropped; 0 overlaps 1 by 90/110 -> dropped
    assert nms(boxes, scores, 0.5).tolist() == [1, 2]
    labels = torch.tensor([0, 1, 0, 1])
    # by class: {0: boxes 0, 2} and {1: boxes 1, 3}; 3 vs 1 IoU 0.68 -> dropped
    assert batched_nms(boxes, scores, labels, 0.5).tolist() == [1, 0, 2]


def test_detector_output_shapes_static_and_events():
    torch.manual_seed(0)
    model = sq.create_model("spiking_yolo_tiny", **SMALL)
    assert model(torch.rand(3, 1, 64, 64)).shape == (3, 8, 8, 15)
    events = sq.create_model("spiking_yolo_tiny", in_channels=2, **SMALL)
    sq.reset_state(events)
    assert events(torch.rand(5, 3, 2, 64, 64)).shape == (3, 8, 8, 15)
    with pytest.raises(ShapeError):
        sq.reset_state(model)
        model(torch.rand(3, 1, 48, 64))


@pytest.mark.parametrize("neuron", ["lif", "qlif"])
def test_state_reset_makes_calls_independent(neuron):
    torch.manual_seed(0)
    # training mode: batch statistics make an untrained network spike
    model = sq.create_model("spiking_yolo_tiny", neuron=neuron, **SMALL).train()
    x = torch.rand(2, 1, 64, 64)
    first = model.detect(x)
    # without a reset the membranes carry over (and a new batch size is refused)
    carried = model(x)
    sq.reset_state(model)
    fresh = model(x)
    assert fresh[..., 0].std() > 0  # the last layer spikes: cells differ
    assert not torch.equal(carried, fresh)
    again = model.detect(x)
    for a, b in zip(first, again, strict=True):
        assert torch.equal(a["boxes"], b["boxes"]) and torch.equal(a["scores"], b["scores"])


def test_decode_places_a_confident_cell_box_where_the_head_says():
    model = sq.create_model("spiking_yolo_tiny", **SMALL)
    head = torch.full((1, 8, 8, 15), -10.0)
    head[0, 2, 5, 0] = 10.0  # objectness of row 2, column 5
    head[0, 2, 5, 1:3] = 0.0  # centre in the middle of the cell: (5.5 * 8, 2.5 * 8)
    head[0, 2, 5, 3:5] = 0.0  # w = h = reference size 20
    head[0, 2, 5, 5 + 7] = 10.0  # class 7
    (found,) = model.decode(head)
    assert found["labels"].tolist() == [7]
    assert torch.allclose(found["boxes"], torch.tensor([[34.0, 10.0, 54.0, 30.0]]))
    assert found["scores"][0] > 0.99


def test_targets_go_to_the_cell_of_their_centre():
    model = sq.create_model("spiking_yolo_tiny", **SMALL)
    targets = [{"boxes": torch.tensor([[10.0, 40.0, 30.0, 60.0]]), "labels": torch.tensor([4])}]
    mask, boxes, labels = assign_targets(model, targets)
    assert mask.sum() == 1 and bool(mask[0, 50 // 8, 20 // 8])
    assert labels[0, 6, 2] == 4 and torch.equal(boxes[0, 6, 2], targets[0]["boxes"][0])


def test_loss_decreases_on_a_tiny_set_of_real_scenes():
    torch.manual_seed(0)
    data = DigitsCanvas("train", length=8)
    x, targets = detection_collate([data[i] for i in range(8)])
    model = sq.create_model("spiking_yolo_tiny", neuron="qlif", **SMALL)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(12):
        sq.reset_state(model)
        parts = detection_loss(model, model(x), targets)
        opt.zero_grad()
        parts["loss"].backward()
        opt.step()
        losses.append(parts["loss"].item())
    assert losses[-1] < 0.85 * losses[0], losses


def test_map_of_perfect_predictions_is_one_and_misses_cost():
    data = DigitsCanvas("test", length=6)
    targets = [data[i][1] for i in range(6)]
    perfect = [
        {"boxes": t["boxes"].clone(), "scores": torch.ones(len(t["labels"])), "labels": t["labels"]}
        for t in targets
    ]
    assert mean_average_precision(perfect, targets)["map_50"] == pytest.approx(1.0)
    assert mean_average_precision(perfect, targets)["map"] == pytest.approx(1.0)
    wrong = [dict(p, labels=(p["labels"] + 1) % 10) for p in perfect]
    assert mean_average_precision(wrong, targets)["map_50"] == pytest.approx(0.0)
    shifted = [dict(p, boxes=p["boxes"] + 40) for p in perfect]
    assert mean_average_precision(shifted, targets)["map_50"] == pytest.approx(0.0)


def test_missing_pycocotools_is_one_line_naming_the_extra(monkeypatch):
    from spikequant.errors import MissingDependencyError

    monkeypatch.setitem(sys.modules, "pycocotools", None)
    monkeypatch.setitem(sys.modules, "pycocotools.coco", None)
    target = {"boxes": torch.tensor([[0.0, 0, 4, 4]]), "labels": torch.tensor([1])}
    prediction = dict(target, scores=torch.ones(1))
    with pytest.raises(MissingDependencyError) as info:
        mean_average_precision([prediction], [target])
    assert str(info.value) == (
        "detection mAP needs the optional package pycocotools: pip install 'spikequant[detection]'"
    )
