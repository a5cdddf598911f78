"""The world map: Natural Earth's 110m country shapes (world-atlas TopoJSON, vendored in data/)
drawn as SVG paths, projected equirectangularly, converted once per process in Python."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pycountry

TOPOJSON = Path(__file__).parent / "data" / "countries-110m.json"
WIDTH, HEIGHT = 960, 440  # longitude -180..180, latitude 83..-60 (Antarctica left out)
NORTH, SOUTH = 83.0, -60.0


@dataclass(frozen=True)
class Shape:
    code: str  # ISO 3166-1 alpha-2
    name: str
    path: str  # SVG path data


def _point(lon: float, lat: float) -> tuple[float, float]:
    x = (lon + 180.0) / 360.0 * WIDTH
    y = (NORTH - max(SOUTH, min(NORTH, lat))) / (NORTH - SOUTH) * HEIGHT
    return round(x, 1), round(y, 1)


def _arcs(topology: dict[str, object]) -> list[list[tuple[float, float]]]:
    """The topology's arcs, delta-decoded and dequantised to longitude/latitude."""
    transform = topology["transform"]
    assert isinstance(transform, dict)
    (sx, sy), (tx, ty) = transform["scale"], transform["translate"]
    decoded = []
    for arc in topology["arcs"]:  # type: ignore[attr-defined]
        x = y = 0
        points = []
        for dx, dy in arc:
            x, y = x + dx, y + dy
            points.append((x * sx + tx, y * sy + ty))
        decoded.append(points)
    return decoded


def _ring(indexes: list[int], arcs: list[list[tuple[float, float]]]) -> str:
    points: list[tuple[float, float]] = []
    for index in indexes:
        arc = arcs[index] if index >= 0 else list(reversed(arcs[~index]))
        points.extend(arc if not points else arc[1:])
    projected = [_point(lon, lat) for lon, lat in points]
    # An arc crossing the antimeridian (Fiji, Russia's east) would streak across the map.
    if any(abs(a[0] - b[0]) > WIDTH / 2 for a, b in itertools.pairwise(projected)):
        return ""
    return "M" + "L".join(f"{x},{y}" for x, y in projected) + "Z"


@cache
def shapes() -> tuple[Shape, ...]:
    topology = json.loads(TOPOJSON.read_text())
    arcs = _arcs(topology)
    found = []
    for geometry in topology["objects"]["countries"]["geometries"]:
        country = pycountry.countries.get(numeric=geometry.get("id", ""))
        if country is None:
            continue  # territories without an ISO code (Kosovo, Northern Cyprus, ...)
        polygons = geometry["arcs"] if geometry["type"] == "MultiPolygon" else [geometry["arcs"]]
        path = "".join(_ring(ring, arcs) for polygon in polygons for ring in polygon)
        if path:
            found.append(Shape(country.alpha_2, geometry["properties"]["name"], path))
    return tuple(found)


def shade(count: int, most: int) -> int:
    """A shade 0 (no member) to 5 (the most members of any country)."""
    if count <= 0 or most <= 0:
        return 0
    return max(1, min(5, round(5 * count / most)))
