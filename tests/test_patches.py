import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from harness import pipeline
from harness.config import Masks, Patches, parse_workload
from harness.slides.annotations import rasterize
from harness.stages import masks, patches

from conftest import local_root, shared, truth


def workload(dataset, **sections):
    d = {"name": "t", "dataset": {"kind": "camelyon16", "path": str(dataset)},
         "stages": ["masks", "patches", "tfrecords"], "tfrecords": {"shard_mb": 2, "val_fraction": 0.5}}
    for k, v in sections.items():
        d[k] = {**d.get(k, {}), **v} if isinstance(v, dict) else v
    return parse_workload(d)


def run(tmp, dataset, engine="local", workers=1, **sections):
    with local_root(str(tmp / "data")):
        summary = pipeline.run(workload(dataset, **sections), results_dir=tmp / "results", engine=engine, workers=workers)
    return summary, tmp / "data" / "t"


@pytest.fixture(scope="module")
def jpeg_run(dataset, tmp_path_factory):
    return run(tmp_path_factory.mktemp("jpeg"), dataset, engine="multiprocessing", workers=2)


def manifests(data: Path) -> pd.DataFrame:
    m = pd.concat([pd.read_parquet(p) for p in sorted((data / "patches" / "manifests").glob("*.parquet"))])
    m["path"] = [str(data / p) for p in m.path]
    return m


def inside(polygons, holes, x, y, size=224, margin=16):
    """The share of a patch's pixel centres inside the polygons. Rasterised with a margin and cropped: rasterising
    the patch alone, Pillow paints a few pixels wrongly where a polygon crosses the raster's edge (checked with
    cv2.pointPolygonTest)."""
    m = rasterize(polygons, holes, (size + 2 * margin,) * 2, 1.0, (x - margin, y - margin))
    return m[margin:margin + size, margin:margin + size].mean()


def test_labels_agree_with_ground_truth(dataset, jpeg_run):
    summary, data = jpeg_run
    assert summary["status"] == "ok"
    m = manifests(data)
    assert set(m.slide) == {"normal_001", "normal_002", "tumor_001", "tumor_002"}  # training slides only
    tumor = m[m.label == "tumor"]
    assert len(tumor) > 50 and set(tumor.slide) == {"tumor_001", "tumor_002"}
    assert len(m[m.label == "normal"]) > 200
    for slide, rows in m.groupby("slide"):
        lay = truth(dataset, slide)
        for r in rows.itertuples():
            gt = inside(lay.lesions, lay.holes, r.x, r.y)
            tissue = inside(lay.islands, [], r.x, r.y)
            if r.label == "tumor":
                assert gt >= 0.9, (slide, r.x, r.y, gt)
                assert r.tumor_fraction == pytest.approx(gt, abs=0.02)
            else:
                assert gt == 0, (slide, r.x, r.y, gt)
                assert tissue >= 0.4
    # every patch file exists, is the size the manifest says, and decodes to 224 x 224
    for r in m.sample(40, random_state=0).itertuples():
        assert os.path.getsize(r.path) == r.bytes and Path(r.path).parent.name == r.label
        assert Image.open(r.path).size == (224, 224)
    assert summary["stages"]["patches"]["patches"] == len(m)
    on_disk = [p for p in (data / "patches").rglob("*") if p.is_file()]  # JPEG files and manifests, counted
    assert summary["stages"]["patches"]["files_written"] == len(on_disk)
    pc = summary["stages"]["patches"]["per_class"]  # files and bytes per class, as the folders hold them
    for label in ("tumor", "normal"):
        files = list((data / "patches" / label).glob("*.jpg"))
        assert pc[label]["files"] == pc[label]["patches"] == len(files) == (m.label == label).sum()
        assert pc[label]["bytes"] == sum(os.path.getsize(f) for f in files)


def test_caps_sample_with_a_seed(dataset, tmp_path):
    a, data = run(tmp_path / "a", dataset, stages=["masks", "patches"], patches={"max_per_class": 20})
    b, data_b = run(tmp_path / "b", dataset, stages=["masks", "patches"], patches={"max_per_class": 20})
    ma, mb = manifests(data), manifests(data_b)
    assert ma.groupby(["slide", "label"]).size().max() == 20
    assert ma[["slide", "x", "y"]].values.tolist() == mb[["slide", "x", "y"]].values.tolist()


