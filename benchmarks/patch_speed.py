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

The default slide is synthetic (harness.slides.synth: patches weigh like real H&E, ~18 KiB at quality 90);
--slide runs the same on a real file.

Usage: python benchmarks/patch_speed.py [--size 20000 | --slide PATH] [--stride PX] [--repeat 5] [--out DIR]
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


def bench_stage(item, cfg, work: Path, out: Path) -> tuple[float, int]:
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    rec = patches.run_slide(item, cfg, str(work / "masks"), str(out))
    return time.perf_counter() - t0, rec["patches"]


def selected(item, cfg, work: Path) -> tuple[list, dict]:
    rec, tumor, tissue = masks.load(work / "masks", item["slide"])
    slide = open_slide(item["path"])
    p = patches.plan(item, cfg, rec, tumor, tissue, slide)
    slide.close()
    return p["patches"], p


def bench_reference(item, cfg, work: Path, chosen) -> float:
    out = work / "reference"
    shutil.rmtree(out, ignore_errors=True)
    for label in ("tumor", "normal"):
        (out / label).mkdir(parents=True)
    t0 = time.perf_counter()
    slide = open_slide(item["path"])
    for y, x, label, *_ in chosen:
        img = slide.read_region((x, y), 0, (cfg.size, cfg.size)).convert("RGB")
        img.save(out / label / f"{item['slide']}_{x}_{y}.jpg", quality=cfg.jpeg_quality)
    slide.close()
    return time.perf_counter() - t0


def bench_codec(item, cfg, chosen) -> float:
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
    t0 = time.perf_counter()
    for data, i in zip(raw, index):
        decode(data, i)
    for px in pixels:
        imagecodecs.jpeg8_encode(px, level=cfg.jpeg_quality)
    seconds = time.perf_counter() - t0
    tf.close()
    return seconds


def bench_masks(item, work: Path) -> float:
    """wsibench's masks stage for the slide (tumor and tissue masks, PNGs and record written)."""
    shutil.rmtree(work / "masks-bench", ignore_errors=True)
    t0 = time.perf_counter()
    masks.run_slide(item, Masks(), str(work / "masks-bench"))
    return time.perf_counter() - t0


def bench_thumbnail(item) -> float:
    """The reference's mask step: OpenSlide's thumbnail at 1/32, then the same HSV + Otsu tissue mask."""
    t0 = time.perf_counter()
    slide = open_slide(item["path"])
    w, h = slide.dimensions
    thumb = np.asarray(slide.get_thumbnail((max(1, w // 32), max(1, h // 32))).convert("RGB"))
    masks.tissue_mask(thumb)
    slide.close()
    return time.perf_counter() - t0


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=20000, help="side of the synthetic slide, px")
    ap.add_argument("--slide", help="a real slide instead of the synthetic one (e.g. CMU-1-Small-Region.svs)")
    ap.add_argument("--stride", type=int, default=None, help="patch grid stride, px (default: the patch size)")
    ap.add_argument("--repeat", type=int, default=5, help="interleaved rounds; medians are reported")
    ap.add_argument("--out", help="working folder (default: a temporary one)")
    ap.add_argument("--tmpfs", default="/dev/shm", help="memory-backed folder for the compute-only stage runs")
    a = ap.parse_args(argv)
    work = Path(a.out or tempfile.mkdtemp(prefix="wsibench-patch-speed-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if a.slide:
        item = {"slide": "real", "path": str(Path(a.slide).resolve()), "split": "training", "label": "normal",
                "annotation": None, "tumor_groups": [], "exclusion_groups": []}
        masks.run_slide(item, Masks(), str(work / "masks"))
    else:
        item = setup(a.size, work)
    cfg = Patches(max_per_class=100000, stride=a.stride)
    chosen, _ = selected(item, cfg, work)
    n = len(chosen)
    mem = Path(tempfile.mkdtemp(prefix="wsibench-", dir=a.tmpfs)) if os.path.isdir(a.tmpfs) else work / "mem"
    runs = {"stage": (cfg, work / "stage"), "stage_tmpfs": (cfg, mem / "stage"),
            "stage_tfrecord": (cfg.model_copy(update={"output": "tfrecord"}), work / "stage_tfr")}
    times: dict[str, list[float]] = {k: [] for k in (*runs, "reference", "codec", "masks", "thumbnail")}
    for _ in range(a.repeat):  # interleaved rounds: each kind sees the same disturbances
        for name, (c, out) in runs.items():
            sec, got = bench_stage(item, c, work, out)
            assert got == n
            times[name].append(sec)
        times["reference"].append(bench_reference(item, cfg, work, chosen))
        times["codec"].append(bench_codec(item, cfg, chosen))
        times["masks"].append(bench_masks(item, work))
        times["thumbnail"].append(bench_thumbnail(item))
    med = {k: float(np.median(v)) for k, v in times.items()}
    rate = {k: n / med[k] for k in (*runs, "reference", "codec")}
    result = {"slide": a.slide or f"synthetic {a.size} px", "patches": n, "rounds": a.repeat, "work": str(work),
              "patches_per_s_per_core_median": {k: round(v, 1) for k, v in rate.items()},
              "seconds_min_median_max": {k: [round(min(v), 4), round(med[k], 4), round(max(v), 4)]
                                         for k, v in times.items()},
              **{f"{k}_vs_reference": round(rate[k] / rate["reference"], 2) for k in runs},
              **{f"{k}_vs_codec_limit": round(rate[k] / rate["codec"], 2) for k in runs},
              "masks_vs_thumbnail_speed": round(med["thumbnail"] / med["masks"], 2),
              "end_to_end_vs_reference_speed": round((med["thumbnail"] + med["reference"])
                                                     / (med["masks"] + med["stage"]), 2)}
    shutil.rmtree(mem, ignore_errors=True)
    print(json.dumps(result, indent=1))
    if not a.out:
        shutil.rmtree(work, ignore_errors=True)
    return result


if __name__ == "__main__":
    main()
