"""Execution below the layer-by-layer bound: which depthwise convolutions run in place or
fused with the 1x1 convolution after them, and where each tensor then lives.

Executing one whole layer at a time needs, at each step, the step's input and output
at once; the memory plan (memplan.py) reaches that bound. Two schedules go below it:

- **In-place depthwise** (TinyEngine): a DEPTHWISE_CONV_2D whose output has its input's
  shape, with depth multiplier 1, whose input dies at that step, computes one channel at
  a time into a temporary of ``out_h * out_w`` bytes and copies it back over the input's
  channel: input and output are one buffer.
- **Fused depthwise -> pointwise over rows** (MCUNetV2's patch-based inference): a
  DEPTHWISE_CONV_2D followed by the only reader of its output, a 1x1 CONV_2D, runs band
  by band: a few depthwise output rows into a band buffer, then the 1x1 convolution of
  those rows into the output. The intermediate tensor never exists, and no row is
  computed twice (bands do not overlap: a 1x1 convolution has no halo, and the
  depthwise rows of the next band are computed from the input, which is still there). When the
  depthwise input dies at that step, the output is placed over it, shifted by the few
  rows the remaining depthwise rows still read (``forward_gap``); rows may also run
  bottom-up with the output shifted the other way (``reverse_gap``), which a chain of
  fused blocks alternates so that it stays within one tensor plus a row.

int8 arithmetic is per pixel, so neither order changes a single output value.

``choose`` picks, per depthwise step, plain / in place / fused by the arena each gives
(plain when it is not smaller: it is the fastest); ``place`` lays out the tensors for a
given choice. Both work on ``Node``s (buffer names and sizes), so tests can check them
on random graphs against a byte-level simulation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edgeslim.codegen import memplan

PLAIN, INPLACE, FUSE = "plain", "inplace", "fuse"
FORWARD, REVERSE = "forward", "reverse"


@dataclass(frozen=True)
class Rows:
    """The row geometry of a depthwise convolution (batch 1, int8 NHWC)."""

    in_h: int
    out_h: int
    stride: int
    pad: int  # top padding
    span: int  # (filter_h - 1) * dilation_h + 1: the input rows one output row reads
    row_in: int  # bytes of one input row
    row_mid: int  # bytes of one output row (the band's row when fused)
    band: int = 1  # output rows computed per band when fused

    @property
    def band_bytes(self) -> int:
        return min(self.band, self.out_h) * self.row_mid

    def bands(self) -> list[tuple[int, int]]:
        """(first output row, rows) of each band, top-down."""
        return [(r, min(self.band, self.out_h - r)) for r in range(0, self.out_h, self.band)]

    @classmethod
    def of(cls, g: dict) -> "Rows":
        """From a DEPTHWISE_CONV_2D's shape fields (its reference params)."""
        return cls(g["in_h"], g["out_h"], g["stride_h"], g["pad_h"],
                   (g["filter_h"] - 1) * g["dilation_h"] + 1, g["in_w"] * g["in_c"],
                   g["out_w"] * g["in_c"] * g["depth_multiplier"])

    def first_row(self, r: int) -> int:
        """The first input row output row ``r`` reads (clamped into the input)."""
        return min(max(r * self.stride - self.pad, 0), self.in_h)

    def end_row(self, r: int) -> int:
        """One past the last input row output row ``r`` reads (clamped into the input)."""
        return min(max(r * self.stride - self.pad + self.span, 0), self.in_h)


def forward_gap(rows: Rows, row_out: int) -> int:
    """Bytes the output must start before the input when bands run top-down: after the
    band ending at row e, output rows < e are written and the later bands still read input
    rows from first_row(e) on."""
    need = 0
    for r, n in rows.bands()[:-1]:
        e = r + n
        need = max(need, e * row_out - rows.first_row(e) * rows.row_in)
    return memplan.align(need)


