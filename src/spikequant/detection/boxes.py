"""Box geometry in plain torch: IoU, generalised IoU and greedy non-maximum suppression.

Boxes are ``(x1, y1, x2, y2)`` in pixels with ``x2 >= x1``, ``y2 >= y1``.
"""

from __future__ import annotations

import torch


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """``(x2 - x1) (y2 - y1)`` of ``[..., 4]`` boxes."""
    return (boxes[..., 2] - boxes[..., 0]).clamp(min=0) * (boxes[..., 3] - boxes[..., 1]).clamp(
        min=0
    )


def _intersection_union(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    lt = torch.maximum(a[..., :2], b[..., :2])
    rb = torch.minimum(a[..., 2:], b[..., 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    return inter, box_area(a) + box_area(b) - inter


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU ``[N, M]`` of ``a [N, 4]`` and ``b [M, 4]``: ``|a & b| / |a | b|``."""
    inter, union = _intersection_union(a[:, None, :], b[None, :, :])
    return inter / union.clamp(min=1e-9)


def generalized_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Element-wise GIoU of matching boxes ``a, b [..., 4]``::

    GIoU = IoU - |C \\ (a | b)| / |C|,   C = the smallest box enclosing a and b

    in [-1, 1]; ``1 - GIoU`` is the box loss (it still has a gradient when the boxes do not touch).
    """
    inter, union = _intersection_union(a, b)
    iou = inter / union.clamp(min=1e-9)
    lt = torch.minimum(a[..., :2], b[..., :2])
    rb = torch.maximum(a[..., 2:], b[..., 2:])
    hull = (rb - lt).clamp(min=0).prod(-1).clamp(min=1e-9)
    return iou - (hull - union) / hull


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression: indices of the kept boxes, highest score first. A box is
    dropped when its IoU with a higher-scoring kept box exceeds ``iou_threshold``."""
    order = torch.argsort(scores, descending=True, stable=True)
    if order.numel() == 0:
        return order
    iou = box_iou(boxes[order], boxes[order])
    suppressed = torch.zeros(order.numel(), dtype=torch.bool, device=boxes.device)
    keep = []
    for i in range(order.numel()):
        if bool(suppressed[i]):
            continue
        keep.append(i)
        suppressed |= iou[i] > iou_threshold
    return order[torch.as_tensor(keep, dtype=torch.long, device=boxes.device)]


def batched_nms(
    boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, iou_threshold: float
) -> torch.Tensor:
    """:func:`nms` within each class: boxes of different labels never suppress each other (each
    class is shifted by its own offset, wider than the span of all boxes, before one NMS pass)."""
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    offset = labels.to(boxes.dtype)[:, None] * (boxes.max() - boxes.min() + 1)
    return nms(boxes + offset, scores, iou_threshold)


__all__ = ["batched_nms", "box_area", "box_iou", "generalized_iou", "nms"]
