"""The cluster answer: per storage, what N client hosts of W workers each take of the target's slides, stage by
stage, what binds each stage, and the slides a day from one budget.

Per stage and storage, each resource's limit in the target's slides per second (``limits``), from the stage's
per-slide demand scaled to the target's slides (``slides``) and the storage's characterisation:

- on the client side, N times one host's: its link (``wsibench fio``'s several-stream read bandwidth, its fsync'd
  write bandwidth, from one host), its cores (over the stage's CPU seconds a slide), its W workers' chains (a
  worker does one slide's CPU and I/O one after the other at the storage's pattern costs), and its kernel's folder
  locks (a create, rename or unlink holds its folder's lock across the round trip to the server, so on one host the
  busiest folder's operations go one at a time);
- on the server side, for all hosts together: the storage targets' aggregate read and write bandwidth and small
  files a second, and the metadata server's operations a second (``wsibench fio --hosts N``: several client hosts
  at once). Workers on different hosts meet at the server's lock, not one kernel's: that is the metadata server's
  term.

The stage's rate is min(N x the client's limit, the servers' limit); the least limit binds. Where the stage's run
was observed (every request counted, each item's CPU time), the stage's time for the target's slides comes from
the cluster model (``cluster.predict``: the items over N x W workers, max-min sharing of those resources, the
tail of the last items); else from the least limit (the steady state).

One budget: preprocessing, training and inference share the storage, one after the other within the window: the
slides a day is what the sum of their times allows, not any stage alone.
"""
from __future__ import annotations

import math

from .contention import folder_shares, serialised_seconds
from .costs import cost, pattern_seconds, read_ahead, server_bandwidth, small_file_beyond
from .demand import patterns, scale_starts
from .feed_hosts import accelerators_on_hosts
from .figures import NAMES, SECONDS_PER_DAY, SizingError, figure
from .slides import STAGE_SCALE

CLIENT = ("chain", "link_read", "link_write", "cores", "folder_locks")
SERVER = ("server_read", "server_write", "server_files", "metadata")
ADVICE = {
    "chain": "the items' own chains bind: more workers (or hosts) help, each takes one slide at a time",
    "link_read": "each host's link binds: more client hosts or faster links help; more workers per host do not",
    "link_write": "each host's link binds: more client hosts or faster links help; more workers per host do not",
    "cores": "host CPU binds: more cores or more hosts help",
    "folder_locks": "the folders' locks on each host bind (a create holds its folder across the round trip): more "
                    "hosts help, more workers per host do not; so would more output folders",
    "server_read": "storage binds (its targets' read bandwidth): more workers or client hosts will not shorten it",
    "server_write": "storage binds (its targets' write bandwidth): more workers or client hosts will not shorten it",
    "server_files": "storage binds (the small files its targets take a second): more workers or client hosts will "
                    "not shorten it",
    "metadata": "storage binds (the metadata server's operations a second): more workers or client hosts will not "
                "shorten it",
}
METADATA_OPS = ("create", "open", "rename", "unlink")  # the operations the metadata probe times on N hosts
SIMULATED_ROUNDS = 3  # slides simulated per worker (then scaled to the target's): the steady state and one tail


def bandwidths(costs: dict, side: str) -> tuple[dict | None, dict | None]:
    """One client host's ``side`` bandwidth and the servers' (``storage_costs``). A profile's vendor figure (no fio
    ran) is the storage's aggregate: the servers', not a host's link."""
    link, server = costs.get(f"{side}_bandwidth"), costs.get(f"server_{side}_bandwidth")
    if link and link["source"].startswith("vendor figure"):
        return None, server or link
    return link, server


