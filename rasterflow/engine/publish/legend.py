"""A quicklook's frame: the picture with a legend and a scale bar, as one SVG image.

Why SVG: the Prefect UI renders markdown images, and an SVG image carries text
(band names, colour limits, "5 km") drawn by the browser's own fonts, where a
PNG would need a font rasteriser; the picture itself stays the PNG, embedded.
The SVG is percent-encoded rather than base64 (the PNG inside already is), so
the artifact grows by a few hundred bytes, not by a third. Browsers draw an SVG
image without scripts or outside requests, and the UI's dark theme does not
reach into it: the frame is light, the text dark.

The scale bar measures the picture's horizontal centre line on the WGS 84
ellipsoid (pyproj's Geod), so it is right in any CRS, Web Mercator included,
at the picture's centre.
"""

from __future__ import annotations

import base64
import math
import urllib.parse
from dataclasses import dataclass, field
from typing import Literal

from pyproj import CRS, Geod, Transformer

_PANEL, _PAD, _FONT = 44, 8, "font-family='sans-serif' font-size='12' fill='#222'"
_GEOD = Geod(ellps="WGS84")


@dataclass(frozen=True)
class Legend:
    """What the colours mean: RGB bands, one band on a ramp (its limits), or polygons."""

    kind: Literal["rgb", "ramp", "polygons"]
    names: list[str] = field(default_factory=list)
    limits: list[tuple[float, float]] = field(default_factory=list)  # per band, what 0 and 255 stand for
    ramp: list[tuple[int, int, int]] = field(default_factory=list)  # colour stops, low to high
    fill: tuple[int, int, int] = (0, 0, 0)  # polygons
    count: int = 0  # polygons


@dataclass(frozen=True)
class Quicklook:
    png: bytes
    width: int
    height: int
    legend: Legend
    metres_per_pixel: float | None  # on the ground along the centre line; None: no scale bar


def metres_per_pixel(crs: str, bounds: tuple[float, float, float, float], width: int) -> float | None:
    """Ground metres per picture pixel of a picture ``width`` px wide over ``bounds`` in ``crs``,
    measured along the horizontal centre line; None when the CRS or the bounds cannot say."""
    xmin, ymin, xmax, ymax = bounds
    if not (width > 0 and xmax > xmin and all(math.isfinite(v) for v in bounds)):
        return None
    try:
        to_lonlat = Transformer.from_crs(CRS.from_user_input(crs), "EPSG:4326", always_xy=True)
        middle = (ymin + ymax) / 2
        lons, lats = to_lonlat.transform([xmin, xmax], [middle, middle])
    except Exception:  # noqa: BLE001 - an unknown CRS only costs the scale bar
        return None
    distance = _GEOD.line_length(lons, lats)
    return distance / width if math.isfinite(distance) and distance > 0 else None


def scale_bar(metres_per_px: float, max_px: float) -> tuple[float, str]:
    """The longest round length (1, 2 or 5 x 10^k m) drawn in at most ``max_px``: its length in
    pixels and its label ("500 m", "5 km")."""
    most = metres_per_px * max_px
    magnitude = 10 ** math.floor(math.log10(most))
    metres = max(step * magnitude for step in (1, 2, 5) if step * magnitude <= most)
    label = f"{metres / 1000:g} km" if metres >= 1000 else f"{metres:g} m"
    return metres / metres_per_px, label


def value_text(value: float) -> str:
    """A colour limit as people read it: whole from 100 up, else to 3 significant digits, no exponent
    between 0.001 and 100 (``8200``, ``0.25``, ``12.5``)."""
    size = abs(value)
    if not math.isfinite(value) or size >= 100 or float(value).is_integer():
        return f"{value:.0f}" if math.isfinite(value) else "-"
    if size < 0.001:
        return f"{value:.2g}"
    decimals = 2 - math.floor(math.log10(size))
    return f"{value:.{decimals}f}".rstrip("0").rstrip(".")


def svg(quicklook: Quicklook) -> str:
    """The picture, then a panel under it with the legend on the left and the scale bar on the right."""
    width = max(quicklook.width, 320)
    height = quicklook.height + _PANEL
    png = base64.b64encode(quicklook.png).decode("ascii")
    parts = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
        f"viewBox='0 0 {width} {height}'>",
        f"<rect width='{width}' height='{height}' fill='#eef0f3'/>",
        f"<image width='{quicklook.width}' height='{quicklook.height}' href='data:image/png;base64,{png}' "
        "style='image-rendering:pixelated'/>",
        *_legend(quicklook.legend, quicklook.height + _PAD),
    ]
    if quicklook.metres_per_pixel:
        parts += _scale(quicklook.metres_per_pixel, width, quicklook.height + _PAD)
    return "".join(parts) + "</svg>"


def data_uri(svg_text: str) -> str:
    """``svg_text`` as a data: URI a markdown image takes (no space or parenthesis left in it)."""
    return "data:image/svg+xml," + urllib.parse.quote(svg_text, safe="=:/;,.+-_'")


def _rgb(colour: tuple[int, int, int]) -> str:
    return "#" + "".join(f"{c:02x}" for c in colour)


def _text(x: float, y: float, text: str, anchor: str = "start") -> str:
    escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return f"<text x='{x:.1f}' y='{y:.1f}' text-anchor='{anchor}' {_FONT}>{escaped}</text>"


def _legend(legend: Legend, top: float) -> list[str]:
    if legend.kind == "rgb":
        parts, x = [], float(_PAD)
        for name, colour in zip(legend.names, ("#e53935", "#43a047", "#1e88e5"), strict=False):
            parts += [f"<rect x='{x}' y='{top}' width='10' height='10' fill='{colour}'/>",
                      _text(x + 14, top + 10, name[:14])]
            x += 24 + 7 * len(name[:14])
        low_high = ", ".join(f"{value_text(lo)}-{value_text(hi)}" for lo, hi in legend.limits)
        return parts + [_text(_PAD, top + 28, f"stretched: {low_high}"[:48])]
    if legend.kind == "ramp":
        stops = "".join(f"<stop offset='{i / (len(legend.ramp) - 1):.2f}' stop-color='{_rgb(c)}'/>"
                        for i, c in enumerate(legend.ramp))
        low, high = legend.limits[0]
        return [f"<defs><linearGradient id='ramp'>{stops}</linearGradient></defs>",
                f"<rect x='{_PAD}' y='{top}' width='120' height='10' fill='url(#ramp)'/>",
                _text(_PAD, top + 26, value_text(low)), _text(_PAD + 120, top + 26, value_text(high), "end"),
                _text(_PAD + 128, top + 10, legend.names[0][:24] if legend.names else "")]
    return [f"<rect x='{_PAD}' y='{top}' width='14' height='10' fill='{_rgb(legend.fill)}'/>",
            _text(_PAD + 20, top + 10, f"{legend.count} polygon{'s' if legend.count != 1 else ''}"),
            _text(_PAD, top + 28, ", ".join(legend.names)[:40])]


def _scale(metres_per_px: float, width: float, top: float) -> list[str]:
    length, label = scale_bar(metres_per_px, min(150.0, width / 3))
    x0 = width - _PAD - length
    half = length / 2
    return [f"<rect x='{x0:.1f}' y='{top + 14}' width='{half:.1f}' height='5' fill='#222'/>",
            f"<rect x='{x0 + half:.1f}' y='{top + 14}' width='{half:.1f}' height='5' fill='#fff' "
            "stroke='#222' stroke-width='1'/>",
            _text(x0 + length, top + 10, label, "end")]
