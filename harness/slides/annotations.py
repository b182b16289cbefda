"""ASAP XML lesion annotations (CAMELYON16/17): reading, writing and rasterising."""
from __future__ import annotations

import io
import math
import os
from array import array
import re
import warnings
import xml.etree.ElementTree as ET
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..errors import WsibenchError
from ..fsutil import human_bytes


class AnnotationError(WsibenchError, ValueError):
    """Malformed annotation file; the message names the file and the annotation."""


@dataclass
class Annotation:
    name: str
    kind: str  # Polygon, Spline, Rectangle, Dot
    group: str
    points: np.ndarray  # (n, 2) float64, level-0 pixels (x, y)


@dataclass
class Annotations:
    path: str
    items: list[Annotation] = field(default_factory=list)

    def regions(self, groups) -> list[np.ndarray]:
        """Polygons of the named groups (names compared case-insensitively: `Tumor`, `tumor`, `TUMOR`)."""
        wanted = {g.lower() for g in groups}
        return [a.points for a in self.items if a.group.lower() in wanted and a.kind != "Dot"]

    def dots(self) -> list[Annotation]:
        return [a for a in self.items if a.kind == "Dot"]


MEMBER_SEP = "::"          # "<archive.zip>::<member>": an annotation read from inside a zip archive
MAX_MEMBER_BYTES = 256 << 20  # an annotation member larger than this is refused (a zip bomb, not an annotation)
MAX_ANNOTATION_BYTES = MAX_MEMBER_BYTES  # and so is a file: CAMELYON's largest are a few MB; 64 MB reads in ~10 s


def safe_member(name: str) -> bool:
    """An archive member name that can be trusted as a plain relative name: no '..', no drive, no root, no NUL."""
    if not name or "\x00" in name or name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return False
    return ".." not in name.replace("\\", "/").split("/")


def split_member(path: str) -> tuple[str, str | None]:
    """(archive, member) for ``<archive>.zip::<member>``; (path, None) for a plain file."""
    head, sep, member = path.rpartition(MEMBER_SEP)
    if sep and head.lower().endswith(".zip"):
        return head, member
    return path, None


def read_member(archive: str, member: str) -> bytes:
    """One member of a zip archive, read in memory (never extracted), with its name and size checked."""
    if not safe_member(member):
        raise AnnotationError(f"{archive}: member {member!r}: unsafe name (absolute or with '..')")
    try:
        with zipfile.ZipFile(archive) as z:
            info = z.getinfo(member)
            if info.file_size > MAX_MEMBER_BYTES:
                raise AnnotationError(f"{archive}: member {member!r}: {info.file_size} bytes uncompressed, "
                                      f"more than {MAX_MEMBER_BYTES} (refused)")
            with z.open(info) as f:
                data = f.read(MAX_MEMBER_BYTES + 1)
    except KeyError:
        raise AnnotationError(f"{archive}: no member {member!r}") from None
    except (zipfile.BadZipFile, OSError) as e:
        raise AnnotationError(f"{archive}: cannot read member {member!r}: {e}") from None
    if len(data) > MAX_MEMBER_BYTES:
        raise AnnotationError(f"{archive}: member {member!r}: larger than {MAX_MEMBER_BYTES} bytes (refused)")
    return data


OUTSIDE_MARGIN = 0.05  # of the slide's width and height: annotators' strokes slightly past the edge are clipped


