"""The target's slides: what the measured slides were (their level-0 area, tissue share, file bytes, patches), what
the target's are (``--slide-size``: a side in pixels, ``camelyon16``, or ``measured``), and the factor by which
each stage's per-slide demand grows from the one to the other, with what it was scaled by.

A stage's demand does not grow with a slide's bytes alike: the masks stage reads one low-resolution level of the
whole slide (the level nearest the workload's target downsample, 32x: its pixels grow with the slide's level-0
area over that downsample squared; small synthetic slides, whose pyramid stops sooner, are read at a finer level;
its files, three a slide, do not grow); the patch stage and
the TFRecord stage do per patch what they do (read the tiles under it, encode it, write it, pack it), so they grow
with the patches a slide yields; inference scores the patch grid over the tissue, so it grows with the tissue area.
"""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from .figures import figure

# CAMELYON16, as released and as the reference pipeline cut it: the figures in one place, with their sources.
CAMELYON16 = {
    "name": "CAMELYON16",
    "slides": 400, "training_slides": 270, "test_slides": 130,
    "side_px": (100_000, 250_000),        # typical level-0 side (40x, about 0.24 µm/px)
    "slide_bytes": (0.5e9, 3.5e9),        # one pyramidal TIFF, JPEG tiles
    "total_bytes": 700e9,                 # the 400 slides
    "reference_patches": 440_632 + 23_191, "reference_slides": 270,  # training + validation patches, 270 slides
    "patch_folders": ("tumor", "normal"),
    "source": "CAMELYON16 as released (camelyon16.grand-challenge.org): 400 slides (270 training, 130 test), "
              "pyramidal TIFFs at 40x (about 0.24 µm/px), typically 100k-250k px a side, 0.5-3.5 GB each, about "
              "700 GB in all",
    "patches_source": "the 2020 reference pipeline on CAMELYON16 (Spark + BeeGFS demo): 440,632 training + 23,191 "
                      "validation patches from its 270 training slides, written into two folders (tumor/, normal/)",
}


def camelyon16_side() -> float:
    """The side taken for a CAMELYON16 slide: the middle of the typical range."""
    lo, hi = CAMELYON16["side_px"]
    return (lo + hi) / 2


def measured_slides(runs: list[dict]) -> dict | None:
    """The measured slides: per slide its level-0 area (px²), tissue share and file bytes, from a run's masks table
    (``masks.parquet``: the mask's size x its downsample, the tissue mask's share; the slide file's size where it is
    still there); else a synthetic dataset's side (``settings.dataset.synthetic.size``: square slides). With the
    patches a slide yielded, the workload's cap per class and whether the slides reached it. None where no run says."""
    tables, synthetic, source = [], None, None
    for s in runs:
        t = Path(s.get("_dir") or "") / "masks.parquet"
        if s.get("_dir") and t.is_file():
            m = pd.read_parquet(t)
            if {"width", "height", "downsample"} <= set(m.columns) and len(m):
                tables.append(m)
                source = source or f"run {s.get('run_id')}: masks table (mask size x downsample, tissue share)"
        syn = ((s.get("settings") or {}).get("dataset") or {})
        if syn.get("kind") == "synthetic" and (syn.get("synthetic") or {}).get("size"):
            synthetic = synthetic or (syn["synthetic"]["size"], s.get("run_id"))
    out = None
    if tables:
        m = pd.concat(tables).drop_duplicates(subset=["slide"] if "slide" in tables[0] else None)
        area = (m["width"].astype(float) * m["height"].astype(float) * m["downsample"].astype(float) ** 2)
        files = [Path(p).stat().st_size for p in m.get("path", pd.Series([], dtype=str)) if p and Path(p).is_file()]
        tds = m["tissue_downsample"].astype(float) if "tissue_downsample" in m else m["downsample"].astype(float)
        out = {"slides": len(m), "area_px2": float(area.mean()), "side_px": math.sqrt(float(area.mean())),
               "mask_pixels": float((area / tds ** 2).mean()), "mask_downsample": float(tds.mean()),
               "tissue_fraction": float(m["tissue_fraction"].mean()) if "tissue_fraction" in m else None,
               "slide_bytes": sum(files) / len(files) if files and len(files) == len(m) else None,
               "synthetic": synthetic is not None, "source": source}
    elif synthetic:
        side, run_id = synthetic
        out = {"slides": None, "area_px2": float(side) ** 2, "side_px": float(side), "tissue_fraction": None,
               "mask_pixels": None, "mask_downsample": None,
               "slide_bytes": None, "synthetic": True,
               "source": f"run {run_id}: synthetic slides of {side:,} px a side (settings.dataset.synthetic.size)"}
    if out is None:
        return None
    out["target_downsample"] = next((((s.get("settings") or {}).get("masks") or {}).get("target_downsample")
                                     for s in runs if ((s.get("settings") or {}).get("masks") or {})
                                     .get("target_downsample")), 32.0)
    out.update(_patches(runs))
    return out


