"""The detection loss of :class:`~spikequant.detection.model.SpikingYOLOTiny`.

Each ground-truth box is assigned to the grid cell that holds its centre (a later box in the
same cell replaces an earlier one). With ``P`` assigned cells over the batch::

    L_obj = (1/P) sum_cells BCE(o, 1[cell assigned])            (all cells, summed)
    L_box = (1/P) sum_assigned (1 - GIoU(decoded box, target box))
    L_cls = (1/P) sum_assigned CE(c, target label)
    L     = w_obj L_obj + w_box L_box + w_cls L_cls

on the time-averaged head (YOLOX normalises by the number of positives the same way). Defaults
``w_obj, w_box, w_cls = 1, 2, 2``: with equal class weight the digit classes were learned last
(localisation first), and mAP@0.5, which needs both, stayed low for several epochs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .boxes import generalized_iou
from .model import HEAD_FIELDS


def assign_targets(model, targets: list[dict], device=None):
    """``(mask [B, S_h, S_w] bool, boxes [B, S_h, S_w, 4], labels [B, S_h, S_w])``: the cell
    holding each box's centre gets that box."""
    rows, cols = model.grid
    batch = len(targets)
    mask = torch.zeros(batch, rows, cols, dtype=torch.bool, device=device)
    boxes = torch.zeros(batch, rows, cols, 4, device=device)
    labels = torch.zeros(batch, rows, cols, dtype=torch.long, device=device)
    for b, target in enumerate(targets):
        tb = target["boxes"].to(device=device, dtype=torch.float32)
        if tb.numel() == 0:
            continue
        centre = (tb[:, :2] + tb[:, 2:]) / 2
        j = (centre[:, 0] / model.stride).floor().long().clamp(0, cols - 1)
        i = (centre[:, 1] / model.stride).floor().long().clamp(0, rows - 1)
        mask[b, i, j] = True
        boxes[b, i, j] = tb
        labels[b, i, j] = target["labels"].to(device)
    return mask, boxes, labels


def detection_loss(
    model,
    head: torch.Tensor,
    targets: list[dict],
    *,
    weight_obj: float = 1.0,
    weight_box: float = 2.0,
    weight_cls: float = 2.0,
) -> dict[str, torch.Tensor]:
    """``{"loss", "obj", "box", "cls"}`` of the head ``[B, S_h, S_w, 5 + K]`` (module
    docstring)."""
    mask, boxes, labels = assign_targets(model, targets, head.device)
    positives = mask.sum().clamp(min=1).to(head.dtype)
    obj = F.binary_cross_entropy_with_logits(head[..., 0], mask.to(head.dtype), reduction="sum")
    obj = obj / positives
    if mask.any():
        predicted = model.decode_boxes(head)[mask]
        box = (1 - generalized_iou(predicted, boxes[mask])).sum() / positives
        cls = F.cross_entropy(head[..., HEAD_FIELDS:][mask], labels[mask], reduction="sum")
        cls = cls / positives
    else:
        box = cls = head.sum() * 0.0
    loss = weight_obj * obj + weight_box * box + weight_cls * cls
    return {"loss": loss, "obj": obj.detach(), "box": box.detach(), "cls": cls.detach()}


__all__ = ["assign_targets", "detection_loss"]
