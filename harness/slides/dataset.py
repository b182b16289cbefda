"""Datasets as their users hold them: the official CAMELYON16 tree, the flat layout of cloud mirrors, CAMELYON17.

Layouts (``dataset.kind``; ``auto`` detects one and the run record says which):

- ``camelyon16``: ``training/{normal,tumor}/*.tif``, ``training/lesion_annotations/`` or the
  ``training/lesion_annotations.zip`` the release ships, ``testing/images/*.tif``, ``testing/lesion_annotations``
  (folder or zip), ``testing/reference.csv`` (rows of 2 to 4 columns: ``Test_001,Tumor,Macro,Primary``,
  ``Test_003,Normal``).
- ``flat``: every slide in one folder (the root or ``images/``), the class in the name (``normal_*``, ``tumor_*``,
  ``test_*``); annotations beside the slides or in ``annotations/`` / ``lesion_annotations/`` (folders or zips);
  ``reference.csv`` at the root or in ``evaluation/`` or ``testing/``.
- ``camelyon17``: ``center_*/patient_*_node_*.tif`` anywhere under the root, lesion annotations (folder or zip)
  named ``lesion_annotations`` or ``annotations``, a stage-labels CSV (``*stage_labels*.csv``: slide rows
  ``patient_000_node_0.tif,negative``, ``micro`` and ``macro`` tumor, ``itc`` not (pN0(i+) is a negative stage);
  patient rows ``patient_000.zip,pN0``, each slide's ``patient_stage``). Slides of ``dataset.test_centers`` are
  the test split; slides without a stage label are the challenge's test patients: test slides inferred without a
  label (no error, whatever ``dataset.missing_labels``), their patients staged but not scored.

Names match case-insensitively (``Tumor_001.tif`` and ``tumor_001.xml``). Zipped annotations are read from the
archive itself, never extracted: an annotation is then ``<archive>::<member>`` (``annotations.read_asap`` reads
it). Archive member names are untrusted: only plain ``*.xml`` names are listed, nothing with ``..``, a drive, or
an absolute path.

Loud, not silent: a slide labelled tumor without an annotation, or a slide without a label (but a CAMELYON17
test patient's), is an error naming the slides, unless ``dataset.missing_annotations`` / ``dataset.missing_labels`` is ``"exclude"``: then it is left
out and the record says so. The release's known problem slides (CAMELYON16 Test_049, a duplicate, and Test_114,
whose annotation is not exhaustive) are kept out of evaluation by default, also said in the record.
"""
from __future__ import annotations

import csv
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ..errors import DataError
from ..fsutil import not_a_file
from ..metrics.camelyon17 import PN_STAGES
from .annotations import MEMBER_SEP, safe_member

SLIDE_SUFFIXES = (".tif", ".tiff", ".svs", ".ndpi", ".mrxs", ".scn", ".vms", ".bif")
LAYOUTS = ("camelyon16", "flat", "camelyon17")
# CAMELYON16's known problem slides: kept out of evaluation unless dataset.exclude_from_evaluation says otherwise
KNOWN_PROBLEMS = {"test_049": "duplicate slide (CAMELYON16 Test_049)",
                  "test_114": "annotation not exhaustive (CAMELYON16 Test_114)"}
# a CAMELYON17 slide's stage label -> its class: isolated tumour cells are not a metastasis (the patient's stage
# stays pN0(i+), a negative one), so an itc slide is not positive
C17_STAGES = {"negative": "normal", "itc": "normal", "micro": "tumor", "macro": "tumor"}


def key(name: str) -> str:
    """The case-insensitive identity of a slide or annotation: its file stem, lower case."""
    p = PurePosixPath(name.strip().replace("\\", "/"))
    return (p.stem if p.suffix.lower() in (*SLIDE_SUFFIXES, ".xml") else p.name).lower()