def read_with_tensorflow(paths):
    import tensorflow as tf
    spec = {"image/encoded": tf.io.FixedLenFeature([], tf.string), "image/format": tf.io.FixedLenFeature([], tf.string),
            "image/class/label": tf.io.FixedLenFeature([], tf.int64), "image/height": tf.io.FixedLenFeature([], tf.int64),
            "image/width": tf.io.FixedLenFeature([], tf.int64), "slide": tf.io.FixedLenFeature([], tf.string),
            "loc_x": tf.io.FixedLenFeature([], tf.int64), "loc_y": tf.io.FixedLenFeature([], tf.int64)}
    out = []
    for raw in tf.data.TFRecordDataset([str(p) for p in paths]):  # TF checks the CRCs as it reads
        ex = tf.io.parse_single_example(raw, spec)
        out.append({k: v.numpy() for k, v in ex.items()})
    return out


INDEPENDENT = """
import hashlib, json, sys
from tfrecord.reader import tfrecord_loader
out = []
for path, index in json.loads(sys.argv[1]):
    for r in tfrecord_loader(path, index, None, shard=(0, 1)):  # the index decides where reading starts
        out.append([bytes(r["slide"]).decode(), int(r["loc_x"][0]), int(r["loc_y"][0]), int(r["image/class/label"][0]),
                    hashlib.md5(bytes(r["image/encoded"])).hexdigest()])
print(json.dumps(out))
"""


def read_with_tfrecord_package(shards):
    """The `tfrecord` package, in its own process: its protobufs clash with TensorFlow's in one process."""
    import json
    arg = json.dumps([[s["path"], s["index"]] for s in shards])
    r = subprocess.run([sys.executable, "-c", INDEPENDENT, arg], capture_output=True, text=True, check=True)
    return [tuple(x) for x in json.loads(r.stdout)]


def test_tfrecords_read_back_two_ways(jpeg_run):
    import json

    summary, data = jpeg_run
    doc = json.loads((data / "tfrecords" / "splits.json").read_text())
    for split in doc["splits"].values():
        for s in split["shards"]:
            s["path"], s["index"] = str(data / "tfrecords" / s["path"]), str(data / "tfrecords" / s["index"])
    m = manifests(data)
    train, val = doc["splits"]["train"], doc["splits"]["val"]
    assert not set(train["slides"]) & set(val["slides"]) and set(train["slides"]) | set(val["slides"]) == set(m.slide)
    assert train["records"] + val["records"] == len(m)
    seen = []
    for split in (train, val):
        shard_paths = [s["path"] for s in split["shards"]]
        tf_recs = read_with_tensorflow(shard_paths)
        assert len(tf_recs) == split["records"] == sum(s["records"] for s in split["shards"])
        for s in split["shards"]:
            assert len(Path(s["index"]).read_text().splitlines()) == s["records"]
        ours = []
        for r in tf_recs:
            assert r["image/format"] == b"jpeg" and r["image/height"] == r["image/width"] == 224
            assert r["slide"].decode() in split["slides"]
            ours.append((r["slide"].decode(), int(r["loc_x"]), int(r["loc_y"]), int(r["image/class/label"]),
                         hashlib.md5(r["image/encoded"]).hexdigest()))
        assert read_with_tfrecord_package(split["shards"]) == ours
        seen += ours
    assert len(set(seen)) == len(seen) == len(m)  # nothing lost, nothing twice
    want = {(r.slide, r.x, r.y, int(r.label == "tumor"), hashlib.md5(Path(r.path).read_bytes()).hexdigest())
            for r in m.itertuples()}
    assert set(seen) == want
    # shuffled: records of one shard are not in (slide, y, x) order
    first = [(s, y, x) for s, x, y, *_ in seen[:50]]
    assert first != sorted(first)


def test_tfrecord_output_gives_the_same_shards(dataset, jpeg_run, tmp_path):
    _, data = jpeg_run
    summary, data2 = run(tmp_path, dataset, patches={"output": "tfrecord"})
    assert summary["status"] == "ok"
    assert not list((data2 / "patches").glob("*/*.jpg"))  # no intermediate JPEG files
    assert len(list((data2 / "patches" / "records").glob("*.tfrecord"))) == 4
    shards = sorted(p.name for p in (data / "tfrecords").glob("*.tfrecord"))
    assert shards == sorted(p.name for p in (data2 / "tfrecords").glob("*.tfrecord"))
    for name in shards:
        assert (data / "tfrecords" / name).read_bytes() == (data2 / "tfrecords" / name).read_bytes()