def read_asap(path: str | Path, slide_size: tuple[int, int] | None = None) -> Annotations:
    """Read an ASAP XML file, or a member of a zip archive (``<archive>.zip::<member>``). Coordinates just outside
    ``slide_size`` (w, h), within OUTSIDE_MARGIN of it, are clipped with a warning; further out they are an error
    (a coordinate such as 1e308 would otherwise be clipped into a fake lesion reaching the slide's edge).

    The file is read as a stream, one annotation at a time, its coordinates kept as numbers and checked together
    at the end: a file of 200,000 lesions (64 MB) reads in about 10 s with ~100 MB (the whole XML tree took ~25 s
    and ~700 MB). A file over MAX_ANNOTATION_BYTES is refused, naming its size."""
    path = str(path)
    archive, member = split_member(path)
    out = Annotations(path)
    names, kinds, groups, counts = [], [], [], []
    xy = array("d")  # every annotation's coordinates, one after the other: x0, y0, x1, y1, ...
    try:
        if member is None and os.path.getsize(path) > MAX_ANNOTATION_BYTES:
            raise AnnotationError(f"{path}: {human_bytes(os.path.getsize(path))}, more than the "
                                  f"{human_bytes(MAX_ANNOTATION_BYTES)} an annotation file may have (refused: "
                                  "CAMELYON's largest are a few MB; one of 200,000 lesions is 64 MB)")
        source = io.BytesIO(read_member(archive, member)) if member is not None else path
        events = ET.iterparse(source, events=("end",))  # (start events too would double the work)
        for _, el in events:
            if el.tag != "Annotation":
                continue
            name = el.get("Name") or f"#{len(names)}"
            kind = el.get("Type", "Polygon")
            where = f"{path}: annotation {name!r}"
            if kind not in ("Polygon", "Spline", "Rectangle", "Dot", "PointSet"):
                raise AnnotationError(f"{where}: unsupported Type {kind!r}")
            coords = el.iter("Coordinate")
            try:
                rows = [(float(c.get("Order", 0)), float(c.get("X")), float(c.get("Y"))) for c in coords]
            except (TypeError, ValueError):
                raise AnnotationError(f"{where}: a Coordinate lacks a numeric X or Y") from None
            if any(b[0] < a[0] for a, b in zip(rows, rows[1:])):  # in Order (most files already are)
                rows.sort(key=lambda r: r[0])
            if kind in ("Dot", "PointSet"):
                kind = "Dot"
                if not rows:
                    raise AnnotationError(f"{where}: Dot without a coordinate")
            elif kind == "Rectangle":
                if len(rows) < 2:
                    raise AnnotationError(f"{where}: Rectangle with {len(rows)} vertices, expected 2 or 4")
                xs, ys = [r[1] for r in rows], [r[2] for r in rows]
                x0, y0, x1, y1 = min(xs), min(ys), max(xs), max(ys)
                rows = [(0, x0, y0), (1, x1, y0), (2, x1, y1), (3, x0, y1)]
            elif len(rows) < 3:
                raise AnnotationError(f"{where}: {kind} with {len(rows)} vertices, expected at least 3")
            names.append(name)
            kinds.append(kind)
            groups.append(el.get("PartOfGroup", "None"))
            counts.append(len(rows))
            for r in rows:
                xy.append(r[1])
                xy.append(r[2])
            el.clear()  # what is read is kept as numbers, not as XML elements
    except ET.ParseError as e:
        raise AnnotationError(f"{path}: malformed XML: {e}") from None
    except OSError as e:
        raise AnnotationError(f"{path}: cannot read: {e.strerror or e}") from None
    if events.root.tag != "ASAP_Annotations":
        raise AnnotationError(f"{path}: root element is <{events.root.tag}>, expected <ASAP_Annotations>")
    if not names:
        return out
    counts = np.array(counts)
    flat = np.frombuffer(xy, dtype=np.float64).reshape(-1, 2)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])

    def first(bad_rows: np.ndarray) -> int:  # the annotation holding the first flagged coordinate
        return int(np.searchsorted(starts, np.flatnonzero(bad_rows)[0], side="right") - 1)

    finite = np.isfinite(flat).all(1)
    if not finite.all():
        raise AnnotationError(f"{path}: annotation {names[first(~finite)]!r}: non-finite coordinate")
    if slide_size is not None:
        w, h = slide_size
        mx, my = OUTSIDE_MARGIN * w, OUTSIDE_MARGIN * h
        far = (flat[:, 0] < -mx) | (flat[:, 1] < -my) | (flat[:, 0] > w + mx) | (flat[:, 1] > h + my)
        if far.any():
            i = first(far)
            pts = flat[starts[i]: starts[i] + counts[i]]
            (x0, y0), (x1, y1) = pts.min(0), pts.max(0)
            raise AnnotationError(f"{path}: annotation {names[i]!r}: coordinates far outside the slide ({w}x{h}): "
                                  f"x {x0:.6g} to {x1:.6g}, y {y0:.6g} to {y1:.6g} (more than {OUTSIDE_MARGIN:.0%} "
                                  "beyond its edge)")
        outside = (flat < 0).any(1) | (flat[:, 0] > w) | (flat[:, 1] > h)
        if outside.any():
            for i in np.unique(np.searchsorted(starts, np.flatnonzero(outside), side="right") - 1):
                warnings.warn(f"{path}: annotation {names[i]!r}: coordinates outside the slide ({w}x{h}); clipped",
                              stacklevel=2)
            flat = np.clip(flat, 0, [w, h])
    for name, kind, group, pts in zip(names, kinds, groups, np.split(flat, starts[1:])):
        out.items.append(Annotation(name, kind, group, pts))
    return out


def write_asap(path: str | Path, polygons: list[tuple[str, np.ndarray]]) -> None:
    """Write (group, points) polygons as ASAP XML."""
    root = ET.Element("ASAP_Annotations")
    anns = ET.SubElement(root, "Annotations")
    for i, (group, pts) in enumerate(polygons):
        a = ET.SubElement(anns, "Annotation", Name=f"Annotation {i}", Type="Polygon",
                          PartOfGroup=group, Color="#F4FA58")
        cs = ET.SubElement(a, "Coordinates")
        for j, (x, y) in enumerate(pts):
            ET.SubElement(cs, "Coordinate", Order=str(j), X=f"{x:.2f}", Y=f"{y:.2f}")
    groups = ET.SubElement(root, "AnnotationGroups")
    for g in sorted({g for g, _ in polygons}):
        ET.SubElement(groups, "Group", Name=g, PartOfGroup="None", Color="#64FE2E")
    ET.indent(root)
    Path(path).write_bytes(ET.tostring(root, encoding="utf-8", xml_declaration=True))