def per_slide_profile(f: dict, stage: str) -> dict | None:
    """One target slide's io_profile: the measured stage's, over its slides, scaled by the stage's factor (the
    operations that do not grow with it, as measured)."""
    prof = f["demand"].get("io_profile")
    if not prof:
        return None
    x = f["factor"]["value"]
    fixed = STAGE_SCALE.get(stage, ("area", ()))[1]
    per = 1.0 / f["slides"]
    out = {k: v for k, v in prof.items() if k not in ("ops",)}
    out["ops"] = {k: dict(v or {}, count=(v or {}).get("count", 0) * per * (1.0 if k in fixed else x))
                  for k, v in prof["ops"].items()}
    for k in ("bytes_read", "bytes_written"):
        out[k] = (prof.get(k) or 0) * per * x
    for k in ("operations", "metadata_operations"):
        if prof.get(k) is not None:
            out[k] = prof[k] * per * x
    for k in ("creates", "namespace_operations"):
        if prof.get(k) is not None:
            out[k] = prof[k] * per * (1.0 if "create" in fixed else x)
    if prof.get("read_runs"):  # its opens from a file's start, as its opens
        out["read_runs"] = scale_starts(prof, per * (1.0 if "open" in fixed else x))
    if prof.get("namespace_operations_by_folder"):
        scale = 1.0 if "create" in fixed else x
        out["namespace_operations_by_folder"] = {k: v * per * scale
                                                 for k, v in prof["namespace_operations_by_folder"].items()}
    return out


def limits(f: dict, stage: str, costs: dict, hosts: int, workers: int, cores: float | None) -> tuple[dict, list]:
    """Each resource's limit on the stage, in target slides per second (a ``figure`` each), and notes on the terms
    the characterisation or the run could not give."""
    out, notes = {}, []
    r, w = f["read_bytes"]["value"], f["write_bytes"]["value"]
    per = f"a target slide's {stage} demand"
    prof = per_slide_profile(f, stage)
    p = patterns(prof) if prof else None
    ahead = read_ahead(p, costs) if p else None
    per_read = per
    if ahead and ahead[0]:  # the client's read-ahead from the start of the files it opens: on the links too
        r += ahead[0]
        per_read += f" (its bytes read and {ahead[0]:,.0f} B the client reads ahead of its opens from a file's start)"

    def put(key, value, how):
        out[key] = figure(value, "slides/s", how)

    for side, b, what in (("read", r, per_read), ("write", w, per)):
        bw, sbw = bandwidths(costs, side)
        if bw and b:
            put(f"link_{side}", hosts * bw["value"] / b, f"{hosts} hosts x {bw['source']} / {b:,.0f} B {side} in {what}")
        if sbw and b:
            put(f"server_{side}", sbw["value"] / b, f"{sbw['source']} / {b:,.0f} B {side} in {what}")
    cpu = f.get("cpu_seconds")
    if cores and cpu and cpu["value"]:
        put("cores", hosts * cores["value"] / cpu["value"],
            f"{hosts} hosts x {cores['value']:g} cores ({cores['source']}) / {cpu['value']:.3g} CPU s in {per}")
    if prof is None:
        notes.append(f"{stage}: no operation counts (its run was not observed): the chains, the folder locks, small "
                     "files and the metadata server are not sized; bandwidth and CPU only")
        return out, notes
    files, sbw = costs.get("server_small_files"), costs.get("server_write_bandwidth")
    if files and sbw and p["files_written"]:  # a small file's cost to the servers beyond its bytes, as cluster.py
        beyond = small_file_beyond(costs, p["file_bytes"])
        if beyond:
            how = costs.get("server_small_file_fixed") or files
            put("server_files", 1.0 / (beyond * p["files_written"]),
                f"{how['source']}, less their bytes at the targets' write bandwidth: {beyond * 1e3:.3g} ms of the "
                f"servers' time a {p['file_bytes']:,.0f} B file beyond its bytes, x {p['files_written']:,.1f} files "
                f"written whole in {per}")
    md, missing = 0.0, []
    for op in METADATA_OPS:
        n = ((prof["ops"].get(op) or {}).get("count") or 0) + (
            (prof["ops"].get("mkdir") or {}).get("count") or 0 if op == "create" else 0)
        if not n:
            continue
        rate = cost(costs, f"server_{op}")
        if rate:
            md += n / rate
        else:
            missing.append(op)
    if md:
        put("metadata", 1.0 / md, f"the metadata server's time a target slide: its creates, opens, renames and "
            f"unlinks at the rates {costs['server_create']['source'] if costs.get('server_create') else 'measured'}")
    if missing and md:
        notes.append(f"{stage}: the metadata server's {', '.join(missing)} rate not measured: left out of its term")
    io = pattern_seconds(p, costs)
    uncovered = [k.replace("_", " ") for k, v in io.items() if v is None and p.get(k)]
    if uncovered:  # as the cluster model counts them: nothing
        notes.append(f"{stage}: the chains count nothing for the {', '.join(uncovered)} (the characterisation lacks "
                     "their cost): a lower bound of the chains")
    chain = (cpu["value"] if cpu else 0.0) + sum(v or 0.0 for v in io.values())
    if chain > 0:
        put("chain", hosts * workers / chain, f"{hosts} hosts x {workers} workers / {chain:.3g} s a target slide "
            f"on one worker ({'its CPU and ' if cpu else ''}its I/O patterns one after the other at "
            f"{_when(costs)}'s costs" + (f", but the {', '.join(uncovered)}" if uncovered else "") + ")")
    shares = folder_shares(prof)
    lock = serialised_seconds(p, costs)
    if shares and lock > 0:
        put("folder_locks", hosts / (lock * max(shares)),
            f"{hosts} hosts / ({lock * 1e3:.3g} ms of creates, renames and unlinks a target slide, one host's round "
            f"trips at {_when(costs)}'s costs, x {max(shares):.0%} in its busiest folder)")
    elif lock > 0:
        notes.append(f"{stage}: folder locks not sized (the run's io_profile predates counting operations per folder)")
    return out, notes