@dataclass
class Scan:
    """What is on disk: every slide with what could be matched to it, and what could not."""
    root: Path
    layout: str
    slides: list[dict] = field(default_factory=list)
    annotations: dict[str, str] = field(default_factory=dict)      # key -> path or archive::member
    labels: dict[str, dict] = field(default_factory=dict)          # key -> {"label", "lesion", "source"}
    patients: dict[str, str] = field(default_factory=dict)         # CAMELYON17: patient key -> pN stage
    label_sources: list[str] = field(default_factory=list)
    unmatched_annotations: list[str] = field(default_factory=list)
    unmatched_labels: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)               # unsafe archive members, unknown names
    unreadable: list[str] = field(default_factory=list)            # named like a slide, but no file to read
    errors: list[str] = field(default_factory=list)


# --- annotations: folders and archives ------------------------------------------------------------------------

def _annotation_sources(folder: Path, stems: tuple[str, ...]) -> list[Path]:
    """Folders and zip archives under ``folder`` whose name (case-insensitive) is one of ``stems``."""
    if not folder.is_dir():
        return []
    out = []
    for p in sorted(folder.iterdir()):
        stem = p.name.lower().removesuffix(".zip")
        if stem in stems and (p.is_dir() or (p.is_file() and p.name.lower().endswith(".zip"))):
            out.append(p)
    return out


def _collect_annotations(scan: Scan, sources: list[Path]) -> None:
    """Annotation files of folders (XML files) and archives (XML members), by case-insensitive name.
    A name found in a folder wins over the same name in an archive (the user extracted it)."""
    found: dict[str, str] = {}
    for src in sorted(sources, key=lambda p: p.is_dir()):  # archives first, so folders override them
        if src.is_dir():
            for p in sorted(src.rglob("*")):
                if p.is_file() and p.suffix.lower() == ".xml":
                    found[key(p.name)] = str(p)
            continue
        try:
            with zipfile.ZipFile(src) as z:
                for info in z.infolist():
                    if info.is_dir():
                        continue
                    if not safe_member(info.filename):
                        scan.ignored.append(f"{src}: member {info.filename!r} (unsafe name)")
                        continue
                    if info.filename.lower().endswith(".xml") and not PurePosixPath(info.filename).name.startswith("._"):
                        found[key(info.filename)] = f"{src}{MEMBER_SEP}{info.filename}"
        except (zipfile.BadZipFile, OSError) as e:
            scan.errors.append(f"{src}: not a readable zip archive: {e}")
    scan.annotations.update(found)


# --- labels --------------------------------------------------------------------------------------------------

def read_reference(path: Path) -> dict[str, dict]:
    """A CAMELYON16 reference.csv: {key: {"label": "tumor"|"normal", "lesion": "Macro"|"Micro"|None}}.

    Rows hold 2 to 4 columns (``Test_001,Tumor,Macro,Primary``; ``Test_003,Normal``); a first row that is not
    a label (a header) is skipped; any other row that cannot be read is an error naming the file and line."""
    out = {}
    rows = list(csv.reader(_text(path).splitlines()))
    for i, row in enumerate(rows, 1):
        row = [c.strip() for c in row]
        if not any(row):
            continue
        cls = row[1].lower() if len(row) > 1 else ""
        if cls not in ("tumor", "normal"):
            if i == 1:
                continue  # a header
            raise DataError(f"{path}:{i}: class {row[1] if len(row) > 1 else ''!r}, expected Tumor or Normal")
        if not 2 <= len(row) <= 4:
            raise DataError(f"{path}:{i}: {len(row)} columns, expected 2 to 4 (slide, class[, lesion size[, type]])")
        out[key(row[0])] = {"label": cls, "lesion": (row[2] or None) if len(row) > 2 else None, "source": str(path)}
    return out