def reverse_gap(rows: Rows, row_out: int) -> int:
    """Bytes the output must start after the input when bands run bottom-up: after the band
    starting at row r, output rows >= r are written and the bands above still read input
    rows up to end_row(r - 1)."""
    need = 0
    for r, _ in rows.bands()[1:]:
        need = max(need, rows.end_row(r - 1) * rows.row_in - r * row_out)
    return memplan.align(need)


@dataclass
class Node:
    """One step as the scheduler sees it: the buffers it reads and writes."""

    name: str  # prefix of its scratch buffers ("op3")
    reads: list[str]
    write: str
    scratch: int = 0  # bytes of an arena scratch buffer live during the step
    rows: Rows | None = None  # set on a DEPTHWISE_CONV_2D that could run fused
    inplace: int = 0  # a DEPTHWISE_CONV_2D that could run in place (shape kept, depth
    # multiplier 1): the bytes of its temporary (one output channel, out_h * out_w)
    pointwise: bool = False  # a 1x1 CONV_2D, stride 1, no padding: the fusion's second half


@dataclass
class Placement:
    plan: memplan.MemoryPlan
    offsets: dict[str, int]  # every arena tensor and scratch buffer -> its byte offset
    modes: dict[int, str]  # node index -> PLAIN / INPLACE / FUSE (depthwise nodes only)
    directions: dict[int, str] = field(default_factory=dict)  # fused node -> FORWARD/REVERSE
    groups: dict[str, list[str]] = field(default_factory=dict)  # buffer -> tensors sharing it
    rows: dict[int, Rows] = field(default_factory=dict)  # fused node -> its row geometry

    @property
    def arena_size(self) -> int:
        return self.plan.arena_size


def options(nodes: list[Node], external: set[str]) -> dict[int, list[str]]:
    """The modes each depthwise node may take (PLAIN always)."""
    readers: dict[str, int] = {}
    last: dict[str, int] = {}
    for i, n in enumerate(nodes):
        for r in set(n.reads):
            readers[r] = readers.get(r, 0) + 1
            last[r] = i
    out = {}
    for i, n in enumerate(nodes):
        if n.rows is None or len(n.reads) != 1:
            continue
        modes = [PLAIN]
        x = n.reads[0]
        if n.inplace and x not in external and n.write not in external and last[x] == i:
            modes.append(INPLACE)
        nxt = nodes[i + 1] if i + 1 < len(nodes) else None
        if (nxt is not None and nxt.pointwise and nxt.reads == [n.write]
                and readers.get(n.write, 0) == 1 and n.write not in external
                and nxt.write != x):
            modes.append(FUSE)
        if len(modes) > 1:
            out[i] = modes
    return out