def _when(costs: dict) -> str:
    return next((c["source"].split(":")[0] for c in costs.values() if c["source"].startswith("wsibench fio")),
                "the storage")


def scaled_demand(f: dict, stage: str, slides: int) -> dict:
    """The stage's measured demand (``stage_demand``) for ``slides`` target slides: its per-item table cycled to
    the target's items (slides; shards in proportion, as measured a shard), each slide's CPU and bytes scaled by the
    stage's factor; its io_profile scaled to the whole (``per_slide_profile`` x slides)."""
    d = f["demand"]
    prof = per_slide_profile(f, stage)
    items = d["item_table"]
    x = f["factor"]["value"]
    per_slide_items = len(items) / f["slides"]
    n = max(1, round(slides * per_slide_items * (x if stage == "tfrecords" else 1.0)))
    rows = items.iloc[[i % len(items) for i in range(n)]].reset_index(drop=True).copy()
    if stage != "tfrecords":  # a slide each: its own demand grows; shards stay shards
        for c in ("cpu_seconds", "bytes_read", "bytes_written", "seconds", "machine_cpu_seconds", "wire_read_bytes",
                  "wire_written_bytes"):
            if c in rows:
                rows[c] = rows[c].astype(float) * x
    whole = {k: v for k, v in prof.items() if k != "ops"}
    whole["ops"] = {k: dict(v, count=v["count"] * slides) for k, v in prof["ops"].items()}
    for k in ("bytes_read", "bytes_written", "operations", "metadata_operations", "creates", "namespace_operations"):
        if whole.get(k) is not None:
            whole[k] = whole[k] * slides
    if whole.get("read_runs"):
        whole["read_runs"] = scale_starts(whole, slides)
    if whole.get("namespace_operations_by_folder"):
        whole["namespace_operations_by_folder"] = {k: v * slides for k, v in whole["namespace_operations_by_folder"].items()}
    return dict(d, io_profile=whole, item_table=rows, items=n, seconds=None,
                source=f"{d['source']}, scaled to {slides} target slides")


def simulated(f: dict, stage: str, costs: dict, hosts: int, workers: int, cores: float | None,
              on_target: bool = False) -> dict | None:
    """The cluster model's time a target slide (``cluster.predict`` over a few rounds of slides per worker, scaled);
    None where the run cannot give it (not observed, no per-item CPU), with the reason."""
    from . import cluster

    d = f["demand"]
    items = d.get("item_table")
    if not d.get("io_profile") or items is None or not len(items) or "cpu_seconds" not in items:
        return None
    slides = max(SIMULATED_ROUNDS * hosts * workers, f["slides"])
    try:
        p = cluster.predict(scaled_demand(f, stage, slides), costs, hosts, workers, lab=False, cores_per_host=cores,
                            on_target=on_target)
    except SizingError as e:
        return {"error": str(e)}
    return {"per_slide_seconds": p["seconds"] / slides, "binding": p["binding"], "busy_fraction": p["busy_fraction"],
            "slides_simulated": slides, "items_simulated": p["items"]}


