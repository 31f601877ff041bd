"""A tiny RGB PNG encoder and a latency-over-time plot for `twinstream demo --png`.

Written here (zlib + struct) so that a chart needs no imaging or plotting dependency.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Sequence

RGB = tuple[int, int, int]

WHITE: RGB = (255, 255, 255)
GREY: RGB = (225, 225, 225)
AXIS: RGB = (60, 60, 60)
GRID: RGB = (200, 200, 200)
OK: RGB = (31, 119, 180)
DDL: RGB = (44, 160, 44)
FAILED: RGB = (214, 39, 40)
UPGRADE: RGB = (255, 228, 196)


def encode_png(width: int, height: int, pixels: Sequence[bytes | bytearray]) -> bytes:
    """PNG bytes of an 8-bit RGB image given as `height` rows of `3 * width` bytes."""
    if width <= 0 or height <= 0 or len(pixels) != height:
        raise ValueError(f"bad image shape {width}x{height} with {len(pixels)} rows")
    for row in pixels:
        if len(row) != 3 * width:
            raise ValueError(f"a row has {len(row)} bytes, expected {3 * width}")
    raw = b"".join(b"\x00" + bytes(row) for row in pixels)  # filter type 0 (None) per row

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit truecolour
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 6))
        + chunk(b"IEND", b"")
    )


class Canvas:
    """A mutable RGB raster with just the primitives the chart needs."""

    def __init__(self, width: int, height: int, background: RGB = WHITE) -> None:
        self.width = width
        self.height = height
        self.rows = [bytearray(bytes(background) * width) for _ in range(height)]

    def set(self, x: int, y: int, colour: RGB) -> None:
        if 0 <= x < self.width and 0 <= y < self.height:
            self.rows[y][3 * x : 3 * x + 3] = bytes(colour)

    def rect(self, x0: int, y0: int, x1: int, y1: int, colour: RGB) -> None:
        for y in range(max(0, y0), min(self.height, y1 + 1)):
            for x in range(max(0, x0), min(self.width, x1 + 1)):
                self.rows[y][3 * x : 3 * x + 3] = bytes(colour)

    def png(self) -> bytes:
        return encode_png(self.width, self.height, self.rows)


def latency_png(
    points: Sequence[tuple[float, float, RGB]],
    windows: Sequence[tuple[float, float]],
    *,
    width: int = 900,
    height: int = 320,
) -> bytes:
    """Scatter of (seconds since start, latency ms, colour) on a log-scale latency axis, upgrade
    windows shaded; horizontal grid lines at 1, 10, 100, 1000, 10000 ms."""
    margin = 20
    canvas = Canvas(width, height)
    span_s = max((p[0] for p in points), default=1.0) or 1.0
    top_ms = max((p[1] for p in points), default=1.0)
    lo, hi = math.log10(0.5), math.log10(max(top_ms, 10.0) * 1.2)
    plot_w, plot_h = width - 2 * margin, height - 2 * margin

    def x_of(t: float) -> int:
        return margin + int(t / span_s * (plot_w - 1))

    def y_of(ms: float) -> int:
        v = (math.log10(max(ms, 0.5)) - lo) / (hi - lo)
        return margin + plot_h - 1 - int(v * (plot_h - 1))

    for a, b in windows:
        canvas.rect(x_of(a), margin, x_of(b), margin + plot_h - 1, UPGRADE)
    decade = 1.0
    while decade <= 10**hi:
        y = y_of(decade)
        canvas.rect(margin, y, margin + plot_w - 1, y, GRID)
        decade *= 10
    canvas.rect(margin, margin, margin, margin + plot_h - 1, AXIS)
    canvas.rect(margin, margin + plot_h - 1, margin + plot_w - 1, margin + plot_h - 1, AXIS)
    for t, ms, colour in points:
        x, y = x_of(t), y_of(ms)
        canvas.rect(x, y, x + 1, y + 1, colour)
    return canvas.png()
