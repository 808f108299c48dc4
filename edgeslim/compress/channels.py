"""Channel (structured) pruning: remove whole filters, so every runtime feels it.

Magnitude pruning leaves zeros that only a sparse kernel can skip; removing a
filter makes the model itself smaller: fewer parameters, MACs, activation bytes
and file bytes on any runtime. TFMOT has no such thing for Keras (NNI and
Torch-Pruning do it for PyTorch with a dependency graph); this module is ours.

The steps, each a function usable on its own:

* ``channel_groups``: which channels must go together. A *group* starts at a
  producer (Conv, Dense, SeparableConv2D: its filters/units), flows through
  layers that keep the channel axis (BatchNormalization, DepthwiseConv2D,
  activations, pooling, padding, Dropout, Flatten), joins other groups at
  element-wise merges (a residual block is pruned as one group) and ends at
  consumers (Conv/Dense reading it on their input axis). A group that reaches a
  model output, meets the model input at a merge, or touches a layer this module
  does not understand is *unprunable*, with the reason: never a wrong model.
* ``channel_importance``: a score per channel (``l2``, ``bn`` or ``taylor``).
* ``slim``: the smaller model, rebuilt from the config, weights sliced.
* ``count_macs``: multiply-accumulates from static shapes.
* ``prune_channels``: the recipe stage (score, choose ratios, slim, fine-tune,
  by default distilling from the unpruned model); ``shrink``: a narrower copy of
  a model with the teacher's most important channels, for distillation students.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np

from edgeslim.compress import _depthwise as dw  # first: imports TensorFlow with Keras 2
from edgeslim._tf import keras, tf
from edgeslim.compress.context import StageContext, StageOutcome, count_params
from edgeslim.compress.overrides import (
    LayerOverride,
    check_choice,
    check_epochs,
    check_ratio,
    check_unknown_layers,
    resolve,
    validate_overrides,
)
from edgeslim.errors import RecipeError

L = keras.layers

IMPORTANCES = ("l2", "bn", "taylor")
ALLOCATIONS = ("uniform", "sensitivity")


# -- the recipe table ----------------------------------------------------------------------


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


@dataclass(frozen=True)
class ChannelsConfig:
    """The ``[channels]`` recipe table.

    ``ratio``: fraction of the channels removed from every prunable group
    (``allocation = "uniform"``), or the MAC budget the per-group ratios must
    meet (``"sensitivity"``: each group is pruned alone at the ``scan`` ratios
    and measured on validation; the least sensitive are pruned most).
    Kept counts are multiples of ``round_to`` (SIMD-friendly), at least
    ``min_channels``. Fine-tuning, distilled from the unpruned model when
    ``distill`` (``temperature``, ``alpha`` as in ``[distill]``), runs ``steps``
    optimizer steps, or ``epochs`` passes over the data, or (both None) the
    distill loop's budget derived from the data size (``distill.step_budget``);
    ``epochs = 0`` skips it.
    ``samples``: training samples for the taylor score and for ``compensate``
    (the mean each removed channel fed its consumers is folded into their bias).
    Overrides name a producer layer (``ratio`` or ``skip``).
    """

    ratio: float = 0.5
    importance: str = "l2"
    allocation: str = "uniform"
    round_to: int = 4
    min_channels: int = 4
    epochs: int | None = None
    steps: int | None = None
    distill: bool = True
    temperature: float = 2.0
    alpha: float = 0.5
    scan: tuple[float, ...] = (0.25, 0.5, 0.75)
    samples: int = 512
    compensate: bool = True
    overrides: tuple[LayerOverride, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "scan", tuple(self.scan))
        check_ratio(self.ratio, "channels.ratio")
        check_choice(self.importance, IMPORTANCES, "channels.importance",
                     '"l2": filter norms; "bn": |gamma| of the BatchNormalization after the '
                     'layer; "taylor": |activation x gradient| on training data.')
        check_choice(self.allocation, ALLOCATIONS, "channels.allocation",
                     '"uniform": the same ratio everywhere; "sensitivity": measured per layer.')
        check_epochs(self.round_to, "channels.round_to", minimum=1)
        check_epochs(self.min_channels, "channels.min_channels", minimum=1)
        if self.epochs is not None:
            check_epochs(self.epochs, "channels.epochs", minimum=0)
        if self.steps is not None:
            check_epochs(self.steps, "channels.steps", minimum=1)
        if self.epochs is not None and self.steps is not None:
            raise RecipeError("channels.epochs and channels.steps are both set",
                              hint="Give the fine-tuning budget one way: steps, or epochs "
                              "(passes over the training data).")
        check_epochs(self.samples, "channels.samples", minimum=1)
        if not isinstance(self.distill, bool):
            raise RecipeError("channels.distill must be true or false")
        if not isinstance(self.compensate, bool):
            raise RecipeError("channels.compensate must be true or false")
        if not _is_number(self.temperature) or self.temperature <= 0:
            raise RecipeError(f"channels.temperature = {self.temperature!r} must be a number > 0",
                              hint="The distillation softmax temperature, e.g. 2.")
        if not _is_number(self.alpha) or not 0.0 <= self.alpha <= 1.0:
            raise RecipeError(f"channels.alpha = {self.alpha!r} must be in [0, 1]",
                              hint="Weight of the label loss; 1 - alpha goes to the teacher.")
        if not self.scan or any(not _is_number(r) or not 0 < r < 1 for r in self.scan):
            raise RecipeError(f"channels.scan = {list(self.scan)} must be ratios in (0, 1)",
                              hint="e.g. scan = [0.25, 0.5, 0.75]")
        object.__setattr__(
            self, "overrides", validate_overrides(tuple(self.overrides), "channels",
                                                  allowed=("ratio",)))


# -- the dependency graph ------------------------------------------------------------------


@dataclass(frozen=True)
class ChannelGroup:
    """Channels that must be removed together: the outputs of ``producers``
    (equal in number, joined by merges), read by ``consumers``."""

    id: int
    producers: tuple[str, ...]
    channels: int
    prunable: bool
    reason: str | None = None
    consumers: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Seg:
    """A run of channels on a tensor's last axis: group ``gid``'s ``n`` channels,
    each repeated ``rep`` times (DepthwiseConv2D with depth_multiplier), or
    ``n`` fixed channels (gid None) that come from ``origin``."""

    gid: int | None
    n: int
    rep: int = 1
    origin: str = ""

    @property
    def width(self) -> int:
        return self.n * self.rep


@dataclass(frozen=True)
class _Layout:
    """The last axis of a tensor: the segments, repeated ``positions`` times
    (Flatten folds the spatial positions into the channel axis, channels fastest)."""

    segs: tuple[_Seg, ...]
    positions: int = 1

    def gids(self) -> list[int]:
        return [s.gid for s in self.segs if s.gid is not None]


PRODUCER = "producer"      # conv/dense: reads one group, starts another
DEPTHWISE = "depthwise"    # channel c -> outputs c*M .. c*M+M-1
PASS = "pass"              # channel axis unchanged (BN, activations, pooling, ...)
FLATTEN = "flatten"
MERGE = "merge"            # element-wise: joins the groups of its inputs
CONCAT = "concat"
INPUT = "input"
UNKNOWN = "unknown"

_PASS_CLASSES = (
    L.BatchNormalization, L.Activation, L.ReLU, L.LeakyReLU, L.ELU, L.ThresholdedReLU, L.PReLU,
    L.Dropout, L.GaussianNoise, L.GaussianDropout, L.AlphaDropout, L.ActivityRegularization,
    L.MaxPooling1D, L.MaxPooling2D, L.MaxPooling3D, L.AveragePooling1D, L.AveragePooling2D,
    L.AveragePooling3D, L.GlobalAveragePooling1D, L.GlobalAveragePooling2D,
    L.GlobalAveragePooling3D, L.GlobalMaxPooling1D, L.GlobalMaxPooling2D, L.GlobalMaxPooling3D,
    L.ZeroPadding1D, L.ZeroPadding2D, L.ZeroPadding3D, L.Cropping1D, L.Cropping2D, L.Cropping3D,
    L.UpSampling1D, L.UpSampling2D, L.UpSampling3D,
)
_MERGE_CLASSES = (L.Add, L.Subtract, L.Multiply, L.Average, L.Maximum, L.Minimum)
_CHANNEL_ACTIVATIONS = ("softmax", "log_softmax")  # mix channels: not element-wise


def _out_channels(layer) -> int:
    shape = layer.output.shape
    return int(shape[-1]) if shape.rank and shape[-1] is not None else 0


def _rank(tensor) -> int:
    return int(tensor.shape.rank)


def _act_name(layer) -> str:
    act = getattr(layer, "activation", None)
    return getattr(act, "__name__", str(act))


def _is_producer(layer) -> bool:
    """Conv1D/2D/3D, SeparableConv2D, Dense (not depthwise, not transposed)."""
    if isinstance(layer, (L.DepthwiseConv2D, L.Conv2DTranspose, L.Conv1DTranspose,
                          L.Conv3DTranspose)):
        return False
    return isinstance(layer, (L.Conv1D, L.Conv2D, L.Conv3D, L.SeparableConv2D, L.Dense))


def _classify(layer) -> tuple[str, str | None]:
    """(role, why unknown). Exact checks: anything not listed is UNKNOWN."""
    name = type(layer).__name__
    if isinstance(layer, keras.Model):
        return UNKNOWN, f"nested model {layer.name!r}"
    if isinstance(layer, L.InputLayer):
        return INPUT, None
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        return UNKNOWN, f"{layer.name!r} ({name}) in channels_first layout"
    if isinstance(layer, L.DepthwiseConv2D):
        return DEPTHWISE, None
    if _is_producer(layer):
        if getattr(layer, "groups", 1) != 1:
            return UNKNOWN, f"{layer.name!r} ({name}), a grouped convolution"
        return PRODUCER, None
    if isinstance(layer, L.Flatten):
        return FLATTEN, None
    if isinstance(layer, _MERGE_CLASSES):
        return MERGE, None
    if isinstance(layer, L.Concatenate):
        rank = _rank(layer.output)
        if layer.axis not in (-1, rank - 1):
            return UNKNOWN, f"{layer.name!r} (Concatenate) on axis {layer.axis}"
        return CONCAT, None
    if isinstance(layer, _PASS_CLASSES):
        if isinstance(layer, L.Activation) and _act_name(layer) in _CHANNEL_ACTIVATIONS:
            return UNKNOWN, f"{layer.name!r} (Activation), a {_act_name(layer)} across channels"
        if isinstance(layer, L.BatchNormalization):
            rank = _rank(layer.input)
            if list(layer.axis) != [rank - 1]:
                return UNKNOWN, f"{layer.name!r} (BatchNormalization) over axis {layer.axis}"
        return PASS, None
    if name in ("TFOpLambda", "SlicingOpLambda"):
        return UNKNOWN, (f"{layer.name!r} ({name}), a raw TensorFlow op (write x + y as "
                         "keras.layers.Add()([x, y]) to make it prunable)")
    return UNKNOWN, f"{layer.name!r} ({name}), a layer with no channel-pruning rule"


def _inbound(entry: dict) -> list[list[str]] | None:
    """The inbound layer names of each call of a functional-config entry."""
    nodes = entry.get("inbound_nodes", [])
    calls = []
    for node in nodes:
        names: list[str] = []

        def walk(obj):
            if isinstance(obj, (list, tuple)):
                if len(obj) >= 3 and isinstance(obj[0], str) and isinstance(obj[1], int):
                    names.append(obj[0])
                    for o in obj[3:]:  # keyword arguments may hold tensors too
                        walk(o)
                    return
                for o in obj:
                    walk(o)
            elif isinstance(obj, dict):
                for o in obj.values():
                    walk(o)

        walk(node)
        calls.append(names)
    return calls


_SEQ_INPUT = "<input>"  # a Sequential model's input (its InputLayer is not in .layers)


def _wiring(model) -> tuple[list[str], dict[str, list[str]], list[str], dict[str, str]]:
    """(layer names in order, inbound names per layer, output layer names, why a layer
    is unusable: called more than once, or takes a tensor from a multi-output layer)."""
    config = model.get_config()
    bad: dict[str, str] = {}
    if isinstance(model, keras.Sequential):
        names, inbound, prev = [_SEQ_INPUT], {_SEQ_INPUT: []}, _SEQ_INPUT
        for layer in model.layers:
            names.append(layer.name)
            inbound[layer.name] = [prev]
            prev = layer.name
        return names, inbound, [prev], bad
    names, inbound = [], {}
    for e in config["layers"]:
        name = e["config"]["name"] if "name" not in e else e["name"]
        names.append(name)
        calls = _inbound(e)
        if len(calls) > 1:
            bad[name] = f"{name!r}, a layer called {len(calls)} times (shared)"
        inbound[name] = calls[0] if calls else []
        for node in e.get("inbound_nodes", []):
            for item in node if isinstance(node, list) else []:
                if isinstance(item, list) and len(item) >= 3 and item[2] != 0:
                    bad[name] = f"{name!r}, which reads output {item[2]} of {item[0]!r}"
    outputs = [o[0] for o in config["output_layers"]]
    return names, inbound, outputs, bad


class _Analysis:
    """The channel dependency graph of one model (see ``channel_groups``)."""

    def __init__(self, model):
        dw.check_graph_model(model, "channels")
        self.model = model
        self.parent: dict[int, int] = {}
        self.size: dict[int, int] = {}
        self.reasons: dict[int, list[str]] = {}
        self.producer_of: dict[int, str] = {}        # gid -> producing layer
        self.group_of: dict[str, int] = {}           # producing layer -> gid
        self.out: dict[str, _Layout] = {}            # layer -> layout of its output
        self.ins: dict[str, list[_Layout]] = {}      # layer -> layouts of its inputs
        self.role: dict[str, str] = {}
        self.consumers: dict[str, list[str]] = {}    # layer -> layers reading its output
        self.opaque: dict[str, str] = {}             # UNKNOWN layers -> why
        names, inbound, outputs, bad = _wiring(model)
        self.order = names
        self.inbound = inbound
        for name in names:
            for src in inbound[name]:
                self.consumers.setdefault(src, []).append(name)
        for name in names:
            self._visit(name, inbound[name], bad.get(name))
        for name in outputs:
            for gid in self.out[name].gids():
                self._taint(gid, f"reaches the model output ({name!r})")
        self._finish()

    # union-find over group ids
    def _find(self, g: int) -> int:
        while self.parent[g] != g:
            self.parent[g] = self.parent[self.parent[g]]
            g = self.parent[g]
        return g

    def _union(self, a: int, b: int) -> None:
        ra, rb = self._find(a), self._find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def _taint(self, gid: int, reason: str) -> None:
        self.reasons.setdefault(gid, []).append(reason)

    def _new_group(self, producer: str, n: int) -> int:
        gid = len(self.parent)
        self.parent[gid] = gid
        self.size[gid] = n
        self.producer_of[gid] = producer
        self.group_of[producer] = gid
        return gid

    def _visit(self, name: str, inbound: list[str], bad: str | None) -> None:
        if name == _SEQ_INPUT:
            self.ins[name], self.role[name] = [], INPUT
            c = int(self.model.inputs[0].shape[-1] or 0)
            self.out[name] = _Layout((_Seg(None, c, origin="the model input"),))
            return
        layer = self.model.get_layer(name)
        ins = [self.out[s] for s in inbound if s in self.out]
        self.ins[name] = ins
        role, why = (UNKNOWN, bad) if bad else _classify(layer)
        if role in (PRODUCER, DEPTHWISE, PASS, FLATTEN) and len(ins) != 1:
            role, why = UNKNOWN, f"{name!r} with {len(ins)} inputs"
        if role == INPUT or (not ins and role != UNKNOWN):
            role = INPUT
        self.role[name] = role
        if role == INPUT:
            c = _out_channels(layer)
            self.out[name] = _Layout((_Seg(None, c, origin=f"the model input {name!r}"),))
        elif role == PRODUCER:
            gid = self._new_group(name, _out_channels(layer))
            if _act_name(layer) in _CHANNEL_ACTIVATIONS:
                self._taint(gid, f"{name!r} applies {_act_name(layer)} across its channels")
            self.out[name] = _Layout((_Seg(gid, self.size[gid]),))
        elif role == DEPTHWISE:
            m = int(layer.depth_multiplier)
            lay = ins[0]
            self.out[name] = _Layout(
                tuple(_Seg(s.gid, s.n, s.rep * m, s.origin) for s in lay.segs), lay.positions)
        elif role == PASS:
            self.out[name] = ins[0]
        elif role == FLATTEN:
            spatial = layer.input.shape[1:-1]
            if any(d is None for d in spatial):
                self._unknown(name, ins, f"{name!r} (Flatten) with a dynamic spatial shape")
            else:
                lay = ins[0]
                self.out[name] = _Layout(lay.segs, lay.positions * int(np.prod(spatial, dtype=int)))
        elif role == MERGE:
            self._merge(name, ins)
        elif role == CONCAT:
            if any(lay.positions != 1 for lay in ins):
                self._unknown(name, ins, f"{name!r} (Concatenate) of flattened tensors")
            else:
                self.out[name] = _Layout(tuple(s for lay in ins for s in lay.segs))
        else:
            self._unknown(name, ins, why or f"{name!r}, a layer not understood")

    def _unknown(self, name: str, ins: list[_Layout], why: str) -> None:
        self.role[name] = UNKNOWN
        for lay in ins:
            for gid in lay.gids():
                self._taint(gid, f"feeds {why}")
        layer = self.model.get_layer(name)
        try:
            c = _out_channels(layer)
        except (AttributeError, ValueError, TypeError):
            c = 0
        self.out[name] = _Layout((_Seg(None, c, origin=f"the output of {name!r}"),))
        self.opaque[name] = why

    def _merge(self, name: str, ins: list[_Layout]) -> None:
        first = ins[0]
        shape = [(s.gid is None, s.n, s.rep) for s in first.segs]
        same = all(
            lay.positions == first.positions
            and [(s.gid is None, s.n, s.rep) for s in lay.segs] == shape
            for lay in ins
        )
        fixed = [s.origin for lay in ins for s in lay.segs if s.gid is None]
        if not same or fixed:
            why = (f"{name!r} merges it with {fixed[0]}" if fixed
                   else f"{name!r} merges tensors whose channels are laid out differently")
            for lay in ins:
                for gid in lay.gids():
                    self._taint(gid, why)
            self.out[name] = first
            return
        for lay in ins[1:]:
            for a, b in zip(first.segs, lay.segs):
                self._union(a.gid, b.gid)
        self.out[name] = first

    def _finish(self) -> None:
        roots: dict[int, list[int]] = {}
        for gid in sorted(self.parent):
            roots.setdefault(self._find(gid), []).append(gid)
        self.public: dict[int, int] = {}  # root gid -> public id
        groups = []
        for pid, (root, members) in enumerate(sorted(roots.items())):
            self.public[root] = pid
            reasons = [r for g in members for r in self.reasons.get(g, [])]
            producers = tuple(self.producer_of[g] for g in members)
            consumers = tuple(
                n for n in self.order
                if self.role[n] == PRODUCER and any(
                    self._find(g) == root for lay in self.ins[n] for g in lay.gids())
            )
            groups.append(ChannelGroup(
                id=pid, producers=producers, channels=self.size[root], prunable=not reasons,
                reason="; ".join(dict.fromkeys(reasons)) or None, consumers=consumers))
        self.groups = groups

    def gid(self, internal: int) -> int:
        """The public group id of an internal one."""
        return self.public[self._find(internal)]

    def indices(self, layout: _Layout, keep: dict[int, np.ndarray]) -> np.ndarray | None:
        """Kept positions on ``layout``'s last axis (None: all are kept)."""
        parts, off, changed = [], 0, False
        for s in layout.segs:
            k = keep.get(self.gid(s.gid)) if s.gid is not None else None
            if k is None:
                idx = np.arange(s.width)
            else:
                idx = (np.asarray(k)[:, None] * s.rep + np.arange(s.rep)[None, :]).reshape(-1)
                changed = True
            parts.append(off + idx)
            off += s.width
        if not changed:
            return None
        base = np.concatenate(parts) if parts else np.arange(0)
        if layout.positions > 1:
            base = (np.arange(layout.positions)[:, None] * off + base[None, :]).reshape(-1)
        return base

    def kept_width(self, layout: _Layout, counts: dict[int, int]) -> int:
        """How many channels ``layout``'s last axis keeps when group ``g`` keeps counts[g]."""
        total = 0
        for s in layout.segs:
            n = counts.get(self.gid(s.gid), s.n) if s.gid is not None else s.n
            total += n * s.rep
        return total * layout.positions

    def kept_out(self, name: str, counts: dict[int, int], full: int) -> int:
        """Channels layer ``name``'s output keeps when group ``g`` keeps counts[g]: its own
        group's count for a producer, else what its output layout keeps (``full`` when no
        group reaches it)."""
        if self.role[name] == PRODUCER:
            return counts.get(self.gid(self.group_of[name]), full)
        return self.kept_width(self.out[name], counts) if name in self.out else full