def stage_answer(f: dict, stage: str, costs: dict, hosts: int, workers: int, cores: dict | None,
                 slides: float) -> dict:
    """One stage on one storage for ``slides`` target slides: its limits, what binds, the time, the headroom (the
    next limit over the binding one) and what would help."""
    lim, notes = limits(f, stage, costs, hosts, workers, cores)
    if not lim:
        return {"limits": {}, "notes": notes or [f"{stage}: nothing to size it with"]}
    order = sorted(lim, key=lambda k: lim[k]["value"])
    client = [k for k in order if k in CLIENT]
    server = [k for k in order if k in SERVER]
    binding = order[0]
    rate = lim[binding]["value"]
    out = {"limits": lim, "notes": notes,
           "client_limit": dict(lim[client[0]], which=client[0]) if client else None,
           "server_limit": dict(lim[server[0]], which=server[0]) if server else None}
    sim_costs = dict(costs)  # a vendor figure is the servers' aggregate, not a host's link (``bandwidths``)
    for side in ("read", "write"):
        link, server = bandwidths(costs, side)
        if not link:
            sim_costs.pop(f"{side}_bandwidth", None)
            if server:
                sim_costs[f"server_{side}_bandwidth"] = server
    on_target = bool(f.get("on_target"))
    sim = simulated(f, stage, sim_costs, hosts, workers, cores and cores["value"], on_target)
    if sim and "error" not in sim:
        seconds = sim["per_slide_seconds"] * slides
        binding = sim["binding"] if sim["binding"] in NAMES else binding
        out["seconds"] = figure(seconds, "s", f"the cluster model: {stage} for {sim['slides_simulated']} target "
                                f"slides on {hosts} hosts x {workers} workers ({sim['items_simulated']} items, max-min "
                                "sharing of links, servers and cores, the workers' queue at the servers"
                                + (f"; each item as {f['on_target']} measured it on this storage" if on_target else "")
                                + f"), x {slides:g} / {sim['slides_simulated']}")
        out["model"] = "cluster"
        out["busy_fraction"] = sim["busy_fraction"]
    else:
        if sim and "error" in sim:
            out["notes"].append(f"{stage}: the cluster model could not run ({sim['error']}): the least limit alone")
        out["seconds"] = figure(slides / rate, "s", f"{slides:g} target slides / the least limit, "
                                f"{NAMES[binding]} ({rate:.3g} slides/s)")
        out["model"] = "least limit"
    out["binding"] = binding
    out["binding_what"] = NAMES.get(binding, binding)
    nxt = next((k for k in order if k != binding), None)
    if nxt and binding in lim and lim[nxt]["value"] < lim[binding]["value"]:
        out["notes"].append(f"{stage}: the cluster model finds {NAMES[binding]} binding, the steady-state limits "
                            f"{NAMES[nxt]} (the last items' tail, and sharing, differ from the steady state)")
    elif nxt and binding in lim:
        out["headroom"] = figure(lim[nxt]["value"] / lim[binding]["value"], "x",
                                 f"{NAMES[nxt]} ({lim[nxt]['value']:.3g} slides/s) over {NAMES[binding]} "
                                 f"({lim[binding]['value']:.3g} slides/s): what more of the binding resource gains "
                                 "before the next binds")
        out["next"] = nxt
    out["advice"] = ADVICE.get(binding, "")
    return out


def server_notes(name: str, costs: dict, hosts: int) -> list[str]:
    """What the answer for ``hosts`` hosts cannot say of the servers: not measured, or measured with fewer hosts."""
    measured = cost(costs, "server_hosts_measured")
    if not any(k.startswith("server_") for k in costs) or (measured is None and not bandwidths(costs, "read")[1]):
        return [f"the servers' own limits are not measured (wsibench fio {name} --hosts N): the answer is the client "
                "hosts' alone, as if the servers never bound"]
    if measured and hosts > measured:
        return [f"the servers' limits were measured with {measured:g} client hosts at once; {hosts} may get more "
                f"from them if {measured:g} did not fill them (the metadata probe runs one operation at a time a "
                "host, so its rate is the least the server sustains): run wsibench fio --hosts with more hosts"]
    return []


