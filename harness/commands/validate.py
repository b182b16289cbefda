"""wsibench validate: a workload file and its dataset, checked before any work; --explain: every key."""
from __future__ import annotations

import sys

from ..config import load_profile, load_workload
from ..errors import UnknownName


def add(sub):
    s = sub.add_parser("validate", help="check a workload file and its dataset, before any work; --explain: every key",
                       description="Parse and validate a workload TOML (errors name the file, the key and what was "
                                   "expected), then check a real dataset itself: its layout, slides per split and "
                                   "class, annotations matched or not, labels, exclusions, printed as a short table. "
                                   "Exits 1 when the dataset would stop a run (a tumor slide without annotation, a "
                                   "slide without label, unless the workload excludes them), has entries named "
                                   "like slides that are no file to read (a dangling link, a directory), slides "
                                   "the run would fail (that do not open, or a truncated TIFF; their headers and tile "
                                   "tables are read, not their pixels), or "
                                   "annotations the masks stage would fail (XML, coordinates that are no numbers or "
                                   "lie far outside the slide). --explain prints every "
                                   "key of workloads and storage profiles with its type, default and meaning (also "
                                   "in docs/workload-reference.md).")
    s.add_argument("workload", nargs="?", help="workload TOML file")
    s.add_argument("--explain", nargs="?", const="", metavar="SECTION",
                   help="print the reference of every key, or of those under SECTION (e.g. train, engine.stages)")
    s.add_argument("--no-data", action="store_true", help="check the workload file only, not the dataset")
    return s


def run(a) -> int:
    if a.explain is not None:
        from ..docs import workload_reference_text

        try:
            print(workload_reference_text(a.explain))
        except KeyError:
            raise UnknownName(f"--explain {a.explain}: no such key or table; try `wsibench validate --explain` "
                              "for them all") from None
        if not a.workload:
            return 0
    elif not a.workload:
        print("error: validate needs a workload file (or --explain, for the reference of every key)", file=sys.stderr)
        return 2
    from ..slides import dataset

    w = load_workload(a.workload)
    for name in dict.fromkeys([w.storage, *w.matrix.storage]):  # the profiles it names must exist and be valid
        load_profile(name)
    print(f"{a.workload}: ok (workload {w.name!r}: stages {', '.join(w.stages)}, dataset {w.dataset.kind}, "
          f"engine {w.engine.name} x{w.engine.workers}, storage {w.storage})")
    ds = w.dataset
    if ds.kind == "synthetic" or a.no_data:
        if ds.kind == "synthetic":
            sy = ds.synthetic
            print(f"dataset: synthetic, {sy.slides} slides of {sy.size} px (seed {sy.seed}, difficulty "
                  f"{sy.difficulty:g}), made by the run")
        return 0
    s = dataset.scan(ds.path, ds.kind, ds.test_centers)
    _, record, errors = dataset.resolve(s, ds)
    print(f"dataset {ds.path}: layout {s.layout}" + (" (detected)" if ds.kind == "auto" else ""))
    print(dataset.table(record))
    errors += dataset.check_slides(s.slides)  # what would fail a slide in the run: headers, a truncated file
    errors += dataset.check_annotations(s.slides)  # what would fail a slide's masks in the run
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    if record["unreadable"]:
        print(f"error: {len(record['unreadable'])} slide(s) named like slides are no file to read; a run fails them "
              "(the other slides carry on): " + "; ".join(record["unreadable"]), file=sys.stderr)
    return 1 if errors or record["unreadable"] else 0