def place(nodes: list[Node], sizes: dict[str, int], external: set[str],
          modes: dict[int, str], force: dict[int, str] | None = None) -> Placement:
    """Lay out every arena tensor and scratch buffer for the chosen modes. A fused step
    whose output can share its input's buffer runs in the direction that keeps the buffer
    smaller, or as ``force`` says (tests)."""
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    for i, n in enumerate(nodes):
        for r in n.reads:
            last[r] = i
        first.setdefault(n.write, i)
        last[n.write] = max(last.get(n.write, i), i)
    dies = {r: i for r, i in last.items()}  # before fusion stretches lifetimes
    fused = {i for i, m in modes.items() if m == FUSE}
    gone = {nodes[i].write for i in fused}  # intermediates that never exist
    for i in fused:
        x, y = nodes[i].reads[0], nodes[i + 1].write
        last[x] = max(last[x], i + 1)
        first[y] = min(first[y], i)

    # groups: tensors sharing one buffer at fixed offsets relative to each other
    group: dict[str, str] = {}
    rel: dict[str, int] = {}
    members: dict[str, list[str]] = {}

    def join(x: str, y: str, offset: int) -> None:
        g = group.setdefault(x, x)
        if g not in members:
            members[g], rel[g] = [g], 0
        group[y], rel[y] = g, rel[x] + offset
        members[g].append(y)

    def span(g: str, extra: tuple[str, int] | None = None) -> int:
        items = [(rel[m], sizes[m]) for m in members[g]]
        if extra:
            items.append((extra[1], sizes[extra[0]]))
        return max(o + s for o, s in items) - min(o for o, _ in items)

    directions: dict[int, str] = {}
    for i, n in enumerate(nodes):
        mode = modes.get(i, PLAIN)
        if mode == PLAIN or not n.reads:
            continue
        x = n.reads[0]
        y = n.write if mode == INPLACE else nodes[i + 1].write
        shareable = x not in external and y not in external and dies.get(x) == i
        if mode == INPLACE:
            if not shareable or sizes[x] != sizes[y]:
                raise ValueError(f"{n.name} cannot run in place")
            join(x, y, 0)
            continue
        row_out = sizes[y] // n.rows.out_h
        if not shareable:
            directions[i] = FORWARD
            continue
        g = group.setdefault(x, x)
        if g not in members:
            members[g], rel[g] = [g], 0
        fwd = rel[x] - forward_gap(n.rows, row_out)
        rev = rel[x] + reverse_gap(n.rows, row_out)
        if (force or {}).get(i, REVERSE if span(g, (y, rev)) < span(g, (y, fwd))
                            else FORWARD) == REVERSE:
            directions[i] = REVERSE
            join(x, y, rev - rel[x])
        else:
            directions[i] = FORWARD
            join(x, y, fwd - rel[x])

    buffers: list[memplan.Buffer] = []
    grouped = {m for ms in members.values() for m in ms}
    for name in first:
        if name in external or name in gone or (name in grouped and name not in members):
            continue
        if name in members:
            ms = members[name]
            lo = min(rel[m] for m in ms)
            buffers.append(memplan.Buffer(name, span(name), min(first[m] for m in ms),
                                          max(last[m] for m in ms)))
            for m in ms:
                rel[m] -= lo
        else:
            buffers.append(memplan.Buffer(name, sizes[name], first[name], last[name]))
    second = {i + 1 for i in fused}  # the 1x1 halves: their scratch comes with the fusion
    for i, n in enumerate(nodes):
        mode = modes.get(i, PLAIN)
        end = i + 1 if mode == FUSE else i
        if n.scratch and i not in second:
            buffers.append(memplan.Buffer(f"{n.name}_scratch", n.scratch, i, end))
        if mode == FUSE:
            if nodes[i + 1].scratch:
                buffers.append(memplan.Buffer(f"{nodes[i + 1].name}_scratch",
                                              nodes[i + 1].scratch, i, end))
            buffers.append(memplan.Buffer(f"{n.name}_band", n.rows.band_bytes, i, end))
        elif mode == INPLACE:
            buffers.append(memplan.Buffer(f"{n.name}_temp", n.inplace, i, i))
    plan = memplan.plan(buffers)
    memplan.check(plan)
    offsets = {b.name: b.offset for b in plan.buffers}
    for g, ms in members.items():
        base = next(b.offset for b in plan.buffers if b.name == g)
        for m in ms:
            offsets[m] = base + rel[m]
    return Placement(plan, offsets, dict(modes), directions,
                     {g: list(ms) for g, ms in members.items()},
                     {i: nodes[i].rows for i in fused})


def choose(nodes: list[Node], sizes: dict[str, int], external: set[str]) -> Placement:
    """Per depthwise node, the mode with the smallest arena, the others fixed; ties go to
    the fastest (plain, then in place, then fused). Starts from every node at its most
    memory-saving mode, so that a peak shared by several blocks can come down."""
    opts = options(nodes, external)
    modes = {i: o[-1] for i, o in opts.items()}
    best = place(nodes, sizes, external, modes)
    for _ in range(2):
        changed = False
        for i, o in opts.items():
            results = []
            for m in o:
                trial = place(nodes, sizes, external, {**modes, i: m})
                results.append((trial.arena_size, o.index(m), m, trial))
            size, _, m, trial = min(results, key=lambda t: (t[0], t[1]))
            if m != modes[i]:
                changed = True
            modes[i], best = m, trial
        if not changed:
            break
    return best