def train_answer(train: dict | None, gpus: int, acc: dict, costs: dict, hosts: int, epochs: int,
                 records: float | None) -> dict | None:
    """Training's time for ``records`` records over ``epochs`` epochs: the GPUs' pace, or what the storage and the
    hosts' links supply (the training hosts are the N client hosts), whichever is less."""
    if not train or not records:
        return None
    bps = train["bytes_per_sample"]["value"]
    lim = {"gpus": figure(gpus * acc["images_per_s"], "samples/s", f"{gpus} GPUs x {acc['images_per_s']:.0f} images/s "
                          f"({acc['source']})")}
    rb, srb = bandwidths(costs, "read")
    if rb:
        lim["link_read"] = figure(hosts * rb["value"] / bps, "samples/s", f"{hosts} hosts x {rb['source']} / {bps:,.0f} "
                                  f"B a sample ({train['bytes_per_sample']['source']})")
    if srb:
        lim["server_read"] = figure(srb["value"] / bps, "samples/s", f"{srb['source']} / {bps:,.0f} B a sample")
    binding = min(lim, key=lambda k: lim[k]["value"])
    supply = lim[binding]["value"]
    return {"limits": lim, "binding": binding, "binding_what": NAMES[binding],
            "seconds": figure(epochs * records / supply, "s", f"{epochs} epochs x {records:,.0f} records / "
                              f"{supply:,.0f} samples/s ({NAMES[binding]})"),
            "advice": "" if binding == "gpus" else ADVICE[binding].replace("more workers or client hosts", "more GPUs")}


def infer_answer(infer: dict | None, gpus: int, acc: dict, costs: dict, hosts: int, patches_per_slide: float | None,
                 slides: float) -> dict | None:
    """Inference's time for ``slides`` target slides: its patches scored at the GPUs' rate, or its reads at what the
    storage and the links supply, whichever is less."""
    if not infer or not patches_per_slide:
        return None
    per_patch = (infer.get("per_patch") or {}).get("read_bytes") or {}
    lim = {}
    if acc.get("infer_images_per_s"):
        lim["gpus"] = figure(gpus * acc["infer_images_per_s"] / patches_per_slide, "slides/s",
                             f"{gpus} GPUs x {acc['infer_images_per_s']:.0f} images/s ({acc['source']}) / "
                             f"{patches_per_slide:,.0f} patches scored a target slide")
    b = (per_patch.get("value") or 0) * patches_per_slide
    rb, srb = bandwidths(costs, "read")
    for key, bw, n in (("link_read", rb, hosts), ("server_read", srb, 1)):
        if bw and b:
            lim[key] = figure(n * bw["value"] / b, "slides/s", (f"{hosts} hosts x " if n > 1 or key == "link_read" else "")
                              + f"{bw['source']} / {b:,.0f} B read a target slide ({per_patch.get('source')})")
    if not lim:
        return None
    binding = min(lim, key=lambda k: lim[k]["value"])
    return {"limits": lim, "binding": binding, "binding_what": NAMES[binding],
            "seconds": figure(slides / lim[binding]["value"], "s", f"{slides:g} target slides / {NAMES[binding]}"),
            "advice": "" if binding == "gpus" else ADVICE[binding].replace("more workers or client hosts", "more GPUs")}


def budget(stages: dict, train: dict | None, infer: dict | None, slides: float, window: float,
           train_is_per_slide: bool) -> dict | None:
    """One budget: the stages' times for ``slides`` target slides, added, within ``window`` seconds: the slides
    that fit (the per-slide times, and training's: per slide where it trains on the day's slides, else fixed),
    the headroom (window over the sum) and the stage that takes the most of it."""
    parts = {k: v["seconds"]["value"] for k, v in stages.items() if v.get("seconds")}
    if train and train.get("seconds"):
        parts["train"] = train["seconds"]["value"]
    if infer and infer.get("seconds"):
        parts["infer"] = infer["seconds"]["value"]
    if not parts:
        return None
    total = sum(parts.values())
    fixed = 0.0 if train_is_per_slide else parts.get("train", 0.0)
    per_slide = (total - fixed) / slides
    fits = max(window - fixed, 0.0) / per_slide if per_slide > 0 else math.inf
    top = max(parts, key=parts.get)
    how = " + ".join(f"{k} {_s(v)}" for k, v in parts.items())
    each = ", ".join(f"{k} {_s(v)}" for k, v in parts.items() if not (fixed and k == "train"))
    return {"seconds": figure(total, "s", f"{how}, for {slides:g} target slides"),
            "parts": parts,
            "headroom": figure(window / total, "x", f"the window ({_s(window)}) over the sum of the stages' times "
                               f"({_s(total)}) for {slides:g} target slides"),
            "slides_per_day": figure(fits, "slides/day",
                                     f"the slides whose stages add up to the window ({_s(window)}): ({_s(window)}"
                                     + (f" - training {_s(fixed)}, fixed" if fixed else "")
                                     + f") / {_s(per_slide)} a slide ({each} over {slides:g})"
                                     + ("; one window a day" if window != SECONDS_PER_DAY else "")),
            "slides_per_window": figure(fits, "slides", "the same, in one window"),
            "largest": top}


