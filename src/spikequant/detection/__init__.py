"""Object detection with spiking networks: a spiking YOLO-style detector, its loss, COCO-style
mAP (pycocotools) and a reader for Prophesee Gen1 labels.

The detector is registered as ``spiking_yolo_tiny`` (model family ``detection``); the bundled
detection scenes are the datasets ``digits_canvas`` and ``digits_canvas_events``
(:mod:`spikequant.data.canvas`).
"""

from .boxes import batched_nms, box_iou, generalized_iou, nms
from .loss import assign_targets, detection_loss
from .model import SpikingYOLOTiny, spiking_yolo_tiny

__all__ = [
    "SpikingYOLOTiny",
    "assign_targets",
    "batched_nms",
    "box_iou",
    "detection_loss",
    "generalized_iou",
    "nms",
    "spiking_yolo_tiny",
]
