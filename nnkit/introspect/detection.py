"""Detectors and optical-flow models: the analysis protocol nnkit states for networks whose work depends on the
image.

A detector's heads run on what its thresholds and NMS keep, and RAFT refines its flow a number of times: their
MACs are not a property of the architecture alone, and on the meta device (no values) `nonzero`, NMS and
`.item()` have no answer at all. nnkit answers each of them with the model's own upper limit, so that every
count is the largest the model can do on that image size, and says which limit each head ran on:

- The model's own transform runs first: a detector resizes the image as its weights were evaluated
  (GeneralizedRCNNTransform: the short side to min_size, the long side at most max_size, padded to a multiple
  of 32; SSD: to its fixed 300x300 or 320x320). Backbone and neck are traced on meta at that size.
- Every data-dependent size takes its largest value: every box passes every score threshold and minimum size
  (`nonzero` and boolean masks keep every element), NMS suppresses none (torchvision.ops.nms keeps every box).
  The model's own top-n limits then decide the sizes: Faster/Mask/Keypoint R-CNN's box head runs on the RPN's
  post-NMS top-n proposals (rpn.post_nms_top_n() in eval: 1000, 150 for the 320 model) and the mask and keypoint
  heads on detections_per_img (100) detections; RetinaNet, FCOS and SSD heads are dense (every anchor position)
  and their post-processing keeps topk_candidates per level and detections_per_img, with no MACs after the head.
- `torch.unique` (the loop over classes in batched NMS) answers one class and a value read back to Python
  (`.item()`, keypoint heat-map sizes) answers 1: both only size work that counts no MACs.
- R-CNN's transform.postprocess (rescaling boxes, pasting masks into the image) is left out: it reads box
  coordinates and computes no MACs.
- RAFT takes two images of the same size and runs its default number of flow updates (num_flow_updates=12,
  the default of RAFT.forward): the update block and the mask predictor run once per update.

The report keeps every module row, and adds the parts: backbone, neck and heads, each with its parameters and
MACs (each module belongs to the part with its longest matching path, so the parts add up to the totals).
torchvision's `_ops` were measured once, with the COCO weights on one image: where its thresholds kept fewer
proposals or detections than the limits, `nnkit crosscheck` finds the counts that give torchvision's figure.
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass, replace
from typing import Any

from nnkit.core.report import Analysis, Part

PROTOCOL = ("protocol for detectors and flow models (--explain gives its rules): the model's own transform resizes "
            "the image; every score threshold keeps every box and NMS suppresses none, so the heads run on the "
            "model's own limits (post-NMS top-n proposals, detections_per_img); RAFT runs its default number of "
            "flow updates")
RULES = (
    "protocol: nonzero and boolean masks keep every element, torchvision.ops.nms keeps every box, so each "
    "data-dependent size is its largest; the model's top-n limits (rpn post_nms_top_n, topk_candidates, "
    "detections_per_img) then fix the sizes",
    "protocol: torch.unique (batched NMS's loop over classes) answers one class and .item() answers 1: both only "
    "size work that counts no MACs (keypoint heat maps); R-CNN's transform.postprocess (rescaling boxes, pasting "
    "masks) is left out",
    "protocol: torchvision's _ops were measured with the COCO weights on one image, where thresholds may keep "
    "fewer proposals or detections: nnkit crosscheck finds the counts that give its figure",
)


def kind(model: Any) -> str | None:
    """'detection' for torchvision's detectors (R-CNN, RetinaNet, FCOS, SSD), 'flow' for RAFT, else None.

    torchvision is only looked at when it is imported already: a model of its classes cannot exist otherwise."""
    if "torchvision" not in sys.modules:
        return None
    from torchvision.models.detection.fcos import FCOS
    from torchvision.models.detection.retinanet import RetinaNet
    from torchvision.models.detection.ssd import SSD
    from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
    from torchvision.models.optical_flow import RAFT

    if isinstance(model, (GeneralizedRCNN, RetinaNet, FCOS, SSD)):
        return "detection"
    if isinstance(model, RAFT):
        return "flow"
    return None


@dataclass(frozen=True)
class PartSpec:
    name: str
    role: str  # transform, backbone, neck, head
    modules: tuple[str, ...]  # module paths; "" is the model's own forward
    runs_on: str = ""
    count: int | None = None  # the limit its MACs scale with (proposals, detections), for crosscheck
    counts: str = ""  # what is counted: "proposals", "detections", "flow updates"


def part_specs(model: Any) -> list[PartSpec]:
    """The stages of `model`, by module path, with the limit each head runs on (in eval mode)."""
    import inspect

    from torchvision.models.detection.fcos import FCOS
    from torchvision.models.detection.retinanet import RetinaNet
    from torchvision.models.detection.ssd import SSD
    from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
    from torchvision.models.optical_flow import RAFT

    names = {p for p, _ in model.named_modules()}
    if isinstance(model, RAFT):
        updates = inspect.signature(type(model).forward).parameters["num_flow_updates"].default
        specs = [PartSpec("feature encoder", "backbone", ("feature_encoder",), "both images"),
                 PartSpec("context encoder", "backbone", ("context_encoder",), "the first image"),
                 PartSpec("correlation volume", "neck", ("", "corr_block"),
                          "all pairs of feature positions, the model's own forward"),
                 PartSpec("update block", "head", ("update_block",), f"{updates} flow updates", updates,
                          "flow updates"),
                 PartSpec("mask predictor", "head", ("mask_predictor",), f"{updates} flow updates", updates,
                          "flow updates")]
        return [s for s in specs if "" in s.modules or s.modules[0] in names]
    transform = PartSpec("transform", "transform", ("transform",),
                         f"resize to min_size {_sizes(model.transform)}, padded to a multiple of "
                         f"{getattr(model.transform, 'size_divisible', 1)}")
    if isinstance(model, GeneralizedRCNN):
        rh = model.roi_heads
        proposals = model.rpn._post_nms_top_n["testing"]  # noqa: SLF001 - what rpn.post_nms_top_n() gives in eval
        detections = rh.detections_per_img
        specs = [transform, PartSpec("backbone", "backbone", ("backbone", "backbone.body")),
                 PartSpec("FPN", "neck", ("backbone.fpn",)),
                 PartSpec("RPN", "head", ("rpn",), "every anchor position"),
                 PartSpec("box head", "head", ("roi_heads", "roi_heads.box_roi_pool", "roi_heads.box_head",
                                               "roi_heads.box_predictor"), f"{proposals} proposals", proposals,
                          "proposals")]
        for head in ("mask", "keypoint"):
            if f"roi_heads.{head}_head" in names:
                specs.append(PartSpec(f"{head} head", "head", tuple(f"roi_heads.{head}_{p}" for p in
                                                                     ("roi_pool", "head", "predictor")),
                                      f"{detections} detections", detections, "detections"))
        return specs
    if isinstance(model, (RetinaNet, FCOS)):
        return [transform, PartSpec("backbone", "backbone", ("", "backbone", "backbone.body")),
                PartSpec("FPN", "neck", ("backbone.fpn",)),
                PartSpec("classification and box regression", "head", ("head",),
                         f"every anchor position (then top {model.topk_candidates} per level, NMS, "
                         f"{model.detections_per_img} detections)")]
    if isinstance(model, SSD):
        return [transform, PartSpec("backbone", "backbone", ("", "backbone", "backbone.features")),
                PartSpec("extra feature layers", "neck", ("backbone.extra",)),
                PartSpec("classification and box regression", "head", ("head",),
                         f"every anchor position (then top {model.topk_candidates} per class, NMS, "
                         f"{model.detections_per_img} detections)")]
    raise TypeError(f"not a detector or flow model: {type(model).__name__}")  # pragma: no cover - kind() first


def _sizes(transform: Any) -> str:
    """GeneralizedRCNNTransform's eval size: min_size[-1] (torch_choice picks it in eval), max_size."""
    fixed = getattr(transform, "fixed_size", None)
    if fixed:
        return f"fixed {fixed[0]}x{fixed[1]}"
    return f"{transform.min_size[-1]}, max_size {transform.max_size}"