def _s(v: float) -> str:
    from .render import quantity
    return quantity(v, "s")


def metadata_answer(f: dict | None, answer: dict | None, costs: dict, slides: float, window: float, hosts: int,
                    dataset_slides: float, target: dict) -> dict | None:
    """The patch stage's creates against the metadata server: the creates/s the target needs over the window, at
    the stage's predicted pace, what the metadata server sustained with several hosts at once, and the folder
    fan-out at the target's scale (files a folder) as a hotspot."""
    if not f:
        return None
    creates = f["creates"]["value"]
    out = {"creates_per_s_needed": figure(slides * creates / window, "files/s",
                                          f"{slides:g} target slides x {creates:,.0f} files a slide "
                                          f"({f['creates']['source']}) over the window ({_s(window)})")}
    if answer and answer.get("seconds") and answer["seconds"]["value"]:
        out["creates_per_s_at_pace"] = figure(slides * creates / answer["seconds"]["value"], "files/s",
                                              f"the same files in the stage's predicted time ({_s(answer['seconds']['value'])})")
    sc = costs.get("server_create")
    if sc:
        out["server_creates_per_s"] = figure(sc["value"], "files/s", f"{sc['source']} (each host one create after "
                                             "another: what the server sustained for them, its ceiling may be higher)")
        need = out.get("creates_per_s_at_pace", out["creates_per_s_needed"])["value"]
        out["headroom"] = figure(sc["value"] / need if need else math.inf, "x",
                                 "the metadata server's measured creates/s over the stage's at its predicted pace")
    else:
        out["note"] = "the metadata server's create rate not measured (wsibench fio PROFILE --hosts N)"
    if answer and "folder_locks" in answer.get("limits", {}):
        lk = answer["limits"]["folder_locks"]
        out["folder_lock_creates_per_s"] = figure(lk["value"] * creates, "files/s",
                                                  f"{lk['source']} x {creates:,.0f} files a slide")
    prof = f["demand"].get("io_profile") or {}
    shares = folder_shares(prof) if prof else None
    share = max(shares) if shares else 1 / len(target.get("patch_folders") or (0, 0))
    patches = f.get("patches")
    files = dataset_slides * patches * share if patches else None
    if files:
        out["files_per_folder"] = figure(files, "files", f"{dataset_slides:g} slides x {patches:,.0f} "
                                         f"patches a slide x {share:.0%} into the busiest folder ("
                                         + ("as the run's io_profile counted them" if shares else
                                            "tumor/ and normal/, taken as equal") + ")")
        small = [f"{cost(costs, op) * 1e3:.3g} ms a{'n' if op == 'open' else ''} {op}"
                 for op in ("create", "rename") if cost(costs, op)]
        out["hotspot"] = (f"the patch folders hold {files:,.0f} files each at the target's scale; a create and a "
                          "rename in such a folder were not measured (fio's probe works in a new, small folder"
                          + (f": {', '.join(small)}" if small else "") + "); on file systems whose directory "
                          "operations grow with the folder, they cost more there")
    return out


