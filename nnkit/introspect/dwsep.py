"""The convolutions of a traced model, for nnkit.core.dwsep's whole-network comparison (`nnkit dwsep ARCH`)."""

from __future__ import annotations

from typing import Any

from nnkit.core.dwsep import ConvLayer, NetworkComparison, compare_network


def convolutions(model: Any, shape: tuple[int, ...], source: str, *, min_input: tuple[int, int] | None = None,
                 rebuild: Any = None) -> tuple[list[ConvLayer], Any]:
    """Every call of an nn.Conv2d in execution order, with the trace (totals) it came from."""
    from torch import nn

    from nnkit.introspect import _on_meta, inference_mode_flags, smallest_input, trace

    model, named = _on_meta(model)
    modules = dict(named)
    with inference_mode_flags(model, named):
        try:
            tr = trace.run(model, shape, source, fields=False, named=named)
        except trace._Failure as failure:  # noqa: SLF001
            smallest = min_input or smallest_input(rebuild or (lambda: model), shape)
            raise trace.failure_message(source, shape, failure, smallest) from None
    convs = []
    for c in tr.calls:
        m = modules[c.path]
        if isinstance(m, nn.Conv2d) and c.output is not None and len(c.output) == 3:
            convs.append(ConvLayer(path=c.path, cin=m.in_channels, cout=m.out_channels, kernel=tuple(m.kernel_size),
                                   stride=tuple(m.stride), groups=m.groups, bias=m.bias is not None,
                                   input=c.input, output=c.output,
                                   params=sum(p.numel() for p in m.parameters()), macs=c.macs))
    return convs, tr


def compare(target: Any) -> NetworkComparison:
    """target: a resolved nnkit.introspect.target.Target."""
    convs, tr = convolutions(target.model, target.input, target.name, min_input=target.min_input,
                             rebuild=target.rebuild)
    params = sum({id(p): p.numel() for p in target.model.parameters()}.values())
    return compare_network(target.name, target.input, params, tr.macs, convs)
