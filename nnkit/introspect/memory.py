"""What training holds in memory: parameters, gradients, optimizer state and the activations autograd saves.

Activations are measured, not guessed: one forward pass in training mode on the meta device with
torch.autograd.graph.saved_tensors_hooks records every tensor saved for backward, counted once per storage
(a ReLU's output saved by the ReLU and by the next conv is one tensor; views share their base's storage),
parameters excluded. Attention saves what its kernel keeps: on the meta device F.scaled_dot_product_attention
would take the math path, which saves every attention matrix (B x heads x L x L); training on a CPU or a GPU
runs a fused kernel (flash, memory-efficient) that saves only q, k, v, the output and a logsumexp. The
estimate routes unmasked attention through the fused kernel's autograd formula, as training does (ViT-B/16 at
batch 8: +11.5% over the measured peak with the math path, see BENCHMARKS.md). The estimate is per item; the
fixed part (weights, gradients, state) is per model.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from typing import Any


class Optimizer(str, Enum):
    sgd = "sgd"  # with momentum: one buffer per parameter (plain SGD holds none)
    adam = "adam"  # exp_avg and exp_avg_sq
    adamw = "adamw"


STATE_PER_PARAM = {Optimizer.sgd: 1, Optimizer.adam: 2, Optimizer.adamw: 2}


@dataclass(frozen=True)
class Memory:
    batch: int
    optimizer: str
    params_bytes: int
    grads_bytes: int
    optimizer_bytes: int
    saved_bytes_per_item: int  # activations autograd keeps for backward, for one item

    @property
    def total(self) -> int:
        return self.params_bytes + self.grads_bytes + self.optimizer_bytes \
            + self.batch * self.saved_bytes_per_item


def saved_activation_bytes(model: Any, shape: tuple[int, ...], batch: int = 2) -> int:
    """Bytes autograd saves for backward on one item (measured at `batch` items and divided)."""
    import torch

    from nnkit.introspect import _on_meta, training_flags
    from nnkit.introspect.build import PATCHING

    model, named = _on_meta(model)
    # The StorageImpl's address identifies a storage on the meta device too, where data_ptr() is always 0.
    params = {p.untyped_storage()._cdata for p in model.parameters()}  # noqa: SLF001
    saved: dict[int, int] = {}
    keep: list[Any] = []  # alive until counted, so no address is reused

    def pack(t: Any) -> Any:
        storage = t.untyped_storage()
        if storage._cdata not in params:  # noqa: SLF001
            saved[storage._cdata] = storage.nbytes()  # noqa: SLF001
            keep.append(t)
        return t

    with PATCHING, training_flags(model, named, True), _fused_attention(), \
            torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(torch.empty((batch, *shape), device="meta", requires_grad=False))
    return sum(saved.values()) // batch


@contextlib.contextmanager
def _fused_attention() -> Iterator[None]:
    """F.scaled_dot_product_attention runs as the fused CPU kernel
    (aten._scaled_dot_product_flash_attention_for_cpu, which has a meta kernel) where torch would pick it on a
    CPU (no mask, no dropout, q, k and v of one shape), so that autograd saves what a fused kernel saves;
    other calls keep the math path. Patched as a module attribute, like build._no_init: a torch function mode
    would not see the call nn.MultiheadAttention makes inside multi_head_attention_forward. Code that imported
    scaled_dot_product_attention by name before the estimate keeps the math path, and its estimate counts the
    attention matrices (an overestimate).
    """
    import torch
    import torch.nn.functional as F

    from nnkit.introspect.build import replaced, this_thread

    flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu.default  # noqa: SLF001
    sdpa = F.scaled_dot_product_attention

    def fused(query: Any, key: Any, value: Any, attn_mask: Any = None, dropout_p: float = 0.0,
              is_causal: bool = False, scale: float | None = None, enable_gqa: bool = False) -> Any:
        # torch's own CPU choice takes the fused kernel only for this case; the rest keeps the math path, and
        # so do other threads' calls
        if threading.get_ident() == scope.thread and attn_mask is None and not enable_gqa and not dropout_p \
                and query.dim() == 4 and query.shape[:-2] == key.shape[:-2] == value.shape[:-2] \
                and value.shape[-1] == query.shape[-1]:
            return flash(query, key, value, dropout_p, is_causal, scale=scale)[0]
        return sdpa(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal,
                    scale=scale,
                    enable_gqa=enable_gqa)

    with this_thread() as scope, replaced(F, "scaled_dot_product_attention", fused):
        yield


def estimate(model: Any, shape: tuple[int, ...], *, batch: int, optimizer: Optimizer) -> Memory:
    unique = {id(p): p for p in model.parameters()}.values()
    p_bytes = sum(p.numel() * p.element_size() for p in unique)
    g_bytes = sum(p.numel() * p.element_size() for p in unique if p.requires_grad)
    return Memory(batch=batch, optimizer=optimizer.value, params_bytes=p_bytes, grads_bytes=g_bytes,
                  optimizer_bytes=STATE_PER_PARAM[optimizer] * g_bytes,
                  saved_bytes_per_item=saved_activation_bytes(model, shape))


def estimate_target(target: Any, input: str | None, *, batch: int | None, optimizer: Optimizer,
                    num_classes: int | None = None, in_channels: int | None = None,
                    width: float | None = None) -> Memory:
    """estimate() for an architecture name, file.py:Class or a live nn.Module (which stays as it is)."""
    from nnkit.introspect.target import module_target, resolve

    if isinstance(target, str):
        t = resolve(target, input=input, num_classes=num_classes, in_channels=in_channels, width=width)
    else:
        t = module_target(target, input)
    return estimate(t.model, t.input, batch=batch if batch is not None else (t.batch or 1),
                    optimizer=optimizer)