def snapshot(folder: Path) -> dict:
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def rewritten(folder: Path, before: dict) -> int:
    """Files created or rewritten since the snapshot, counted on disk."""
    return sum(before.get(p) != t for p, t in snapshot(folder).items())


def test_rerun_skips_verified_work(dataset, jpeg_run, tmp_path):
    shutil.copytree(jpeg_run[1], tmp_path / "data" / "t")
    total = len(manifests(tmp_path / "data" / "t"))
    summary, data = run(tmp_path, dataset)
    p, t = summary["stages"]["patches"], summary["stages"]["tfrecords"]
    assert p["skipped"] == 4 and p["skipped_patches"] == total
    assert p["patches"] == 0 and p["patches_per_s"] == 0  # resumed work is not throughput
    assert t["skipped"] == t["shards"] and t["patches"] == 0 and t["skipped_patches"] == total
    assert p["files_written"] == 0 and t["files_written"] == 1  # splits.json alone
    # a damaged patch makes its slide be cut again; a damaged shard is written again
    victim = manifests(data).query("slide == 'tumor_001'").iloc[0].path
    Path(victim).write_bytes(b"garbage")
    shard = next((data / "tfrecords").glob("train-*.tfrecord"))
    good = shard.read_bytes()
    shard.write_bytes(good[:-10])
    before = snapshot(data / "tfrecords")
    summary, _ = run(tmp_path, dataset)
    p, t = summary["stages"]["patches"], summary["stages"]["tfrecords"]
    recut = len(manifests(data).query("slide == 'tumor_001'"))
    assert p["skipped"] == 3 and p["patches"] == recut and p["skipped_patches"] == total - recut
    assert t["files_written"] == rewritten(data / "tfrecords", before) and t["skipped"] == t["shards"] - 1
    assert shard.read_bytes() == good and Path(victim).read_bytes()[:2] == b"\xff\xd8"


@pytest.mark.parametrize("rel, min_patches", [("slides/CMU-1-Small-Region.svs", 20),
                                              ("slides/TCGA-CR-7395-01A-01-TS1.svs", 20)])
