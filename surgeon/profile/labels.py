"""A small deterministic label placer: each label beside its point, clear of the others, inside the chart.

Everything is in display coordinates (pixels, y up); boxes are ``(x0, y0, x1, y1)``. No randomness and no
iteration to a fixed point: labels are placed one after the other, each on the first free candidate position, so
the same points always give the same picture.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

__all__ = ["MARKER_PX", "PAD_PX", "Box", "inside", "place_labels"]

Box = tuple[float, float, float, float]  # x0, y0, x1, y1
Segment = tuple[tuple[float, float], tuple[float, float]]
MARKER_PX = 7.0  # half the size of a marker's obstacle box
PAD_PX = 3.0  # the least gap between a label and anything else


def place_labels(anchors: Sequence[tuple[float, float]], sizes: Sequence[tuple[float, float]], frame: Box,
                 soft: Sequence[Box]) -> list[tuple[Box, Segment | None]] | None:
    """A box for each label and, when it sits away from its point, the leader line to draw; None if one won't fit.

    Labels are placed in order. Each takes the first free candidate: the eight places touching its marker (right,
    left, above, below, then the corners), then rings of growing radius around the point. A candidate is free when
    it lies inside ``frame`` and keeps :data:`PAD_PX` from every label placed so far, every marker, every leader line
    drawn so far and the ``soft`` obstacles, and its own leader line crosses no placed label. When no candidate is
    free, the soft obstacles are dropped, then the leader lines' rules; labels themselves never overlap.
    """
    markers = [(x - MARKER_PX, y - MARKER_PX, x + MARKER_PX, y + MARKER_PX) for x, y in anchors]
    placed: list[Box] = []
    leaders: list[Segment] = []
    result = []
    for (px, py), (w, h) in zip(anchors, sizes, strict=True):
        choice = None
        # ever fewer constraints: clear of everything, then crossing error bars, then leaders crossing each other
        for obstacles, strict in (([*markers, *soft], True), (markers, True), (markers, False)):
            for box, moved in _candidates(px, py, w, h):
                leader = ((px, py), _nearest_on_box(box, px, py)) if moved else None
                if _fits(box, frame, [*placed, *obstacles], leaders if strict else []) and \
                        (leader is None or not strict or not any(_crosses(leader, _grow(b, 1.0)) for b in placed)):
                    choice = (box, leader)
                    break
            if choice is not None:
                break
        if choice is None:
            return None
        placed.append(choice[0])
        if choice[1] is not None:
            leaders.append(choice[1])
        result.append(choice)
    return result


def _candidates(px: float, py: float, w: float, h: float) -> Iterator[tuple[Box, bool]]:
    """Boxes for a ``w`` x ``h`` label around ``(px, py)``, nearest first, each with whether it needs a leader."""
    gap = MARKER_PX + PAD_PX + 1.0  # just clear of the marker, padding included
    yield (px + gap, py - h / 2, px + gap + w, py + h / 2), False
    yield (px - gap - w, py - h / 2, px - gap, py + h / 2), False
    yield (px - w / 2, py + gap, px + w / 2, py + gap + h), False
    yield (px - w / 2, py - gap - h, px + w / 2, py - gap), False
    for sx, sy in ((1, 1), (1, -1), (-1, 1), (-1, -1)):
        x0 = px + gap * 0.7 if sx > 0 else px - gap * 0.7 - w
        y0 = py + gap * 0.7 if sy > 0 else py - gap * 0.7 - h
        yield (x0, y0, x0 + w, y0 + h), False
    for radius in (18, 28, 40, 55, 75, 100, 130, 170, 220, 290, 380, 500):
        steps = max(16, round(2 * math.pi * radius / 24))  # about one candidate per 24 px of the ring
        for step in range(steps):
            angle = math.pi * 2 * step / steps
            cx, cy = px + radius * math.cos(angle), py + radius * math.sin(angle)
            # the box's near edge, not its centre, sits on the ring, so a long label does not cover its own point
            x0 = cx if math.cos(angle) > 0.2 else cx - w if math.cos(angle) < -0.2 else cx - w / 2
            y0 = cy if math.sin(angle) > 0.2 else cy - h if math.sin(angle) < -0.2 else cy - h / 2
            yield (x0, y0, x0 + w, y0 + h), True


def _fits(box: Box, frame: Box, obstacles: Sequence[Box], leaders: Sequence[Segment]) -> bool:
    inside = box[0] >= frame[0] + 2 and box[1] >= frame[1] + 2 and box[2] <= frame[2] - 2 and box[3] <= frame[3] - 2
    if not inside:
        return False
    padded = _grow(box, PAD_PX)
    return not any(_intersect(padded, other) for other in obstacles) and \
        not any(_crosses(segment, padded) for segment in leaders)


def inside(box: Box, outer: Box) -> bool:
    """Whether ``box`` lies wholly within ``outer``."""
    return box[0] >= outer[0] and box[1] >= outer[1] and box[2] <= outer[2] and box[3] <= outer[3]


def _grow(box: Box, by: float) -> Box:
    return box[0] - by, box[1] - by, box[2] + by, box[3] + by


def _intersect(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _nearest_on_box(box: Box, x: float, y: float) -> tuple[float, float]:
    return min(max(x, box[0]), box[2]), min(max(y, box[1]), box[3])


def _crosses(segment: Segment, box: Box) -> bool:
    """Whether the segment passes through the box (Liang-Barsky clipping)."""
    (x0, y0), (x1, y1) = segment
    dx, dy = x1 - x0, y1 - y0
    low, high = 0.0, 1.0
    for p, q in ((-dx, x0 - box[0]), (dx, box[2] - x0), (-dy, y0 - box[1]), (dy, box[3] - y0)):
        if p == 0:
            if q < 0:
                return False
            continue
        t = q / p
        if p < 0:
            low = max(low, t)
        else:
            high = min(high, t)
        if low > high:
            return False
    return True
