"""TFRecord stage: patch manifests in, shuffled shards out, split into train and validation by slide.

The driver plans (``plan``): slides are split by a seeded draw per class, so no slide is on both sides;
each side's records are shuffled with the seed and cut into shards of a target size or count. Each shard is
one work item (``write_shard``): it reads the patches the plan lists, writes the shard under a temporary
name, renames it, then writes its index (``offset length`` per record). A shard whose index exists and whose
records all pass their CRCs, in the planned number, is complete and is not written again.
"""
from __future__ import annotations

import math
import os
import sys
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from .. import tfrecord_format
from ..config import TFRecords
from ..errors import StageInputError
from ..fsutil import atomic_path, remove, remove_temporaries, write_bytes, write_json
from .common import StageContext, stage_record
from .patches import LABELS, manifest_path


def split_slides(slides: pd.DataFrame, val_fraction: float, seed: int) -> dict[str, str]:
    """{slide: 'train' | 'val'}, drawn per slide class so both sides see both classes where possible."""
    rng = np.random.default_rng(seed)
    side = {}
    for cls in sorted(slides["class"].unique()):
        names = sorted(slides.loc[slides["class"] == cls, "slide"])
        n_val = round(len(names) * val_fraction)
        if val_fraction > 0 and len(names) >= 2:
            n_val = min(max(1, n_val), len(names) - 1)
        val = set(rng.permutation(names)[:n_val])
        side.update({s: "val" if s in val else "train" for s in names})
    return side


def plan(manifests: pd.DataFrame, slide_class: dict[str, str], cfg: TFRecords, out: Path,
         patch_size: int) -> list[dict]:
    """Shard work items. ``manifests`` holds every patch row of every slide; their paths are relative to
    the data folder, ``out``'s parent."""
    slides = pd.DataFrame({"slide": sorted(manifests["slide"].unique())})
    slides["class"] = [slide_class.get(s) or "unknown" for s in slides["slide"]]
    side = split_slides(slides, cfg.val_fraction, cfg.seed)
    items = []
    for k, split in enumerate(("train", "val")):
        rows = manifests[manifests["slide"].map(side) == split].sort_values(["slide", "y", "x"])
        if rows.empty:
            continue
        rows = rows.iloc[np.random.default_rng([cfg.seed, k]).permutation(len(rows))]
        if cfg.shards:
            n = cfg.shards if split == "train" else max(1, round(cfg.shards * len(rows) / len(manifests)))
        else:  # the bytes of the records themselves: JPEG files and record files plan the same shards
            n = max(1, math.ceil(record_bytes(rows, patch_size, cfg.dlio_features) / (cfg.shard_mb * 1e6)))
        n = min(n, len(rows))
        for i, part in enumerate(np.array_split(np.arange(len(rows)), n)):
            name = f"{split}-{i:05d}-of-{n:05d}"
            cols = rows.iloc[part][["path", "offset", "bytes", "crc32", "label", "slide", "x", "y"]]
            items.append({"shard": name, "split": split, "path": str(out / f"{name}.tfrecord"),
                          "index": str(out / f"{name}.index"), "patch_size": patch_size, "base": str(out.parent),
                          "dlio": cfg.dlio_features, "rows": cols.to_dict("records")})
    return items


def record_bytes(rows: pd.DataFrame, patch_size: int, dlio: bool = False) -> int:
    """The bytes of the Examples the shards will hold for manifest rows (with DLIO's keys when ``dlio``): a JPEG file
    becomes an Example around it; a row of a record file (offset > 0) is its Example already, without those keys."""
    def size(r) -> int:
        args = (LABELS[r.label], r.slide, r.x, r.y, patch_size, patch_size)
        if r.offset == 0:
            return tfrecord_format.patch_example_size(r.bytes, *args, dlio=dlio)
        if not dlio:
            return r.bytes
        return tfrecord_format.patch_example_size(tfrecord_format.jpeg_size_of(r.bytes, *args), *args, dlio=True)
    return int(sum(size(r) for r in rows.itertuples()))


def complete(item: dict) -> bool:
    """The shard and its index exist and hold exactly the planned records, in order, each passing its CRC.

    Each record is compared with its manifest row: slide, position and label, and the content itself (the
    patch's bytes and CRC32, as the manifest recorded them), and it carries DLIO's keys exactly when the plan
    asks for them. A shard of an earlier plan with the same name and size (another seed, another split, patches
    re-cut at another JPEG quality, with or without DLIO's keys) is not taken for this one."""
    try:
        index = [l for l in Path(item["index"]).read_text().split("\n") if l]
        if len(index) != len(item["rows"]):
            return False
        for (_, data), r in zip(tfrecord_format.read_records(item["path"]), item["rows"], strict=True):
            e = tfrecord_format.parse_example(data)
            # the manifest describes what the patch stage wrote: a JPEG file, or an Example without DLIO's keys
            content = tfrecord_format.without_dlio(data) if r["offset"] else e["image/encoded"]
            if ((e["slide"].decode(), e["loc_x"], e["loc_y"], e["image/class/label"]) != (r["slide"], r["x"], r["y"], LABELS[r["label"]])
                    or len(content) != r["bytes"] or zlib.crc32(content) != r["crc32"]):
                return False
            dlio = e.get("image") == e["image/encoded"] and e.get("size") == item["patch_size"]
            if dlio != bool(item.get("dlio")) or (not dlio and any(k in e for k in tfrecord_format.DLIO_KEYS)):
                return False
        return True
    except (OSError, KeyError, ValueError, tfrecord_format.CorruptRecord):  # ValueError: more or fewer records than planned
        return False