def test_real_slides_yield_tissue_patches(rel, min_patches, tmp_path):
    path = shared(rel)
    item = {"slide": path.stem, "path": str(path), "split": "training", "label": "normal", "annotation": None,
            "tumor_groups": [], "exclusion_groups": []}
    masks.run_slide(item, Masks(), str(tmp_path / "masks"))
    rec = patches.run_slide(item, Patches(), str(tmp_path / "masks"), str(tmp_path / "patches"))
    assert rec["patches"] == rec["normal"] >= min_patches and rec["tumor"] == 0
    m = pd.read_parquet(patches.manifest_path(tmp_path / "patches", path.stem))
    assert (m.tissue_fraction >= 0.5).all()
    px = np.asarray(Image.open(tmp_path / m.path.iloc[len(m) // 2]).convert("HSV"))[..., 1]
    assert px.mean() > 25  # tissue is stained, not white background


def test_corrupt_slide_fails_alone(dataset, tmp_path):
    import tifffile

    broken = tmp_path / "ds"
    shutil.copytree(dataset, broken)
    victim = broken / "training" / "normal" / "normal_002.tif"
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 3])  # truncated
    (broken / "training" / "normal" / "normal_003.tif").write_bytes(b"not a slide at all")
    damaged = broken / "training" / "tumor" / "tumor_002.tif"  # opens fine, level-0 tiles are garbage
    with tifffile.TiffFile(damaged) as tf:
        page = tf.pages[0]
        spans = list(zip(page.dataoffsets, page.databytecounts))
    raw = bytearray(damaged.read_bytes())
    for off, n in spans:
        raw[off + 2: off + n] = bytes(n - 2)
    damaged.write_bytes(bytes(raw))
    summary, out = run(tmp_path, broken)
    assert summary["status"] == "partial"
    errors = {e["item"]: e["error"] for e in summary["stages"]["masks"]["errors"]}
    assert set(errors) == {"normal_002", "normal_003"}
    assert "normal_003.tif: cannot open slide" in errors["normal_003"]
    assert "normal_002.tif: cannot open slide" in errors["normal_002"]
    errors = {e["item"]: e["error"] for e in summary["stages"]["patches"]["errors"]}
    assert set(errors) == {"normal_002", "normal_003", "tumor_002"}
    assert "tumor_002.tif: level 0 tile" in errors["tumor_002"] and "cannot be decoded" in errors["tumor_002"]
    assert "no masks for slide 'normal_002'" in errors["normal_002"]
    m = manifests(out)
    assert set(m.slide) == {"normal_001", "tumor_001"}
    assert summary["stages"]["tfrecords"]["patches"] == len(m)
    assert not list((out / "patches").rglob("tumor_002_*"))  # nothing half-written of the failed slide
    assert not list(out.rglob(".*.tmp*"))


def test_sigkill_then_rerun_equals_uninterrupted(dataset, jpeg_run, tmp_path):
    """Kill the whole run (driver and workers) in the middle of the patch stage, run again, compare shards."""
    wl = tmp_path / "w.toml"
    wl.write_text(f'name = "t"\nstages = ["masks", "patches", "tfrecords"]\n[dataset]\nkind = "camelyon16"\n'
                  f'path = "{dataset}"\n[tfrecords]\nshard_mb = 2\nval_fraction = 0.5\n'
                  f'[engine]\nname = "multiprocessing"\nworkers = 2\n')
    env = dict(os.environ, WSIBENCH_LOCAL_ROOT=str(tmp_path / "data"), WSIBENCH_QUIET="1")
    cmd = [sys.executable, "-m", "harness.cli", "run", str(wl), "--results", str(tmp_path / "results")]
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stderr=subprocess.PIPE)
    patches_dir = tmp_path / "data" / "t" / "patches"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(patches_dir.glob("*/*.jpg"))) < 300:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    n_manifests = len(list((patches_dir / "manifests").glob("*.parquet")))
    assert 300 <= len(list(patches_dir.glob("*/*.jpg"))) and n_manifests < 4, "the kill came too late to test anything"
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    data = tmp_path / "data" / "t"
    assert not list(data.rglob(".*.tmp*"))
    ref = jpeg_run[1]
    names = sorted(p.name for p in (ref / "tfrecords").glob("*.tfrecord"))
    assert names == sorted(p.name for p in (data / "tfrecords").glob("*.tfrecord"))
    for name in names:
        assert (ref / "tfrecords" / name).read_bytes() == (data / "tfrecords" / name).read_bytes()
    assert len(list(patches_dir.glob("*/*.jpg"))) == len(manifests(ref))


def test_shards_of_another_plan_are_not_reused(dataset, jpeg_run, tmp_path):
    """Same shard names and counts, another seed: the shards must be written again, not taken as complete."""
    shutil.copytree(jpeg_run[1], tmp_path / "data" / "t")
    old = {p.name: p.read_bytes() for p in (tmp_path / "data" / "t" / "tfrecords").glob("*.tfrecord")}
    before = snapshot(tmp_path / "data" / "t" / "tfrecords")
    summary, data = run(tmp_path, dataset, tfrecords={"seed": 1})
    st = summary["stages"]["tfrecords"]
    assert summary["stages"]["patches"]["skipped"] == 4 and st["skipped"] == 0
    assert st["files_written"] == rewritten(data / "tfrecords", before)
    new = {p.name: p.read_bytes() for p in (data / "tfrecords").glob("*.tfrecord")}
    assert any(new[k] != old.get(k) for k in new)


def test_shards_are_repacked_when_the_patches_change(dataset, jpeg_run, tmp_path):
    """The same grid re-cut at another JPEG quality: same names, positions and counts, other bytes."""
    shutil.copytree(jpeg_run[1], tmp_path / "data" / "t")
    summary, data = run(tmp_path, dataset, patches={"jpeg_quality": 60})
    st = summary["stages"]["tfrecords"]
    assert summary["stages"]["patches"]["skipped"] == 0 and st["skipped"] == 0
    m = manifests(data)
    jpegs = {(r.slide, r.x, r.y): Path(r.path).read_bytes() for r in m.itertuples()}
    from harness import tfrecord_format
    for shard in (data / "tfrecords").glob("*.tfrecord"):
        for _, rec in tfrecord_format.read_records(shard):
            e = tfrecord_format.parse_example(rec)
            assert e["image/encoded"] == jpegs[(e["slide"].decode(), e["loc_x"], e["loc_y"])]