def gpus_fed(feed: dict | None, feeds_on: dict, name: str, costs: dict, hosts: int, acc: dict,
             threshold: float, train: dict | None = None) -> dict | None:
    """The GPUs the storage keeps at AU >= threshold. ``measured`` (mode ``mlperf``) from the newest MLPerf-mode
    feed on this storage (``feeds_on``: {storage: [feed runs, oldest first]}) that broke no rule and emulated this
    accelerator (its step and batch, where the record says) at this threshold, on as many client hosts as asked;
    ``scaled from a measurement`` from such a feed on another number of hosts (``feed_hosts``); else ``bound``
    (computed from bandwidth: min(N x a host's link, the storage targets') over the bytes of a sample (a feed's,
    else a TFRecord's, ``train``) and one GPU's samples/s), its source saying why no feed counted. A probe-mode feed is
    not a storage measurement (its short probes can be served by tf.data's buffers and caches, issue 29): it is
    named beside the bound, and given (label ``measured, probe mode``) only where no bound can be computed."""
    runs = feeds_on.get(name) or []
    why, probe, scaled = [], None, None
    for run in reversed(runs):
        f = run.get("feed") or {}
        if f.get("max_accelerators") is None and f.get("valid") is not False:
            continue
        rid = f"feed run {run.get('run_id')} ({name}"
        if f.get("mode") != "mlperf":
            probe = probe or run
            why.append(f"{rid}, probe mode) kept {f['max_accelerators']} at AU >= {f.get('threshold', threshold)}, "
                       "but probe mode is not a storage measurement")
            continue
        if f.get("valid") is False or f.get("refused"):
            why.append(f"{rid}, MLPerf mode) was refused: {f.get('refused')}")
            continue
        step, batch, th = f.get("step_s"), f.get("batch"), f.get("threshold", threshold)
        if (step is not None and abs(step - acc["step_s"]) > 1e-9) or (batch is not None and batch != acc["batch"]) \
                or abs(th - threshold) > 1e-9:
            why.append(f"{rid}, MLPerf mode) emulated {batch} samples a step of {step} s at AU >= {th}, not "
                       f"{acc['name']}'s {acc['batch']} a step of {acc['step_s']} s at AU >= {threshold}")
            continue
        fed_hosts = f.get("hosts") or 1
        if fed_hosts != hosts:  # another host count: scaled from it where it says enough (feed_hosts), else not used
            if scaled is None and f.get("probes") and (f.get("dataset") or {}).get("shard_records"):
                scaled = (rid, f)
            why.append(f"{rid}, MLPerf mode) ran on {fed_hosts} client host{'s' * (fed_hosts != 1)}, not {hosts}")
            continue
        capped = f.get("first_failing") is None
        runs_said = (f", a warm-up and {f['runs']} runs of {f['epochs']} epochs, every run" if f.get("runs") else "")
        return figure(f["max_accelerators"], "GPUs", f"{rid}): the most emulated accelerators it kept at AU >= "
                      f"{th}, mlperf mode{runs_said}, on {hosts} client host{'s' * (hosts != 1)}"
                      + ("; every count up to its cap passed, so at least this many" if capped else
                         f"; {f['first_failing']} failed")) | {
            "label": "measured, at least" if capped else "measured", "mode": "mlperf"}
    if scaled is not None:
        rid, f = scaled
        got = accelerators_on_hosts(f, hosts, threshold, server_bandwidth(costs, "read", hosts))
        fed_hosts = f.get("hosts") or 1
        head = (f"{rid}, MLPerf mode) on {fed_hosts} client host{'s' * (fed_hosts != 1)}, sized for {hosts}: each "
                "host as fast as the feed's hosts with as many ranks, the bytes read a consumed sample at each count "
                "(its shards and read-ahead; harness/sizing/feed_hosts.py)")
        if got is None:
            return figure(0, "GPUs", f"{head}: even 1 accelerator misses AU >= {threshold}") | {
                "label": "scaled from a measurement", "mode": "mlperf"}
        return figure(got["accelerators"], "GPUs", f"{head}: at {got['accelerators']}, {got['how']}, AU "
                      f"{got['au']:.2f}" + ("; every count the feed could judge held, so at least this many"
                                          if got["at_least"] else "")) | {
            "label": "scaled from a measurement" + (", at least" if got["at_least"] else ""), "mode": "mlperf"}
    bound = _gpus_bound(feed, costs, hosts, acc, threshold, train)
    if bound is not None:
        if why:
            bound["source"] += f" (no measurement counts: {why[0]})"
        return bound
    if probe is not None:
        f = probe["feed"]
        return figure(f["max_accelerators"], "GPUs", f"feed run {probe.get('run_id')} ({name}), probe mode: the most "
                      f"emulated accelerators it kept at AU >= {f.get('threshold', threshold)}, on one host; not an "
                      "MLPerf-mode measurement, it can overstate (run wsibench feed --mlperf)") | {
            "label": "measured, probe mode", "mode": "probe"}
    return None


