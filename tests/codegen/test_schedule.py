"""In-place and fused depthwise schedules (codegen/schedule.py) against a brute-force
simulation: random graphs are executed byte by byte in the arena the placement gives,
row by row for fused steps and channel by channel for in-place ones, and every read must
find the bytes its producer wrote; the highest byte touched must be the plan's peak."""

from __future__ import annotations

import numpy as np
import pytest

from edgeslim.codegen import schedule
from edgeslim.codegen.schedule import FUSE, INPLACE, PLAIN, Node, Rows


class Clobbered(AssertionError):
    pass


class Arena:
    """Every arena byte tagged with (tensor id, byte index) of what was last written."""

    def __init__(self, size: int):
        self.tag = np.full(size, -1, np.int64)
        self.high = 0

    def write(self, addrs: np.ndarray, tensor: int, index: np.ndarray) -> None:
        if addrs.size:
            self.tag[addrs] = tensor * (1 << 32) + index
            self.high = max(self.high, int(addrs.max()) + 1)

    def read(self, addrs: np.ndarray, tensor: int, index: np.ndarray, what: str) -> None:
        if addrs.size and np.any(self.tag[addrs] != tensor * (1 << 32) + index):
            raise Clobbered(f"{what}: a byte was overwritten before its last read")


def simulate(nodes: list[Node], sizes: dict[str, int], external: set[str],
             placement: schedule.Placement) -> int:
    """Run the graph on tagged bytes; returns the highest arena byte touched + 1."""
    arena = Arena(placement.plan.arena_size)
    ids = {name: k for k, name in enumerate(sorted(sizes))}
    off = placement.offsets

    def span(name, lo=0, hi=None):
        hi = sizes[name] if hi is None else hi
        idx = np.arange(lo, hi)
        return idx, (off[name] + idx if name not in external else np.array([], np.int64))

    def read(name, lo=0, hi=None, what=""):
        idx, a = span(name, lo, hi)
        arena.read(a, ids[name], idx if a.size else idx[:0], what or name)

    def write(name, lo=0, hi=None):
        idx, a = span(name, lo, hi)
        arena.write(a, ids[name], idx if a.size else idx[:0])

    def scratch(buf):
        if buf in off:
            n = next(b.size for b in placement.plan.buffers if b.name == buf)
            a = off[buf] + np.arange(n)
            arena.write(a, 10**6 + hash(buf) % 1000, np.arange(n))
            arena.read(a, 10**6 + hash(buf) % 1000, np.arange(n), buf)

    skip = set()
    for i, n in enumerate(nodes):
        if i in skip:
            continue
        mode = placement.modes.get(i, PLAIN)
        if mode == PLAIN:
            ins = [span(r)[1] for r in n.reads]
            out = span(n.write)[1]
            for a in ins:  # a layer-at-a-time kernel reads its input while writing its output
                if np.intersect1d(a, out).size:
                    raise Clobbered(f"{n.name} writes over its own input")
            for r in n.reads:
                read(r)
            scratch(f"{n.name}_scratch")
            write(n.write)
        elif mode == INPLACE:
            x, y, rows = n.reads[0], n.write, n.rows
            pixels = n.inplace
            channels = sizes[x] // pixels
            temp = f"{n.name}_temp"
            t_addr = off[temp] + np.arange(pixels)
            for c in range(channels):
                idx = np.arange(pixels) * channels + c
                arena.read(off[x] + idx, ids[x], idx, f"{n.name} channel {c}")
                arena.write(t_addr, 10**7 + i, np.arange(pixels))
                arena.read(t_addr, 10**7 + i, np.arange(pixels), temp)
                arena.write(off[y] + idx, ids[y], idx)
        else:  # FUSE: depthwise row r into the band, then the 1x1 convolution of the band
            pw = nodes[i + 1]
            skip.add(i + 1)
            x, y, rows = n.reads[0], pw.write, n.rows
            row_out = sizes[y] // rows.out_h
            band = f"{n.name}_band"
            bands = rows.bands()
            if placement.directions[i] == schedule.REVERSE:
                bands = bands[::-1]
            for r, k in bands:  # k output rows from row r
                b_addr = off[band] + np.arange(k * rows.row_mid)
                assert k * rows.row_mid <= rows.band_bytes
                read(x, rows.first_row(r) * rows.row_in, rows.end_row(r + k - 1) * rows.row_in,
                     f"{n.name} rows {r}..{r + k - 1}")
                scratch(f"{n.name}_scratch")
                arena.write(b_addr, 10**7 + i, np.arange(b_addr.size))
                scratch(f"{pw.name}_scratch")
                arena.read(b_addr, 10**7 + i, np.arange(b_addr.size), band)
                write(y, r * row_out, (r + k) * row_out)
    return arena.high


