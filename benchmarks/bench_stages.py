"""asv benchmarks of each stage's hot path on small synthetic data.

Data are made once per benchmark run (setup_cache) in asv's cache folder. `time_*` are seconds (asv repeats them);
`track_*` report a throughput measured inside the benchmark, so that ratios between approaches are visible in
one run (for example patches/s of the patch stage against the reference read_region + PIL approach).
"""
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("WSIBENCH_QUIET", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SIZE = 8192


def _data() -> dict:
    """A 8192-px tumor slide, its masks, its patch plan, and TFRecord shards, under one folder."""
    from harness.config import Masks, Patches, TFRecords
    from harness.slides import synth
    from harness.stages import masks, patches, tfrecords
    import pandas as pd

    root = Path(tempfile.mkdtemp(prefix="wsibench-asv-"))
    rng = np.random.default_rng(7)
    layout = synth.make_layout(rng, SIZE, tumor=True)
    synth.write_slide(root / "slide.tif", layout, rng)
    from harness.slides.annotations import write_asap
    write_asap(root / "slide.xml", [("_0", p) for p in layout.lesions] + [("_2", p) for p in layout.holes])
    m = Masks()
    item = {"slide": "slide", "path": str(root / "slide.tif"), "split": "training", "label": "tumor",
            "annotation": str(root / "slide.xml"), "tumor_groups": m.tumor_groups, "exclusion_groups": m.exclusion_groups}
    masks.run_slide(item, m, str(root / "masks"))
    patches.run_slide(item, Patches(max_per_class=100000), str(root / "masks"), str(root / "data" / "patches"))
    man = pd.read_parquet(patches.manifest_path(root / "data" / "patches", "slide"))
    items = tfrecords.plan(man, {"slide": "tumor"}, TFRecords(shards=4, val_fraction=0.0), root / "data" / "tfrecords", 224)
    for it in items:
        tfrecords.write_shard(it)
    tfrecords.write_split_manifest(root / "data" / "tfrecords", [tfrecords.write_shard(i) for i in items], TFRecords())
    return {"root": str(root), "item": item, "patches": len(man), "shard_items": items}


class Synth:
    timeout = 300

    def time_synthetic_slide_8192(self):
        from harness.slides import synth
        out = Path(tempfile.mkdtemp(prefix="wsibench-asv-synth-"))
        rng = np.random.default_rng(1)
        synth.write_slide(out / "s.tif", synth.make_layout(rng, SIZE, tumor=True), rng)
        shutil.rmtree(out)


class Masks:
    def setup(self):
        from harness.slides.annotations import smooth_blob
        rng = np.random.default_rng(0)
        self.polys = [smooth_blob(rng, 50000 + 8000 * i, 60000, 6000, n=2000) for i in range(3)]
        self.rgb = np.clip(rng.normal(200, 30, (1024, 1024, 3)), 0, 255).astype(np.uint8)

    def time_rasterise_lesions_ds16(self):
        from harness.slides.annotations import rasterize
        rasterize(self.polys, [], (6000, 6000), 16.0)

    def time_tissue_mask_1024(self):
        from harness.stages.masks import tissue_mask
        tissue_mask(self.rgb)



class Patches:
    timeout = 600

    def setup_cache(self):
        return _data()

    def _cut(self, data, output="jpeg", warm=True):
        """Patches/s of the stage on the slide; track_ runs in a fresh process, so one warm-up cut first."""
        from harness.config import Patches as P
        from harness.stages import patches
        out = Path(data["root"]) / f"bench-{output}"
        for _ in range(2 if warm else 1):
            shutil.rmtree(out, ignore_errors=True)
            t0 = time.perf_counter()
            rec = patches.run_slide(data["item"], P(max_per_class=100000, output=output),
                                    str(Path(data["root"]) / "masks"), str(out))
            dt = time.perf_counter() - t0
        return rec["patches"] / dt

    def time_patch_stage_jpeg(self, data):
        self._cut(data, warm=False)

    def track_patch_stage_patches_per_s(self, data):
        return self._cut(data)

    track_patch_stage_patches_per_s.unit = "patches/s"

    def track_patch_stage_tfrecord_patches_per_s(self, data):
        return self._cut(data, "tfrecord")

    track_patch_stage_tfrecord_patches_per_s.unit = "patches/s"

    def track_reference_read_region_pil_patches_per_s(self, data):
        """The reference approach on the same patches: one read_region and one PIL JPEG save per patch."""
        import pandas as pd
        import openslide
        from harness.stages import patches
        man = pd.read_parquet(patches.manifest_path(Path(data["root"]) / "data" / "patches", "slide"))
        out = Path(data["root"]) / "bench-reference"
        for _ in range(2):  # a warm-up pass, as for the stage
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
            t0 = time.perf_counter()
            s = openslide.OpenSlide(data["item"]["path"])
            for r in man.itertuples():
                s.read_region((int(r.x), int(r.y)), 0, (224, 224)).convert("RGB").save(out / f"{r.x}_{r.y}.jpg", quality=90)
            dt = time.perf_counter() - t0
        return len(man) / dt

    track_reference_read_region_pil_patches_per_s.unit = "patches/s"


class TFRecordIO:
    timeout = 600

    def setup_cache(self):
        return _data()

    def track_write_records_per_s(self, data):
        from harness.stages import tfrecords
        t0 = time.perf_counter()
        n = 0
        for it in data["shard_items"]:
            Path(it["index"]).unlink(missing_ok=True)  # forces a rewrite
            n += tfrecords.write_shard(it)["records"]
        return n / (time.perf_counter() - t0)

    track_write_records_per_s.unit = "records/s"

    def track_read_mb_per_s(self, data):
        from harness import tfrecord
        t0 = time.perf_counter()
        n = sum(len(d) for it in data["shard_items"] for _, d in tfrecord.read_records(it["path"]))
        return n / 1e6 / (time.perf_counter() - t0)

    track_read_mb_per_s.unit = "MB/s"

    def track_tfdata_images_per_s(self, data):
        """The train stage's tf.data pipeline alone (read, parse, decode, augment, batch), no model."""
        from harness.config import Train
        from harness.stages import train
        files = [it["path"] for it in data["shard_items"]]
        ds = train.dataset(files, Train(model="small_cnn", image_size=96, batch_size=32), training=True)
        it = iter(ds)
        next(it)
        t0 = time.perf_counter()
        n = sum(int(next(it)[0].shape[0]) for _ in range(30))
        return n / (time.perf_counter() - t0)

    track_tfdata_images_per_s.unit = "images/s"


class EngineOverhead:
    """Seconds to map a trivial function over 50 items, engine started and warmed outside the timing."""
    params = ["multiprocessing", "dask", "spark"]
    param_names = ["engine"]
    timeout = 300
    number = 1
    repeat = 3

    def setup(self, name):
        from harness.engines import echo, make_engine, run_all
        self.eng = make_engine(name, workers=2)
        run_all(self.eng, echo, list(range(4)), progress=False)

    def teardown(self, name):
        self.eng.close()

    def time_map_50_trivial_items(self, name):
        from harness.engines import echo, run_all
        run_all(self.eng, echo, list(range(50)), progress=False)