def _patches(runs: list[dict]) -> dict:
    """Patches a slide as measured (the patch stage's, resumed slides aside), the workload's cap per class and
    slide, the classes a slide yielded (tumor slides: two; normal ones: one) and whether slides reached the cap."""
    for s in runs:
        p = (s.get("stages") or {}).get("patches")
        if not p or not p.get("patches"):
            continue
        cap = (((s.get("settings") or {}).get("patches") or {}).get("max_per_class"))
        t = Path(s.get("_dir") or "") / "patches.parquet"
        items = pd.read_parquet(t) if s.get("_dir") and t.is_file() else None
        if items is not None and "skipped" in items:
            items = items[~items["skipped"].fillna(False).astype(bool)]
        classes, capped = 2.0, False
        if items is not None and {"tumor", "normal"} <= set(items.columns) and len(items):
            classes = float(((items["tumor"] > 0).astype(int) + (items["normal"] > 0).astype(int)).mean()) or 1.0
            capped = bool(cap and ((items["tumor"] >= cap) | (items["normal"] >= cap)).any())
            per_slide = float(items["patches"].mean())
        else:
            slides = (p.get("items") or 0) - (p.get("skipped") or 0)
            if not slides:
                continue
            per_slide = (p["patches"] - (p.get("skipped_patches") or 0)) / slides
        return {"patches_per_slide": per_slide, "max_per_class": cap, "classes_per_slide": classes,
                "capped": capped, "patches_source": f"run {s.get('run_id')}: patch stage, patches a slide"}
    return {"patches_per_slide": None, "max_per_class": None, "classes_per_slide": 2.0, "capped": False,
            "patches_source": None}


def parse_slide_size(text: str) -> str | int:
    """``--slide-size``: ``camelyon16``, ``measured``, or a side in pixels (1,000 to 1,000,000)."""
    t = str(text).strip().lower().replace(",", "").replace("_", "")
    if t in ("camelyon16", "measured"):
        return t
    if t.endswith("px"):
        t = t[:-2]
    if t.endswith("k"):
        t = str(float(t[:-1]) * 1000)
    try:
        v = int(float(t))
    except ValueError:
        raise ValueError(f"--slide-size {text!r}: a side in pixels (e.g. 150000 or 150k), camelyon16 or "
                         "measured") from None
    if not 1000 <= v <= 1_000_000:
        raise ValueError(f"--slide-size {text!r}: a side from 1,000 to 1,000,000 px")
    return v


def target_slides(spec, measured: dict | None) -> dict:
    """The target's slide and each stage's scale factor from the measured slides' (``factors``: area, tissue area,
    patches, each a ``figure`` saying from what). ``spec``: ``camelyon16`` (its typical slide: the middle of its
    range of sides; its patches a slide as the reference pipeline cut them), a side in px (square; the measured
    tissue share; patches in proportion to the tissue area, up to the workload's cap), or ``measured`` (factors
    of 1). Where the measured slides' size is not known, the answer stays with the measured slides and says so."""
    spec = spec or "camelyon16"
    if spec == "measured" or measured is None:
        note = None if spec == "measured" else (
            f"the target's slides ({'CAMELYON16' if spec == 'camelyon16' else f'{spec:,} px a side'}) could not be "
            "scaled to: the runs say nothing of their slides' size (no masks table in any run given, not "
            "synthetic); the answer is for slides like the measured ones (give the run that made the masks too)")
        one = figure(1.0, "x", "the measured slides themselves")
        return {"name": "measured", "described": "slides like the measured ones" + (
                    f" ({measured['side_px']:,.0f} px a side{', synthetic' if measured['synthetic'] else ''})"
                    if measured else ""),
                "measured": measured, "side_px": measured and measured["side_px"],
                "area_px2": measured and measured["area_px2"],
                "patches_per_slide": measured and measured["patches_per_slide"],
                "slide_bytes": measured and measured["slide_bytes"],
                "factors": {"area": one, "tissue": one, "patches": one, "mask_pixels": one}, "note": note}
    tissue = measured["tissue_fraction"]
    was = (f"the measured slides ({measured['side_px']:,.0f} px a side{', synthetic' if measured['synthetic'] else ''}"
           f"; {measured['source']})")
    if spec == "camelyon16":
        side = camelyon16_side()
        name, src = "CAMELYON16", f"{CAMELYON16['source']}; taken at {side:,.0f} px a side, the middle of its range"
        lo, hi = CAMELYON16["side_px"]
        spread = f" (its range: x{lo ** 2 / side ** 2:.2f} to x{hi ** 2 / side ** 2:.2f} of that area)"
        ref = CAMELYON16["reference_patches"] / CAMELYON16["reference_slides"]
        patches, p_src = ref, (f"{CAMELYON16['patches_source']}: {ref:,.0f} a slide")
        slide_bytes = figure(CAMELYON16["total_bytes"] / CAMELYON16["slides"], "B per slide",
                             f"{CAMELYON16['source']}: 700 GB / 400 slides")
    else:
        side, name, spread = float(spec), f"{spec:,} px a side", ""
        src = f"--slide-size {spec}: square slides of {spec:,} px a side"
        patches = measured["patches_per_slide"] and measured["patches_per_slide"] * side ** 2 / measured["area_px2"]
        p_src = measured["patches_per_slide"] and (
            f"{measured['patches_source']} ({measured['patches_per_slide']:,.0f}) x the tissue area's ratio "
            "(the measured tissue share taken for the target's)" + (
                "; the measured slides reached the workload's cap per class, so patches per tissue area, and this, "
                "are a lower bound" if measured["capped"] else ""))
        slide_bytes = measured["slide_bytes"] and figure(
            measured["slide_bytes"] * side ** 2 / measured["area_px2"], "B per slide",
            f"the measured slide files' bytes per level-0 pixel ({measured['slide_bytes']:,.0f} B a slide) x the "
            "target's area")
    area = side ** 2
    cap = measured["max_per_class"] and measured["max_per_class"] * measured["classes_per_slide"]
    if patches and cap and patches > cap:
        patches, p_src = cap, (f"{p_src}, held to the workload's cap: {measured['max_per_class']:,} a class x "
                               f"{measured['classes_per_slide']:.2f} classes a slide as measured")
    factors = {"area": figure(area / measured["area_px2"], "x", f"the level-0 area of {name} slides ({src}{spread}) "
                              f"over that of {was}")}
    factors["tissue"] = figure(factors["area"]["value"], "x", factors["area"]["source"] + (
        f"; the tissue share taken as measured ({tissue:.0%}), CAMELYON16's own not measured here"
        if tissue is not None else "; the tissue share taken as the measured slides' (not measured)"))
    ds = measured["target_downsample"]
    if measured.get("mask_pixels"):
        factors["mask_pixels"] = figure(area / ds ** 2 / measured["mask_pixels"], "x",
                                        f"the pixels of the level the masks stage reads, {name} slides at {ds:g}x "
                                        f"(the workload's target downsample; their pyramid reaches it) over the measured "
                                        f"slides' at {measured['mask_downsample']:g}x ({measured['source']})")
    else:
        factors["mask_pixels"] = dict(factors["area"], source=factors["area"]["source"] + " (the level the masks "
                                      "were read at not known: by area)")
    if patches and measured["patches_per_slide"]:
        factors["patches"] = figure(patches / measured["patches_per_slide"], "x",
                                    f"{patches:,.0f} patches a target slide ({p_src}) over "
                                    f"{measured['patches_per_slide']:,.0f} a measured slide ({measured['patches_source']})")
    else:
        factors["patches"] = dict(factors["tissue"], source=factors["tissue"]["source"] + " (no patches measured: "
                                  "patches taken in proportion to the tissue area)")
    return {"name": name, "described": f"{name} slides", "measured": measured, "side_px": side, "area_px2": area,
            "patches_per_slide": patches or None, "slide_bytes": slide_bytes, "factors": factors, "note": None}