def test_readers_close_their_files(dataset, tmp_path):
    """A long-lived worker cuts slide after slide: its open descriptors must not grow per slide."""
    import harness.slides.dataset as ds
    item = dict(next(s for s in ds.list_slides(dataset) if s["slide"] == "tumor_001"),
                tumor_groups=Masks().tumor_groups, exclusion_groups=Masks().exclusion_groups)
    masks.run_slide(item, Masks(), str(tmp_path / "masks"))

    def cut(i):
        patches.run_slide(item, Patches(max_per_class=10), str(tmp_path / "masks"), str(tmp_path / f"p{i}"))

    cut(0)  # imports and first-use caches open what they keep
    fds = len(os.listdir("/proc/self/fd"))
    for i in range(1, 4):
        cut(i)
    assert len(os.listdir("/proc/self/fd")) == fds


def densified(src: Path, dst: Path, vertices: int) -> int:
    """The same lesions, each edge split into many collinear vertices (as an annotation tool's freehand strokes)."""
    from harness.slides.annotations import read_asap, write_asap

    ann = read_asap(src)
    per_polygon = vertices // len(ann.items)
    out = []
    for a in ann.items:
        p = a.points
        f = np.linspace(0, 1, per_polygon // len(p) + 1, endpoint=False)
        out.append((a.group, (p[:, None] + (np.roll(p, -1, 0) - p)[:, None] * f[None, :, None]).reshape(-1, 2)))
    write_asap(dst, out)
    return sum(len(q) for _, q in out)


def test_border_rasterisation_does_not_scale_with_vertices_times_patches(dataset, tmp_path, monkeypatch):
    """A 10^5-vertex lesion made one slide's grid take 30 s instead of 0.1 s: every border patch rasterised every
    vertex. Now border patches are rasterised together, in blocks, each once; the shares agree with rasterising
    patch by patch."""
    from harness.slides.dataset import list_slides
    from harness.slides.reader import open_slide

    item = next(i for i in list_slides(dataset) if i["slide"] == "tumor_001")
    item.update(tumor_groups=Masks().tumor_groups, exclusion_groups=Masks().exclusion_groups)
    masks.run_slide(item, Masks(), str(tmp_path / "masks"))
    rec, tumor_m, tissue_m = masks.load(tmp_path / "masks", "tumor_001")
    dense = dict(item, annotation=str(tmp_path / "dense.xml"))
    assert densified(Path(item["annotation"]), tmp_path / "dense.xml", 100_000) >= 100_000
    calls = []
    monkeypatch.setattr(patches, "rasterize", lambda *a, **k: calls.append(a[2]) or rasterize(*a, **k))
    cfg = Patches(stride=56)
    with open_slide(item["path"]) as slide:
        g = patches.grid(dense, cfg, rec, tumor_m, tissue_m, slide)
        simple = patches.grid(item, cfg, rec, tumor_m, tissue_m, slide)
    border = (g["tumor"] > 0) & (g["tumor"] < 1)
    assert border.sum() > 100  # many border patches ...
    w, h = (g["gx"].max() + g["read"], g["gy"].max() + g["read"])
    blocks = -(-int(w) // patches.BLOCK) * -(-int(h) // patches.BLOCK)
    assert len(calls) <= 2 * blocks  # ... yet one rasterisation per block, for each of the two grids
    # the shares are those of rasterising each border patch alone (the old way), and of the simple polygons
    ann = patches.read_asap(dense["annotation"])
    inc, exc = ann.regions(item["tumor_groups"]), ann.regions(item["exclusion_groups"])
    iy, ix = np.nonzero(border)
    for a, b in list(zip(iy, ix))[::max(1, len(iy) // 40)]:
        alone = rasterize(inc, exc, (g["read"],) * 2, g["downsample"], (g["gx"][b] * g["downsample"], g["gy"][a] * g["downsample"]))
        assert abs(alone.mean() - g["tumor"][a, b]) < 2e-3
    assert np.abs(g["tumor"] - simple["tumor"]).max() < 0.01


def test_shards_carry_what_mlperf_storage_reads_when_asked(dataset, jpeg_run, tmp_path):
    """tfrecords.dlio_features: every record also carries DLIO 2.0's keys, parsed with exactly the feature spec of
    its TensorFlow reader (tf.io.parse_example); the reference's keys stay. Switching the setting rewrites the
    shards (a shard without the keys is not taken for one with them); from per-slide record files too."""
    import tensorflow as tf
    from harness import tfrecord_format

    shutil.copytree(jpeg_run[1], tmp_path / "data" / "t")
    summary, data = run(tmp_path, dataset, tfrecords={"dlio_features": True})
    st = summary["stages"]["tfrecords"]
    assert summary["status"] == "ok" and st["skipped"] == 0  # the shards without the keys were written again
    dlio_spec = {"image": tf.io.FixedLenFeature([], tf.string), "size": tf.io.FixedLenFeature([], tf.int64)}
    reference_spec = {"image/encoded": tf.io.FixedLenFeature([], tf.string),
                      "image/class/label": tf.io.FixedLenFeature([], tf.int64)}
    shards = sorted((data / "tfrecords").glob("*.tfrecord"))
    n = 0
    for batch in tf.data.TFRecordDataset([str(p) for p in shards]).batch(64):
        d, r = tf.io.parse_example(batch, dlio_spec), tf.io.parse_example(batch, reference_spec)
        assert (d["size"].numpy() == 224).all()
        assert [bytes(x) for x in d["image"].numpy()] == [bytes(x) for x in r["image/encoded"].numpy()]
        assert all(bytes(x)[:2] == b"\xff\xd8" for x in d["image"].numpy())  # JPEG bytes
        n += int(batch.shape[0])
    assert n == len(manifests(data))
    again, _ = run(tmp_path, dataset, tfrecords={"dlio_features": True})
    assert again["stages"]["tfrecords"]["skipped"] == st["shards"]  # complete as they are: reused
    # per-slide record files (patches.output = tfrecord) gain the keys in the shards, byte for byte the same
    s2, data2 = run(tmp_path / "records", dataset, patches={"output": "tfrecord"}, tfrecords={"dlio_features": True})
    assert s2["status"] == "ok"
    for p in shards:
        assert p.read_bytes() == (data2 / "tfrecords" / p.name).read_bytes()
    off, _ = run(tmp_path, dataset)
    assert off["stages"]["tfrecords"]["skipped"] == 0  # and back: rewritten without the keys
    assert all("image" not in tfrecord_format.parse_example(rec)
               for p in (data / "tfrecords").glob("*.tfrecord") for _, rec in tfrecord_format.read_records(p))


def reference_loop(mask: np.ndarray, stride: int, limit: int) -> tuple[list[tuple[int, int]], int]:
    """The reference pipeline's selection (utils/contour_utils.py, get_and_save_patch_samples_from_mask_and_wsi_image),
    transcribed loop for loop: the bounding boxes of the mask's external contours, their points at a stride (x
    outer, y inner), every quotient-th point looked at, accepted when its mask pixel is set, until limit.
    Returns the accepted points and how many candidates there were."""
    import cv2

    contours, _ = cv2.findContours((mask > 0).astype(np.uint8) * 255, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    points = []
    for x, y, w, h in [cv2.boundingRect(c) for c in contours]:
        for row_start in range(x, x + w, stride):
            for col_start in range(y, y + h, stride):
                points.append((row_start, col_start))
    accepted, count = [], 0
    quotient = int(len(points) / limit) + 1
    for x, y in points:
        if len(accepted) >= limit:
            break
        count += 1
        if count % quotient != 0:
            continue
        if mask[y, x] != 0:
            accepted.append((x, y))
    return accepted, len(points)


def blobs(rng, n: int, side: int = 300) -> np.ndarray:
    import cv2

    m = np.zeros((side, side), np.uint8)
    for _ in range(n):
        c = tuple(int(v) for v in rng.integers(0, side, 2))
        axes = tuple(int(v) for v in rng.integers(3, side // 4, 2))
        cv2.ellipse(m, c, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
        cv2.circle(m, c, int(rng.integers(1, 12)), 0, -1)  # holes, and bites out of the edge
    return m > 0


def test_reference_rule_is_the_reference_loop():
    """Random masks of overlapping blobs, the reference's two strides, caps that bind and caps that do not: the
    accepted points, in order, duplicates included, are the transcribed loop's."""
    rng = np.random.default_rng(3)
    dup = 0
    for case in range(60):
        mask = blobs(rng, int(rng.integers(1, 12)))
        stride, limit = (2, 10)[case % 2], int(rng.choice([7, 50, 400, 3000]))
        cands = patches.reference_candidates(mask, stride)
        accepted, _ = patches.reference_accept(cands, mask, limit)
        got = [tuple(int(v) for v in p) for p in cands[accepted]]
        assert got == reference_loop(mask, stride, limit)[0], case
        dup += len(got) - len(set(got))
    assert dup > 0  # overlapping bounding boxes: the same point accepted twice, as the reference did


def corner_mask(xml: Path, shape: tuple[int, int], ds: float) -> np.ndarray:
    """The tumour mask the reference read: level 5 of an ASAP mask TIFF, whose levels keep every 2nd pixel, so
    pixel (i, j) is the annotation at the level-0 point (j ds, i ds); tested here with matplotlib."""
    from matplotlib.path import Path as MplPath
    from harness.slides.annotations import read_asap

    ann = read_asap(xml)
    jj, ii = np.meshgrid(np.arange(shape[1]) * ds, np.arange(shape[0]) * ds)
    pts = np.c_[jj.ravel(), ii.ravel()]
    inside = lambda ps: np.any([MplPath(p).contains_points(pts) for p in ps], axis=0) if ps else np.zeros(len(pts), bool)
    return (inside(ann.regions(["_0", "_1"])) & ~inside(ann.regions(["_2"]))).reshape(shape)


def test_reference_sampling_cuts_the_patches_the_reference_cut(dataset, tmp_path):
    """patches.sampling = "reference" with the reference's strides (64 and 320 px at level 0: 2 and 10 mask
    pixels at 32x; these 8192-px slides' masks are at 8x: 8 and 40) and a cap that thins the candidates: per
    slide and class,
    the level-0 patches are the transcribed loop's points x the mask's downsample, on the tissue mask and on the
    tumour mask the reference read (``corner_mask``); one JPEG file per patch; files and bytes per class
    recorded."""
    cap = 100
    summary, data = run(tmp_path, dataset, stages=["masks", "patches"],
                        patches={"sampling": "reference", "stride_tumor": 64, "stride_normal": 320,
                                 "normal_from_tumor_slides": False, "max_per_class": cap})
    assert summary["status"] == "ok"
    m = manifests(data)
    thinned = 0
    for slide in ("normal_001", "normal_002", "tumor_001", "tumor_002"):
        rec, tumor_m, tissue_m = masks.load(data / "masks", slide)
        if slide.startswith("tumor"):
            tumor_m = corner_mask(dataset / "training" / "lesion_annotations" / f"{slide}.xml", tumor_m.shape,
                                  rec["downsample"])
        rows = m[m.slide == slide]
        for label, mask, ds, stride0 in (("tumor", tumor_m, rec["downsample"], 64),
                                         ("normal", tissue_m, rec["tissue_downsample"], 320)):
            want, n = reference_loop(mask, round(stride0 / ds), cap) if slide.startswith(label) else ([], 0)
            got = rows[rows.label == label]
            assert sorted(zip(got.x, got.y)) == sorted((round(x * ds), round(y * ds)) for x, y in want), (slide, label)
            thinned += n > cap
    assert thinned >= 2  # more candidates than the cap: every q-th looked at, q > 1
    pc = summary["stages"]["patches"]["per_class"]
    assert summary["stages"]["patches"]["sampling"] == "reference"
    for label in ("tumor", "normal"):
        files = sorted((data / "patches" / label).glob("*.jpg"))
        mine = m[m.label == label]
        assert len(files) == len(mine) == pc[label]["files"] == pc[label]["patches"]
        assert pc[label]["bytes"] == mine.bytes.sum() == sum(os.path.getsize(f) for f in files)
        assert pc[label]["slides"] == 2