def read_stage_labels(path: Path) -> dict[str, dict]:
    """A CAMELYON17 stage-labels CSV: per slide (``patient_000_node_0.tif,negative``) its label; patient rows
    (``patient_000.zip,pN0``) are ``read_patient_stages``'."""
    out = {}
    for i, row in enumerate(csv.reader(_text(path).splitlines()), 1):
        row = [c.strip() for c in row]
        if len(row) < 2 or not row[0] or "_node_" not in row[0].lower():
            continue
        stage = row[1].lower()
        if stage not in C17_STAGES:
            raise DataError(f"{path}:{i}: stage {row[1]!r}, expected one of negative, itc, micro, macro")
        out[key(row[0])] = {"label": C17_STAGES[stage], "lesion": stage if stage != "negative" else None,
                            "source": str(path)}
    return out


def read_patient_stages(path: Path) -> dict[str, str]:
    """The patient rows of a CAMELYON17 stage-labels CSV (``patient_000.zip,pN0``): {patient key: pN stage}, the
    stage spelt as the challenge spells it (pN0, pN0(i+), pN1mi, pN1, pN2; case does not matter)."""
    stages = {s.lower(): s for s in PN_STAGES}
    out = {}
    for i, row in enumerate(csv.reader(_text(path).splitlines()), 1):
        row = [c.strip() for c in row]
        who = key(row[0]).removesuffix(".zip") if len(row) >= 2 else ""
        if not re.match(r"patient_\d+$", who):
            continue
        stage = stages.get(row[1].replace(" ", "").lower())
        if stage is None:
            raise DataError(f"{path}:{i}: stage {row[1]!r}, expected one of {', '.join(PN_STAGES)}")
        out[who] = stage
    return out


def patient(slide: str) -> str | None:
    """The patient of a CAMELYON17 slide name (``patient_004_node_4`` -> ``patient_004``), else None."""
    m = re.match(r"(patient_\d+)_node_\d+$", key(slide))
    return m.group(1) if m else None


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read: {e}") from None


# --- layouts -------------------------------------------------------------------------------------------------

def _slides_in(folder: Path, recursive: bool = False) -> list[Path]:
    """Every entry named like a slide, whether or not it is a file that can be read (fsutil.not_a_file says why
    not): a dangling link or a directory named ``x.tif`` is listed and fails, never dropped unseen."""
    if not folder.is_dir():
        return []
    it = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in it if p.suffix.lower() in SLIDE_SUFFIXES and not p.name.startswith("."))


def _child(folder: Path, name: str) -> Path:
    """A child of folder matched case-insensitively (the path itself when absent)."""
    if folder.is_dir():
        for p in folder.iterdir():
            if p.name.lower() == name:
                return p
    return folder / name