BASIS = {"area": "by area", "mask_pixels": "by the pixels of the mask level", "tissue": "by tissue area",
         "patches": "by patches a slide"}
# How each stage's per-slide demand scales (see the module): by which factor, and which of its operations do not.
STAGE_SCALE = {"masks": ("mask_pixels", ("create", "mkdir", "open", "rename", "unlink", "getattr", "lookup", "flush",
                                  "release")),
               "patches": ("patches", ()), "tfrecords": ("patches", ()), "infer": ("tissue", ())}


def stage_factor(target: dict, stage: str) -> dict:
    """The factor a stage's per-slide demand is scaled by (a ``figure``), and what it scales by."""
    kind, _ = STAGE_SCALE.get(stage, ("area", ()))
    f = target["factors"][kind]
    how = {"area": "the slide's level-0 area",
           "mask_pixels": "the pixels of the low-resolution level it reads (its files a slide stay as measured)",
           "tissue": "the tissue area (the patch grid it scores)", "patches": "the patches a slide yields"}[kind]
    return dict(f, basis=kind, source=f"scaled by {how}: x{f['value']:.3g}, {f['source']}")


def scale_figures(f: dict, stage: str, target: dict) -> dict:
    """A stage's per-slide figures (``pipeline_figures``) for a target slide: bytes, CPU seconds and operations
    times the stage's factor (``stage_factor``; the masks stage's files, a few a slide, stay as measured), patches
    a slide too; each source saying so. ``factor`` keeps the factor, ``demand`` the measured stage as it was."""
    k = stage_factor(target, stage)
    x = k["value"]
    out = dict(f, factor=k)
    if x == 1.0:
        return out
    fixed = STAGE_SCALE.get(stage, ("area", ()))[1]
    say = f", x{x:.3g} for {target['described']} ({BASIS[k['basis']]})"
    for key in ("read_bytes", "write_bytes", "cpu_seconds", "operations", "creates"):
        v = f.get(key)
        if not v or (key == "creates" and "create" in fixed):
            continue
        value = v["value"] * x
        if key == "operations" and fixed and f.get("creates"):  # its creates (and the like) stay as measured
            value = f["creates"]["value"] + (v["value"] - f["creates"]["value"]) * x
        out[key] = dict(v, value=value, source=v["source"] + say)
    out["patches"] = (f.get("patches") or 0) * x
    return out