def write_shard(item: dict) -> dict:
    if complete(item):
        return {"shard": item["shard"], "split": item["split"], "records": len(item["rows"]), "skipped": True,
                "bytes": os.path.getsize(item["path"]), "files_written": 0, **_counts(item)}
    size = item["patch_size"]
    index = []
    with atomic_path(item["path"]) as tmp, open(tmp, "wb") as f:
        for r in item["rows"]:
            src = Path(item["base"]) / r["path"]
            if r["offset"]:  # already a tf.train.Example, inside a per-slide record file
                data = tfrecord_format.read_at(src, r["offset"] - 12)
                if item.get("dlio"):
                    data = tfrecord_format.with_dlio(data, size)
            else:
                jpeg = src.read_bytes()
                data = tfrecord_format.patch_example(jpeg, LABELS[r["label"]], r["slide"], r["x"], r["y"], size, size,
                                              dlio=bool(item.get("dlio")))
            framed = tfrecord_format.frame(data)
            index.append(f"{f.tell()} {len(framed)}\n")
            f.write(framed)
    write_bytes(item["index"], "".join(index).encode())
    return {"shard": item["shard"], "split": item["split"], "records": len(index), "skipped": False,
            "bytes": os.path.getsize(item["path"]), "files_written": 2, **_counts(item)}


def _counts(item: dict) -> dict:
    labels = [r["label"] for r in item["rows"]]
    return {"tumor": labels.count("tumor"), "normal": labels.count("normal"),
            "slides": sorted({r["slide"] for r in item["rows"]})}


def write_split_manifest(out: Path, results: list[dict], cfg: TFRecords) -> dict:
    """splits.json: per split its slides, record counts and shards (paths relative to ``out``)."""
    doc = {"seed": cfg.seed, "val_fraction": cfg.val_fraction, "splits": {}}
    for split in ("train", "val"):
        shards = sorted((r for r in results if r["split"] == split), key=lambda r: r["shard"])
        doc["splits"][split] = {
            "records": sum(r["records"] for r in shards), "bytes": sum(r["bytes"] for r in shards),
            "slides": sorted({s for r in shards for s in r["slides"]}),
            "shards": [{k: r[k] for k in ("shard", "records", "bytes", "tumor", "normal")} |
                       {"path": f"{r['shard']}.tfrecord", "index": f"{r['shard']}.index"}
                       for r in shards]}
    write_json(out / "splits.json", doc)
    return doc


def drive(ctx: StageContext) -> dict:
    """Shards from the patch manifests of the training slides; splits.json when every shard is written."""
    src, out = ctx.data / "patches", ctx.data / "tfrecords"
    frames = []
    for s in ctx.items("training"):
        mp = manifest_path(src, s["slide"])
        if not mp.is_file():
            print(f"[tfrecords] {s['slide']}: no patch manifest (slide failed or not cut); left out", file=sys.stderr)
            continue
        frames.append(pd.read_parquet(mp))
    if not frames:
        raise StageInputError(f"tfrecords: no patch manifests under {src / 'manifests'}; run the patches stage first")
    manifests = pd.concat(frames, ignore_index=True)
    classes = {s["slide"]: s.get("label") for s in ctx.slides}
    items = plan(manifests, classes, ctx.workload.tfrecords, out, ctx.workload.patches.size)
    out.mkdir(parents=True, exist_ok=True)
    remove_temporaries(out, ctx.data)
    planned = {Path(i[k]).name for i in items for k in ("path", "index")} | {"splits.json"}
    for p in out.iterdir():  # shards of an earlier, different plan
        if p.name not in planned:
            remove(p, ctx.data)
    remove(out / "splits.json", ctx.data)
    mapped = ctx.map("tfrecords", write_shard, items)
    done = [o.value for o in mapped.outcomes if not o.error]
    written = [v for v in done if not v["skipped"]]  # shards found complete are resumed work, not throughput
    n = sum(v["records"] for v in written)
    rec = stage_record(ctx, "tfrecords", mapped, patches=n, patches_per_s=mapped.rate(n),
                       shards=len(items), bytes=sum(v["bytes"] for v in written),
                       skipped=len(done) - len(written), skipped_patches=sum(v["records"] for v in done if v["skipped"]))
    if not rec["errors"]:
        doc = write_split_manifest(out, done, ctx.workload.tfrecords)
        rec["records"] = {k: v["records"] for k, v in doc["splits"].items()}
        rec["files_written"] += 1  # splits.json
    return rec
