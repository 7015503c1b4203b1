"""Value and length axes for evalkit's figures: plain-number tick labels chosen to fit the axis.

Log axes get ticks at 1-2-5 (or finer) steps that fit the axis' length in points; value labels
are plain numbers with the fewest decimals that write them exactly; lengths read 2k, 4k, ….
"""

from __future__ import annotations

import math

from matplotlib import rcParams
from matplotlib.font_manager import FontProperties
from matplotlib.ticker import Formatter, Locator, MaxNLocator, MultipleLocator, NullFormatter

LOG_STEPS = (
    (1,),
    (1, 2, 5),
    (1, 2, 3, 5),
    (1, 1.5, 2, 3, 4, 5, 6, 8),
    (1, 1.5, 2, 3, 4, 5, 6, 7, 8),
    (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 7, 8, 9),
)


def _decimals(v: float) -> int:
    """The fewest decimals (at most 6) that write ``v`` exactly, up to float noise."""
    return next((d for d in range(7) if abs(round(v, d) - v) <= 1e-9 * max(1.0, abs(v))), 6)


def _plain(v: float, decimals: int | None = None) -> str:
    return f"{v + 0.0:.{_decimals(v) if decimals is None else decimals}f}"  # + 0.0: never "-0"


def _points_along(axis) -> float:
    """The length of ``axis`` in points, as laid out when it is drawn."""
    box = axis.axes.get_window_extent()
    return (box.width if axis.axis_name == "x" else box.height) * 72 / axis.axes.figure.dpi


def _label_room(axis, text: str) -> float:
    """Points a tick label takes along ``axis``, a gap included: its height on y, its width on x."""
    size = FontProperties(size=rcParams[f"{axis.axis_name}tick.labelsize"]).get_size_in_points()
    return size * 1.5 if axis.axis_name == "y" else size * (0.62 * len(text) + 1.0)


def _fits(axis, ticks, fraction) -> bool:
    """Whether the labels of ``ticks`` (at ``fraction`` of the axis each) leave each other room."""
    length = _points_along(axis)
    ends = [(fraction(t) * length, _label_room(axis, _plain(t))) for t in sorted(ticks)]
    return all(b - a >= (ra + rb) / 2 for (a, ra), (b, rb) in zip(ends, ends[1:]))


class LogTicks(Locator):
    """A log axis's labelled ticks: the most 1-2-5 … 1-9 steps per decade whose labels fit;
    in a range too narrow for four of those, evenly spaced ones."""

    def __call__(self):
        return self.tick_values(*self.axis.get_view_interval())

    def tick_values(self, vmin, vmax):
        vmin, vmax = sorted((vmin, vmax))
        if not 0 < vmin < vmax:
            return [v for v in (vmin, vmax) if v > 0][:1]
        fraction = lambda v: math.log(v / vmin) / math.log(vmax / vmin)
        decades = range(math.floor(math.log10(vmin)), math.ceil(math.log10(vmax)) + 1)
        best = []
        for steps in LOG_STEPS:
            ticks = [m * 10.0**e for e in decades for m in steps if vmin <= m * 10.0**e <= vmax]
            if _fits(self.axis, ticks, fraction):
                best = ticks
        for bins in (8, 6, 4) if len(best) < 4 else ():
            even = [
                v
                for v in MaxNLocator(nbins=bins, steps=[1, 2, 2.5, 5, 10]).tick_values(vmin, vmax)
                if vmin <= v <= vmax
            ]
            if len(even) > len(best) and _fits(self.axis, even, fraction):
                return even
        return best


class Plain(Formatter):
    """Plain numbers, no offset or power of ten; evenly spaced ticks share their decimals."""

    decimals = None

    def set_locs(self, locs):
        steps = [b - a for a, b in zip(sorted(locs), sorted(locs)[1:])]
        even = steps and all(math.isclose(s, steps[0], rel_tol=1e-6) for s in steps)
        self.decimals = max(map(_decimals, locs)) if even else None

    def __call__(self, x, pos=None):
        return _plain(x, self.decimals)


class LengthLabels(Formatter):
    """Context lengths (4k, 6144). Where neighbours' labels would collide, powers of two keep theirs
    first, then the others from the left wherever there is room."""

    shown = ()

    def set_locs(self, locs):
        to_points = self.axis.axes.transData.transform
        dpi, kept = self.axis.axes.figure.dpi, []  # (position in points, room) of the labels kept
        for v in sorted(locs, key=lambda v: (not _power_of_two(v), v)):
            x, room = to_points((v, 0))[0] * 72 / dpi, _label_room(self.axis, length_label(int(v)))
            if all(abs(x - x2) >= (room + room2) / 2 for x2, room2, _ in kept):
                kept.append((x, room, v))
        self.shown = {v for *_, v in kept}

    def __call__(self, x, pos=None):
        return length_label(int(x)) if x in self.shown else ""


def _power_of_two(v: float) -> bool:
    return v >= 1 and float(v).is_integer() and int(v) & (int(v) - 1) == 0


def _value_axis(axis, log: bool) -> None:
    """Labels in plain numbers across the data's range on the axis that carries the metric."""
    if log:
        (axis.axes.set_yscale if axis.axis_name == "y" else axis.axes.set_xscale)("log")
        axis.set_major_locator(LogTicks())
        axis.set_minor_formatter(NullFormatter())  # unlabelled minor ticks: the labels are chosen above
    axis.set_major_formatter(Plain())


def _position_axis(ax, longest: int) -> None:
    """Token positions 0 … ``longest`` in steps of a power of two (at most eight), labelled 2k, 4k, …"""
    ax.xaxis.set_major_locator(MultipleLocator(2 ** math.ceil(math.log2(max(longest, 8) / 8))))
    ax.xaxis.set_major_formatter(LengthLabels())


def _length_axis(ax, lengths) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(int(n) for n in lengths))
    ax.xaxis.set_major_formatter(LengthLabels())
    ax.minorticks_off()


def length_label(n: int) -> str:
    return f"{n // 1024}k" if n and n % 1024 == 0 else str(n)
