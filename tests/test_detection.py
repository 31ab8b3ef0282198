"""Detectors and optical flow in the registry, and the analysis protocol of nnkit.introspect.detection (issue 11).

Oracles: torchvision's weights metadata (num_params exactly, _ops in GMACs to 3 decimals, for every weights
enum of the families), and FlopCounterMode over a real CPU forward of the same model with every threshold opened
(score thresholds below every score, NMS at IoU 1.0): the protocol's meta count must be what the model really
computes when nothing is filtered away.
"""

from __future__ import annotations

import math

import pytest

from nnkit.archs import list_archs

pytestmark = pytest.mark.torch

DETECTION = ["fasterrcnn_resnet50_fpn", "fasterrcnn_resnet50_fpn_v2", "fasterrcnn_mobilenet_v3_large_fpn",
             "fasterrcnn_mobilenet_v3_large_320_fpn", "fcos_resnet50_fpn", "retinanet_resnet50_fpn",
             "retinanet_resnet50_fpn_v2", "ssd300_vgg16", "ssdlite320_mobilenet_v3_large", "maskrcnn_resnet50_fpn",
             "maskrcnn_resnet50_fpn_v2", "keypointrcnn_resnet50_fpn"]
FLOW = ["raft_small", "raft_large"]
# torchvision measured these with the COCO weights on one image, where thresholds kept fewer than the limits:
# the counts that give its _ops (nnkit crosscheck finds them), by weights enum
MEASURED_ON = {"maskrcnn_resnet50_fpn": {"COCO_V1": "0 detections"},
               "keypointrcnn_resnet50_fpn": {"COCO_V1": "1 detection ", "COCO_LEGACY": "0 detections"},
               "fasterrcnn_mobilenet_v3_large_fpn": {"COCO_V1": "0 proposals"},
               "fasterrcnn_mobilenet_v3_large_320_fpn": {"COCO_V1": "0 proposals"}}


@pytest.fixture(scope="module")
def analysed():
    """Every new architecture analysed once (detection builders take a while even on meta), with no download
    possible: torch.hub's loader fails the test instead of reaching the network."""
    import torch.hub

    from nnkit.introspect import analyze

    def no_download(*args, **kwargs):
        raise AssertionError(f"download attempted: {args}")

    saved, torch.hub.load_state_dict_from_url = torch.hub.load_state_dict_from_url, no_download
    try:
        return {name: analyze(name, fields=False, explain=False) for name in DETECTION + FLOW}
    finally:
        torch.hub.load_state_dict_from_url = saved