def detect(root: str | Path) -> str:
    """The layout of a dataset folder; an error naming the folder when none fits."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found")
    tr, te = _child(root, "training"), _child(root, "testing")
    if any(_child(tr, s).is_dir() for s in ("normal", "tumor")) or _child(te, "images").is_dir():
        return "camelyon16"
    if any(re.match(r"patient_\d+_node_\d+$", key(p.name)) for p in _slides_in(root, recursive=True)):
        return "camelyon17"
    flat = _slides_in(root) + _slides_in(_child(root, "images"))
    if any(re.match(r"(normal|tumor|test)_\d+$", key(p.name)) for p in flat):
        return "flat"
    raise DataError(f"{root}: no dataset layout recognised (CAMELYON16: training/normal, training/tumor, "
                    "testing/images; flat: normal_*/tumor_*/test_* slides in one folder; CAMELYON17: "
                    "center_*/patient_*_node_*.tif)")


def scan(root: str | Path, layout: str = "auto", test_centers=()) -> Scan:
    """Every slide of the dataset with its split, label and annotation (None where absent)."""
    root = Path(root)
    layout = detect(root) if layout == "auto" else layout
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found")
    s = Scan(root, layout)
    if layout == "camelyon16":
        _scan_camelyon16(s)
    elif layout == "flat":
        _scan_flat(s)
    elif layout == "camelyon17":
        _scan_camelyon17(s, set(test_centers))
    else:
        raise DataError(f"dataset layout {layout!r} unknown; expected one of {', '.join(LAYOUTS)}")
    seen: dict[str, str] = {}
    for sl in s.slides:
        k = key(sl["slide"])
        if k in seen:
            s.errors.append(f"two slides with the name {sl['slide']!r} (names match case-insensitively): "
                            f"{seen[k]} and {sl['path']}")
        seen[k] = sl["path"]
        ann = s.annotations.get(k)
        sl["annotation"] = ann
        lab = s.labels.get(k)
        if sl["label"] is None and lab:
            sl["label"] = lab["label"]
        sl["lesion"] = lab["lesion"] if lab else None
    s.unmatched_annotations = sorted(v for k, v in s.annotations.items() if k not in seen)
    s.unmatched_labels = sorted(k for k in s.labels if k not in seen)
    if not s.slides:
        raise DataError(f"{root}: no slides in the {layout} layout")
    return s


def _add(s: Scan, path: Path, split: str, label: str | None, **extra) -> None:
    why = not_a_file(path)
    if why:  # run like any unreadable slide: each stage fails it, naming why; the others carry on
        s.unreadable.append(f"{path}: {why}")
    s.slides.append({"slide": path.stem, "path": str(path), "split": split, "label": label, **extra})


def _scan_camelyon16(s: Scan) -> None:
    root = s.root
    tr, te = _child(root, "training"), _child(root, "testing")
    for sub, label in (("normal", "normal"), ("tumor", "tumor")):
        for p in _slides_in(_child(tr, sub)):
            _add(s, p, "training", label)
    for p in _slides_in(_child(te, "images")):
        _add(s, p, "testing", None)
    _collect_annotations(s, _annotation_sources(tr, ("lesion_annotations",))
                         + _annotation_sources(te, ("lesion_annotations",)))
    ref = _child(te, "reference.csv")
    if ref.is_file():
        s.labels.update(read_reference(ref))
        s.label_sources.append(str(ref))


def _scan_flat(s: Scan) -> None:
    root = s.root
    folders = [root] + ([_child(root, "images")] if _child(root, "images").is_dir() else [])
    for folder in folders:
        for p in _slides_in(folder):
            m = re.match(r"(normal|tumor|test)_\d+$", key(p.name))
            if not m:
                s.ignored.append(f"{p}: name is not normal_*, tumor_* or test_* (class unknown)")
                continue
            kind = m.group(1)
            _add(s, p, "testing" if kind == "test" else "training", None if kind == "test" else kind)
    sources = [f for f in folders if any(x.suffix.lower() == ".xml" for x in f.iterdir())]
    for folder in (root, _child(root, "evaluation")):
        sources += _annotation_sources(folder, ("annotations", "lesion_annotations"))
    _collect_annotations(s, sources)
    for ref in (_child(root, "reference.csv"), _child(_child(root, "evaluation"), "reference.csv"),
                _child(_child(root, "testing"), "reference.csv")):
        if ref.is_file():
            s.labels.update(read_reference(ref))
            s.label_sources.append(str(ref))
            break


def _scan_camelyon17(s: Scan, test_centers: set[int]) -> None:
    root = s.root
    sources = []
    for p in [root] + sorted(d for d in root.rglob("*") if d.is_dir()):
        sources += _annotation_sources(p, ("lesion_annotations", "annotations"))
    _collect_annotations(s, sources)
    for csv_path in sorted(p for p in root.rglob("*.csv") if "stage_labels" in p.name.lower()):
        s.labels.update(read_stage_labels(csv_path))
        s.patients.update(read_patient_stages(csv_path))
        s.label_sources.append(str(csv_path))
    for p in _slides_in(root, recursive=True):
        if not re.match(r"patient_\d+_node_\d+$", key(p.name)):
            continue
        center = next((int(m.group(1)) for part in reversed(p.parts[:-1])
                       if (m := re.match(r"center_(\d+)$", part.lower()))), None)
        labelled = key(p.name) in s.labels
        split = "testing" if (center in test_centers or not labelled) else "training"
        who = patient(p.name)
        _add(s, p, split, None, center=center, patient=who, patient_stage=s.patients.get(who))


# --- policy: what runs, what is evaluated, what is an error ----------------------------------------------------

def _names(slides: list[dict], limit: int = 12) -> str:
    names = [s["slide"] for s in slides]
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def resolve(s: Scan, cfg) -> tuple[list[dict], dict, list[str]]:
    """Apply the dataset settings to a scan: (slides to run, the record, errors).

    Excluded slides (missing annotation or label, with the setting "exclude") are not run; slides kept out of
    evaluation run, carry ``evaluate = False`` and the reason."""
    errors = list(s.errors)
    known = KNOWN_PROBLEMS if s.layout in ("camelyon16", "flat") and cfg.kind != "synthetic" else {}
    if cfg.exclude_from_evaluation is None:
        no_eval = dict(known)
    else:
        no_eval = {k.lower(): known.get(k.lower(), "dataset.exclude_from_evaluation") for k in cfg.exclude_from_evaluation}
    items, excluded = [], []
    no_ann = [x for x in s.slides if x["label"] == "tumor" and not x.get("annotation")
              and key(x["slide"]) not in no_eval]
    # a CAMELYON17 slide without a stage label is a test patient's: inferred without one, not an error
    no_label = [x for x in s.slides if x["label"] is None and key(x["slide"]) not in no_eval
                and s.layout != "camelyon17"]
    for group, setting, what in ((no_ann, "missing_annotations", "slides labelled tumor without a lesion annotation"),
                                 (no_label, "missing_labels", "slides without a label")):
        if group and getattr(cfg, setting) == "error":
            errors.append(f"{what} ({len(group)}): {_names(group)} (set dataset.{setting} = \"exclude\" "
                          "to leave them out, recorded in the run)")
    drop = {id(x): "no lesion annotation" for x in no_ann if cfg.missing_annotations == "exclude"}
    drop.update({id(x): "no label" for x in no_label if cfg.missing_labels == "exclude"})
    for x in s.slides:
        if id(x) in drop:
            excluded.append({"slide": x["slide"], "reason": drop[id(x)]})
            continue
        reason = no_eval.get(key(x["slide"]))
        items.append(dict(x, evaluate=reason is None, **({"not_evaluated": reason} if reason else {})))
    record = {"layout": s.layout, "slides": len(items), "counts": counts(items),
              "annotations": {"matched": sum(bool(x.get("annotation")) for x in s.slides),
                              "unmatched": s.unmatched_annotations},
              "labels": {"sources": s.label_sources, "unmatched": s.unmatched_labels},
              "excluded": excluded,
              "not_evaluated": [{"slide": x["slide"], "reason": x["not_evaluated"]} for x in items if not x["evaluate"]],
              "ignored": s.ignored, "unreadable": s.unreadable}
    return items, record, errors


def check_slides(slides: list[dict]) -> list[str]:
    """Open every slide as the stages will (``reader.open_slide``: a file, declared dimensions a slide can have,
    a format OpenSlide reads) and check that a TIFF's tiles lie within the file (``reader.check_extent``: a
    truncated copy): one line per slide the run would fail, naming the file. Headers and tile tables only: pixels
    are not decoded (a corrupt tile is found by the run). Entries that are no file are listed as ``unreadable``."""
    from .reader import SlideError, check_extent, open_slide

    problems = []
    for sl in slides:
        if not_a_file(sl["path"]):
            continue
        try:
            with open_slide(sl["path"]):
                pass
            check_extent(sl["path"])
        except SlideError as e:
            problems.append(str(e))
        except OSError as e:
            problems.append(f"{sl['path']}: cannot read: {e.strerror or e}")
    return problems


def check_annotations(slides: list[dict]) -> list[str]:
    """Read every slide's annotation as the masks stage will (``annotations.read_asap``: XML, coordinates that are
    numbers, finite, enough vertices; against the slide's size where the slide opens): one line per problem, each
    naming the file and the annotation. What would fail a slide's masks in the run, found before it."""
    import warnings

    from .annotations import AnnotationError, read_asap
    from .reader import SlideError, open_slide

    problems = []
    for sl in slides:
        if not sl.get("annotation"):
            continue
        try:
            with open_slide(sl["path"]) as slide:
                size = slide.dimensions
        except (SlideError, OSError):
            size = None  # the run fails this slide for its own reason; the XML is still checked
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # coordinates just outside the slide are clipped: no problem
                read_asap(sl["annotation"], size)
        except AnnotationError as e:
            problems.append(str(e))
    return problems


