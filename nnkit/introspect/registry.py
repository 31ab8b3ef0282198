"""Regenerate nnkit/archs/_table.py: every architecture's defaults, params and MACs, measured on the meta
device.

    python -m nnkit.introspect.registry          # rewrite the table
    python -m nnkit.introspect.registry --check  # exit 1 when the committed table differs (tests run this logic)

The table lets `nnkit models` and shell completion answer without importing torch.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

TABLE = Path(__file__).parents[1] / "archs" / "_table.py"

# Our own architectures: (name, builder, input, min_input, family, options)
OURS = (
    ("lenet5", "nnkit.archs.lenet:lenet5", (1, 32, 32), (32, 32), "lenet", ("num_classes", "in_channels")),
    ("mobilenet_v1", "nnkit.archs.mobilenet_v1:mobilenet_v1", (3, 224, 224), (1, 1), "mobilenet",
     ("num_classes", "in_channels", "width")),
)
WIDTH_KWARGS = {"mobilenet_v2": "width_mult"}  # torchvision builders that pass a width multiplier through


def measure(model: Any, shape: tuple[int, ...]) -> tuple[int, int]:
    """(params counting shared tensors once, MACs) of a meta-device model on one item of `shape`."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    params = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.empty((1, *shape), device="meta"))
    return params, counter.get_total_flops() // 2  # FlopCounterMode counts 2 FLOPs per MAC


def torchvision_entries() -> list[dict[str, Any]]:
    import torchvision.models as M
    from torchvision.models import get_model_builder, get_model_weights, list_models

    out = []
    for name in list_models(module=M):
        weights = get_model_weights(name).DEFAULT
        builder = get_model_builder(name)
        crop = int(weights.transforms.keywords.get("crop_size", 224))
        min_size = tuple(weights.meta.get("min_size", (1, 1)))
        family = builder.__module__.rsplit(".", 1)[-1]
        kwargs: tuple[tuple[str, Any], ...] = ()
        if family == "vision_transformer" and min_size[0] != 224:  # SWAG weights: positions for their size
            kwargs = (("image_size", crop),)
        if name == "googlenet":  # the weights drop the auxiliary classifiers (torchvision's builder does too)
            kwargs = (("aux_logits", False),)
        options = ("num_classes", "in_channels") + (("width",) if name in WIDTH_KWARGS else ())
        out.append(dict(name=name, builder=f"torchvision.models:{name}", input=(3, crop, crop),
                        min_input=min_size, family=family, weights=f"{type(weights).__name__}.{weights.name}",
                        options=options, kwargs=kwargs, width_kwarg=WIDTH_KWARGS.get(name),
                        published=(weights.meta["num_params"], weights.meta.get("_ops"))))
    return out + segmentation_entries() + video_entries() + detection_entries() + flow_entries()


VIDEO_FRAMES = 16  # the clip length torchvision's _ops of every video model were measured at


def video_entries() -> list[dict[str, Any]]:
    """torchvision's video classifiers, on clips of 16 frames at their crop size (CxTxHxW = 3x16x112x112 for
    the ResNet-3D family)."""
    import torchvision.models.video as V
    from torchvision.models import get_model_weights, list_models

    out = []
    for name in list_models(module=V):
        weights = get_model_weights(name).DEFAULT
        h, w = weights.transforms.keywords["crop_size"]
        out.append(dict(name=name, builder=f"torchvision.models.video:{name}", input=(3, VIDEO_FRAMES, h, w),
                        min_input=tuple(weights.meta.get("min_size", (1, 1))), family=name.split("_")[0],
                        weights=f"{type(weights).__name__}.{weights.name}",
                        options=("num_classes", "in_channels"),
                        kwargs=(), width_kwarg=None, task="video",
                        published=(weights.meta["num_params"], weights.meta.get("_ops"))))
    return out


def segmentation_entries() -> list[dict[str, Any]]:
    """torchvision's segmentation models, at the size their weights were evaluated at (resize_size 520).

    Built as the weights are: without any download (weights_backbone=None) and with the auxiliary classifier
    where the weights have one (torchvision's builders set aux_loss=True when given weights, and num_params
    and _ops count it)."""
    import inspect

    import torchvision.models.segmentation as S
    from torchvision.models import get_model_builder, get_model_weights, list_models

    out = []
    for name in list_models(module=S):
        weights = get_model_weights(name).DEFAULT
        builder = get_model_builder(name)
        size = int(weights.transforms.keywords["resize_size"])
        kwargs: tuple[tuple[str, Any], ...] = (("weights_backbone", None),)
        if "aux_loss" in inspect.signature(builder).parameters:
            kwargs += (("aux_loss", True),)
        out.append(dict(name=name, builder=f"{builder.__module__.rsplit('.', 1)[0]}:{name}",
                        input=(3, size, size),
                        min_input=tuple(weights.meta.get("min_size", (1, 1))), family=name.split("_")[0],
                        weights=f"{type(weights).__name__}.{weights.name}",
                        options=("num_classes", "in_channels"),
                        kwargs=kwargs, width_kwarg=None, task="segmentation",
                        published=(weights.meta["num_params"], weights.meta.get("_ops"))))
    return out


