"""Patch extraction speed on one core, three ways, in one process (ratios are what to read; machines are noisy).
Medians of --repeat interleaved rounds (min and max beside them); ratios are of medians.

  stage      : wsibench's patch stage for one slide (plan from the masks, decode the source tiles once each,
               encode with libjpeg-turbo, write JPEG files atomically, write the manifest), on the working
               folder's disk; stage_tmpfs: the same writing to memory (/dev/shm), i.e. its CPU cost alone;
               stage_tfrecord: the same writing one TFRecord file per slide instead of one file per patch
  reference  : the reference approach: for each of the same patches, one OpenSlide read_region + one PIL JPEG save
  codec      : the codec limit: decode exactly the source tiles the patches cover + encode the patches, same
               JPEG library and calls as the stage (libjpeg-turbo: TurboJPEG to decode, imagecodecs to encode),
               nothing else

  masks      : wsibench's masks stage for the slide, against the reference's mask step (OpenSlide's thumbnail at
               1/32 + the same tissue threshold); end to end: masks + stage against thumbnail + reference

Two slides by default, measured in the same rounds:
  synthetic  : harness.slides.synth's slide (its texture model; 512-px RGB JPEG tiles at quality 85; patches
               weigh like real H&E, ~18 KiB at quality 90)
  mosaic     : another generator, on real pixels: a generic pyramidal TIFF (tifffile's YCbCr JPEG, 256-px tiles,
               quality 90) whose tiles are the tissue blocks of the real slides of ../shared/data, rotated and
               mirrored at random, on a random tissue layout (patches ~17 KiB)
--slide runs the same on a real file instead; --only picks one of the two.

Start-up is reported apart, as a stage records it: ``startup_seconds`` (and its CPU seconds) is what a fresh
worker pays once before its first slide (interpreter, imports, the stage's warm-up), from a new process's start
to its exit; the per-slide figures (``work_seconds``) are of a warmed-up process. A run of N slides on W workers
pays the start-up W times and the work N times.

Usage: python benchmarks/patch_speed.py [--size 20000 | --slide PATH] [--only synthetic|mosaic] [--stride PX]
       [--repeat 5] [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import imagecodecs
import numpy as np

from harness.config import Masks, Patches
from harness.slides import synth
from harness.slides.reader import open_slide
from harness.stages import masks, patches


def setup(size: int, work: Path) -> dict:
    rng = np.random.default_rng(11)
    path = work / "tumor_bench.tif"
    if not path.exists():
        synth.write_slide(path, synth.make_layout(rng, size, tumor=False), rng)
    item = {"slide": "tumor_bench", "path": str(path), "split": "training", "label": "normal", "annotation": None,
            "tumor_groups": [], "exclusion_groups": []}
    masks.run_slide(item, Masks(), str(work / "masks"))
    return item


def clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def since(t0: tuple[float, float]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) since clock() gave t0."""
    return time.perf_counter() - t0[0], time.process_time() - t0[1]


REAL = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "slides"


def real_blocks(tile: int, sources: list[Path]) -> tuple[list[np.ndarray], np.ndarray]:
    """The tissue blocks (tile x tile px, level 0) of real slides, and one background block: a block is tissue
    when under a third of it is bright glass (all channels above 215)."""
    tissue, glass = [], []
    for path in sources:
        slide = open_slide(path)
        w, h = slide.dimensions
        px = np.asarray(slide.read_region((0, 0), 0, (w, h)).convert("RGB"))
        slide.close()
        for y in range(0, h - tile + 1, tile):
            for x in range(0, w - tile + 1, tile):
                b = px[y:y + tile, x:x + tile]
                bright = (b > 215).all(axis=2).mean()
                (tissue if bright < 1 / 3 else glass).append((bright, np.ascontiguousarray(b)))
    if not tissue:
        raise SystemExit(f"no tissue blocks in {', '.join(map(str, sources))}")
    bg = max(glass, key=lambda g: g[0])[1] if glass else np.full((tile, tile, 3), 240, np.uint8)
    return [b for _, b in tissue], bg


