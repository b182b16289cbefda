"""ASAP XML lesion annotations (CAMELYON16/17): reading, writing and rasterising."""
from __future__ import annotations

import math
import re
import warnings
import xml.etree.ElementTree as ET
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..errors import WsibenchError


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
    (a coordinate such as 1e308 would otherwise be clipped into a fake lesion reaching the slide's edge)."""
    path = str(path)
    archive, member = split_member(path)
    try:
        if member is not None:
            root = ET.fromstring(read_member(archive, member))
        else:
            root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise AnnotationError(f"{path}: malformed XML: {e}") from None
    except OSError as e:
        raise AnnotationError(f"{path}: cannot read: {e.strerror or e}") from None
    if root.tag != "ASAP_Annotations":
        raise AnnotationError(f"{path}: root element is <{root.tag}>, expected <ASAP_Annotations>")
    out = Annotations(path)
    for i, el in enumerate(root.iter("Annotation")):
        name = el.get("Name") or f"#{i}"
        kind = el.get("Type", "Polygon")
        where = f"{path}: annotation {name!r}"
        if kind not in ("Polygon", "Spline", "Rectangle", "Dot", "PointSet"):
            raise AnnotationError(f"{where}: unsupported Type {kind!r}")
        coords = sorted(el.iter("Coordinate"), key=lambda c: float(c.get("Order", 0)))
        try:
            pts = np.array([[float(c.get("X")), float(c.get("Y"))] for c in coords], dtype=np.float64)
        except (TypeError, ValueError):
            raise AnnotationError(f"{where}: a Coordinate lacks a numeric X or Y") from None
        pts = pts.reshape(-1, 2)
        if not np.isfinite(pts).all():
            raise AnnotationError(f"{where}: non-finite coordinate")
        if kind in ("Dot", "PointSet"):
            kind = "Dot"
            if len(pts) == 0:
                raise AnnotationError(f"{where}: Dot without a coordinate")
        elif kind == "Rectangle":
            if len(pts) < 2:
                raise AnnotationError(f"{where}: Rectangle with {len(pts)} vertices, expected 2 or 4")
            (x0, y0), (x1, y1) = pts.min(0), pts.max(0)
            pts = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
        elif len(pts) < 3:
            raise AnnotationError(f"{where}: {kind} with {len(pts)} vertices, expected at least 3")
        if slide_size is not None:
            w, h = slide_size
            mx, my = OUTSIDE_MARGIN * w, OUTSIDE_MARGIN * h
            if (pts < [-mx, -my]).any() or (pts[:, 0] > w + mx).any() or (pts[:, 1] > h + my).any():
                (x0, y0), (x1, y1) = pts.min(0), pts.max(0)
                raise AnnotationError(f"{where}: coordinates far outside the slide ({w}x{h}): x {x0:.6g} to {x1:.6g}, "
                                      f"y {y0:.6g} to {y1:.6g} (more than {OUTSIDE_MARGIN:.0%} beyond its edge)")
            if (pts < 0).any() or (pts[:, 0] > w).any() or (pts[:, 1] > h).any():
                warnings.warn(f"{where}: coordinates outside the slide ({w}x{h}); clipped", stacklevel=2)
                pts = np.clip(pts, 0, [w, h])
        out.items.append(Annotation(name, kind, el.get("PartOfGroup", "None"), pts))
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
