"""Analysis leaves torch alone (issue 12): what it does is scoped to its call and its thread by construction
(torch's modes, which are per thread; hooks on the model's own modules, removed afterwards), never an attribute
of torch, so other threads' work is untouched. Oracles: the same training run alone, torch's own kernels."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.torch


def _train(steps: int = 12) -> dict:
    """A small CNN trained with SGD on fixed data, from a fixed seed: its state after `steps` steps."""
    import torch
    from torch import nn

    data = torch.Generator().manual_seed(1)
    x = torch.rand(16, 3, 16, 16, generator=data)
    y = torch.randint(0, 4, (16,), generator=data)
    torch.manual_seed(0)  # the model's initialisation draws from torch's default generator
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, groups=8),
                          nn.Hardswish(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_training_in_one_thread_is_bit_for_bit_the_same_while_analyses_run_in_others():
    """Training alone, then the same training while three threads keep analysing: building on meta (both
    ways: RegNet's builder computes with torch), tracing with fields, dwsep, the memory estimate's attention
    mode. The weights, BatchNorm statistics included, are bit-for-bit equal."""
    import threading

    import torch

    from nnkit.introspect import analyze
    from nnkit.introspect.build import on_meta
    from nnkit.introspect.dwsep import compare
    from nnkit.introspect.memory import saved_activation_bytes
    from nnkit.introspect.target import resolve

    alone: list[dict] = []
    t = threading.Thread(target=lambda: alone.append(_train()))
    t.start()
    t.join()

    stop = threading.Event()
    done: list[str] = []
    errors: list[BaseException] = []

    def analyses(jobs):
        try:
            while not stop.is_set():
                for job in jobs:
                    done.append(job())
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    def vit_memory() -> str:
        from torchvision.models import VisionTransformer

        model = on_meta(lambda: VisionTransformer(32, 8, 2, 2, 32, 64, num_classes=4))
        return f"memory {saved_activation_bytes(model, (3, 32, 32))}"

    def dwsep() -> str:
        target = resolve("mobilenet_v2", input=None, num_classes=None, in_channels=None, width=None)
        return f"dwsep {compare(target).separable.macs}"

    workers = [threading.Thread(target=analyses, args=(jobs,)) for jobs in (
        [lambda: f"resnet18 {analyze('resnet18', explain=False).macs}"],
        [lambda: f"regnet {analyze('regnet_y_400mf', fields=False).macs}", dwsep],
        [vit_memory])]
    for w in workers:
        w.start()
    while len(done) < 3 and not errors:  # every kind has started before the training does
        threading.Event().wait(0.05)
    during: list[dict] = []
    t = threading.Thread(target=lambda: during.append(_train()))
    t.start()
    t.join()
    ran = len(done)
    stop.set()
    for w in workers:
        w.join()
    assert not errors, errors
    assert ran >= 3 and len(set(done)) == 4, set(done)  # each analysis gives the same answer every time
    assert alone[0].keys() == during[0].keys()
    assert all(torch.equal(alone[0][k], during[0][k]) for k in alone[0]), \
        [k for k in alone[0] if not torch.equal(alone[0][k], during[0][k])]


def test_no_attribute_of_torch_is_set_while_a_model_is_built_or_analysed():
    """Seen from inside: a builder and a forward pass find torch's classes, torch.nn.init, torch.nn.functional
    and torch's device context exactly as outside (torch.device("meta") would set a process-wide
    torch.utils._device.CURRENT_DEVICE)."""
    import torch
    import torch.nn.functional as F
    import torch.utils._device as device_module
    from torch import nn
    from torch.nn import init

    from nnkit.introspect import analyze_model
    from nnkit.introspect.build import on_meta
    from nnkit.introspect.dwsep import convolutions
    from nnkit.introspect.memory import saved_activation_bytes

    owners = (nn.Module, nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.Linear, init, F, device_module, torch.Tensor)

    def state() -> list[dict]:
        return [dict(vars(o)) for o in owners]

    outside = state()
    seen: list[list[dict]] = []

    class Net(nn.Module):
        def __init__(self, computed: bool = False) -> None:
            super().__init__()
            seen.append(state())
            width = int(sum(torch.tensor([3.0, 5.0]).tolist())) if computed else 8  # on_meta's second way
            self.conv, self.bn, self.fc = nn.Conv2d(3, width, 3), nn.BatchNorm2d(width), nn.Linear(width, 2)

        def forward(self, x):
            seen.append(state())
            return self.fc(torch.relu(self.bn(self.conv(x))).mean((2, 3)))

    for computed in (False, True):
        model = on_meta(lambda computed=computed: Net(computed))
        assert all(p.is_meta for p in model.parameters())
        analyze_model(model, (3, 16, 16), source="net")
        convolutions(model, (3, 16, 16), "net")
        saved_activation_bytes(model, (3, 16, 16))
    assert len(seen) == 3 + 6 and all(s == outside for s in seen)  # builds (the second twice), forwards
    assert state() == outside


def test_copies_made_while_the_model_runs_lose_the_tracers_hooks():
    """A copy the forward makes (an EMA or teacher copy) carries the hooks on the model's modules as they are
    then: they leave it at its first call, during the analysis or after, and never record it."""
    import copy

    import torch
    from torch import nn

    from nnkit.introspect import analyze_model

    class Teacher(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
            self.ema = self.kept = None

        def forward(self, x):
            if self.ema is None:
                self.ema, self.kept = copy.deepcopy(self.body), copy.deepcopy(self.body)
            return self.ema(x) + self.body(x)

    model = Teacher().to("meta")
    a = analyze_model(model, (3, 16, 16), source="t")
    assert [r.spec for r in a.layers] == ["(Teacher)", "body.0", "body.1"]

    def hooks(m):
        return [h for sub in m.modules() for h in (sub._forward_hooks, sub._forward_pre_hooks,
                                                   sub._forward_hooks_always_called) if h]

    assert not hooks(model.ema) and not hooks(model.body)
    out = model.kept(torch.empty(1, 3, 16, 16, device="meta"))  # kept, never called during the analysis
    assert out.shape == (1, 4, 14, 14) and not hooks(model.kept)


def test_a_thread_pool_is_noted_but_another_analysis_of_the_same_model_is_not():
    import threading

    from torch import nn

    from nnkit.introspect import analyze_model

    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3)).to("meta")
    notes: list[tuple[str, ...]] = []

    def analyse():
        for _ in range(20):
            notes.append(analyze_model(model, (3, 32, 32), source="m").notes)

    threads = [threading.Thread(target=analyse) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(notes) == 60 and not any(notes)


SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(op=st.sampled_from(["relu", "hardtanh", "leaky_relu", "elu", "gelu", "silu", "mish", "hardswish",
                           "hardsigmoid", "sigmoid", "tanh", "batch_norm", "batch_norm_eval", "layer_norm",
                           "group_norm"]),
       inplace=st.booleans(), dims=st.lists(st.integers(1, 5), min_size=4, max_size=4),
       dtype=st.sampled_from(["float32", "bfloat16", "int64"]), layout=st.sampled_from(["plain", "transposed"]),
       affine=st.booleans(), training=st.booleans(), k=st.integers(1, 3), groups=st.integers(1, 4))
def test_activation_and_norm_shortcuts_equal_torchs_meta_kernels(op, inplace, dims, dtype, layout, affine,
                                                                  training, k, groups):
    """The tracer answers activations and norms itself (their meta kernels are Python decompositions): every
    output's shape, dtype and strides equal torch's meta kernel's, in-place ones return their input, and
    anything else (other dtypes, other layouts, wrong shapes) is declined to torch, errors included."""
    import torch

    from nnkit.introspect.trace import _shortcuts

    aten = torch.ops.aten
    dt = getattr(torch, dtype)
    x = torch.empty(*dims, device="meta", dtype=dt)
    if layout == "transposed":
        x = x.transpose(1, 3)
    c = x.shape[1]

    def vec(n):
        return torch.empty(n, device="meta") if affine else None

    if op in ("batch_norm", "batch_norm_eval"):
        w, stats = vec(c if k == 1 else c + 1), torch.empty(c, device="meta")
        func = aten.native_batch_norm.default if op == "batch_norm" else \
            aten._native_batch_norm_legit_no_training.default
        args = (x, w, w, stats, stats, *([training] if op == "batch_norm" else []), 0.1, 1e-5)
    elif op == "layer_norm":
        normalized = list(x.shape[-k:]) if groups != 4 else [x.shape[-1] + 1]  # now and then a wrong shape
        w = torch.empty(normalized, device="meta") if affine else None
        func, args = aten.native_layer_norm.default, (x, normalized, w, w, 1e-5)
    elif op == "group_norm":
        n, hw = x.shape[0], x.numel() // (x.shape[0] * c)
        func, args = aten.native_group_norm.default, (x, vec(c), vec(c), n, c, hw, groups, 1e-5)
    else:
        func = getattr(aten, op + ("_" if inplace else "")).default
        args = {"hardtanh": (x, 0.0, 6.0), "leaky_relu": (x, 0.2), "elu": (x, 1.0, 1.0, 1.0)}.get(op, (x,))
    ours = _shortcuts()[func](args)
    try:
        theirs = func(*args)
    except Exception:  # noqa: BLE001 - torch refuses: the shortcut must have declined
        assert ours is None
        return
    assume(ours is not None)  # a declined valid case is allowed: torch's kernel answers it
    out, counted, macs = ours
    assert counted is None and macs == 0
    outs, expected = (out, theirs) if isinstance(theirs, tuple) else ((out,), (theirs,))
    assert [(t.shape, t.stride(), t.dtype, t.device.type) for t in outs] == \
        [(t.shape, t.stride(), t.dtype, t.device.type) for t in expected]
    if func._schema.is_mutable:
        assert out is args[0]


def test_a_submodule_analysed_inside_the_models_forward_gets_its_own_rows_and_macs():
    """Traces nest: the inner one records its own calls (with the patches, its MACs were 0), the outer one
    neither records them nor counts them."""
    from torch import nn

    from nnkit.introspect import analyze_model

    inner = []

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()), nn.Conv2d(4, 2, 1)

        def forward(self, x):
            inner.append(analyze_model(self.a, (3, 8, 8), source="a"))
            return self.b(self.a(x))

    outer = analyze_model(Net(), (3, 16, 16), source="net")
    assert [(r.spec, r.macs) for r in outer.layers] == [("a.0", 4 * 27 * 14 * 14), ("a.1", 0), ("b", 2 * 4 * 14 * 14)]
    assert [(r.spec, r.macs) for r in inner[0].layers] == [("0", 4 * 27 * 6 * 6), ("1", 0)]