def write_real_mosaic(path: Path, size: int, sources: list[Path], tile: int = 256, quality: int = 90,
                      seed: int = 5) -> dict:
    """Another generator than harness.slides.synth, on real H&E pixels: a generic pyramidal TIFF (tifffile's own
    JPEG encoder, YCbCr with 2x2 chroma subsampling, ``tile``-px tiles at ``quality``, as a scanner's converter
    writes one) whose level-0 tiles are the tissue blocks of the real slides of ../shared/data, each block rotated
    or mirrored at random, laid on tissue islands of a random layout (glass elsewhere). Levels 4x, 16x and 64x are
    downsampled from level 0."""
    import cv2
    import tifffile

    rng = np.random.default_rng(seed)
    blocks, bg = real_blocks(tile, sources)
    nt = -(-size // tile)
    layout = synth.make_layout(rng, size, tumor=False)
    is_tissue = layout.label((nt, nt), tile, (tile / 2, tile / 2)) > 0  # each tile's centre
    pick = rng.integers(len(blocks), size=(nt, nt))
    turn = rng.integers(8, size=(nt, nt))
    small = np.empty((-(-size // 4), -(-size // 4), 3), np.uint8)  # level 4x, filled as level 0 is written
    q = tile // 4

    def level0():
        for ty in range(nt):
            for tx in range(nt):
                b = blocks[pick[ty, tx]] if is_tissue[ty, tx] else bg
                k = int(turn[ty, tx])
                b = np.ascontiguousarray(np.rot90(b[:, ::-1] if k >= 4 else b, k % 4))
                y, x = ty * q, tx * q
                small[y:y + q, x:x + q] = cv2.resize(b, (q, q), interpolation=cv2.INTER_AREA)[:small.shape[0] - y,
                                                                                           :small.shape[1] - x]
                yield b

    opts = dict(tile=(tile, tile), compression="jpeg", compressionargs={"level": quality},
                photometric="rgb", metadata=None)  # tifffile stores RGB data as YCbCr JPEG (photometric 6)
    tmp = path.with_name(f".{path.name}.tmp")
    with tifffile.TiffWriter(tmp, bigtiff=size > 30000) as tw:
        tw.write(level0(), shape=(size, size, 3), dtype="uint8", subfiletype=0, resolution=(2e4, 2e4),
                 resolutionunit="CENTIMETER", **opts)  # 0.5 um/px, as CMU-1
        level = small
        for ds in (4, 16, 64):
            if ds > 4:
                level = cv2.resize(level, (-(-level.shape[1] // 4), -(-level.shape[0] // 4)),
                                   interpolation=cv2.INTER_AREA)
            if min(level.shape[:2]) < tile:
                break
            tw.write(level, subfiletype=1, resolution=(2e4 / ds, 2e4 / ds), resolutionunit="CENTIMETER", **opts)
    tmp.replace(path)
    return {"tiles": int(nt * nt), "tissue_tiles": int(is_tissue.sum()), "blocks": len(blocks),
            "bytes": path.stat().st_size}


def setup_mosaic(size: int, work: Path) -> dict:
    path = work / "mosaic_bench.tif"
    if not path.exists():
        sources = [REAL / n for n in ("CMU-1-Small-Region.svs", "TCGA-CR-7395-01A-01-TS1.svs")]
        missing = [str(p) for p in sources if not p.exists()]
        if missing:
            raise SystemExit(f"--mosaic needs the real slides of ../shared/data: missing {', '.join(missing)}")
        write_real_mosaic(path, size, sources)
    item = {"slide": "mosaic_bench", "path": str(path), "split": "training", "label": "normal", "annotation": None,
            "tumor_groups": [], "exclusion_groups": []}
    masks.run_slide(item, Masks(), str(work / "masks"))
    return item


def bench_stage(item, cfg, work: Path, out: Path) -> tuple[tuple[float, float], int]:
    shutil.rmtree(out, ignore_errors=True)
    t0 = clock()
    rec = patches.run_slide(item, cfg, str(work / "masks"), str(out))
    return since(t0), rec["patches"]


def selected(item, cfg, work: Path) -> tuple[list, dict]:
    rec, tumor, tissue = masks.load(work / "masks", item["slide"])
    slide = open_slide(item["path"])
    p = patches.plan(item, cfg, rec, tumor, tissue, slide)
    slide.close()
    return p["patches"], p


def bench_reference(item, cfg, work: Path, chosen) -> tuple[float, float]:
    out = work / "reference"
    shutil.rmtree(out, ignore_errors=True)
    for label in ("tumor", "normal"):
        (out / label).mkdir(parents=True)
    t0 = clock()
    slide = open_slide(item["path"])
    for y, x, label, *_ in chosen:
        img = slide.read_region((x, y), 0, (cfg.size, cfg.size)).convert("RGB")
        img.save(out / label / f"{item['slide']}_{x}_{y}.jpg", quality=cfg.jpeg_quality)
    slide.close()
    return since(t0)


def bench_codec(item, cfg, chosen) -> tuple[float, float]:
    """Decode each source tile under the patches once, encode each patch once; patch pixels prepared untimed."""
    import tifffile

    from harness.slides.reader import TileReader

    reader = TileReader(item["path"], 0)
    pixels = [reader.region(x, y, cfg.size, cfg.size) for y, x, *_ in chosen]
    reader.close()
    tf = tifffile.TiffFile(item["path"])
    page = tf.pages[0]
    tw, th = page.tilewidth, page.tilelength
    cols = -(-page.imagewidth // tw)
    tiles = sorted({(ty, tx) for y, x, *_ in chosen
                    for ty in range(y // th, (y + cfg.size - 1) // th + 1)
                    for tx in range(x // tw, (x + cfg.size - 1) // tw + 1)})
    fh = tf.filehandle
    raw = []
    for ty, tx in tiles:
        i = ty * cols + tx
        fh.seek(page.dataoffsets[i])
        raw.append(fh.read(page.databytecounts[i]))
    tables, rgb = page.jpegtables, int(page.photometric) == 2
    if page.compression == 7:  # JPEG: the decoder the stage uses (libjpeg-turbo), into one reused buffer
        from harness.slides import jpeg

        decoder, buf = jpeg.Decoder(tables, rgb), np.empty((th, tw, 3), np.uint8)
        decode = lambda data, i: decoder.decode(data, buf)  # noqa: E731
    else:  # JPEG 2000 and others: the codec tifffile calls, as the stage does
        decode = lambda data, i: page.decode(data, i, jpegtables=tables)  # noqa: E731
    index = [ty * cols + tx for ty, tx in tiles]
    t0 = clock()
    for data, i in zip(raw, index):
        decode(data, i)
    for px in pixels:
        imagecodecs.jpeg8_encode(px, level=cfg.jpeg_quality)
    seconds = since(t0)
    tf.close()
    return seconds


def bench_masks(item, work: Path) -> tuple[float, float]:
    """wsibench's masks stage for the slide (tumor and tissue masks, PNGs and record written)."""
    shutil.rmtree(work / "masks-bench", ignore_errors=True)
    t0 = clock()
    masks.run_slide(item, Masks(), str(work / "masks-bench"))
    return since(t0)


def bench_thumbnail(item) -> tuple[float, float]:
    """The reference's mask step: OpenSlide's thumbnail at 1/32, then the same HSV + Otsu tissue mask."""
    t0 = clock()
    slide = open_slide(item["path"])
    w, h = slide.dimensions
    thumb = np.asarray(slide.get_thumbnail((max(1, w // 32), max(1, h // 32))).convert("RGB"))
    masks.tissue_mask(thumb)
    slide.close()
    return since(t0)


def startup(repeat: int = 3) -> dict:
    """What a worker pays once before its first slide, as a stage records it (``startup_seconds``): a fresh Python
    process that imports the patch stage and runs its warm-up (``engines.base.warm_up``: the stage's codecs,
    pyarrow's pandas), from its start to its exit; wall and CPU seconds, median of ``repeat``."""
    import resource
    import subprocess
    import sys

    code = ("import functools; from harness.engines.base import import_module, warm_up; "
            "warm_up(functools.partial(import_module, 'harness.stages.patches'))")
    wall, cpu = [], []
    for _ in range(repeat):
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        wall.append(time.perf_counter() - t0)
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime)
    return {"startup_seconds": round(float(np.median(wall)), 3), "startup_cpu_seconds": round(float(np.median(cpu)), 3)}


def measure_slides(slides: dict[str, dict], cfg: Patches, work: Path, tmpfs: str, repeat: int) -> dict:
    """Every kind of run on every slide, interleaved: a round runs each slide's kinds once."""
    plans = {}
    for key, item in slides.items():
        chosen, _ = selected(item, cfg, work)
        mem = Path(tempfile.mkdtemp(prefix="wsibench-", dir=tmpfs)) if os.path.isdir(tmpfs) else work / f"mem-{key}"
        runs = {"stage": (cfg, work / f"stage-{key}"), "stage_tmpfs": (cfg, mem / "stage"),
                "stage_tfrecord": (cfg.model_copy(update={"output": "tfrecord"}), work / f"stage_tfr-{key}")}
        plans[key] = (item, chosen, mem, runs,
                      {k: [] for k in (*runs, "reference", "codec", "masks", "thumbnail")})
    weight = {}
    for _ in range(repeat):  # interleaved rounds: each kind sees the same disturbances
        for key, (item, chosen, mem, runs, times) in plans.items():
            n = len(chosen)
            for name, (c, out) in runs.items():
                sec, got = bench_stage(item, c, work, out)
                assert got == n
                times[name].append(sec)
            times["reference"].append(bench_reference(item, cfg, work, chosen))
            times["codec"].append(bench_codec(item, cfg, chosen))
            times["masks"].append(bench_masks(item, work))
            times["thumbnail"].append(bench_thumbnail(item))
            weight[key] = patch_bytes(work / f"stage-{key}", item)
    results = {}
    for key, (item, chosen, mem, runs, times) in plans.items():
        n = len(chosen)
        out = {"slide": item["path"], "patches": n, "patch_kib_mean": round(weight[key] / max(n, 1) / 1024, 1)}
        for clock_name, i in (("", 0), ("cpu_", 1)):  # wall clock, then this process's CPU seconds
            series = {k: [t[i] for t in v] for k, v in times.items()}
            med = {k: float(np.median(v)) for k, v in series.items()}
            rate = {k: n / med[k] for k in (*runs, "reference", "codec")}
            out[clock_name or "wall"] = {
                "patches_per_s_per_core_median": {k: round(v, 1) for k, v in rate.items()},
                f"{clock_name}work_seconds_min_median_max": {k: [round(min(v), 4), round(med[k], 4), round(max(v), 4)]
                                                             for k, v in series.items()},
                **{f"{k}_vs_reference": round(rate[k] / rate["reference"], 2) for k in runs},
                **{f"{k}_vs_codec_limit": round(rate[k] / rate["codec"], 2) for k in runs},
                "masks_vs_thumbnail_speed": round(med["thumbnail"] / med["masks"], 2),
                "end_to_end_vs_reference_speed": round((med["thumbnail"] + med["reference"])
                                                       / (med["masks"] + med["stage"]), 2)}
        out["cpu"] = out.pop("cpu_")
        results[key] = out
        shutil.rmtree(mem, ignore_errors=True)
    return results


def patch_bytes(folder: Path, item) -> int:
    """Bytes of the JPEG patches the stage wrote for the slide (its manifest's sizes)."""
    import pyarrow.parquet as pq

    return int(pq.read_table(patches.manifest_path(folder, item["slide"]), columns=["bytes"])["bytes"].to_numpy().sum())


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=20000, help="side of the synthetic slide and of the mosaic, px")
    ap.add_argument("--slide", help="a real slide instead of the two generated ones (e.g. CMU-1-Small-Region.svs)")
    ap.add_argument("--only", choices=("synthetic", "mosaic"), help="one of the two generated slides")
    ap.add_argument("--stride", type=int, default=None, help="patch grid stride, px (default: the patch size)")
    ap.add_argument("--repeat", type=int, default=5, help="interleaved rounds; medians are reported")
    ap.add_argument("--out", help="working folder (default: a temporary one)")
    ap.add_argument("--tmpfs", default="/dev/shm", help="memory-backed folder for the compute-only stage runs")
    a = ap.parse_args(argv)
    work = Path(a.out or tempfile.mkdtemp(prefix="wsibench-patch-speed-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    slides: dict[str, dict] = {}
    if a.slide:
        item = {"slide": "real", "path": str(Path(a.slide).resolve()), "split": "training", "label": "normal",
                "annotation": None, "tumor_groups": [], "exclusion_groups": []}
        masks.run_slide(item, Masks(), str(work / "masks"))
        slides["real"] = item
    else:
        if a.only != "mosaic":
            slides[f"synthetic {a.size} px"] = setup(a.size, work)
        if a.only != "synthetic":
            slides[f"real-pixel mosaic {a.size} px"] = setup_mosaic(a.size, work)
    cfg = Patches(max_per_class=100000, stride=a.stride)
    loads = [os.getloadavg()[0]]
    once = startup()
    results = measure_slides(slides, cfg, work, a.tmpfs, a.repeat)
    loads.append(os.getloadavg()[0])
    result = {"rounds": a.repeat, "work": str(work), "load_average_1min": [round(x, 2) for x in loads],
              **once, "slides": results}
    print(json.dumps(result, indent=1))
    if not a.out:
        shutil.rmtree(work, ignore_errors=True)
    return result


if __name__ == "__main__":
    main()
