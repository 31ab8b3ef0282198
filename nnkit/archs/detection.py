"""torchvision's detectors built as their COCO weights were, without downloading anything.

torchvision's builders put FrozenBatchNorm2d (statistics and affine terms as buffers, no parameters) in the
backbone whenever weights or backbone weights are given (`norm_layer = FrozenBatchNorm2d if is_trained else
nn.BatchNorm2d` in faster_rcnn.py, mask_rcnn.py, keypoint_rcnn.py, retinanet.py, fcos.py), and the weights'
`num_params` count that model. Built with weights=None and weights_backbone=None the same builders make trainable
BatchNorm2d layers instead (53,120 parameters more in a ResNet-50 backbone), so the builders here swap them back:
the layout the weights describe, and never a download. The _v2 models, SSD and SSDlite keep their own norms (their
builders choose them without looking at weights).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# The builders whose pretrained layout freezes the backbone's BatchNorm (see the module docstring).
FROZEN_NORM = ("fasterrcnn_resnet50_fpn", "fasterrcnn_mobilenet_v3_large_fpn", "fasterrcnn_mobilenet_v3_large_320_fpn",
               "fcos_resnet50_fpn", "retinanet_resnet50_fpn", "maskrcnn_resnet50_fpn", "keypointrcnn_resnet50_fpn")


def freeze_norms(module: Any) -> int:
    """Replace every BatchNorm2d under `module` by a FrozenBatchNorm2d with the same features and eps, as
    torchvision's pretrained builders make them; returns how many were replaced."""
    from torch import nn
    from torchvision.ops.misc import FrozenBatchNorm2d

    swaps = [(parent, name, child) for parent in module.modules() for name, child in parent.named_children()
             if type(child) is nn.BatchNorm2d]
    for parent, name, bn in swaps:
        frozen = FrozenBatchNorm2d(bn.num_features, eps=bn.eps)
        device = bn.weight.device if bn.weight is not None else None
        setattr(parent, name, frozen.to(device) if device is not None else frozen)
    return len(swaps)


def _pretrained_layout(name: str) -> Callable[..., Any]:
    def build(**kwargs: Any) -> Any:
        from torchvision.models import get_model_builder

        kwargs.setdefault("weights", None)
        kwargs.setdefault("weights_backbone", None)
        model = get_model_builder(name)(**kwargs)
        freeze_norms(model.backbone.body)
        return model

    build.__name__ = build.__qualname__ = name
    build.__doc__ = f"torchvision's {name} with the FrozenBatchNorm2d backbone of its COCO weights, no weights."
    return build


fasterrcnn_resnet50_fpn = _pretrained_layout("fasterrcnn_resnet50_fpn")
fasterrcnn_mobilenet_v3_large_fpn = _pretrained_layout("fasterrcnn_mobilenet_v3_large_fpn")
fasterrcnn_mobilenet_v3_large_320_fpn = _pretrained_layout("fasterrcnn_mobilenet_v3_large_320_fpn")
fcos_resnet50_fpn = _pretrained_layout("fcos_resnet50_fpn")
retinanet_resnet50_fpn = _pretrained_layout("retinanet_resnet50_fpn")
maskrcnn_resnet50_fpn = _pretrained_layout("maskrcnn_resnet50_fpn")
keypointrcnn_resnet50_fpn = _pretrained_layout("keypointrcnn_resnet50_fpn")
