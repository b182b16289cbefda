import json

import numpy as np
import pytest

from harness.slides.annotations import AnnotationError, rasterize, read_asap

from conftest import iou, shared

TUMOR = ["_0", "_1", "Tumor", "tumor", "metastasis"]
EXCL = ["_2", "Exclusion", "negative"]


def xml(tmp_path, body: str, name="a.xml"):
    p = tmp_path / name
    p.write_text(f'<?xml version="1.0"?><ASAP_Annotations><Annotations>{body}</Annotations></ASAP_Annotations>')
    return p


def poly(name, kind, group, pts):
    cs = "".join(f'<Coordinate Order="{i}" X="{x}" Y="{y}"/>' for i, (x, y) in enumerate(pts))
    return f'<Annotation Name="{name}" Type="{kind}" PartOfGroup="{group}"><Coordinates>{cs}</Coordinates></Annotation>'


def test_camelyon16_matches_ncrf_polygons():
    ann = read_asap(shared("annotations/camelyon16_tumor_001.xml"))
    assert [a.group for a in ann.items] == ["Tumor", "Tumor"]
    assert [len(a.points) for a in ann.items] == [855, 1657]
    ncrf = json.loads(shared("annotations/ncrf/Tumor_001.json").read_text())
    pos = [np.asarray(p["vertices"], float) for p in ncrf["positive"]]
    neg = [np.asarray(p["vertices"], float) for p in ncrf["negative"]]
    ds = 16
    x0, y0 = 69000, 122000  # a window around the lesions, at downsample 16
    shape = ((135500 - y0) // ds, (74000 - x0) // ds)
    ours = rasterize(ann.regions(TUMOR), ann.regions(EXCL), shape, ds, (x0, y0))
    theirs = rasterize(pos, neg, shape, ds, (x0, y0))
    assert ours.sum() > 1000
    assert iou(ours, theirs) >= 0.99


def test_camelyon17_and_groups():
    ann = read_asap(shared("annotations/camelyon17_patient_004_node_4.xml"))
    assert len(ann.regions(TUMOR)) == 3


def test_kinds_and_exclusions(tmp_path):
    p = xml(tmp_path, poly("a", "Polygon", "_0", [(0, 0), (100, 0), (100, 100), (0, 100)])
            + poly("hole", "Polygon", "_2", [(40, 40), (60, 40), (60, 60), (40, 60)])
            + poly("r", "Rectangle", "_1", [(200, 200), (300, 200), (300, 300), (200, 300)])
            + poly("s", "Spline", "metastasis", [(400, 0), (500, 0), (450, 80)])
            + poly("d", "Dot", "Tumor", [(10, 10)]))
    ann = read_asap(p)
    assert [a.kind for a in ann.items] == ["Polygon", "Polygon", "Rectangle", "Spline", "Dot"]
    assert len(ann.dots()) == 1 and len(ann.regions(TUMOR)) == 3  # the dot is kept as a point, not painted
    m = rasterize(ann.regions(TUMOR), ann.regions(EXCL), (400, 600), 1.0)
    assert m[20, 20] and not m[50, 50] and m[250, 250] and m[30, 450] and not m[150, 150]
    assert abs(m[:100, :100].sum() - (100 * 100 - 20 * 20)) < 250


def test_coordinates_just_outside_warn_and_clip(tmp_path):
    p = xml(tmp_path, poly("big", "Polygon", "_0", [(-40, 10), (1040, 10), (1040, 500)]))
    with pytest.warns(UserWarning, match=r"a\.xml: annotation 'big': coordinates outside the slide \(1000x800\); clipped"):
        ann = read_asap(p, slide_size=(1000, 800))
    assert ann.items[0].points[:, 0].min() == 0 and ann.items[0].points[:, 0].max() == 1000


@pytest.mark.parametrize("x, y", [(1e308, 10), (10, 1e308), (-1e308, 10), (2000, 10), (10, 900)])
def test_coordinates_far_outside_are_an_error_naming_the_annotation(tmp_path, x, y):
    """Before: clipped into a fake lesion reaching the slide's edge."""
    p = xml(tmp_path, poly("far", "Polygon", "_0", [(10, 10), (x, y), (500, 500)]))
    with pytest.raises(AnnotationError, match=r"a\.xml: annotation 'far': coordinates far outside the slide \(1000x800\)"):
        read_asap(p, slide_size=(1000, 800))


@pytest.mark.parametrize("body, message", [
    ("<Annotation", "malformed XML"),
    (poly("tiny", "Polygon", "_0", [(0, 0), (1, 1)]), "annotation 'tiny': Polygon with 2 vertices, expected at least 3"),
    (poly("nan", "Polygon", "_0", [(0, 0), (1, "nan"), (2, 2)]), "annotation 'nan': non-finite coordinate"),
    (poly("inf", "Spline", "_0", [(0, 0), ("inf", 1), (2, 2)]), "annotation 'inf': non-finite coordinate"),
    ('<Annotation Name="nox" Type="Polygon"><Coordinates><Coordinate Order="0" Y="1"/></Coordinates></Annotation>',
     "annotation 'nox': a Coordinate lacks a numeric X or Y"),
    (poly("circle", "Ellipse", "_0", [(0, 0), (1, 1), (2, 2)]), "annotation 'circle': unsupported Type 'Ellipse'"),
])
def test_malformed(tmp_path, body, message):
    p = xml(tmp_path, body, "bad.xml")
    with pytest.raises(AnnotationError) as e:
        read_asap(p)
    assert str(p) in str(e.value) and message in str(e.value)


def test_wrong_root_and_missing(tmp_path):
    p = tmp_path / "x.xml"
    p.write_text("<Other/>")
    with pytest.raises(AnnotationError, match="root element is <Other>, expected <ASAP_Annotations>"):
        read_asap(p)
    with pytest.raises(AnnotationError, match="missing.xml: cannot read"):
        read_asap(tmp_path / "missing.xml")
