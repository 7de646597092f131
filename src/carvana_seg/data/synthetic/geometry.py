"""Convex solids as intersections of half-spaces, and the planes and polygons they are built from.

A solid is a list of planes; clipping a huge square on each plane by all the others gives
its faces (Sutherland-Hodgman), and decals on a face are clipped the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

RGB = tuple[int, int, int]


@dataclass(frozen=True)
class Plane:
    """The half-space n.p <= offset; the unit normal n points out of the solid."""

    normal: np.ndarray
    offset: float

    @staticmethod
    def through(point: Sequence[float], normal: Sequence[float]) -> Plane:
        n = np.asarray(normal, dtype=float)
        n = n / np.linalg.norm(n)
        return Plane(n, float(n @ np.asarray(point, dtype=float)))

    def distance(self, points: np.ndarray) -> np.ndarray:
        return points @ self.normal - self.offset


Decal = tuple[np.ndarray, RGB]  # a convex polygon lying on a face, painted over it


@dataclass(frozen=True)
class Part:
    """A bounding half-space and the look of the face it becomes."""

    plane: Plane
    colour: RGB
    gloss: float = 0.0  # 0 matte .. 1 reflects the bright studio ceiling fully
    decals: tuple[Decal, ...] = ()


@dataclass(frozen=True)
class Face:
    points: np.ndarray  # (n, 3) convex polygon on `plane`
    plane: Plane
    colour: RGB
    gloss: float
    decals: tuple[Decal, ...]


@dataclass(frozen=True)
class Solid:
    faces: tuple[Face, ...]
    vertices: np.ndarray

    def behind(self, plane: Plane) -> bool:
        """Whether the whole solid is inside `plane`: behind the face when that face is visible."""
        return bool((plane.distance(self.vertices) <= 1e-6).all())


def clip_polygon(points: np.ndarray, plane: Plane) -> np.ndarray:
    """Sutherland-Hodgman: the part of a convex 3-D polygon inside the half-space."""
    if len(points) == 0:
        return points
    dist = plane.distance(points)
    out = []
    for i in range(len(points)):
        j = (i + 1) % len(points)
        if dist[i] <= 0:
            out.append(points[i])
        if (dist[i] < 0 < dist[j]) or (dist[j] < 0 < dist[i]):
            out.append(points[i] + dist[i] / (dist[i] - dist[j]) * (points[j] - points[i]))
    return np.array(out).reshape(-1, 3)


def plane_square(plane: Plane, half_size: float = 50.0) -> np.ndarray:
    """A square on the plane much larger than any car: clipping it yields the face."""
    n = plane.normal
    u = np.cross(n, (0.0, 0.0, 1.0) if abs(n[2]) < 0.9 else (1.0, 0.0, 0.0))
    u /= np.linalg.norm(u)
    v = np.cross(n, u)
    corners = ((-1, -1), (1, -1), (1, 1), (-1, 1))
    return np.array([n * plane.offset + half_size * (a * u + b * v) for a, b in corners])


def clip_all(polygon: np.ndarray, planes: Iterable[Plane]) -> np.ndarray:
    for plane in planes:
        polygon = clip_polygon(polygon, plane)
    return polygon


def convex_solid(parts: Sequence[Part]) -> Solid:
    """Intersect half-spaces; each plane that bounds the result becomes a face, decals clipped to it."""
    faces = []
    for i, part in enumerate(parts):
        others = [p.plane for k, p in enumerate(parts) if k != i]
        polygon = clip_all(plane_square(part.plane), others)
        if len(polygon) < 3:
            continue
        decals = tuple((d, c) for d, c in ((clip_all(d, others), c) for d, c in part.decals) if len(d) >= 3)
        faces.append(Face(polygon, part.plane, part.colour, part.gloss, decals))
    return Solid(tuple(faces), np.concatenate([f.points for f in faces]))


def on_plane(plane: Plane, axis: int, coords: Iterable[Sequence[float]]) -> np.ndarray:
    """3-D points on `plane` given their two other coordinates (solves for coordinate `axis`)."""
    a, b = [k for k in range(3) if k != axis]
    n, out = plane.normal, []
    for ca, cb in coords:
        p = np.zeros(3)
        p[a], p[b] = ca, cb
        p[axis] = (plane.offset - n[a] * ca - n[b] * cb) / n[axis]
        out.append(p)
    return np.array(out)


def rect(a0: float, a1: float, b0: float, b1: float) -> list[tuple[float, float]]:
    return [(a0, b0), (a1, b0), (a1, b1), (a0, b1)]


def profile_plane(p: Sequence[float], q: Sequence[float], outward: Sequence[float]) -> Plane:
    """Plane through side-profile points p, q = (x, z), spanning the car's width."""
    n = np.array([q[1] - p[1], 0.0, p[0] - q[0]])
    if n @ (outward[0], 0.0, outward[1]) < 0:
        n = -n
    return Plane.through((p[0], 0.0, p[1]), n)


def plan_plane(p: Sequence[float], q: Sequence[float], outward: Sequence[float]) -> Plane:
    """Vertical plane through plan-view points p, q = (x, y)."""
    n = np.array([q[1] - p[1], p[0] - q[0], 0.0])
    if n @ (outward[0], outward[1], 0.0) < 0:
        n = -n
    return Plane.through((p[0], p[1], 0.0), n)


def section_plane(p: Sequence[float], q: Sequence[float], outward: Sequence[float]) -> Plane:
    """Plane through cross-section points p, q = (y, z), running along the car's length."""
    n = np.array([0.0, q[1] - p[1], p[0] - q[0]])
    if n @ (0.0, outward[0], outward[1]) < 0:
        n = -n
    return Plane.through((0.0, p[0], p[1]), n)
