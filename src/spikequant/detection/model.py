"""``spiking_yolo_tiny``: a small spiking YOLO-style detector (anchor-free, one box per cell).

Backbone: five ``3x3 conv -> BN -> neuron`` layers with 2x2 average pooling after the first
three (stride 8: a 64x64 input gives an 8x8 grid). Head: a ``3x3`` conv from the last spikes to
``5 + classes`` values per cell and step, **averaged over time** (the read-out has no membrane):

    h[b, :, i, j] = (1/T) sum_t (W * s_t)[b, :, i, j] + bias = (o, t_x, t_y, t_w, t_h, c_1..c_K)

(a 3x3 rather than 1x1 head: seeing the neighbouring cells, the class loss started falling
within the first epoch instead of staying near ln 10 for three).

Decoding (grid cell ``(i, j)``, stride ``s``, reference size ``r``, YOLOv2's parametrisation
without anchor priors)::

    cx = (j + sigmoid(t_x)) s      cy = (i + sigmoid(t_y)) s
    w  = r exp(t_w)                h  = r exp(t_h)            (t_w, t_h clamped at 4)
    score = sigmoid(o) max_k softmax(c)_k,  label = argmax_k c_k

then a score threshold, the ``max_detections`` best, and class-wise NMS. Anchor-free: a ground
truth box is assigned to the single cell holding its centre (see
:func:`spikequant.detection.loss.detection_loss`); with one cell per object this suits scenes
whose objects' centres fall in different cells (true of ``digits_canvas``).
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError, ShapeError
from ..layers import TimeFold
from ..models.common import SpikingModel, avg_pool, conv_bn, pair
from ..registry import register_model
from .boxes import batched_nms

HEAD_FIELDS = 5  # objectness, t_x, t_y, t_w, t_h
MAX_LOG_SIZE = 4.0


class SpikingYOLOTiny(SpikingModel):
    """Spiking conv backbone + time-averaged 3x3 detection head (module docstring)."""

    def __init__(
        self,
        *,
        num_classes: int = 10,
        in_channels: int = 1,
        input_size=64,
        timesteps: int = 4,
        neuron: str = "lif",
        neuron_kwargs: dict | None = None,
        widths: tuple[int, ...] | list[int] = (16, 32, 64, 64, 64),
        reference_size: float = 20.0,
        score_threshold: float = 0.05,
        nms_iou: float = 0.5,
        max_detections: int = 20,
    ) -> None:
        super().__init__(
            num_classes=num_classes,
            in_channels=in_channels,
            input_size=input_size,
            timesteps=timesteps,
            neuron=neuron,
            neuron_kwargs=neuron_kwargs,
        )
        widths = [int(w) for w in widths]
        if len(widths) != 5 or min(widths) < 1:
            raise ConfigError(f"widths must be five positive channel counts, got {widths!r}")
        height, breadth = pair(input_size)
        if height % 8 or breadth % 8:
            raise ConfigError(f"input_size must be a multiple of 8 (stride 8), got {input_size!r}")
        self.stride = 8
        self.grid = (height // 8, breadth // 8)
        self.reference_size = float(reference_size)
        self.score_threshold = float(score_threshold)
        self.nms_iou = float(nms_iou)
        self.max_detections = int(max_detections)
        layers: list[nn.Module] = []
        previous = in_channels
        for index, width in enumerate(widths):
            layers += [conv_bn(previous, width), self.make_neuron(width)]
            if index < 3:
                layers.append(avg_pool(2))
            previous = width
        self.backbone = nn.Sequential(*layers)
        self.head = TimeFold(nn.Conv2d(previous, HEAD_FIELDS + num_classes, 3, padding=1))
        # start with few confident cells: objectness bias log(0.01 / 0.99)
        nn.init.constant_(self.head.module.bias[:1], -4.6)

    def body(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != (self.grid[0] * 8, self.grid[1] * 8):
            raise ShapeError(
                f"spiking_yolo_tiny was built for {self.grid[0] * 8}x{self.grid[1] * 8} inputs, "
                f"got {tuple(x.shape)}"
            )
        head = self.head(self.backbone(x)).mean(0)  # [B, 5 + K, S_h, S_w]
        return head.permute(0, 2, 3, 1)

    def decode_boxes(self, head: torch.Tensor) -> torch.Tensor:
        """Boxes ``[B, S_h, S_w, 4]`` (xyxy pixels) of every cell from the head ``[B, S_h,
        S_w, 5 + K]``."""
        rows = torch.arange(self.grid[0], device=head.device, dtype=head.dtype)
        cols = torch.arange(self.grid[1], device=head.device, dtype=head.dtype)
        cx = (cols[None, None, :] + torch.sigmoid(head[..., 1])) * self.stride
        cy = (rows[None, :, None] + torch.sigmoid(head[..., 2])) * self.stride
        w = self.reference_size * torch.exp(head[..., 3].clamp(max=MAX_LOG_SIZE))
        h = self.reference_size * torch.exp(head[..., 4].clamp(max=MAX_LOG_SIZE))
        return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)

    @torch.no_grad()
    def decode(self, head: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """Per image ``{"boxes" [N, 4], "scores" [N], "labels" [N]}`` after the score threshold,
        the ``max_detections`` best and class-wise NMS (best first)."""
        boxes = self.decode_boxes(head).flatten(1, 2)
        probs = torch.softmax(head[..., HEAD_FIELDS:], dim=-1).flatten(1, 2)
        best, labels = probs.max(-1)
        scores = torch.sigmoid(head[..., 0]).flatten(1) * best
        out = []
        for b in range(head.shape[0]):
            keep = torch.nonzero(scores[b] > self.score_threshold).flatten()
            keep = keep[torch.argsort(scores[b, keep], descending=True)][: self.max_detections]
            kept = batched_nms(boxes[b, keep], scores[b, keep], labels[b, keep], self.nms_iou)
            idx = keep[kept]
            out.append({"boxes": boxes[b, idx], "scores": scores[b, idx], "labels": labels[b, idx]})
        return out

    def detect(self, x: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """``decode(self(x))`` (the state is reset first: each call is a new sequence)."""
        from ..neurons import reset_state

        reset_state(self)
        return self.decode(self(x))


@register_model(name="spiking_yolo_tiny", family="detection")
def spiking_yolo_tiny(**kwargs) -> SpikingYOLOTiny:
    """Spiking YOLO-style detector for 64x64 inputs: 5 conv-BN-neuron layers (stride 8),
    anchor-free 3x3 head averaged over time, class-wise NMS."""
    return SpikingYOLOTiny(**kwargs)


__all__ = ["SpikingYOLOTiny", "spiking_yolo_tiny"]
