"""asv benchmarks of each stage's hot path, and ratios that mean something across machines.

Every benchmark here is lower-is-better, as asv's `compare` and `continuous` (and so `scripts/bench --compare`)
assume: `time_*` are wall-clock seconds (asv repeats them and keeps its statistics); `track_*_time_ratio` are
ratios of two times measured side by side: the patch stage against the reference approach and against the codec
limit in CPU seconds of this process (time.process_time, user + system: what other processes do to a shared
machine does not enter), writing to memory (/dev/shm, where there is one: the disk's speed is the storage
benchmarks' business, not the code's); each engine against multiprocessing in wall-clock seconds (the work runs in
worker processes). Each round times the two back to back; the median of the rounds' ratios is reported. Times move with
the machine; the ratios move with the code.

Data: the ratios and `RealSlide` run on the real slide CMU-1-Small-Region.svs (Aperio SVS, JPEG tiles, real
H&E: its patches weigh what real ones weigh), found at ../shared/data/slides/ beside the repository or at
$WSIBENCH_REAL_SLIDE; without it those benchmarks are skipped (asv shows them as skipped) and say why. The
other benchmarks make small synthetic data once per run (setup_cache) in asv's cache folder, which asv removes.
"""
import contextlib
import functools
import itertools
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("WSIBENCH_QUIET", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SIZE = 8192
# WSIBENCH_BENCH_SMOKE=1: the test suite's check that every benchmark runs (one round per ratio, 2 slides per
# engine map): its figures are not worth keeping
SMOKE = os.environ.get("WSIBENCH_BENCH_SMOKE") == "1"
ROUNDS = 1 if SMOKE else 9  # rounds per ratio (the median of the rounds' ratios is reported)
COPIES = 2 if SMOKE else 8  # slides (the real one under 8 names) mapped by the engines
# patch grids on the real slide: 224, the default (42 patches: the per-slide planning from its masks, at full
# resolution on this single-level slide, weighs most); 56, dense and overlapping (619 patches: per-patch work weighs most)
STRIDES = [224, 56]
REAL_SLIDE = Path(os.environ.get("WSIBENCH_REAL_SLIDE") or
                  Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "slides" / "CMU-1-Small-Region.svs")


def _data() -> dict:
    """A 8192-px tumor slide, its masks, its patch plan, and TFRecord shards, under one folder."""
    from harness.config import Masks, Patches, TFRecords
    from harness.slides import synth
    from harness.stages import masks, patches, tfrecords
    import pandas as pd

    root = Path(tempfile.mkdtemp(prefix="wsibench-asv-", dir=os.getcwd()))  # asv's cache folder
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
    tfrecords.write_split_manifest(root / "data" / "tfrecords", [tfrecords.write_shard(i) for i in items], TFRecords())
    return {"root": str(root), "item": item, "patches": len(man), "shard_items": items}


def _real_data() -> dict:
    """The real slide under COPIES names (same file), with masks for each, and the patches the stage selects
    with each of STRIDES."""
    if not REAL_SLIDE.is_file():  # the benchmarks' setup skips them with this reason
        return {"skip": f"the real slide {REAL_SLIDE} is absent (set WSIBENCH_REAL_SLIDE to a copy of OpenSlide's "
                        "CMU-1-Small-Region.svs)"}
    from harness.config import Masks, Patches
    from harness.stages import masks, patches
    import pandas as pd

    root = Path(tempfile.mkdtemp(prefix="wsibench-asv-real-", dir=os.getcwd()))  # asv's cache folder
    items = [{"slide": f"cmu{i}", "path": str(REAL_SLIDE), "split": "training", "label": "normal", "annotation": None,
              "tumor_groups": [], "exclusion_groups": []} for i in range(COPIES)]
    for it in items:
        masks.run_slide(it, Masks(), str(root / "masks"))
    chosen = {}
    for stride in STRIDES:
        patches.run_slide(items[0], Patches(stride=stride), str(root / "masks"), str(root / f"plan-{stride}"))
        man = pd.read_parquet(patches.manifest_path(root / f"plan-{stride}", "cmu0"))
        chosen[stride] = [(int(r.x), int(r.y), r.label) for r in man.itertuples()]
    return {"root": str(root), "items": items, "chosen": chosen}


def _synthetic_cache(self):  # one function for every class that uses it: asv makes the data once
    return _data()


def _real_cache(self):
    return _real_data()


@contextlib.contextmanager
def _memory_folder():
    """A scratch folder in memory (/dev/shm) where there is one, removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="wsibench-asv-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _need_real(data) -> None:
    if "skip" in data:
        print(f"skipped: {data['skip']}", file=sys.stderr)
        raise NotImplementedError(data["skip"])  # asv: skipped


def _stage_seconds(data, stride: int, out: Path) -> float:
    """CPU seconds of the patch stage on the real slide (planning from the masks, cutting, encoding, writing)."""
    from harness.config import Patches
    from harness.stages import patches
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.process_time()
    rec = patches.run_slide(data["items"][0], Patches(stride=stride), str(Path(data["root"]) / "masks"), str(out))
    dt = time.process_time() - t0
    assert rec["patches"] == len(data["chosen"][stride]) and not rec.get("skipped"), rec
    return dt


def _reference_seconds(chosen: list, out: Path) -> float:
    """CPU seconds of the reference approach: per patch, one OpenSlide read_region and one PIL JPEG save (quality 90)."""
    import openslide
    shutil.rmtree(out, ignore_errors=True)
    for label in ("tumor", "normal"):
        (out / label).mkdir(parents=True)
    t0 = time.process_time()
    s = openslide.OpenSlide(str(REAL_SLIDE))
    for x, y, label in chosen:
        s.read_region((x, y), 0, (224, 224)).convert("RGB").save(out / label / f"cmu_{x}_{y}.jpg", quality=90)
    s.close()
    return time.process_time() - t0


def _codec_inputs(chosen: list) -> tuple[list, list, tuple]:
    """Untimed: the raw source tiles the patches cover (each once), the patches' pixels, the JPEG tables."""
    import openslide
    import tifffile
    from tifffile.tifffile import jpeg_decode_colorspace

    with tifffile.TiffFile(str(REAL_SLIDE)) as tf:
        page = tf.pages[0]
        assert page.is_tiled and page.compression == 7, "the real slide's level 0 is expected to be JPEG tiles"
        tw, th, cols = page.tilewidth, page.tilelength, -(-page.imagewidth // page.tilewidth)
        tiles = sorted({(ty, tx) for x, y, _ in chosen for ty in range(y // th, (y + 223) // th + 1)
                        for tx in range(x // tw, (x + 223) // tw + 1)})
        fh = tf.filehandle
        raw = []
        for ty, tx in tiles:
            fh.seek(page.dataoffsets[ty * cols + tx])
            raw.append(fh.read(page.databytecounts[ty * cols + tx]))
        decode = (page.jpegtables, *jpeg_decode_colorspace(page.photometric, page.planarconfig, page.extrasamples,
                                                           page.is_jfif))
    s = openslide.OpenSlide(str(REAL_SLIDE))
    pixels = [np.asarray(s.read_region((x, y), 0, (224, 224)).convert("RGB")) for x, y, _ in chosen]
    s.close()
    return raw, pixels, decode


def _codec_seconds(raw, pixels, decode) -> float:
    """CPU seconds of the codec limit: decode exactly the covered source tiles, encode the patches (libjpeg-turbo),
    nothing else."""
    import imagecodecs
    tables, cs, out_cs = decode
    t0 = time.process_time()
    for data in raw:
        imagecodecs.jpeg8_decode(data, tables=tables, colorspace=cs, outcolorspace=out_cs)
    for px in pixels:
        imagecodecs.jpeg8_encode(px, level=90)
    return time.process_time() - t0


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
    """The patch stage on the synthetic 8192-px slide (every patch of both classes), to JPEG files or a TFRecord."""
    timeout = 600
    number = 1

    setup_cache = _synthetic_cache

    def setup(self, data):
        self.outs = itertools.count()

    def teardown(self, data):
        for p in Path(data.get("root", "/nonexistent")).glob("bench-*"):
            shutil.rmtree(p, ignore_errors=True)

    def _cut(self, data, output):
        from harness.config import Patches as P
        from harness.stages import patches
        out = Path(data["root"]) / f"bench-{output}-{next(self.outs)}"  # a fresh folder: nothing is skipped
        rec = patches.run_slide(data["item"], P(max_per_class=100000, output=output),
                                str(Path(data["root"]) / "masks"), str(out))
        assert not rec["skipped"]

    def time_patch_stage_jpeg(self, data):
        self._cut(data, "jpeg")

    def time_patch_stage_tfrecord(self, data):
        self._cut(data, "tfrecord")


class RealSlide:
    """The patch stage on the real slide, and its ratios to the reference approach and to the codec limit, for
    each patch grid (stride) of STRIDES."""
    timeout = 600
    number = 1
    params = STRIDES
    param_names = ["stride"]

    setup_cache = _real_cache

    def setup(self, data, stride):
        _need_real(data)
        self.outs = itertools.count()

    def teardown(self, data, stride):
        for p in Path(data.get("root", "/nonexistent")).glob("bench-*"):
            shutil.rmtree(p, ignore_errors=True)

    def time_patch_stage_real_slide(self, data, stride):
        from harness.config import Patches
        from harness.stages import patches
        patches.run_slide(data["items"][0], Patches(stride=stride), str(Path(data["root"]) / "masks"),
                          str(Path(data["root"]) / f"bench-time-{next(self.outs)}"))

    def track_patch_stage_vs_reference_cpu_time_ratio(self, data, stride):
        """Patch stage CPU seconds / reference CPU seconds (read_region + PIL save per patch), same patches, same disk."""
        with _memory_folder() as mem:
            return float(np.median([_stage_seconds(data, stride, mem / "stage") /
                                    _reference_seconds(data["chosen"][stride], mem / "reference")
                                    for _ in range(ROUNDS)]))

    track_patch_stage_vs_reference_cpu_time_ratio.unit = "ratio"

    def track_patch_stage_vs_codec_limit_cpu_time_ratio(self, data, stride):
        """Patch stage CPU seconds / codec-limit CPU seconds (decode the covered tiles once, encode the patches)."""
        inputs = _codec_inputs(data["chosen"][stride])
        _codec_seconds(*inputs)  # warm: the codec's first call in a process pays for its set-up
        with _memory_folder() as mem:
            return float(np.median([_stage_seconds(data, stride, mem / "stage") / _codec_seconds(*inputs)
                                    for _ in range(ROUNDS)]))

    track_patch_stage_vs_codec_limit_cpu_time_ratio.unit = "ratio"


class EngineVsMultiprocessing:
    """The patch stage over COPIES real slides with 2 workers: seconds under an engine / under multiprocessing.

    Both engines are started and warmed up outside the timings (start-up is not throughput); each round maps
    under multiprocessing then under the engine; the median of the rounds' ratios (3 rounds at most)."""
    params = ["dask", "spark"]
    param_names = ["engine"]
    timeout = 600
    number = 1
    repeat = 1

    setup_cache = _real_cache

    def setup(self, data, name):
        _need_real(data)

    def track_patch_stage_engine_vs_multiprocessing_time_ratio(self, data, name):
        from harness.config import Patches
        from harness.engines import echo, make_engine, run_all
        from harness.stages import patches

        root = Path(data["root"])

        def seconds(eng) -> float:
            out = root / f"bench-engine-{eng.name}"
            shutil.rmtree(out, ignore_errors=True)
            fn = functools.partial(patches.run_slide, cfg=Patches(), masks_dir=str(root / "masks"), out=str(out))
            t0 = time.perf_counter()
            res = run_all(eng, fn, data["items"], progress=False)
            dt = time.perf_counter() - t0
            assert not any(r.error for r in res), [r.error for r in res if r.error]
            return dt

        with make_engine("multiprocessing", workers=2) as mp, make_engine(name, workers=2) as other:
            for eng in (mp, other):
                run_all(eng, echo, list(range(4)), progress=False)
            ratios = []
            for _ in range(min(ROUNDS, 3)):
                base = seconds(mp)
                ratios.append(seconds(other) / base)
        return float(np.median(ratios))

    track_patch_stage_engine_vs_multiprocessing_time_ratio.unit = "ratio"


class TFRecordIO:
    timeout = 600

    setup_cache = _synthetic_cache

    def time_write_4_shards(self, data):
        from harness.stages import tfrecords
        for it in data["shard_items"]:
            Path(it["index"]).unlink(missing_ok=True)  # forces a rewrite
            tfrecords.write_shard(it)

    def time_read_4_shards(self, data):
        from harness import tfrecord_format
        for it in data["shard_items"]:
            for _ in tfrecord_format.read_records(it["path"]):
                pass


class TFData:
    """The train stage's tf.data pipeline alone (read, parse, decode, augment, batch of 32 at 96 px), no model."""
    timeout = 600
    number = 1

    setup_cache = _synthetic_cache

    def setup(self, data):
        from harness.config import Train
        from harness.stages import tfdata
        files = [it["path"] for it in data["shard_items"]]
        self.batches = iter(tfdata.dataset(files, Train(model="small_cnn", image_size=96, batch_size=32), training=True))
        next(self.batches)  # the pipeline built and started outside the timing

    def time_tfdata_30_batches(self, data):
        for _ in range(30):
            next(self.batches)


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
