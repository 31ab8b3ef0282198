"""The result objects every analysis returns: chains (nnkit.core) and models (nnkit.introspect) alike.

They are frozen and hold numbers only; nnkit.render turns them into tables, JSON, CSV and TSV.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from fractions import Fraction

Shape = tuple[int, ...]
Pair = tuple[int, ...]  # one number per spatial axis: (l,), (h, w) or (d, h, w)


@dataclass(frozen=True)
class Field:
    """Receptive field of one layer's output, per spatial axis ((l,), (h, w) or (d, h, w)), relative to the
    input.

    Araujo, Norris & Sim, "Computing Receptive Fields of Convolutional Neural Networks", Distill 2019:
    size r, effective stride S and effective padding P, so that output position i sees input
    positions [i*S - P, i*S - P + r - 1]. After upsampling (nnkit.core.layers.AxisMap) S may be a fraction, r is
    the largest field over output positions and P is minus the first input position output 0 reads.
    """

    size: Pair
    stride: tuple[int | Fraction, ...]  # a Fraction only after upsampling (1/2 after a x2 upsampling)
    padding: tuple[int | Fraction, ...]


class Topic(str, Enum):
    """What a worked formula is about, so that each view shows only its own (shape, params, flops, rf)."""

    shape = "shape"
    params = "params"
    macs = "macs"
    rf = "rf"


@dataclass(frozen=True)
class Formula:
    topic: Topic
    text: str  # "H, W: (32 - 5 + 2*2)/1 + 1 = 32", "params: 10*5*5*3 + 10 = 760", ...


@dataclass(frozen=True)
class LayerReport:
    index: int
    spec: str  # the layer as the user wrote it (chains) or its module path (models)
    kind: str  # "conv", "maxpool", ... for chains; the module class ("Conv2d") for models
    input: Shape | None
    output: Shape | None
    params: int = 0
    trainable: int = 0
    macs: int = 0
    rf: Field | None = None  # None where no spatial field is defined (see rf_global)
    rf_global: bool = False  # the output depends on the whole input (fc, flatten, global pooling)
    activation_bytes: int = 0  # bytes of this layer's output for one item (float32 unless stated)
    depth: int = 0  # nesting depth of a module path; 0 for chain layers
    explain: tuple[Formula, ...] = ()  # formulas with the numbers put in, one line each
    notes: tuple[str, ...] = ()  # things worth knowing: rows the last window leaves out, ...

    @property
    def flops(self) -> int:
        return 2 * self.macs  # docs/conventions.md: FLOPs = 2 x MACs


@dataclass(frozen=True)
class Part:
    """One stage of a detector or optical-flow model (nnkit.introspect.detection): the modules it is made of,
    with the parameters and MACs of exactly those modules, so that the parts add up to the model's totals."""

    name: str  # "backbone", "neck (FPN)", "box head", ...
    role: str  # transform, backbone, neck or head
    modules: tuple[str, ...]  # module paths (each module belongs to the part with its longest matching path)
    params: int
    macs: int
    runs_on: str = ""  # what the part's MACs were counted on, e.g. "1000 proposals", "12 flow updates"

    @property
    def label(self) -> str:
        """'head: box head (1000 proposals)', 'backbone', 'neck: FPN'."""
        label = self.name if self.role in (self.name, "other") else f"{self.role}: {self.name}"
        return label + (f" ({self.runs_on})" if self.runs_on else "")


@dataclass(frozen=True)
class Analysis:
    """One network (a chain or a model) analysed layer by layer.

    Totals are stored, not summed from `layers`: a model's rows may nest (depth), and a tensor shared by
    two layers counts once in `params`.
    """

    source: str
    input: Shape
    output: Shape
    layers: tuple[LayerReport, ...]
    params: int
    trainable: int
    macs: int
    batch: int | None = None  # N when the user gave NxCxHxW; shapes above exclude it
    rf: Field | None = None  # field of the last layer with a spatial field
    rf_at: str | None = None  # which layer that is
    rf_global: bool = False  # the final output depends on the whole input
    notes: tuple[str, ...] = field(default=())
    rf_notes: tuple[str, ...] = field(default=())  # remarks about receptive fields, shown by rf and summary
    parts: tuple[Part, ...] = field(default=())  # detectors and flow models: backbone, neck and heads
    chain: bool = False  # a chain in the layer language (rows are its layers), not a built model (module paths)

    @property
    def flops(self) -> int:
        return 2 * self.macs
