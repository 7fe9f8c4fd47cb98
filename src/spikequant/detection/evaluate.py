"""COCO-style mean average precision with pycocotools (the evaluator torchmetrics and Detectron2
wrap; torchmetrics' ``MeanAveragePrecision`` itself needs torchvision, which spikequant does not
install).

``mean_average_precision(predictions, targets)`` takes per-image dicts, predictions ``{"boxes"
[N, 4] xyxy, "scores" [N], "labels" [N]}`` and targets ``{"boxes" [M, 4], "labels" [M]}``, and
returns ``{"map": mAP@[.50:.05:.95], "map_50": mAP@.5, "map_75": mAP@.75}`` over all areas with
up to 100 detections per image (COCO's definitions: 101-point interpolated precision, averaged
over the classes present in the ground truth).
"""

from __future__ import annotations

import contextlib
import io

import torch

from .._optional import require


def _xywh(boxes: torch.Tensor) -> list[list[float]]:
    b = boxes.detach().to("cpu", torch.float64)
    return torch.stack([b[:, 0], b[:, 1], b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], 1).tolist()


def mean_average_precision(predictions: list[dict], targets: list[dict]) -> dict[str, float]:
    """COCO mAP of ``predictions`` against ``targets`` (module docstring); 0 when nothing was
    detected."""
    coco_module = require("pycocotools.coco", "detection mAP")
    cocoeval = require("pycocotools.cocoeval", "detection mAP")
    if len(predictions) != len(targets):
        raise ValueError(f"{len(predictions)} predictions for {len(targets)} images")
    images, annotations, detections = [], [], []
    classes: set[int] = set()
    for image_id, (pred, target) in enumerate(zip(predictions, targets, strict=True)):
        images.append({"id": image_id})
        for box, label in zip(_xywh(target["boxes"]), target["labels"].tolist(), strict=True):
            classes.add(int(label))
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(label) + 1,  # COCO ids start at 1
                    "bbox": box,
                    "area": box[2] * box[3],
                    "iscrowd": 0,
                }
            )
        boxes = _xywh(pred["boxes"])
        for box, score, label in zip(
            boxes, pred["scores"].tolist(), pred["labels"].tolist(), strict=True
        ):
            classes.add(int(label))
            detections.append(
                {"image_id": image_id, "category_id": int(label) + 1, "bbox": box, "score": score}
            )
    if not annotations:
        raise ValueError("the targets hold no boxes: mAP is undefined")
    if not detections:
        return {"map": 0.0, "map_50": 0.0, "map_75": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        truth = coco_module.COCO()
        truth.dataset = {
            "images": images,
            "annotations": annotations,
            "categories": [{"id": c + 1} for c in sorted(classes)],
        }
        truth.createIndex()
        result = truth.loadRes(detections)
        evaluator = cocoeval.COCOeval(truth, result, "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = evaluator.stats
    return {"map": float(stats[0]), "map_50": float(stats[1]), "map_75": float(stats[2])}


__all__ = ["mean_average_precision"]
