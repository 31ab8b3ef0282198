"""What training holds in memory: parameters, gradients, optimizer state and the activations autograd saves.

Activations are measured, not guessed: one forward pass in training mode on the meta device with
torch.autograd.graph.saved_tensors_hooks records every tensor saved for backward, counted once per storage
(a ReLU's output saved by the ReLU and by the next conv is one tensor; views share their base's storage),
parameters excluded. Attention saves what its kernel keeps: on the meta device F.scaled_dot_product_attention
would take the math path, which saves every attention matrix (B x heads x L x L); training on a CPU or a GPU
runs a fused kernel (flash, memory-efficient) that saves only q, k, v, the output and a logsumexp. The estimate
routes unmasked attention through the fused kernel's autograd formula, as training does (ViT-B/16 at batch 8:
+11.5% over the measured peak with the math path, see BENCHMARKS.md). The estimate is per item; the fixed part
(weights, gradients, state) is per model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nnkit.core.optim import STATE_PER_PARAM, Optimizer




@dataclass(frozen=True)
class Memory:
    batch: int
    optimizer: str
    params_bytes: int
    grads_bytes: int
    optimizer_bytes: int
    saved_bytes_per_item: int  # activations autograd keeps for backward, for one item
    amp: bool = False
    amp_weights_bytes: int = 0  # --amp: the 16-bit copies of the weights autocast makes and backward keeps

    @property
    def fixed(self) -> int:
        """What does not grow with the batch."""
        return self.params_bytes + self.grads_bytes + self.optimizer_bytes + self.amp_weights_bytes

    @property
    def total(self) -> int:
        return self.fixed + self.batch * self.saved_bytes_per_item


# The estimate against the measured peak of a real training step (BENCHMARKS.md, "Training-memory estimate"):
# fp32 on a CPU, seven torchvision models at batch 8 and 32, always under, by 0.2-5.1%.
KNOWN_ERROR = (-0.051, -0.002)
# --amp against the measured peak of a real step under torch.autocast(bfloat16) (BENCHMARKS.md, issue 13): CPU,
# resnet18, resnet50, mobilenet_v2 and vit_b_16 at batch 8, always under, by 1.6-5.9% (ViT's LayerNorm and
# softmax stay float32 under autocast, the estimate counts them at 16 bits).
AMP_ERROR = (-0.059, -0.016)


@dataclass(frozen=True)
class Fit:
    """The largest batch whose estimated training memory fits a budget (the inverse of `estimate`)."""

    memory_bytes: int
    batch: int  # 0: not even one item fits
    estimate: Memory  # at that batch (at batch 1 when none fits)
    error: str  # the estimate's known error, in words


def saved_activation_bytes(model: Any, shape: tuple[int, ...], batch: int = 2, dtype: Any = None) -> int:
    """Bytes autograd saves for backward on one item (measured at `batch` items and divided).

    dtype (--amp: torch.bfloat16): the forward runs in that precision throughout. Autocast itself does not act on
    meta tensors; this is its effect on the conv and linear outputs that dominate, while the operations autocast
    keeps in float32 (softmax, layer_norm, the loss) are counted at 16 bits too (see AMP_ERROR)."""
    import copy

    import torch

    from nnkit.introspect import meta_walk, training_flags
    from nnkit.introspect.build import walk

    model, named = meta_walk(model)
    if dtype is not None:
        model = copy.deepcopy(model).to(dtype)  # a copy: the caller's model keeps float32
        named = walk(model)
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

    with training_flags(model, named, True), _fused_attention(), \
            torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        if hasattr(shape, "tensors"):  # nnkit.introspect.inputs.Inputs: several inputs, ids, masks
            args, kwargs = shape.tensors(batch, "meta")
            if dtype is not None:  # as autocast would: floating inputs only
                args = tuple(a.to(dtype) if a.is_floating_point() else a for a in args)
                kwargs = {k: a.to(dtype) if a.is_floating_point() else a for k, a in kwargs.items()}
            model(*args, **kwargs)
        else:
            model(torch.empty((batch, *shape), device="meta", dtype=dtype, requires_grad=False))
    return sum(saved.values()) // batch


def _fused_attention() -> Any:
    """A TorchFunctionMode (thread-local) in which F.scaled_dot_product_attention runs as the fused CPU kernel
    (aten._scaled_dot_product_flash_attention_for_cpu, which has a meta kernel) where torch would pick it on a
    CPU (no mask, no dropout, q, k and v of one shape), so that autograd saves what a fused kernel saves; other
    calls keep the math path. A mode sees the call through any name (code that imported the function by name
    too). nn.MultiheadAttention's multi_head_attention_forward hands itself to the mode whole, and torch takes
    the mode off while the mode handles a call, so the attention it calls inside would not reach it: it runs as
    a copy of the function of our own whose global name scaled_dot_product_attention is ours (torch's stays).
    """
    import types

    import torch
    import torch.nn.functional as F
    from torch.overrides import TorchFunctionMode

    flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu.default  # noqa: SLF001
    sdpa = F.scaled_dot_product_attention
    mha = F.multi_head_attention_forward

    def fused(query: Any, key: Any, value: Any, attn_mask: Any = None, dropout_p: float = 0.0,
              is_causal: bool = False, scale: float | None = None, enable_gqa: bool = False) -> Any:
        # torch's own CPU choice takes the fused kernel only for this case; the rest keeps the math path
        if attn_mask is None and not enable_gqa and not dropout_p and query.dim() == 4 and \
                query.shape[:-2] == key.shape[:-2] == value.shape[:-2] and value.shape[-1] == query.shape[-1]:
            return flash(query, key, value, dropout_p, is_causal, scale=scale)[0]
        return sdpa(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale,
                    enable_gqa=enable_gqa)

    ours = types.FunctionType(mha.__code__, {**mha.__globals__, "scaled_dot_product_attention": fused},
                              mha.__name__, mha.__defaults__, mha.__closure__)
    ours.__kwdefaults__ = mha.__kwdefaults__

    class Fused(TorchFunctionMode):
        def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            kwargs = kwargs or {}
            if func is sdpa:
                return fused(*args, **kwargs)
            if func is mha:
                return ours(*args, **kwargs)
            return func(*args, **kwargs)

    return Fused()


def estimate(model: Any, shape: tuple[int, ...], *, batch: int, optimizer: Optimizer, amp: bool = False) -> Memory:
    """Training memory at `batch`: weights, gradients and optimizer state of the trainable parameters (frozen
    ones hold neither), and the activations saved for backward (none before the first trainable layer)."""
    import torch

    unique = {id(p): p for p in model.parameters()}.values()
    p_bytes = sum(p.numel() * p.element_size() for p in unique)
    g_bytes = sum(p.numel() * p.element_size() for p in unique if p.requires_grad)
    half = sum(p.numel() * 2 for p in unique if p.is_floating_point()) if amp else 0
    return Memory(batch=batch, optimizer=optimizer.value, params_bytes=p_bytes, grads_bytes=g_bytes,
                  optimizer_bytes=STATE_PER_PARAM[optimizer] * g_bytes,
                  saved_bytes_per_item=saved_activation_bytes(model, shape, dtype=torch.bfloat16 if amp else None),
                  amp=amp, amp_weights_bytes=half)


def _error(amp: bool) -> str:
    lo, hi = KNOWN_ERROR
    text = (f"the estimate has been {-hi:.1%}-{-lo:.1%} under the measured peak of a real float32 step "
            "(BENCHMARKS.md; CUDA adds its allocator's rounding and cuDNN workspaces), so leave some headroom")
    if amp:
        text += f"; with --amp {-AMP_ERROR[1]:.1%}-{-AMP_ERROR[0]:.1%} under (CPU, batch 8)"
    return text


def largest_batch(model: Any, shape: tuple[int, ...], *, memory: int, optimizer: Optimizer,
                  amp: bool = False) -> Fit:
    """The inverse of estimate(): the largest batch B with fixed + B x saved-per-item <= memory. Saved
    activations grow linearly with the batch (measured per item), so this is one division, not a search."""
    one = estimate(model, shape, batch=1, optimizer=optimizer, amp=amp)
    room = memory - one.fixed
    batch = max(0, room // one.saved_bytes_per_item) if one.saved_bytes_per_item else (1 << 31 if room >= 0 else 0)
    est = one if batch == 0 else Memory(**{**vars(one), "batch": int(batch)})
    return Fit(memory_bytes=memory, batch=int(batch), estimate=est, error=_error(amp))


def estimate_target(target: Any, input: str | None, *, batch: int | None, optimizer: Optimizer,
                    num_classes: int | None = None, in_channels: int | None = None,
                    width: float | None = None, amp: bool = False) -> Memory:
    """estimate() for an architecture name, file.py:Class or a live nn.Module (which stays as it is)."""
    from nnkit.introspect.target import module_target, resolve

    if isinstance(target, str):
        t = resolve(target, input=input, num_classes=num_classes, in_channels=in_channels, width=width)
    else:
        t = module_target(target, input)
    return estimate(t.model, t.given, batch=batch if batch is not None else (t.batch or 1), optimizer=optimizer,
                    amp=amp)
