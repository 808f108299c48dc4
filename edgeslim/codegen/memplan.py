"""The static memory plan: every activation buffer gets an offset in one arena.

The buffers come from schedule.py: a tensor, or several tensors that share one buffer at
fixed offsets (a depthwise layer run in place or fused with the next 1x1 convolution),
and scratch buffers.

Buffers live from the step that writes them to the last step that reads them
(inclusive), in execution order. Placement is greedy by size, largest first, each at
the lowest aligned offset that does not overlap a placed buffer whose lifetime
intersects its own (the strategy of TFLite Micro's GreedyMemoryPlanner). The lower
bound for the schedule is the largest sum of sizes of buffers live at one step: no
placement can use less.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

ALIGNMENT = 4  # int8 kernels need none; float tensors and int32 scratch need 4


@dataclass
class Buffer:
    name: str
    size: int  # bytes
    first: int  # index of the step that writes it
    last: int  # index of the last step that reads it
    offset: int = -1

    def overlaps_in_time(self, other: "Buffer") -> bool:
        return self.first <= other.last and other.first <= self.last

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class MemoryPlan:
    buffers: list[Buffer]
    arena_size: int  # the placed peak, rounded up to ALIGNMENT
    peak: int  # highest end offset of any buffer
    lower_bound: int  # largest sum of simultaneously live sizes

    def as_dict(self) -> dict:
        return {
            "arena_size": self.arena_size,
            "peak": self.peak,
            "lower_bound": self.lower_bound,
            "alignment": ALIGNMENT,
            "buffers": [b.as_dict() for b in self.buffers],
        }


def align(n: int) -> int:
    return (n + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT


def live_bytes(buffers: list[Buffer], steps: int | None = None) -> list[int]:
    """Bytes of the buffers live at each step (0 .. ``steps`` - 1, by default up to the last
    step any buffer lives): the activation-memory timeline."""
    if steps is None:
        steps = max((b.last for b in buffers), default=-1) + 1
    return [sum(b.size for b in buffers if b.first <= s <= b.last) for s in range(steps)]


def lower_bound(buffers: list[Buffer]) -> int:
    """The largest sum of sizes of buffers live at one step: no placement can use less."""
    return max(live_bytes(buffers), default=0)


def plan(buffers: list[Buffer]) -> MemoryPlan:
    """Place ``buffers`` (offsets are set in place); returns the plan."""
    order = sorted(buffers, key=lambda b: (-b.size, b.first, b.name))
    placed: list[Buffer] = []
    for buf in order:
        conflicts = sorted(
            (p for p in placed if p.overlaps_in_time(buf)), key=lambda p: p.offset
        )
        offset = 0
        for other in conflicts:
            if offset + buf.size <= other.offset:
                break
            offset = max(offset, align(other.offset + other.size))
        buf.offset = offset
        placed.append(buf)
    peak = max((b.offset + b.size for b in buffers), default=0)
    return MemoryPlan(list(buffers), align(peak), peak, lower_bound(buffers))


def check(plan_: MemoryPlan) -> None:
    """Raise AssertionError if two buffers live at the same time share bytes (a self-test)."""
    bs = plan_.buffers
    for i, a in enumerate(bs):
        if a.offset % ALIGNMENT or a.offset + a.size > plan_.arena_size:
            raise AssertionError(f"{a.name} misplaced")
        for b in bs[i + 1 :]:
            if a.overlaps_in_time(b) and a.offset < b.offset + b.size and b.offset < a.offset + a.size:
                raise AssertionError(f"{a.name} and {b.name} overlap")
