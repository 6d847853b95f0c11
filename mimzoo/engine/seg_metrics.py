"""Dataset-level segmentation metrics from smp's per-image statistics.

mIoU here is the class mean of IoUs computed over the whole split (true positives, false positives and false
negatives summed over all images first), the usual CamVid / ADE20K number, not smp's pixel-weighted micro IoU.
A class that appears in neither the labels nor the predictions has no IoU and is left out of the mean.
"""

from __future__ import annotations

import segmentation_models_pytorch as smp
import torch


class SegMeter:
    """Accumulates smp.metrics.get_stats over batches; pixels labelled ``ignore_index`` count nowhere."""

    def __init__(self, num_classes: int, ignore_index: int) -> None:
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.stats = torch.zeros(4, num_classes, dtype=torch.long)  # tp, fp, fn, tn summed over images

    def update(self, prediction: torch.Tensor, target: torch.Tensor) -> None:
        """prediction, target: (B, H, W) class indices."""
        tp, fp, fn, tn = smp.metrics.get_stats(prediction.long(), target.long(), mode="multiclass",
                                               num_classes=self.num_classes, ignore_index=self.ignore_index)
        self.stats += torch.stack([tp.sum(0), fp.sum(0), fn.sum(0), tn.sum(0)]).cpu()

    def compute(self) -> dict[str, float | list[float | None]]:
        """{"miou": %, "pixel_accuracy": %, "iou_per_class": [% or None for absent classes]}."""
        tp, fp, fn, tn = self.stats.double()
        iou = smp.metrics.iou_score(tp, fp, fn, tn, reduction="none", zero_division=float("nan"))
        present = ~torch.isnan(iou)
        valid_pixels = (tp + fn).sum()  # every labelled (non-ignored) pixel is a tp or fn of its true class
        return {
            "miou": 100 * iou[present].mean().item() if present.any() else 0.0,
            "pixel_accuracy": 100 * (tp.sum() / valid_pixels.clamp(min=1)).item(),
            "iou_per_class": [round(100 * v, 4) if ok else None for v, ok in zip(iou.tolist(), present.tolist(),
                                                                                  strict=True)],
        }