def channel_groups(model) -> list[ChannelGroup]:
    """The channel groups of a Sequential or functional tf_keras model, prunable or
    not (``reason`` says why not). Ids are stable for a given model."""
    return list(_Analysis(model).groups)


# -- counting ------------------------------------------------------------------------------


def _io_shapes(layer) -> list[tuple[tuple, tuple]]:
    """(input shape, output shape) of each call of ``layer`` (a shared layer has several)."""
    shapes = []
    for k in range(len(getattr(layer, "inbound_nodes", []))):
        try:
            i, o = layer.get_input_shape_at(k), layer.get_output_shape_at(k)
        except (AttributeError, ValueError, RuntimeError):
            continue
        if isinstance(i, tuple) and isinstance(o, tuple):
            shapes.append((i, o))
    return shapes


def _macs_parts(layer) -> list[tuple[int, str]]:
    """(MACs, how they scale): "io" with input and output channels, "i" with input only."""
    return [part for i, o in _io_shapes(layer) for part in _call_macs(layer, i, o)]


def _call_macs(layer, i: tuple, o: tuple) -> list[tuple[int, str]]:
    if any(d is None for d in i[1:]) or any(d is None for d in o[1:]):
        return []
    out_spatial = int(np.prod(o[1:-1], dtype=np.int64)) if len(o) > 2 else 1
    if isinstance(layer, L.DepthwiseConv2D):
        return [(out_spatial * o[-1] * int(np.prod(layer.kernel_size)), "i")]
    if isinstance(layer, L.SeparableConv2D):
        k = int(np.prod(layer.kernel_size))
        mid = i[-1] * int(layer.depth_multiplier)
        return [(out_spatial * mid * k, "i"), (out_spatial * mid * o[-1], "io")]
    if isinstance(layer, (L.Conv2DTranspose, L.Conv1DTranspose, L.Conv3DTranspose)):
        in_spatial = int(np.prod(i[1:-1], dtype=np.int64))
        return [(in_spatial * int(np.prod(layer.kernel_size)) * i[-1] * o[-1], "io")]
    if isinstance(layer, (L.Conv1D, L.Conv2D, L.Conv3D)):
        k = int(np.prod(layer.kernel_size))
        return [(out_spatial * o[-1] * k * i[-1] // int(getattr(layer, "groups", 1)), "io")]
    if isinstance(layer, L.Dense):
        lead = int(np.prod(i[1:-1], dtype=np.int64)) if len(i) > 2 else 1
        return [(lead * i[-1] * o[-1], "io")]
    return []


def count_macs(model) -> int:
    """Multiply-accumulates of one inference (batch 1), from the layers' static shapes:
    Conv, DepthwiseConv2D, SeparableConv2D (both parts), Dense; BN, activations and
    pooling are not counted. Nested models are counted through."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += count_macs(layer)
            continue
        total += sum(m for m, _ in _macs_parts(layer))
    return int(total)


def _plan_macs(an: _Analysis, counts: dict[int, int]) -> int:
    """MACs of the model ``slim`` would build when group g keeps counts[g] channels."""
    total = 0
    for name in an.order:
        if an.role[name] == INPUT:
            continue
        layer = an.model.get_layer(name)
        if isinstance(layer, keras.Model):  # opaque: counted whole
            total += count_macs(layer)
            continue
        parts = _macs_parts(layer)
        if not parts:
            continue
        if an.role[name] == UNKNOWN:  # e.g. a shared layer: its channels do not change
            total += sum(m for m, _ in parts)
            continue
        ins = an.ins.get(name) or []
        in_full = int(layer.input.shape[-1])
        in_kept = an.kept_width(ins[0], counts) if len(ins) == 1 else in_full
        out_full = int(layer.output.shape[-1])
        out_kept = an.kept_out(name, counts, out_full)
        for macs, scale in parts:
            if scale == "i":
                total += macs * in_kept // in_full
            else:
                total += macs * in_kept * out_kept // (in_full * out_full)
    return int(total)


def _plan_params(an: _Analysis, counts: dict[int, int]) -> int:
    """Parameters of the model ``slim`` would build when group g keeps counts[g] channels
    (kernels scale with the kept input and output channels, depthwise kernels with the
    input, biases and BatchNormalization with the output)."""
    total = 0
    for name in an.order:
        if an.role[name] == INPUT:
            continue
        layer = an.model.get_layer(name)
        weights = layer.get_weights()
        if not weights:
            continue
        if an.role[name] == UNKNOWN or isinstance(layer, keras.Model):
            total += sum(int(w.size) for w in weights)
            continue
        ins = an.ins.get(name) or []
        in_full = int(layer.input.shape[-1]) if len(ins) == 1 else 1
        in_kept = an.kept_width(ins[0], counts) if len(ins) == 1 else in_full
        out_full = int(layer.output.shape[-1])
        out_kept = an.kept_out(name, counts, out_full)
        fi, fo = in_kept / max(in_full, 1), out_kept / max(out_full, 1)
        for k, w in enumerate(weights):
            if isinstance(layer, L.SeparableConv2D):
                scale = (fi, fi * fo, fo)[min(k, 2)]
            elif isinstance(layer, L.DepthwiseConv2D):
                scale = fi
            elif an.role[name] == PRODUCER:
                scale = fi * fo if k == 0 else fo
            else:
                scale = fo
            total += int(round(w.size * scale))
    return int(total)


class WidthPlanner:
    """MACs and parameters of a model with given per-group channel ratios, counted from
    the dependency graph without building it (the search ranks per-group widths with
    these before measuring any for real)."""

    def __init__(self, model, *, round_to: int = 4, min_channels: int = 4):
        self._an = an = _Analysis(model)
        self.round_to, self.min_channels = round_to, min_channels
        self.groups = [g for g in an.groups if g.prunable]
        # Per layer, once: what _plan_macs and _plan_params read (thousands of plans follow).
        self._fixed_params = self._fixed_macs = 0  # layers whose channels never change
        self._rows = []
        for name in an.order:
            if an.role[name] == INPUT:
                continue
            layer = an.model.get_layer(name)
            sizes = [int(w.size) for w in layer.get_weights()]
            if isinstance(layer, keras.Model) or an.role[name] == UNKNOWN:
                self._fixed_params += sum(sizes)
                self._fixed_macs += (count_macs(layer) if isinstance(layer, keras.Model)
                                     else sum(m for m, _ in _macs_parts(layer)))
                continue
            ins = an.ins.get(name) or []
            kinds = []
            for k in range(len(sizes)):
                if isinstance(layer, L.SeparableConv2D):
                    kinds.append(("i", "io", "o")[min(k, 2)])
                elif isinstance(layer, L.DepthwiseConv2D):
                    kinds.append("i")
                elif an.role[name] == PRODUCER:
                    kinds.append("io" if k == 0 else "o")
                else:
                    kinds.append("o")
            self._rows.append((name, ins[0] if len(ins) == 1 else None,
                               int(layer.input.shape[-1]) if len(ins) == 1 else 1,
                               int(layer.output.shape[-1]), _macs_parts(layer),
                               list(zip(sizes, kinds))))

    def counts(self, ratios: dict[int, float]) -> dict[int, int]:
        """Kept channels per prunable group id (as the channel stage keeps them)."""
        return {g.id: _kept_count(g.channels, float(ratios.get(g.id, 0.0)), self.round_to,
                                  self.min_channels) for g in self.groups}

    def figures(self, ratios: dict[int, float]) -> dict:
        """MACs (as ``_plan_macs``) and parameters (as ``_plan_params``) of the plan."""
        an = self._an
        counts = self.counts(ratios)
        macs, params = self._fixed_macs, self._fixed_params
        for name, lay_in, in_full, out_full, parts, weights in self._rows:
            in_kept = an.kept_width(lay_in, counts) if lay_in is not None else in_full
            out_kept = an.kept_out(name, counts, out_full)
            for m, scale in parts:
                macs += (m * in_kept // in_full if scale == "i"
                         else m * in_kept * out_kept // (in_full * out_full))
            f = {"i": in_kept / max(in_full, 1), "o": out_kept / max(out_full, 1)}
            f["io"] = f["i"] * f["o"]
            params += sum(int(round(size * f[kind])) for size, kind in weights)
        return {"macs": int(macs), "params": int(params), "kept": counts}


# -- slicing -------------------------------------------------------------------------------


def _take(a: np.ndarray, idx: np.ndarray | None, axis: int) -> np.ndarray:
    return a if idx is None else np.take(a, idx, axis=axis)


def _slice_weights(layer, weights: list[np.ndarray], in_idx, out_idx) -> list[np.ndarray]:
    """``layer``'s weights with input channels ``in_idx`` and output channels ``out_idx``
    kept (None: all). Only the layer kinds a group may pass through have a rule."""
    if in_idx is None and out_idx is None:
        return weights
    if isinstance(layer, L.DepthwiseConv2D):
        m = int(layer.depth_multiplier)
        out = [_take(weights[0], in_idx, 2)]
        if len(weights) > 1:
            rows = (np.asarray(in_idx)[:, None] * m + np.arange(m)).reshape(-1)
            out.append(weights[1][rows])
        return out
    if isinstance(layer, L.SeparableConv2D):
        m = int(layer.depth_multiplier)
        dk, pk, *rest = weights
        if in_idx is not None:
            dk = dk[:, :, in_idx, :]
            pk = pk[:, :, (np.asarray(in_idx)[:, None] * m + np.arange(m)).reshape(-1), :]
        return [dk, _take(pk, out_idx, 3), *[_take(b, out_idx, 0) for b in rest]]
    if _is_producer(layer):
        kernel, *rest = weights
        kernel = _take(_take(kernel, in_idx, kernel.ndim - 2), out_idx, kernel.ndim - 1)
        return [kernel, *[_take(b, out_idx, 0) for b in rest]]
    if isinstance(layer, L.BatchNormalization):
        return [_take(w, in_idx, 0) for w in weights]
    if isinstance(layer, L.PReLU):
        (alpha,) = weights
        c = max(int(layer.input.shape[-1]), 1)
        return [alpha if alpha.shape[-1] != c else _take(alpha, in_idx, alpha.ndim - 1)]
    raise ValueError(f"no slicing rule for {layer.name!r} ({type(layer).__name__})")


def _check_keep(an: _Analysis, keep: dict) -> dict[int, np.ndarray]:
    by_id = {g.id: g for g in an.groups}
    checked = {}
    for gid, idx in keep.items():
        g = by_id.get(gid)
        if g is None:
            raise ValueError(f"no channel group {gid!r} (groups: {sorted(by_id)})")
        if not g.prunable:
            raise ValueError(f"channel group {gid} ({', '.join(g.producers)}) is not "
                             f"prunable: {g.reason}")
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        if (idx.size == 0 or np.any(np.diff(idx) <= 0) or idx[0] < 0
                or idx[-1] >= g.channels):
            raise ValueError(f"keep[{gid}] must be sorted, distinct channel indices in "
                             f"[0, {g.channels}), at least one")
        if idx.size < g.channels:
            checked[gid] = idx
    return checked


def _slim(an: _Analysis, keep: dict[int, np.ndarray], means: dict | None = None):
    model = an.model
    config = copy.deepcopy(model.get_config())
    resized = {
        name: len(keep[an.gid(gid)])
        for name, gid in an.group_of.items() if an.gid(gid) in keep
    }
    for e in config["layers"]:
        cfg = e["config"]
        if cfg.get("name") in resized:
            cfg["units" if "units" in cfg else "filters"] = resized[cfg["name"]]
    with keras.utils.custom_object_scope(dw.CUSTOM_OBJECTS):
        new = model.__class__.from_config(config)
    for layer in new.layers:
        old = model.get_layer(layer.name)
        weights = old.get_weights()
        if not weights:
            continue
        ins = an.ins.get(layer.name) or []
        in_idx = an.indices(ins[0], keep) if len(ins) == 1 and an.role[layer.name] != UNKNOWN \
            else None
        out_idx = None
        if layer.name in an.group_of and an.gid(an.group_of[layer.name]) in keep:
            out_idx = keep[an.gid(an.group_of[layer.name])]
        sliced = _slice_weights(old, weights, in_idx, out_idx)
        if means and layer.name in means and in_idx is not None:
            delta = _compensation(old, weights, means[layer.name], in_idx)
            if delta is not None:
                sliced[-1] = sliced[-1] + _take(delta, out_idx, 0)
        layer.set_weights(sliced)
    return new


def _compensable(layer) -> bool:
    """Conv/Dense consumers with a bias can absorb the mean of the channels they lose."""
    return (_is_producer(layer) and not isinstance(layer, L.SeparableConv2D)
            and bool(getattr(layer, "use_bias", False)))


def _input_means(an: _Analysis, x: np.ndarray) -> dict[str, np.ndarray]:
    """The mean of each compensable consumer's input, per channel (over samples and
    positions), on ``x``."""
    names = [n for n in an.order if an.role[n] == PRODUCER and len(an.ins[n]) == 1
             and _compensable(an.model.get_layer(n))]
    if not names or x is None or not len(x):
        return {}
    probe = keras.Model(an.model.inputs, [an.model.get_layer(n).input for n in names])
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for start in range(0, len(x), 128):
        outs = probe(tf.constant(x[start : start + 128]), training=False)
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        for n, a in zip(names, outs):
            a = a.numpy()
            flat = a.reshape(-1, a.shape[-1]).astype(np.float64)
            sums[n] = sums.get(n, 0.0) + flat.sum(axis=0)
            counts[n] = counts.get(n, 0) + flat.shape[0]
    return {n: (v / counts[n]).astype(np.float32) for n, v in sums.items()}


def _compensation(layer, weights, mean: np.ndarray, kept: np.ndarray) -> np.ndarray | None:
    """What the removed input channels added on average to each output (their mean
    activation times the summed kernel taps): folded into the bias, the pruned model
    starts closer to the original before any fine-tuning."""
    if not _compensable(layer):
        return None
    kernel = weights[0]
    drop = np.setdiff1d(np.arange(kernel.shape[-2]), kept)
    taps = kernel.reshape(-1, kernel.shape[-2], kernel.shape[-1]).sum(axis=0)
    return (mean[drop] @ taps[drop]).astype(weights[-1].dtype)


def slim(model, keep: dict[int, np.ndarray]):
    """A new, smaller model keeping ``keep[group id]`` (sorted channel indices) of each
    named group; other groups stay whole. Same layer names; ``model`` is untouched.

    Removing a channel is exact: the new model computes what ``model`` computes when
    every weight reading that channel downstream is zero.
    """
    an = _Analysis(model)
    return _slim(an, _check_keep(an, keep))


# -- importance ----------------------------------------------------------------------------


def _filter_l2(layer) -> np.ndarray:
    w = layer.get_weights()
    kernel = w[1] if isinstance(layer, L.SeparableConv2D) else w[0]
    return np.sqrt(np.sum(kernel.reshape(-1, kernel.shape[-1]) ** 2, axis=0))


def _normalised(s: np.ndarray) -> np.ndarray:
    s = np.abs(np.asarray(s, dtype=np.float64))
    top = s.max() if s.size else 0.0
    return s / top if top > 0 else s


def _bn_after(an: _Analysis, producer: str) -> str | None:
    """A BatchNormalization reading ``producer``'s output directly, if any."""
    for c in an.consumers.get(producer, []):
        if isinstance(an.model.get_layer(c), L.BatchNormalization) and an.role[c] == PASS:
            return c
    return None


def _calibration_index(data, samples: int, seed) -> np.ndarray:
    n = min(samples, len(data.x_train))
    rng = np.random.default_rng(0 if seed is None else seed)
    return np.sort(rng.choice(len(data.x_train), size=n, replace=False))


def _calibration(data, samples: int, seed) -> np.ndarray:
    """A seeded draw of ``samples`` training inputs (for scores and bias compensation)."""
    return data.x_train[_calibration_index(data, samples, seed)]


def _taylor_scores(an: _Analysis, taps: dict[str, str], data, samples: int, seed) -> dict:
    """|mean over samples of sum over positions of activation x dLoss/dactivation| per
    channel, at each tapped layer's output (first-order Taylor estimate of the loss
    change when the channel is zeroed)."""
    model = an.model
    tap_names = sorted(set(taps.values()))
    probe = keras.Model(model.inputs, [model.outputs[0]]
                        + [model.get_layer(t).output for t in tap_names])
    loss_fn = StageContext(data=data).loss(model)
    idx = _calibration_index(data, samples, seed)
    n = len(idx)
    x, y = data.x_train[idx], np.asarray(data.y_train)[idx]
    sums = {t: 0.0 for t in tap_names}
    for start in range(0, n, 128):
        xb = tf.constant(x[start : start + 128])
        yb = tf.constant(y[start : start + 128])
        with tf.GradientTape() as tape:
            outs = probe(xb, training=False)
            loss = loss_fn(yb, outs[0]) * tf.cast(tf.shape(xb)[0], tf.float32)
        grads = tape.gradient(loss, outs[1:])
        for t, a, g in zip(tap_names, outs[1:], grads):
            if g is None:
                continue
            prod = (a * g).numpy()
            sums[t] = sums[t] + prod.reshape(prod.shape[0], -1, prod.shape[-1]).sum(axis=(0, 1))
    return {p: np.abs(np.asarray(sums[t], dtype=np.float64) / n) for p, t in taps.items()}


def _importance(an: _Analysis, method: str, data=None, samples: int = 512, seed=None):
    """Per prunable group: a score per channel (higher: keep), and how it was computed."""
    if method not in IMPORTANCES:
        raise RecipeError(f"channel importance {method!r} is not one of "
                          + ", ".join(repr(i) for i in IMPORTANCES))
    groups = [g for g in an.groups if g.prunable]
    how: dict[int, str] = {}
    taylor: dict[str, np.ndarray] = {}
    if method == "taylor":
        if data is None:
            raise RecipeError("taylor importance needs data (the training split)",
                              hint='Pass data, or use importance = "l2".')
        taps = {p: (_bn_after(an, p) or p) for g in groups for p in g.producers}
        if taps:
            taylor = _taylor_scores(an, taps, data, samples, seed)
    scores = {}
    for g in groups:
        total = np.zeros(g.channels)
        used = set()
        for p in g.producers:
            layer = an.model.get_layer(p)
            bn = _bn_after(an, p)
            if method == "bn" and bn is not None and an.model.get_layer(bn).gamma is not None:
                total += _normalised(an.model.get_layer(bn).gamma.numpy())
                used.add("bn")
            elif method == "taylor":
                total += _normalised(taylor[p])
                used.add("taylor")
            else:
                total += _normalised(_filter_l2(layer))
                used.add("l2")
        scores[g.id] = total
        how[g.id] = "+".join(sorted(used))
    return scores, how


def channel_importance(model, method: str = "l2", *, data=None, samples: int = 512,
                       seed=None) -> dict[int, np.ndarray]:
    """A score per channel of every prunable group (higher: more important).

    ``l2``: norm of each producer filter; ``bn``: |gamma| of the BatchNormalization
    right after the producer (network slimming), l2 where there is none; ``taylor``:
    first-order Taylor on ``data`` (a Dataset; its training split). Each producer's
    scores are divided by their maximum, then summed over the group's producers.
    """
    return _importance(_Analysis(model), method, data, samples, seed)[0]


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` best channels, sorted by index (ties: the lower index)."""
    order = np.argsort(-scores, kind="stable")
    return np.sort(order[:k])


# -- choosing how many channels to keep ----------------------------------------------------


def _kept_count(channels: int, ratio: float, round_to: int, min_channels: int) -> int:
    """round((1 - ratio) * C) to a multiple of round_to; at least min_channels, at most C."""
    if ratio <= 0:
        return channels
    k = int(round(channels * (1.0 - ratio) / round_to)) * round_to
    k = max(k, min_channels, 1)
    return min(k, channels)


@dataclass
class _Target:
    group: ChannelGroup
    ratio: float
    source: str
    fixed: bool  # an override set the ratio: sensitivity allocation leaves it


def _targets(an: _Analysis, config: ChannelsConfig) -> tuple[list[_Target], dict[str, str]]:
    targets, skipped = [], {}
    for g in an.groups:
        if not g.prunable:
            for p in g.producers:
                skipped[p] = g.reason
            continue
        res = [resolve(p, config.overrides, config.ratio, key="ratio") for p in g.producers]
        skip = [r for r in res if r.skip]
        if skip:
            for p in g.producers:
                skipped[p] = f"group with {', '.join(g.producers)}: skipped by {skip[0].describe()}"
            continue
        ratio = min(float(r.value) for r in res)
        set_by = [r for r in res if r.override is not None]
        source = set_by[0].describe() if set_by else "default"
        if _kept_count(g.channels, ratio, config.round_to, config.min_channels) >= g.channels:
            why = ("ratio 0" if ratio <= 0 else
                   f"{g.channels} channels: nothing to remove at ratio {ratio} with "
                   f"round_to {config.round_to}, min_channels {config.min_channels}")
            for p in g.producers:
                skipped[p] = why
            continue
        targets.append(_Target(g, ratio, source, fixed=bool(set_by)))
    return targets, skipped


def _sensitivity(an, targets, scores, config, ctx, means) -> dict[int, dict[float, float]]:
    """Metric drop on validation when each group alone loses its least important
    channels at each scan ratio (no fine-tuning). Removing channels is emulated by
    zeroing every weight that reads them (with the same bias compensation), which
    ``slim`` makes exact."""
    probe = dw.rebuild(an.model, lambda layer: None)
    base = ctx.evaluate(probe, "val")
    sign = 1.0 if ctx.data.higher_is_better else -1.0
    readers = [n for n in an.order if an.role[n] == PRODUCER and len(an.ins[n]) == 1]
    curves = {}
    for t in targets:
        if t.fixed:
            continue
        g = t.group
        curve = {}
        for r in sorted(set(config.scan)):
            k = _kept_count(g.channels, r, config.round_to, config.min_channels)
            if k >= g.channels:
                continue
            keep = {g.id: _top(scores[g.id], k)}
            saved = []
            for n in readers:
                idx = an.indices(an.ins[n][0], keep)
                if idx is None:
                    continue
                layer = probe.get_layer(n)
                w = layer.get_weights()
                saved.append((layer, w))
                zeroed = _zero_reads(layer, w, idx)
                delta = _compensation(layer, w, means[n], idx) if n in means else None
                if delta is not None:
                    zeroed[-1] = zeroed[-1] + delta
                layer.set_weights(zeroed)
            curve[round(1.0 - k / g.channels, 6)] = sign * (base - ctx.evaluate(probe, "val"))
            for layer, w in saved:
                layer.set_weights(w)
        curves[g.id] = curve
    return curves


def _zero_reads(layer, weights: list[np.ndarray], kept: np.ndarray) -> list[np.ndarray]:
    """Weights of a consumer with every input channel outside ``kept`` zeroed."""
    w = [a.copy() for a in weights]
    if isinstance(layer, L.SeparableConv2D):
        m = int(layer.depth_multiplier)
        c = w[0].shape[2]
        drop = np.setdiff1d(np.arange(c), kept)
        w[1][:, :, (drop[:, None] * m + np.arange(m)).reshape(-1), :] = 0.0
        return w
    k = w[0]
    drop = np.setdiff1d(np.arange(k.shape[-2]), kept)
    k[..., drop, :] = 0.0
    return w


def _allocate(an, targets, curves, config) -> dict[int, int]:
    """Kept counts per group meeting the uniform plan's MACs, greedily removing
    ``round_to`` channels at a time from the group whose measured drop grows least
    per MAC saved; no group goes past the largest scanned ratio."""
    uniform = {t.group.id: _kept_count(t.group.channels, t.ratio, config.round_to,
                                       config.min_channels) for t in targets}
    if config.allocation == "uniform":
        return uniform
    budget = _plan_macs(an, uniform)
    counts = {t.group.id: (uniform[t.group.id] if t.fixed else t.group.channels)
              for t in targets}
    free = {t.group.id: t.group for t in targets if not t.fixed}
    top_ratio = max(max(config.scan), config.ratio)

    def drop(gid: int, k: int) -> float:
        curve = curves.get(gid) or {}
        xs = [0.0, *sorted(curve)]
        ys = [0.0, *[curve[r] for r in sorted(curve)]]
        return float(np.interp(1.0 - k / free[gid].channels, xs, ys))

    macs = _plan_macs(an, counts)
    while macs > budget:
        best = None
        for gid, g in free.items():
            k = counts[gid]
            nxt = (k - 1) // config.round_to * config.round_to if k % config.round_to \
                else k - config.round_to
            if nxt < max(config.min_channels, 1) or 1.0 - nxt / g.channels > top_ratio + 1e-9:
                continue
            trial = {**counts, gid: nxt}
            saved = macs - _plan_macs(an, trial)
            if saved <= 0:
                continue
            cost = (drop(gid, nxt) - drop(gid, k)) / saved
            if best is None or cost < best[0]:
                best = (cost, gid, nxt, macs - saved)
        if best is None:
            break
        _, gid, nxt, macs = best
        counts[gid] = nxt
    return counts


# -- the stage ------------------------------------------------------------------------------


def _fine_tune_epochs(outcome_info: dict) -> int | None:
    budget = outcome_info.get("budget") or {}
    if budget.get("epochs_run_distilled") is not None:
        return int(math.ceil(budget["epochs_run_distilled"]))
    history = outcome_info.get("history")
    return len(history) if history is not None else None


def prune_channels(model, config: ChannelsConfig, *, ctx: StageContext) -> StageOutcome:
    """Remove the least important channels of every prunable group, then fine-tune
    (distilling from ``model``, which is left untouched, when ``config.distill``)."""
    an = _Analysis(model)
    names = [layer.name for layer in model.layers]
    unmatched = check_unknown_layers(config.overrides, names, "channels")
    for ov in config.overrides:
        if ov.layer is not None and ov.layer not in an.group_of:
            raise RecipeError(
                f"channels.override names layer {ov.layer!r}, which produces no channels",
                hint="Name a Conv2D, SeparableConv2D or Dense layer: "
                + ", ".join(an.group_of),
            )
    targets, skipped = _targets(an, config)
    for name, why in an.opaque.items():
        if _is_producer(model.get_layer(name)) or isinstance(model.get_layer(name), keras.Model):
            skipped.setdefault(name, f"left whole: {why}")
    scores, how = _importance(an, config.importance, ctx.data, config.samples, ctx.seed)
    means = _input_means(an, _calibration(ctx.data, config.samples, ctx.seed)) \
        if config.compensate and targets else {}
    curves = (_sensitivity(an, targets, scores, config, ctx, means)
              if config.allocation == "sensitivity" and targets else {})
    counts = _allocate(an, targets, curves, config)
    keep = {gid: _top(scores[gid], k) for gid, k in counts.items() if k < an.groups[gid].channels}
    slimmed = _slim(an, keep, means)

    from edgeslim.compress.distill import DistillConfig, distill, step_budget

    budget = step_budget(len(ctx.data.x_train), ctx.batch_size, epochs=config.epochs,
                         steps=config.steps)
    tune = config.epochs != 0
    ctx.log(f"[channels] {len(keep)} group(s) pruned, {len(skipped)} producer(s) left whole; "
            + (f"fine-tuning {budget.steps} steps ({budget.steps / budget.steps_per_epoch:.0f} "
               "passes over the data)" if tune else "no fine-tuning")
            + (" distilled from the unpruned model" if tune and config.distill else ""))
    val_pruned = ctx.evaluate(slimmed, "val")
    epochs_run = 0
    tuned = slimmed
    if tune and config.distill:
        out = distill([model], slimmed, ctx, DistillConfig(
            temperature=config.temperature, alpha=config.alpha, steps=budget.steps,
            compare_scratch=False))
        tuned = out.model
        epochs_run = _fine_tune_epochs(out.info)
    elif tune:
        history = ctx.fit(tuned, math.ceil(budget.steps / budget.steps_per_epoch), stage="channels")
        epochs_run = len(history.epoch) if history is not None else 0

    groups_info = []
    for t in targets:
        g = t.group
        after = counts.get(g.id, g.channels)
        entry = {
            "id": g.id,
            "producers": list(g.producers),
            "channels_before": g.channels,
            "channels_after": after,
            "importance": how.get(g.id, config.importance),
            "target_ratio": t.ratio,
            "ratio_used": round(1.0 - after / g.channels, 4),
            "from": t.source,
        }
        if g.id in curves:
            entry["sensitivity"] = {str(r): round(d, 4) for r, d in curves[g.id].items()}
        groups_info.append(entry)
    info = {
        "importance": config.importance,
        "bias_compensated": bool(means),
        "allocation": config.allocation,
        "ratio": config.ratio,
        "round_to": config.round_to,
        "min_channels": config.min_channels,
        "groups": groups_info,
        "params_before": count_params(model),
        "params_after": count_params(tuned),
        "macs_before": count_macs(model),
        "macs_after": count_macs(tuned),
        "macs_planned": _plan_macs(an, counts),
        "fine_tune": {
            "method": "distill" if config.distill else "fit",
            "budget_steps": budget.steps,
            "budget_source": budget.source,
            "epochs_run": epochs_run,
            "metric": ctx.data.metric_name,
            "val_metric_before": ctx.evaluate(model, "val"),
            "val_metric_pruned": val_pruned,
            "val_metric": ctx.evaluate(tuned, "val"),
        },
        "unprunable": [
            {"id": g.id, "producers": list(g.producers), "channels": g.channels,
             "reason": g.reason}
            for g in an.groups if not g.prunable
        ],
        "skipped": dict(skipped),
    }
    info["macs_ratio"] = round(info["macs_after"] / max(info["macs_before"], 1), 4)
    if unmatched:
        info["unmatched_regex"] = unmatched
    return StageOutcome(model=tuned, info=info, skipped=dict(skipped))


def shrink(model, width: float, *, importance: str = "l2", data=None, round_to: int = 1,
           seed=None) -> tuple[object, dict]:
    """A narrower copy of ``model``: every prunable group keeps round(width x C) channels
    (a multiple of ``round_to``, at least 1), its most important ones, with the
    teacher's weights sliced (no training). A student that starts from what the
    teacher learnt, rather than from random weights.

    ``data`` (a Dataset): its training split feeds the taylor score and the bias
    compensation (the removed channels' mean contribution folded into the consumers'
    biases); without it, weights are only sliced."""
    if not _is_number(width) or not 0 < width <= 1:
        raise RecipeError(f"width {width!r} must be in (0, 1]", hint="e.g. 0.5")
    if isinstance(round_to, bool) or not isinstance(round_to, int) or round_to < 1:
        raise RecipeError(f"round_to {round_to!r} must be a whole number >= 1")
    an = _Analysis(model)
    scores, how = _importance(an, importance, data, 512, seed)
    keep, groups = {}, []
    for g in an.groups:
        if not g.prunable:
            continue
        k = int(round(width * g.channels / round_to)) * round_to
        k = min(max(k, 1), g.channels)
        if k < g.channels:
            keep[g.id] = _top(scores[g.id], k)
        groups.append({"id": g.id, "producers": list(g.producers), "channels_before": g.channels,
                       "channels_after": k, "importance": how[g.id]})
    means = _input_means(an, _calibration(data, 512, seed)) if data is not None and keep else {}
    new = _slim(an, keep, means)
    info = {
        "width": width,
        "bias_compensated": bool(means),
        "importance": importance,
        "groups": groups,
        "unprunable": [{"id": g.id, "producers": list(g.producers), "reason": g.reason}
                       for g in an.groups if not g.prunable],
        "params_before": count_params(model),
        "params_after": count_params(new),
        "macs_before": count_macs(model),
        "macs_after": count_macs(new),
    }
    return new, info


__all__ = [
    "ChannelsConfig",
    "ChannelGroup",
    "channel_groups",
    "channel_importance",
    "slim",
    "count_macs",
    "prune_channels",
    "shrink",
]
