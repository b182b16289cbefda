"""Sizing: from one host's measured runs to a storage answer (``wsibench size``).

Plain functions, in three steps; every figure they return carries the measurement it came from (``source``).

1. **What a storage costs** (``storage_costs``): from a profile's ``wsibench fio`` characterisation, the cost of
   each I/O *pattern* the pipeline is made of, as fio measured it on that storage: a small file written whole
   (create, one write, close: ``jpeg_small_writes``), a small file read whole (open, read, close:
   ``jpeg_small_reads``), a read or a write request in an open file (a fixed cost from 4 KiB requests,
   ``read_latency``/``write_latency``, plus its bytes at the single-stream bandwidth of 1 MiB requests), a rename
   and an open (timed by ``wsibench fio``'s probe), an unlink (``file_delete``); and the bandwidths several
   streams reach (``tfrecord_stream``, ``checkpoint_write``). Patterns, not single requests: a file written whole
   is several requests (a lookup, the create, the write, a flush, a release), and on a slower storage every one
   of them costs more, the ones that do no I/O included. Without fio, a profile's vendor figures
   (``[reference]``) give bandwidth bounds only.
2. **What a stage asks** (``stage_demand``): from a run's record, per stage its operations by type (the
   ``io_profile`` the counting passthrough recorded: ``--observe``, or an emulated profile), bytes, CPU seconds,
   slides, patches and the per-item table; mapped onto the patterns above (``patterns``).
3. **Predictions**: a stage's time on another storage (``predict_stage``): each item's measured time plus what
   its patterns cost more (or less) there than on the storage it was measured on, scheduled over the workers
   as the engine does (first free worker takes the next item), with the workers' waits on each other's creates,
   renames and unlinks in the folders they share, and never under the storage's bandwidth bounds;
   ``feed``'s accelerators (``predict_feed``); and the cluster answer (``size``).
4. **The target**: the target's slides (``slides``: a side in px, CAMELYON16's, or the measured ones), each
   stage's per-slide demand scaled to them (by the mask level's pixels, patches a slide, or tissue area); on N
   client hosts of W workers (``budget``), per stage and storage the limits of the clients (N x a host's link,
   cores, chains, folder locks) and of the servers (storage targets, metadata server), what binds, the stage's
   time (``cluster.predict`` where the run was observed, else the least limit), one budget of preprocessing,
   training and inference within the window, the metadata server against the patch stage's creates, capacity
   and inodes, and the GPUs fed (bound or measured).

The package, by concept: ``figures`` (a figure, the error, constants), ``costs`` (step 1), ``demand`` (step 2),
``contention`` (the workers' scheduling and folder-lock waits), ``predict`` (step 3), ``cluster`` (a stage on N
hosts x W workers: the fluid model and the servers' queue), ``slides`` and ``budget`` (step 4), ``answer`` (the answer, and finding its
inputs), ``render`` (the answer as a reader is shown it: the terminal's text, and the walk the report's Sizing
section formats too), ``store`` (saving and finding answers).
"""
from __future__ import annotations

from .answer import answer, size
from .contention import folder_contention, folder_shares, makespan, serialised_seconds
from .costs import cost, extra_seconds, pattern_seconds, sources, storage_costs
from .demand import PREPROCESS, feed_demand, patterns, pipeline_figures, stage_demand
from .figures import MiB, SECONDS_PER_DAY, SMALL_FILE_BYTES, SizingError, figure
from .predict import predict_feed, predict_stage
from .render import layout, quantity, rows, text
from .store import load_sizings, save

__all__ = ["MiB", "PREPROCESS", "SECONDS_PER_DAY", "SMALL_FILE_BYTES", "SizingError", "answer", "cost",
           "extra_seconds", "feed_demand", "figure", "folder_contention", "folder_shares", "layout", "load_sizings",
           "makespan", "pattern_seconds", "patterns", "pipeline_figures", "predict_feed", "predict_stage", "quantity",
           "rows", "save", "serialised_seconds", "size", "sources", "stage_demand", "storage_costs", "text"]