@functools.cache
def _largest_mode() -> Any:
    """A TorchDispatchMode that answers the data-dependent operators on meta tensors with their largest result
    (the module docstring's protocol). Everything else goes through untouched, torch's own kernels included."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    aten = torch.ops.aten
    nms = torch.ops.torchvision.nms.default
    long, masks = torch.long, (torch.bool, torch.uint8)
    resizes = (aten.upsample_bicubic2d.default, aten.upsample_bilinear2d.default)

    def meta(*ts: Any) -> bool:
        return all(isinstance(t, torch.Tensor) and t.is_meta for t in ts)

    class Largest(TorchDispatchMode):
        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            kwargs = kwargs or {}
            if func is aten.nonzero.default and meta(args[0]):  # every element is non-zero
                x = args[0]
                return torch.empty((x.numel(), x.dim()), dtype=long, device="meta")
            if func is aten.index.Tensor and meta(args[0]) and any(
                    i is not None and i.dtype in masks for i in args[1]):  # a boolean mask selects everything
                x, given = args[0], args[1]
                if len(given) == 1 and tuple(given[0].shape) == tuple(x.shape[:given[0].dim()]):
                    # x[mask], the post-processing's per-class filter: torch's meta kernel is Python (0.1 ms)
                    return torch.empty((given[0].numel(), *x.shape[given[0].dim():]), dtype=x.dtype, device="meta")
                indices: list[Any] = []
                for i in args[1]:
                    if i is not None and i.dtype in masks:
                        indices += [torch.empty((i.numel(),), dtype=long, device="meta")] * i.dim()
                    else:
                        indices.append(i)
                return func(args[0], indices)
            if func is nms and meta(args[0]):  # NMS suppresses no box
                return torch.empty((args[0].shape[0],), dtype=long, device="meta")
            if func is aten._unique2.default and meta(args[0]):  # noqa: SLF001 - one class for batched NMS's loop
                x = args[0]
                inverse = kwargs.get("return_inverse", args[2] if len(args) > 2 else False)
                counts = kwargs.get("return_counts", args[3] if len(args) > 3 else False)
                return (torch.empty((1,), dtype=x.dtype, device="meta"),
                        torch.empty(x.shape if inverse else (0,), dtype=long, device="meta"),
                        torch.empty((1,) if counts else (0,), dtype=long, device="meta"))
            if func is aten._local_scalar_dense.default and meta(args[0]):  # noqa: SLF001 - .item()
                return True if args[0].dtype == torch.bool else 1
            if func in resizes and meta(args[0]) and not kwargs and len(args) > 1 and args[1] is not None \
                    and args[0].is_contiguous():
                # the transform's resize, keypoint heat maps once per detection: torch's meta kernels are Python
                # decompositions (bicubic 0.1 s a call), and the output's shape is all an analysis needs
                x, size = args[0], args[1]
                return torch.empty((*x.shape[:2], *size), dtype=x.dtype, device="meta")
            return func(*args, **kwargs)

    return Largest


def _driver(model: Any, what: str, second: tuple[int, ...] | None = None) -> Any:
    """A module whose forward(x) runs `model` as the protocol says: R-CNN without transform.postprocess, RAFT on
    two images (the second of shape `second`, x's own by default), the others as they are. The model is its child
    `model` (torchinfo walks it); the tracer is given the model's own module paths."""
    from torch import nn
    from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN

    class Drive(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.result: Any = None

        def forward(self, x: Any) -> Any:
            m = self.model
            if what == "flow":
                import torch

                out = m(x, torch.empty((x.shape[0], *second), dtype=x.dtype, device=x.device) if second
                        else torch.empty_like(x))
            elif isinstance(m, GeneralizedRCNN):  # GeneralizedRCNN.forward in eval, up to its postprocess
                images, _ = m.transform(x)
                features = m.backbone(images.tensors)
                if not isinstance(features, dict):
                    from collections import OrderedDict

                    features = OrderedDict([("0", features)])
                proposals, _ = m.rpn(images, features)
                out, _ = m.roi_heads(features, proposals, images.image_sizes)
            else:
                out = m(x)
            self.result = out
            return out

    return Drive()


def _output(result: Any, what: str) -> tuple[int, ...] | None:
    """One image's output: the detections' boxes (detections x 4), or the final flow field (2xHxW)."""
    if what == "detection" and isinstance(result, (list, tuple)) and result and isinstance(result[0], dict):
        return tuple(result[0]["boxes"].shape)
    return None


def analyze(model: Any, shape: tuple[int, ...], *, source: str, depth: int | None = None, at: str | None = None,
            batch: int | None = None, fields: bool = True, explain: bool = True,
            min_input: tuple[int, int] | None = None, second: tuple[int, ...] | None = None) -> Analysis:
    """analyze_model for a detector or RAFT, under the protocol of the module docstring. `second`: RAFT's second
    image, one item without the batch (the first image's shape when None), for a several-input --input."""
    from nnkit.introspect import meta_walk, trace_analysis, training_flags
    from nnkit.introspect import trace as tracing

    what = kind(model)
    model, named = meta_walk(model)
    drive = _driver(model, what or "detection", second)
    with training_flags(model, named, False):
        specs = part_specs(model)  # in eval: the limits eval uses
        try:
            with _largest_mode()():
                tr = tracing.run(drive, shape, source, fields=fields, named=named)
        except tracing.TraceFailure as failure:
            raise _failure(source, (shape, second or shape) if what == "flow" else (shape,), failure,
                           min_input) from None
    a = trace_analysis(named, tr, shape, source=source, depth=depth, at=at, batch=batch, fields=fields, explain=explain)
    out = _output(drive.result, what or "")
    notes = [PROTOCOL, *(RULES if explain else ())]
    if at is not None:
        return replace(a, notes=(*a.notes, *notes))
    return replace(a, output=out or a.output, parts=parts(specs, named, tr, batch or 1),
                   notes=(*a.notes, *notes))


def _failure(source: str, images: tuple[tuple[int, ...], ...], failure: Any,
             min_input: tuple[int, int] | None) -> Exception:
    """One line naming the layer and the error; no search for a smallest input (a detector resizes any image,
    RAFT states its own rule: H and W divisible by 8). The smallest size is added only where the failure is
    about size and an image is below it."""
    from nnkit.errors import GeometryError
    from nnkit.introspect import trace as tracing

    exc = failure.exc
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    where = ""
    if failure.call is not None:
        c = failure.call
        where = (f"layer {c.path} ({c.kind})" if c.path else f"the model ({c.kind})") + ": "
    small = (min_input and min_input != (1, 1) and tracing.about_size(exc) and len(set(images)) == 1
             and any(a < b for a, b in zip(images[0][-2:], min_input)))
    hint = f"; it takes at least {images[0][0]}x{min_input[0]}x{min_input[1]}" if small else ""  # type: ignore[index]
    shown = " and ".join(dict.fromkeys("x".join(map(str, i)) for i in images))
    return GeometryError(f"{source} on {shown}: {where}{msg}{hint}")


def parts(specs: list[PartSpec], named: list[tuple[str, Any]], tr: Any, n: int = 1) -> tuple[Part, ...]:
    """Each part's parameters and MACs: every module and every call's own MACs (outside its children) go to the
    part with the longest matching module path, so the parts add up to the model's totals."""
    owners = sorted(((p, i) for i, s in enumerate(specs) for p in s.modules), key=lambda x: -len(x[0]))
    rest = len(specs)

    def owner(path: str) -> int:
        for prefix, i in owners:
            if prefix == "" or path == prefix or path.startswith(prefix + "."):
                return i
        return rest

    params = [0] * (rest + 1)
    macs = [0] * (rest + 1)
    seen: set[int] = set()
    for path, m in named:
        for p in m._parameters.values():  # noqa: SLF001 - parameters(recurse=False), each shared tensor once
            if p is not None and id(p) not in seen:
                seen.add(id(p))
                params[owner(path)] += p.numel()
    outside = tr.macs
    for c in tr.calls:
        macs[owner(c.path)] += c.macs - c.child_macs
        if c.parent is None:
            outside -= c.macs
    macs[owner("")] += outside  # between the top-level calls (the driver's own code)
    out = [Part(s.name, s.role, s.modules, params[i], macs[i] * n, s.runs_on) for i, s in enumerate(specs)]
    if params[rest] or macs[rest]:
        out.append(Part("rest", "other", (), params[rest], macs[rest] * n))
    return tuple(out)


def explain_difference(a: Analysis, specs: list[PartSpec], published: float) -> str:
    """Why nnkit's MACs differ from torchvision's `_ops` (GMACs, 3 decimals): the proposals and detections the
    heads ran on in torchvision's measurement, found as the counts that give its figure."""
    ours = round(a.macs / 1e9, 3)
    if ours == published:
        return (f"torchvision's _ops {published:.3f} GMACs equal nnkit's under the protocol (its measurement's "
                "heads ran on the same sizes)")
    by_name = {p.name: p for p in a.parts}
    scaled = [(s, by_name[s.name]) for s in specs if s.count and s.name in by_name]
    if not scaled:
        return (f"torchvision's _ops {published:.3f} GMACs vs nnkit {ours:.3f}: no head of this model scales with "
                "a count, so the difference is not one of proposals or detections")
    fixed = a.macs - sum(p.macs for _, p in scaled)
    groups: dict[str, list[tuple[PartSpec, Part]]] = {}
    for s, p in scaled:
        groups.setdefault(s.counts, []).append((s, p))
    kinds = list(groups)
    limits = [groups[k][0][0].count or 0 for k in kinds]
    per = [sum(p.macs for _, p in groups[k]) / (groups[k][0][0].count or 1) for k in kinds]

    def total(counts: tuple[int, ...]) -> float:
        return round((fixed + sum(c * m for c, m in zip(counts, per))) / 1e9, 3)

    found = None
    if len(kinds) == 1:
        found = next(((c,) for c in range(limits[0], -1, -1) if total((c,)) == published), None)
    else:  # proposals first: the largest number of proposals, then the largest number of detections
        found = next(((p, d) for p in range(limits[0], -1, -1) for d in range(min(p, limits[1]), -1, -1)
                      if total((p, d)) == published), None)
    if found is None:
        return (f"torchvision's _ops {published:.3f} GMACs vs nnkit {ours:.3f}: no number of "
                f"{' and '.join(kinds)} up to the model's limits gives torchvision's figure")
    said = ", ".join(f"{c} {k[:-1] if c == 1 else k} (nnkit: {lim}, {per_item / 1e9:.3f} GMACs each)"
                     for c, k, lim, per_item in zip(found, kinds, limits, per) if c != lim)
    return (f"torchvision's _ops {published:.3f} GMACs are nnkit's count with its heads on {said}: torchvision "
            f"measured the COCO weights on one image, where the score thresholds kept that many; nnkit's "
            f"protocol runs the heads on the model's limits ({ours - published:+.3f} GMACs)")


def _torchinfo(t: Any) -> tuple[int, int]:
    """torchinfo's (total params, mult-adds) of the same driven forward, under the same protocol on meta."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import torchinfo

    from nnkit.introspect import meta_copy

    model = meta_copy(t.rebuild()).eval()
    drive = _driver(model, kind(model) or "detection")
    with warnings.catch_warnings(), _largest_mode()():
        warnings.simplefilter("ignore")
        stats = torchinfo.summary(drive, input_data=[torch.empty((1, *t.input), device="meta")], verbose=0,
                                  device="meta", depth=64)
    return stats.total_params, stats.total_mult_adds


def crosscheck(t: Any, info: Any | None) -> Any:
    """nnkit crosscheck for a detector or RAFT: nnkit's protocol count, part by part, torchinfo under the same
    protocol, and torchvision's published figure with the difference explained (explain_difference)."""
    from nnkit.introspect import analyze_model, meta_copy
    from nnkit.errors import first_line
    from nnkit.introspect.backends import Crosscheck, published_figures

    ours = analyze_model(t.rebuild(), t.input, source=t.name, min_input=t.min_input, fields=False, explain=False)
    model = meta_copy(t.rebuild()).eval()
    specs = part_specs(model)
    params: dict[str, int | None] = {"nnkit": ours.params, "fvcore": None}
    macs: dict[str, int | None] = {"nnkit": ours.macs, "fvcore": None}
    diffs = [f"nnkit {p.label}: {p.params:,} params, {p.macs / 1e9:.3f} GMACs" for p in ours.parts]
    diffs.append("fvcore not run: it traces a real forward on the CPU, where the proposals and detections that "
                 "survive the thresholds depend on the weights' values (uninitialised here)"
                 if kind(model) == "detection" else
                 "fvcore not run: it traces a real forward on the CPU (two images, every flow update)")
    try:
        params["torchinfo"], macs["torchinfo"] = _torchinfo(t)
        d = (macs["torchinfo"] or 0) - ours.macs
        if d:
            why = ("it adds biases and norms" if d > 0 else "it misses matmuls written as functions: RAFT's "
                   "correlation volume")
            diffs.append(f"torchinfo mult-adds: {d:+,} (weights times output positions per module: {why})")
        if params["torchinfo"] != ours.params:
            diffs.append(f"torchinfo params: {(params['torchinfo'] or 0) - ours.params:+,}")
    except Exception as exc:  # noqa: BLE001 - one tool failing must not hide the others
        params["torchinfo"] = macs["torchinfo"] = None
        diffs.append(f"torchinfo failed: {type(exc).__name__}: {first_line(exc, 120)}")
    published = published_figures(t, info, ours, params, macs, diffs)
    if published:
        if published[0] == ours.params:
            diffs.append(f"torchvision's num_params {published[0]:,} match nnkit")
        if published[1] is not None:
            diffs.append(explain_difference(ours, specs, published[1]))
    return Crosscheck(t.name, t.input, params, macs, tuple(diffs), ours.parts)