def test_the_new_tasks_are_registered_without_torch():
    import subprocess
    import sys

    assert {a.name for a in list_archs(task="detection")} == set(DETECTION)
    assert [a.name for a in list_archs(task="flow")] == ["raft_large", "raft_small"]
    code = ("import sys; from nnkit.archs import list_archs; list_archs(task='detection'); list_archs(task='flow');"
            "assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_params_and_macs_against_every_weights_enum(analysed):
    """num_params of every weights enum exactly; _ops to 3 decimals where torchvision's image kept the limits,
    and else exactly the counts its figure implies (explain_difference finds them from nnkit's parts)."""
    from torchvision.models import get_model_weights

    from nnkit.archs import get_arch
    from nnkit.introspect.build import build_meta
    from nnkit.introspect.detection import explain_difference, part_specs

    checked = 0
    for name, a in analysed.items():
        arch = get_arch(name)
        assert a.params == arch.params and a.macs == arch.macs, name  # the table is the protocol's count
        specs = part_specs(build_meta(name).eval())
        for weights in get_model_weights(name):
            assert weights.meta["num_params"] == a.params, weights
            said = explain_difference(a, specs, weights.meta["_ops"])
            expected = MEASURED_ON.get(name, {}).get(weights.name)
            if expected is None:
                assert round(a.macs / 1e9, 3) == weights.meta["_ops"], weights
                assert "equal nnkit's" in said
            else:
                assert f"heads on {expected}" in said, (weights, said)
            checked += 1
    assert checked == 21  # 14 architectures, 21 weights enums in torchvision 0.29


def test_parts_add_up_and_name_their_limits(analysed):
    for name, a in analysed.items():
        assert sum(p.params for p in a.parts) == a.params, name
        assert sum(p.macs for p in a.parts) == a.macs, name
        assert sum(r.macs for r in a.layers) == a.macs, name  # the rows as for every model
        assert {"backbone", "neck", "head"} <= {p.role for p in a.parts}, name
    parts = {p.name: p for p in analysed["maskrcnn_resnet50_fpn"].parts}
    assert parts["box head"].runs_on == "1000 proposals" and parts["mask head"].runs_on == "100 detections"
    # the mask head: 4 convs 256->256 3x3 and a 2x2 transposed conv on 14x14, a 1x1 to 91 classes on 28x28
    per = 4 * 256 * 256 * 9 * 14 * 14 + 256 * 256 * 4 * 14 * 14 + 91 * 256 * 28 * 28
    assert parts["mask head"].macs == 100 * per
    assert analysed["maskrcnn_resnet50_fpn"].output == (100, 4)  # detections_per_img boxes
    assert {p.name: p.runs_on for p in analysed["fasterrcnn_mobilenet_v3_large_320_fpn"].parts}["box head"] == \
        "150 proposals"
    raft = {p.name: p for p in analysed["raft_large"].parts}
    assert raft["update block"].runs_on == "12 flow updates"
    h, w = 512 // 8, 512 // 8  # the all-pairs correlation of 256-channel features at 1/8: (HW)^2 * 256
    assert raft["correlation volume"].macs == (h * w) ** 2 * 256
    assert analysed["raft_large"].output == (2, 512, 512)


def _opened(model):
    """Every threshold of a torchvision detector opened: what the protocol assumes of the meta run."""
    rpn, heads = model.rpn, model.roi_heads
    rpn.score_thresh, rpn.min_size, rpn.nms_thresh = -1.0, -1.0, 1.0
    heads.score_thresh, heads.nms_thresh = -1.0, 1.0
    return model


def _real_macs(model, *inputs):
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(*inputs)
    return counter.get_total_flops() // 2


def test_the_protocol_is_what_the_model_computes_with_nothing_filtered():
    """Mask R-CNN (small enough for the CPU: 128x128 images, 20 proposals, 5 detections) run for real with every
    threshold opened computes exactly the MACs nnkit counts on meta, head by head."""
    import torch
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    import nnkit

    torch.manual_seed(0)
    model = _opened(maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, min_size=128, max_size=128,
                                          rpn_post_nms_top_n_test=20, box_detections_per_img=5)).eval()
    a = nnkit.analyze(model, input="3x128x128")
    assert a.macs == _real_macs(model, [torch.rand(3, 128, 128)])
    parts = {p.name: p for p in a.parts}
    assert parts["box head"].runs_on == "20 proposals" and parts["mask head"].runs_on == "5 detections"
    per = 4 * 256 * 256 * 9 * 14 * 14 + 256 * 256 * 4 * 14 * 14 + 91 * 256 * 28 * 28
    assert parts["mask head"].macs == 5 * per


def test_raft_two_images_against_a_real_forward():
    import torch
    from torchvision.models.optical_flow import raft_small

    import nnkit

    model = raft_small(weights=None).eval()
    a = nnkit.analyze(model, input=["3x128x128", "3x128x128"])
    images = torch.rand(2, 1, 3, 128, 128)
    assert a.macs == _real_macs(model, images[0], images[1])
    assert a.params == sum(p.numel() for p in model.parameters())
    from nnkit.errors import GeometryError, UsageError
    from nnkit.introspect import detection

    with pytest.raises(UsageError, match="RAFT takes two images"):  # one image is one input too few
        nnkit.analyze(model, input="3x128x128")

    same = detection.analyze(model, (3, 128, 128), source="raft", second=(3, 128, 128), fields=False)
    assert same.macs == a.macs
    with pytest.raises(GeometryError, match="raft on 3x128x128 and 3x128x136: the model .RAFT.: input images "
                                            "should have the same shape"):
        detection.analyze(model, (3, 128, 128), source="raft", second=(3, 128, 136), fields=False)


def test_num_classes_and_what_does_not_apply(nnkit):
    five = nnkit("params", "fasterrcnn_resnet50_fpn", "--num-classes", "5", "-f", "json").json()
    full = nnkit("params", "fasterrcnn_resnet50_fpn", "-f", "json").json()
    assert full["total"] - five["total"] == (91 - 5) * (1024 + 1) * 5  # cls_score 1024->C, bbox_pred 1024->4C
    bad = nnkit("params", "raft_small", "--num-classes", "5")
    assert bad.code == 2 and "raft_small does not take --num-classes (it takes no options)" in bad.err
    small = nnkit("flops", "raft_large", "--input", "3x436x1024", "--input", "3x436x1024")
    assert small.code != 0 and len(small.err.strip().splitlines()) == 1
    assert "H and W should be divisible by 8" in small.err and "4096" not in small.err