def rasterize(include: list[np.ndarray], exclude: list[np.ndarray], shape: tuple[int, int],
              downsample: float | tuple[float, float], origin: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """Paint polygons (level-0 coordinates) into a bool array of ``shape`` (h, w).

    A pixel (i, j) stands for the level-0 square starting at origin + (j, i) * downsample; polygons are
    scaled so that pixel centres decide membership. Exclusions are painted last.
    """
    dx, dy = (downsample, downsample) if np.isscalar(downsample) else downsample
    img = Image.new("L", (shape[1], shape[0]), 0)
    draw = ImageDraw.Draw(img)
    for polys, value in ((include, 1), (exclude, 0)):
        for pts in polys:
            xy = (pts - np.asarray(origin)) / (dx, dy) - 0.5
            draw.polygon(xy.ravel().tolist(), fill=value)
    return np.asarray(img, dtype=bool)


def _winding(pts: np.ndarray, step: float, shape: tuple[int, int]) -> tuple[np.ndarray, int, int] | None:
    """Winding-number membership of the points (j * step, i * step) strictly inside the polygon's bounding box:
    (inside, first row, first column), or None when no such point falls in ``shape``."""
    h, w = shape
    (xmin, ymin), (xmax, ymax) = pts.min(0), pts.max(0)
    r0, r1 = max(0, math.floor(ymin / step) + 1), min(h, math.ceil(ymax / step))  # ymin < i * step < ymax
    c0, c1 = max(0, math.floor(xmin / step) + 1), min(w, math.ceil(xmax / step))
    if r0 >= r1 or c0 >= c1:
        return None
    a, b = pts, np.roll(pts, -1, axis=0)  # closed: the last vertex joins the first
    up = b[:, 1] > a[:, 1]
    lo_y, hi_y = np.where(up, a[:, 1], b[:, 1]), np.where(up, b[:, 1], a[:, 1])
    # an upward edge counts at rows with a.y <= y < b.y, a downward one at b.y <= y < a.y: [lo_y, hi_y)
    first = np.clip(np.ceil(lo_y / step), r0, r1).astype(np.int64)
    last = np.clip(np.ceil(hi_y / step), r0, r1).astype(np.int64)
    n = np.maximum(last - first, 0)
    keep = (n > 0) & (hi_y > lo_y)
    edge = np.repeat(np.nonzero(keep)[0], n[keep])
    if not len(edge):
        return np.zeros((r1 - r0, c1 - c0), bool), r0, c0
    rows = np.arange(len(edge)) - np.repeat(np.cumsum(n[keep]) - n[keep], n[keep]) + first[edge]
    y = rows * step
    ax, ay, bx, by = a[edge, 0], a[edge, 1], b[edge, 0], b[edge, 1]
    x_cross = ax + (y - ay) * (bx - ax) / (by - ay)
    # the point is left of the edge (it counts) when x < x_cross: columns c0 .. ceil(x_cross / step) - 1
    k = np.clip(np.ceil(x_cross / step), c0, c1).astype(np.int64) - c0
    sign = np.where(up[edge], 1, -1)
    diff = np.zeros((r1 - r0, c1 - c0 + 1), np.int32)
    np.add.at(diff, (rows - r0, np.zeros_like(k)), sign)
    np.add.at(diff, (rows - r0, k), -sign)
    return np.cumsum(diff, axis=1)[:, :-1] != 0, r0, c0


def sample_points(include: list[np.ndarray], exclude: list[np.ndarray], shape: tuple[int, int],
                  step: float) -> np.ndarray:
    """A bool mask of ``shape`` (h, w) whose pixel (i, j) is the level-0 point (j * step, i * step) tested against
    the polygons: the level of a mask pyramid written by ASAP (``AnnotationToMask``, nearest-neighbour levels:
    level-n pixel (j, i) is level-0 pixel (2^n j, 2^n i)), which is what CAMELYON16's ``Evaluation_FROC.py`` reads
    at level 5. A point is inside a polygon by its winding number, strictly inside the polygon's bounding box (as
    ASAP tests it); exclusions are applied last."""
    out = np.zeros(shape, bool)
    for polys, value in ((include, True), (exclude, False)):
        for pts in polys:
            got = _winding(np.asarray(pts, np.float64), step, shape)
            if got is not None:
                inside, r0, c0 = got
                out[r0:r0 + inside.shape[0], c0:c0 + inside.shape[1]][inside] = value
    return out


def polygon_area(pts: np.ndarray) -> float:
    x, y = pts[:, 0], pts[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def smooth_blob(rng: np.random.Generator, cx: float, cy: float, r: float, n: int = 96,
                roughness: float = 0.15) -> np.ndarray:
    """A closed, star-shaped random blob: radius modulated by a few low harmonics."""
    t = np.linspace(0, 2 * math.pi, n, endpoint=False)
    rad = np.ones(n)
    for k in range(2, 6):
        rad += rng.uniform(-roughness, roughness) / (k - 1) * np.cos(k * t + rng.uniform(0, 2 * math.pi))
    return np.stack([cx + r * rad * np.cos(t), cy + r * rad * np.sin(t)], axis=1)