def counts(items: list[dict]) -> dict:
    """Slides per split and class, with how many carry an annotation."""
    out: dict[str, dict] = {}
    for x in items:
        c = out.setdefault(f"{x['split']}/{x['label'] or 'unlabelled'}", {"slides": 0, "annotated": 0})
        c["slides"] += 1
        c["annotated"] += bool(x.get("annotation"))
    return dict(sorted(out.items()))


def load(root: str | Path, cfg) -> tuple[list[dict], dict]:
    """The slides a run uses and the dataset's record; a DataError naming every problem otherwise."""
    layout = "camelyon16" if cfg.kind == "synthetic" else cfg.kind
    s = scan(root, layout, cfg.test_centers)
    items, record, errors = resolve(s, cfg)
    if errors:
        raise DataError(f"{root}: " + "; ".join(errors))
    if not items:
        raise DataError(f"{root}: every slide is excluded")
    return items, record


def list_slides(root: str | Path) -> list[dict]:
    """Every slide of a CAMELYON16-layout folder (or any layout, detected), unfiltered: split, label (None
    where unknown), annotation (None where absent)."""
    return scan(root, "auto").slides


def reference(root: str | Path) -> dict[str, str]:
    """testing/reference.csv of a CAMELYON16 folder as {slide key: 'tumor' | 'normal'}."""
    f = _child(_child(Path(root), "testing"), "reference.csv")
    return {k: v["label"] for k, v in read_reference(f).items()} if f.is_file() else {}