def test_views_show_the_parts(nnkit):
    for view in ("shape", "params", "flops", "summary"):
        run = nnkit(view, "ssdlite320_mobilenet_v3_large", "--depth", "1", "-f", "json")
        assert run.code == 0, run
        doc = run.json()
        assert [p["role"] for p in doc["parts"]] == ["transform", "backbone", "neck", "head"]
        assert any("protocol for detectors and flow models" in n for n in doc["notes"])
        if view in ("flops", "summary"):
            assert sum(p["macs"] for p in doc["parts"]) == doc["macs"]
        if view in ("params", "summary"):
            assert sum(p["params"] for p in doc["parts"]) == doc["total"]
    table = nnkit("flops", "ssdlite320_mobilenet_v3_large", "--depth", "1", "-f", "table")
    assert "neck: extra feature layers" in table.out and "head: classification and box regression" in table.out
    explained = nnkit("flops", "ssdlite320_mobilenet_v3_large", "--depth", "1", "--explain", "-f", "json").json()
    assert any(n.startswith("protocol: nonzero and boolean masks keep every element") for n in explained["notes"])


def test_crosscheck_of_raft_matches_torchvision(nnkit):
    doc = nnkit("crosscheck", "raft_small", "-f", "json").json()
    assert doc["macs"]["torchvision"] == 47_655_000_000 and round(doc["macs"]["nnkit"] / 1e9, 3) == 47.655
    assert [p["name"] for p in doc["parts"]] == ["feature encoder", "context encoder", "correlation volume",
                                                 "update block"]
    assert any("equal nnkit's under the protocol" in d for d in doc["differences"])


def test_crosscheck_puts_torchvision_beside_and_explains(nnkit):
    run = nnkit("crosscheck", "fasterrcnn_mobilenet_v3_large_320_fpn", "-f", "json")
    assert run.code == 0, run
    doc = run.json()
    assert doc["params"]["torchvision"] == doc["params"]["nnkit"] == 19_386_354
    assert doc["macs"]["torchvision"] == 719_000_000
    said = " ".join(doc["differences"])
    assert "heads on 0 proposals (nnkit: 150" in said and "nnkit head: box head (150 proposals)" in said
    assert sum(p["macs"] for p in doc["parts"]) == doc["macs"]["nnkit"]
    assert doc["params"]["torchinfo"] == doc["params"]["nnkit"]
    assert math.isclose(doc["macs"]["torchinfo"], doc["macs"]["nnkit"], rel_tol=0.01)  # plus biases and norms


def test_a_torchvision_builder_as_a_user_target_downloads_nothing(nnkit, monkeypatch):
    import torch.hub

    def no_download(*args, **kwargs):
        raise AssertionError(f"download attempted: {args}")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    run = nnkit("params", "torchvision.models.detection:fasterrcnn_mobilenet_v3_large_320_fpn", "--input",
                "3x320x320", "-f", "json")
    assert run.code == 0, run
    # built as written (trainable BatchNorm2d in the backbone: the layout without weights), not the registry's
    assert run.json()["total"] == 19_386_354 + 24_400


def test_depth_0_of_a_model_driven_part_by_part_shows_its_parts(nnkit):
    """R-CNN runs its parts without a call at the root: --depth 0 folds at them instead of showing no row and
    every parameter as never called."""
    run = nnkit("params", "fasterrcnn_mobilenet_v3_large_320_fpn", "--depth", "0", "-f", "json")
    assert run.code == 0, run
    doc = run.json()
    assert [r["spec"] for r in doc["layers"]] == ["transform", "backbone", "rpn", "roi_heads"]
    assert sum(r["params"] for r in doc["layers"]) == doc["total"]
    assert not any("never calls" in n for n in doc["notes"])


def test_raft_names_both_images_and_the_smallest_size_only_when_size_is_the_cause(nnkit):
    differ = nnkit("flops", "raft_small", "--input", "3x128x128", "--input", "3x64x64")
    assert differ.code == 1 and "raft_small on 3x128x128 and 3x64x64:" in differ.err, differ
    assert "same shape" in differ.err and "at least" not in differ.err
    small = nnkit("flops", "raft_small", "--input", "3x64x64", "--input", "3x64x64")
    assert small.code == 1 and small.err.rstrip().endswith("it takes at least 3x128x128"), small