def _dw_geometry(rng, shape=None):
    h, w, c = shape or (int(rng.integers(1, 9)), int(rng.integers(1, 5)), int(rng.integers(1, 6)))
    fh, dil = int(rng.integers(1, 5)), int(rng.integers(1, 3))
    stride = int(rng.integers(1, 4))
    eff = (fh - 1) * dil + 1
    if rng.random() < 0.5 or h < eff:  # SAME
        out_h = (h + stride - 1) // stride
        pad = max(0, ((out_h - 1) * stride + eff - h) // 2)
    else:  # VALID
        out_h, pad = (h - eff) // stride + 1, 0
    return h, w, c, out_h, Rows(h, out_h, stride, pad, eff, w * c, w * c,
                                band=int(rng.integers(1, 4)))


def random_graph(seed: int):
    """A random DAG of generic ops, depthwise convolutions (some in-place-able) and 1x1
    convolutions after them; tensors are read by up to three later ops."""
    rng = np.random.default_rng(seed)
    sizes = {"in": int(rng.integers(1, 300))}
    nodes: list[Node] = []
    live = ["in"]
    k = 0

    def new(size):
        nonlocal k
        k += 1
        sizes[f"t{k}"] = size
        return f"t{k}"

    prev = None  # (h, w, c, tensor) of the last 1x1 convolution's output
    for _ in range(int(rng.integers(2, 12))):
        srcs = list(rng.choice(live, size=min(len(live), int(rng.integers(1, 3))), replace=False))
        scratch = int(rng.integers(0, 64)) if rng.random() < 0.3 else 0
        if rng.random() < 0.6:
            chain = prev is not None and rng.random() < 0.6  # blocks back to back (DS-CNN)
            h, w, c, out_h, rows = _dw_geometry(rng, prev[:3] if chain else None)
            if chain:
                x = prev[3]
            else:
                x = new(h * w * c)
                nodes.append(Node(f"op{len(nodes)}", srcs, x, scratch=scratch))
            prev = None
            if rng.random() < 0.5 and rows.stride == 1 and out_h == h:
                rows = Rows(h, h, 1, rows.pad, rows.span, w * c, w * c, band=rows.band)
                inplace = h * w
            else:
                inplace = 0
            mid = new(out_h * w * c)
            nodes.append(Node(f"op{len(nodes)}", [x], mid, rows=rows, inplace=inplace,
                              scratch=int(rng.integers(0, 32)) if rng.random() < 0.3 else 0))
            live += [x, mid]
            if rng.random() < 0.7:
                c2 = int(rng.integers(1, 9))
                y = new(out_h * w * c2)
                nodes.append(Node(f"op{len(nodes)}", [mid], y, pointwise=True,
                                  scratch=int(rng.integers(0, 48)) if rng.random() < 0.5 else 0))
                live.append(y)
                prev = (out_h, w, c2, y)
        else:
            y = new(int(rng.integers(1, 400)))
            nodes.append(Node(f"op{len(nodes)}", srcs, y, scratch=scratch))
            live.append(y)
            prev = None
    # the last tensor is the caller's output; a few others are read again at the end
    extra = [t for t in live[1:] if rng.random() < 0.15]
    out = "out"
    sizes[out] = int(rng.integers(1, 50))
    nodes.append(Node(f"op{len(nodes)}", [live[-1], *extra], out))
    return nodes, sizes, {"in", "out"}


@pytest.mark.parametrize("seed", range(300))
def test_chosen_schedule_matches_a_byte_level_simulation(seed):
    nodes, sizes, external = random_graph(seed)
    chosen = schedule.choose(nodes, sizes, external)
    plain = schedule.place(nodes, sizes, external, {})
    assert simulate(nodes, sizes, external, plain) == plain.plan.peak
    assert simulate(nodes, sizes, external, chosen) == chosen.plan.peak
    assert chosen.arena_size <= plain.arena_size  # never worse than layer by layer


@pytest.mark.parametrize("seed", range(300))
def test_every_mode_combination_matches_the_simulation(seed):
    """Not only the chosen modes: random choices among each node's options."""
    nodes, sizes, external = random_graph(seed)
    opts = schedule.options(nodes, external)
    rng = np.random.default_rng(1000 + seed)
    modes = {i: o[int(rng.integers(0, len(o)))] for i, o in opts.items()}
    p = schedule.place(nodes, sizes, external, modes)
    assert simulate(nodes, sizes, external, p) == p.plan.peak
    # and every fused step in the direction it would not have chosen
    flip = {i: schedule.FORWARD if d == schedule.REVERSE else schedule.REVERSE
            for i, d in p.directions.items()}
    q = schedule.place(nodes, sizes, external, modes, force=flip)
    assert simulate(nodes, sizes, external, q) == q.plan.peak


def test_enough_cases_exercise_both_schedules():
    """The random graphs do reach fused (both directions) and in-place placements that
    share a buffer: otherwise the simulations above would prove little."""
    seen = {"fwd": 0, "rev": 0, "inplace": 0, "fused": 0}
    for seed in range(300):
        nodes, sizes, external = random_graph(seed)
        opts = schedule.options(nodes, external)
        modes = {i: o[-1] for i, o in opts.items()}
        p = schedule.place(nodes, sizes, external, modes)
        if seed % 2:
            p = schedule.place(nodes, sizes, external, modes, force={
                i: schedule.REVERSE for i, m in modes.items() if m == FUSE})
        seen["inplace"] += sum(m == INPLACE for m in p.modes.values())
        seen["fused"] += sum(m == FUSE for m in p.modes.values())
        shared = {m for ms in p.groups.values() for m in ms}
        for i, d in p.directions.items():
            if nodes[i].reads[0] in shared:
                seen["fwd" if d == schedule.FORWARD else "rev"] += 1
    assert min(seen.values()) >= 20, seen


def test_simulation_catches_a_gap_one_row_too_small(monkeypatch):
    """The simulation can fail: with the output one input row closer than forward_gap
    computes, some fused graph overwrites a row still to be read."""
    real = schedule.forward_gap
    monkeypatch.setattr(schedule, "forward_gap",
                        lambda rows, row_out: max(0, real(rows, row_out) - rows.row_in))
    with pytest.raises(Clobbered):
        for seed in range(300):
            nodes, sizes, external = random_graph(seed)
            modes = {i: o[-1] for i, o in schedule.options(nodes, external).items()}
            p = schedule.place(nodes, sizes, external, modes, force={
                i: schedule.FORWARD for i, m in modes.items() if m == FUSE})
            simulate(nodes, sizes, external, p)


def test_simulation_catches_a_reverse_gap_one_row_too_small(monkeypatch):
    real = schedule.reverse_gap
    monkeypatch.setattr(schedule, "reverse_gap",
                        lambda rows, row_out: max(0, real(rows, row_out) - rows.row_in))
    with pytest.raises(Clobbered):
        for seed in range(300):
            nodes, sizes, external = random_graph(seed)
            modes = {i: o[-1] for i, o in schedule.options(nodes, external).items()}
            p = schedule.place(nodes, sizes, external, modes, force={
                i: schedule.REVERSE for i, m in modes.items() if m == FUSE})
            simulate(nodes, sizes, external, p)


def kws_like():
    """The DS-CNN-S's shape: a 25x5x64 stem, four depthwise 3x3 + 1x1 blocks, a pool."""
    rows = Rows(25, 25, 1, 1, 3, 320, 320)
    nodes = [Node("op0", ["in"], "t0")]
    sizes = {"in": 490, "t0": 8000, "out": 12}
    for b in range(4):
        mid, y = f"m{b}", f"t{b + 1}"
        sizes[mid] = sizes[y] = 8000
        nodes.append(Node(f"op{2 * b + 1}", [f"t{b}"], mid, rows=rows, inplace=125))
        nodes.append(Node(f"op{2 * b + 2}", [mid], y, pointwise=True))
    sizes["p"] = 64
    nodes += [Node("op9", ["t4"], "p"), Node("op10", ["p"], "out")]
    return nodes, sizes, {"in", "out"}


def test_ds_cnn_blocks_fuse_into_one_tensor_plus_two_rows():
    nodes, sizes, external = kws_like()
    plain = schedule.place(nodes, sizes, external, {})
    assert plain.arena_size == 16000  # two 25x5x64 tensors: the layer-by-layer bound
    p = schedule.choose(nodes, sizes, external)
    assert set(p.modes.values()) == {FUSE}
    # the chain alternates directions and stays within one tensor + one row, + the band
    assert [p.directions[i] for i in (1, 3, 5, 7)] == ["forward", "reverse"] * 2
    assert p.arena_size == 8000 + 320 + 320
    assert simulate(nodes, sizes, external, p) == p.plan.peak


def test_ds_cnn_blocks_with_four_row_bands():
    """Bands of 4 rows (the DSP kernels' choice for a 5-pixel row): the same one-row gap,
    a 4-row band buffer."""
    nodes, sizes, external = kws_like()
    for n in nodes:
        if n.rows is not None:
            n.rows = Rows(25, 25, 1, 1, 3, 320, 320, band=4)
    p = schedule.choose(nodes, sizes, external)
    assert p.arena_size == 8000 + 320 + 4 * 320
    assert simulate(nodes, sizes, external, p) == p.plan.peak


def test_inplace_when_the_depthwise_output_feeds_something_else():
    # a depthwise layer followed by a pool (no 1x1 convolution to fuse with): in place,
    # one 25x5x64 tensor plus one channel's temporary instead of two tensors
    rows = Rows(25, 25, 1, 1, 3, 320, 320)
    nodes = [Node("op0", ["in"], "x"), Node("op1", ["x"], "m", rows=rows, inplace=125),
             Node("op2", ["m"], "out")]
    sizes = {"in": 490, "x": 8000, "m": 8000, "out": 64}
    assert schedule.place(nodes, sizes, {"in", "out"}, {}).arena_size == 16000
    p = schedule.choose(nodes, sizes, {"in", "out"})
    assert p.modes == {1: INPLACE}
    assert p.offsets["m"] == p.offsets["x"]  # one buffer
    assert p.arena_size == 8000 + 128  # + the temporary (125 B, aligned)
    assert simulate(nodes, sizes, {"in", "out"}, p) == p.plan.peak


def test_plain_when_nothing_is_gained():
    # a depthwise layer far smaller than the peak elsewhere keeps the fastest (plain) kernel
    rows = Rows(4, 4, 1, 1, 3, 8, 8)
    nodes = [Node("op0", ["in"], "big"), Node("op1", ["big"], "x"),
             Node("op2", ["x"], "m", rows=rows, inplace=4),
             Node("op3", ["m"], "y", pointwise=True), Node("op4", ["y"], "out")]
    sizes = {"in": 4000, "big": 5000, "x": 32, "m": 32, "y": 32, "out": 4}
    p = schedule.choose(nodes, sizes, {"in", "out"})
    assert p.modes == {2: PLAIN}