def table(record: dict) -> str:
    """A short text table of a dataset record (``wsibench validate``)."""
    lines = [f"{'split':<10} {'class':<11} {'slides':>6} {'annotated':>9}"]
    for k, c in record["counts"].items():
        split, cls = k.split("/")
        lines.append(f"{split:<10} {cls:<11} {c['slides']:>6} {c['annotated']:>9}")
    a, lab = record["annotations"], record["labels"]
    lines.append(f"annotations: {a['matched']} matched to slides, {len(a['unmatched'])} unmatched"
                 + (f" ({', '.join(Path(u.split(MEMBER_SEP)[-1]).name for u in a['unmatched'][:8])}"
                    + (" ..." if len(a["unmatched"]) > 8 else "") + ")" if a["unmatched"] else ""))
    lines.append(f"labels: {', '.join(lab['sources']) or 'no label file'}"
                 + (f"; {len(lab['unmatched'])} rows name no slide ({', '.join(lab['unmatched'][:8])})"
                    if lab["unmatched"] else ""))
    for what in ("excluded", "not_evaluated"):
        if record[what]:
            title = "excluded (not run)" if what == "excluded" else "kept out of evaluation"
            lines.append(f"{title}: " + ", ".join(f"{x['slide']} ({x['reason']})" for x in record[what]))
    for x in record["ignored"][:10]:
        lines.append(f"ignored: {x}")
    for x in record.get("unreadable", []):
        lines.append(f"unreadable (fails in the run): {x}")
    return "\n".join(lines)