def detection_entries() -> list[dict[str, Any]]:
    """torchvision's detectors, on a square image of the size their transform resizes to in eval (min_size: 800,
    320 for the 320 model, SSD's fixed 300 or 320), so that the transform keeps the image's size.

    Built as the COCO weights were (nnkit.archs.detection: FrozenBatchNorm2d where the pretrained builders put
    it), with weights=None and weights_backbone=None: never a download. Their MACs follow nnkit's protocol
    (nnkit.introspect.detection); torchvision's _ops sit beside them in PUBLISHED."""
    import inspect

    import torchvision.models.detection as D
    from torchvision.models import get_model_builder, get_model_weights, list_models

    from nnkit.archs.detection import FROZEN_NORM

    out = []
    for name in list_models(module=D):
        weights = get_model_weights(name).DEFAULT
        builder = get_model_builder(name)
        defaults = {k: p.default for k, p in inspect.signature(builder).parameters.items()}
        size = _eval_size(builder, name)
        out.append(dict(name=name, builder=(f"nnkit.archs.detection:{name}" if name in FROZEN_NORM
                                            else f"torchvision.models.detection:{name}"),
                        input=(3, size, size), min_input=tuple(weights.meta.get("min_size", (1, 1))),
                        family=name.split("_")[0], weights=f"{type(weights).__name__}.{weights.name}",
                        options=("num_classes",) if "num_classes" in defaults else (),
                        kwargs=(("weights_backbone", None),), width_kwarg=None, task="detection",
                        published=(weights.meta["num_params"], weights.meta.get("_ops"))))
    return out


def _eval_size(builder: Any, name: str) -> int:
    """The short side the model's transform resizes to in eval (GeneralizedRCNNTransform.min_size[-1], or SSD's
    fixed size), read off a meta build."""
    import inspect

    from nnkit.introspect.build import on_meta

    kwargs = {"weights": None}
    if "weights_backbone" in inspect.signature(builder).parameters:
        kwargs["weights_backbone"] = None
    t = on_meta(lambda: builder(**kwargs)).transform
    return int(t.fixed_size[0]) if getattr(t, "fixed_size", None) else int(t.min_size[-1])


FLOW_SIZE = 512  # torchvision's _ops of both RAFT models are those of two 3x512x512 images (12 flow updates)


def flow_entries() -> list[dict[str, Any]]:
    """torchvision's optical-flow models (RAFT): two images of 3x512x512, the size torchvision's _ops were
    measured at (nnkit.introspect.detection runs the second image with the first's shape)."""
    import torchvision.models.optical_flow as O
    from torchvision.models import get_model_weights, list_models

    out = []
    for name in list_models(module=O):
        weights = get_model_weights(name).DEFAULT
        out.append(dict(name=name, builder=f"torchvision.models.optical_flow:{name}",
                        input=(3, FLOW_SIZE, FLOW_SIZE), min_input=tuple(weights.meta.get("min_size", (1, 1))),
                        family="raft", weights=f"{type(weights).__name__}.{weights.name}", options=(),
                        kwargs=(), width_kwarg=None, task="flow",
                        published=(weights.meta["num_params"], weights.meta.get("_ops"))))
    return out


def measure_protocol(model: Any, shape: tuple[int, ...]) -> tuple[int, int]:
    """measure() for detectors and RAFT: their MACs under nnkit's protocol (nnkit.introspect.detection)."""
    from nnkit.introspect import analyze_model

    a = analyze_model(model, shape, source="table", fields=False, explain=False)
    return a.params, a.macs


def entries() -> list[dict[str, Any]]:
    from nnkit.archs import ArchInfo, build_info
    from nnkit.introspect.build import on_meta

    rows = [dict(name=n, builder=b, input=i, min_input=m, family=f, weights=None, options=o, kwargs=(),
                 width_kwarg=None, in_channels_native=True, published=None) for n, b, i, m, f, o in OURS]
    rows += torchvision_entries()
    for row in rows:
        info = ArchInfo(**{k: row[k] for k in ("name", "builder", "input", "min_input", "family", "weights",
                                               "options", "kwargs", "width_kwarg")}, params=0, macs=0,
                        in_channels_native=bool(row.get("in_channels_native")),
                        task=row.get("task", "classification"))
        model = on_meta(lambda: build_info(info))
        dense = row.get("task") in ("detection", "flow")
        row["params"], row["macs"] = (measure_protocol if dense else measure)(model, row["input"])
        print(f"{row['name']}: {row['params']:,} params, {row['macs']:,} MACs", file=sys.stderr)
    return sorted(rows, key=lambda r: r["name"])


def render(rows: list[dict[str, Any]]) -> str:
    lines = ['"""Generated by `python -m nnkit.introspect.registry`; do not edit (tests/test_archs.py checks '
             'it)."""',
             "", "from nnkit.archs import ArchInfo", "", "ARCHS = {"]
    for r in rows:
        fields = ", ".join(f"{k}={r[k]!r}" for k in ("name", "builder", "input", "min_input", "family",
                                                     "params",
                                                     "macs", "weights", "options", "kwargs", "width_kwarg"))
        if r.get("in_channels_native"):
            fields += ", in_channels_native=True"
        if r.get("task", "classification") != "classification":
            fields += f", task={r['task']!r}"
        lines.append(f"    {r['name']!r}: ArchInfo({fields}),")
    lines += ["}", "",
              "# torchvision's own numbers for the default weights: (meta['num_params'], meta['_ops'] GMACs)",
              "PUBLISHED = {"]
    for r in rows:
        if r["published"]:
            lines.append(f"    {r['name']!r}: {tuple(r['published'])!r},")
    lines += ["}", ""]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    text = render(entries())
    if "--check" in argv:
        same = TABLE.exists() and TABLE.read_text() == text
        print("table up to date" if same else f"{TABLE} is out of date: run python -m nnkit.introspect.registry")
        return 0 if same else 1
    TABLE.write_text(text)
    print(f"wrote {TABLE}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