def _gpus_bound(feed: dict | None, costs: dict, hosts: int, acc: dict, threshold: float,
                train: dict | None) -> dict | None:
    if feed and feed.get("bytes_per_sample"):
        bps, bsrc = feed["bytes_per_sample"], feed["source"]
    elif train and train.get("bytes_per_sample"):
        bps, bsrc = train["bytes_per_sample"]["value"], train["bytes_per_sample"]["source"]
    else:
        return None
    supply, srcs = [], []
    rb, srb = bandwidths(costs, "read")
    if rb:
        supply.append(hosts * rb["value"])
        srcs.append(f"{hosts} hosts x {rb['source']}")
    if srb:
        supply.append(srb["value"])
        srcs.append(srb["source"])
    if not supply:
        return None
    need = acc["images_per_s"] * threshold
    exact = min(supply) / bps / need  # GPUs at exactly AU = threshold; whole GPUs below
    return figure(int(math.floor(exact + 1e-9)), "GPUs",
                  f"min({'; '.join(srcs)}) / {bps:,.0f} B a sample ({bsrc}) / ({acc['images_per_s']:.0f} "
                  f"images/s x AU {threshold}): computed from bandwidth") | {"label": "bound", "mode": None,
                                                                             "exact": exact}


def capacity(stages: dict, target: dict, dataset_slides: float, train: dict | None, runs: list[dict],
             acc: dict) -> dict:
    """What the target keeps on the storage, bytes and files (inodes): the raw slides, the masks, the patches, the
    TFRecord shards, the checkpoints (one an epoch, where a run trained the accelerator's model)."""
    out = {}
    sb = target.get("slide_bytes")
    if sb:
        out["raw_slides"] = {"bytes": figure(dataset_slides * sb["value"], "B", f"{dataset_slides:g} slides x "
                                             f"{sb['value'] / 1e9:.3g} GB a slide ({sb['source']})"),
                             "files": figure(dataset_slides, "files", f"{dataset_slides:g} slides, a file each")}
    for stage, label in (("masks", "masks"), ("patches", "patches"), ("tfrecords", "shards")):
        f = stages.get(stage)
        if not f:
            continue
        row = {"bytes": figure(dataset_slides * f["write_bytes"]["value"], "B", f"{dataset_slides:g} slides x "
                               f"{f['write_bytes']['value']:,.0f} B written a slide ({f['write_bytes']['source']})")}
        files = f["creates"]["value"]
        if stage == "tfrecords":
            d = f["demand"]
            shards = d["items"] / f["slides"] * f["factor"]["value"]
            row["files"] = figure(dataset_slides * shards, "files", f"{dataset_slides:g} slides x {shards:.3g} shards a "
                                  f"slide (the run's {d['items']} shards over its {f['slides']} slides, x "
                                  f"{f['factor']['value']:.3g} for the target's patches: shards as measured a shard)")
        elif files:
            row["files"] = figure(dataset_slides * files, "files", f"{dataset_slides:g} slides x {files:,.0f} files "
                                  f"created a slide ({f['creates']['source']})")
        out[label] = row
    ck = [c for s in runs for c in ((s.get("train") or {}).get("checkpoints") or [])
          if ((s.get("train") or {}).get("model") == acc.get("model")) and c.get("bytes")]
    epochs = (train or {}).get("epochs")
    if ck and epochs:
        b = max(c["bytes"] for c in ck)
        out["checkpoints"] = {"bytes": figure(epochs * b, "B", f"{epochs} epochs x {b:,.0f} B a checkpoint (a run "
                                              f"trained {acc.get('model')}: its checkpoint), one kept an epoch"),
                              "files": figure(epochs, "files", f"{epochs} epochs, a checkpoint each")}
    elif epochs:
        out["checkpoints_note"] = (f"checkpoints not sized: no run given trained {acc.get('model')} (a checkpoint's "
                                   "size is the model's, not the data's)")
    tb = sum(r["bytes"]["value"] for k, r in out.items() if isinstance(r, dict) and "bytes" in r)
    tf = sum(r["files"]["value"] for k, r in out.items() if isinstance(r, dict) and "files" in r)
    out["total"] = {"bytes": figure(tb, "B", "the rows above, added"), "files": figure(tf, "files", "the rows above, added")}
    return out
