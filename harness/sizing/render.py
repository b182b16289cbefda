"""Presenting a sizing answer. One walk over the document (``layout``) turns it into what a reader is shown: a
sentence on the target, tables of figures, notes, and the numbered sources of the figures, each source once,
grouped by the measurement it rests on. Every figure is put in a unit a person reads (``quantity``). Two thin
formatters make text of the walk: ``text`` for the terminal (``wsibench size``), and the report's Sizing section
(harness/report/sizing.py) for HTML; so both show the same figures with the same source numbers. ``rows``
flattens the document for the CSV."""
from __future__ import annotations

import math
import re

from .figures import NAMES, SECONDS_PER_DAY

BYTES = ((2 ** 40, "TiB"), (2 ** 30, "GiB"), (2 ** 20, "MiB"), (2 ** 10, "KiB"), (1, "B"))
SMALLEST_PER_S = 0.01  # a rate under this per second is shown per day
COUNTED = {"workers": "worker", "GPUs": "GPU", "decode workers per GPU": "decode worker per GPU"}
OTHERS = "Published figures, and arithmetic on the target"  # the sources that name no run or characterisation


def rows(doc: dict) -> list[dict]:
    """The document as flat rows (scope, quantity, value, unit, source): the CSV, and the report's tables."""
    out = []

    def walk(scope, d):
        for k, v in d.items():
            if isinstance(v, dict) and "value" in v and "source" in v:
                out.append({"scope": scope, "quantity": k, "value": v["value"], "unit": v["unit"], "source": v["source"]})
            elif isinstance(v, list):
                for x in v:
                    if isinstance(x, dict) and "value" in x:
                        out.append({"scope": scope, "quantity": k, "value": x["value"], "unit": x["unit"],
                                    "source": x["source"]})
            elif isinstance(v, dict) and k not in ("prediction", "feed", "accelerator"):
                walk(f"{scope}.{k}" if scope else k, v)
    walk("", {"stages": doc["stages"], "storages": doc["storages"]})
    return out


# --- a figure in a unit a person reads --------------------------------------------------------------------------

def digits(v: float) -> str:
    """About three significant digits, thousands separated, never in scientific notation: 13,961 / 798 / 12.3 /
    1.06 / 0.0532."""
    a = abs(v)
    if a >= 100 or (a >= 1 and float(v).is_integer()):
        return f"{v:,.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    if a == 0:
        return "0"
    return f"{v:.{2 - math.floor(math.log10(a))}f}"


def _bytes(v: float) -> tuple[float, str]:
    scale, name = next((s, n) for s, n in BYTES if abs(v) >= s or s == 1)
    return v / scale, name


def quantity(value, unit: str) -> str | None:
    """A figure as a person reads it, its unit chosen for its size: bytes in B, KiB ... TiB (per second too);
    seconds in µs, ms, s, min, h or days; a rate (``/s``, and cores: CPU seconds a second) per day where it is
    under 0.01 a second; counts of one in the singular. None for a figure that has no value."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    v = float(value)
    if unit == "s":
        for limit, scale, name in ((1e-3, 1e-6, "µs"), (1, 1e-3, "ms"), (120, 1, "s"), (7200, 60, "min"),
                                   (2 * SECONDS_PER_DAY, 3600, "h")):
            if abs(v) < limit:
                return f"{digits(v / scale)} {name}"
        return f"{digits(v / SECONDS_PER_DAY)} days"
    per_day = 0 < abs(v) < SMALLEST_PER_S
    if unit == "B/s":
        n, name = _bytes(v * SECONDS_PER_DAY if per_day else v)
        return f"{digits(n)} {name}/{'day' if per_day else 's'}"
    if unit == "B" or unit.startswith("B "):
        n, name = _bytes(v)
        return f"{digits(n)} {name}{unit[1:]}"
    if unit.endswith("/s") and per_day:
        return f"{digits(v * SECONDS_PER_DAY)} {unit[:-2]}/day"
    if unit.startswith("cores") and per_day:
        return f"{digits(v * SECONDS_PER_DAY)} CPU s/day{unit[len('cores'):]}"
    if unit == "x":
        return f"{digits(v)} times"
    if v == 1 and unit in COUNTED:
        unit = COUNTED[unit]
    return f"{digits(v)} {unit}"


# --- the one walk over a document -------------------------------------------------------------------------------

NEED_COLUMNS = (("read_bytes_per_s", "read"), ("write_bytes_per_s", "write"), ("operations_per_s", "operations"),
                ("creates_per_s", "creates"), ("capacity_bytes", "capacity"), ("host_cores", "host cores"))


def _cell(f: dict | None, detail: str | None = None) -> dict | None:
    """A figure as shown: its value in a readable unit (``shown``), its source (numbered later: ``ref``), and a
    few words under it (``detail``). None where there is no figure."""
    if not f or f.get("value") is None:
        return None
    return {"shown": quantity(f["value"], f["unit"]), "source": f["source"], "detail": detail, "ref": None}


def _table(title: str, caption: str, columns: list[tuple[str, str]], body: list[list], notes: list[str]) -> dict:
    """A table of the walk: ``title`` for the terminal, ``caption`` for the report."""
    return {"kind": "table", "title": title, "caption": caption, "columns": columns, "rows": body, "notes": notes}


LABELS = ("stage", "storage", "what")  # the columns that name a row (not figures)


def _text(words: str | None) -> str | None:
    return words or None


def layout(doc: dict, names: dict[str, str] | None = None) -> dict:
    """The document as it is shown, for every formatter: ``{"intro": sentence, "notes": [...], "blocks": [...],
    "sources": [{"measurement": heading, "entries": [(number, source), ...]}, ...]}``. A block is a table
    (``title``, ``caption``, ``columns`` [(name, under the name)], ``rows`` of cells, ``notes``) or a line of
    figures (``lead``, ``figures``). A cell is a label or a few words (str), None, or a figure (``_cell``) whose
    ``ref`` numbers its source; the columns named in ``LABELS`` name the row. ``names``: how to call the stages
    (default: as the document names them)."""
    name = (names or {}).get
    t = doc["target"]
    acc = t["accelerator"]
    cl = doc.get("cluster") or {}
    slides = (cl.get("slides") or {}).get("described", "slides")
    where = ""
    if cl:
        w = cl.get("workers_per_host")
        cores = cl.get("cores_per_host") or {}
        where = (f" of {slides}, on {cl['hosts']} client host(s) × {w if w else 'the measured'} worker(s)"
                 + (f" and {digits(cores['value'])} cores each" if cores.get("value") else "")
                 + f", in a window of {quantity(cl['window_seconds'], 's')}")
    intro = (f"For {digits(t['slides_per_day'])} slides a day{where}, and {t['gpus']} × {acc['name']} "
             f"({digits(acc['images_per_s'])} images/s each) training {t['epochs']} epoch(s) at AU ≥ {t['threshold']:g}, "
             f"from {len(doc.get('inputs', []))} measured run(s).")
    blocks = []
    sl = cl.get("slides") or {}
    target = [_cell(sl.get("side_px"), "a side"), _cell(sl.get("patches_per_slide"), "a slide")] + [
        _cell(f, f"{name(stage, stage)}") for stage, f in (sl.get("factors") or {}).items() if f.get("value") != 1.0]
    if any(target):
        blocks.append({"kind": "figures", "lead": "The target's slides, and each stage's demand scaled to them",
                       "figures": [c for c in target if c]})

    need, need_notes = [], []
    for stage, st in doc["stages"].items():
        req = st.get("required") or {}
        need.append([name(stage, stage)] + [_cell(req.get(k)) for k, _ in NEED_COLUMNS])
        if st.get("note"):
            need_notes.append(f"{name(stage, stage)}: {st['note']}")
    blocks.append(_table("Required, per stage", "What the target needs of storage and hosts, per stage",
                         [("stage", "")] + [(label, "") for _, label in NEED_COLUMNS], need, need_notes))
    decode = [_cell(f) for f in (doc["stages"].get("train") or {}).get("decode_cores_per_gpu") or []]
    if any(decode):
        blocks.append({"kind": "figures", "lead": "Decode on the training hosts", "figures": [c for c in decode if c]})

    storages, predicted, storage_notes, same_note = [], [], [], {}
    per_stage, per_stage_notes, meta, meta_notes, same_stage = [], [], [], [], {}
    for sname, s in doc["storages"].items():
        spd = s.get("slides_per_day")
        fed = s.get("gpus_fed") or {}
        c = s.get("cluster") or {}
        b = c.get("budget") or {}
        storages.append([sname, _cell(spd, f"most: {name(spd['stage'], spd['stage'])}, {spd['binding']}" if spd else None),
                         _cell(b.get("headroom")),
                         _cell(fed, fed.get("label") and (fed["label"] + (f", {fed['mode']}" if fed.get("mode") else "")))])
        if s.get("note"):
            storage_notes.append(f"{sname}: {s['note']}")
        if fed and fed.get("value") is None and fed.get("source"):
            storage_notes.append(f"{sname}, GPUs fed not known: {fed['source']}")
        for stage, r in s["stages"].items():
            if r.get("per_worker"):
                predicted.append([sname, name(stage, stage), _cell(r["predicted_seconds"]), _cell(r["per_worker"]),
                                  _cell(r.get("workers_needed")) or _text("storage binds")])
            if r.get("note"):
                same_note.setdefault((sname, r["note"]), []).append(name(stage, stage))
            if r.get("storage_binds"):
                same_note.setdefault((sname, r["storage_binds"]), []).append(name(stage, stage))
        rows = list((c.get("stages") or {}).items()) + [(k, c[k]) for k in ("train", "infer") if c.get(k)]
        for stage, a in rows:
            lim = a.get("limits") or {}
            cli, srv = a.get("client_limit"), a.get("server_limit")
            per_stage.append([sname, name(stage, stage), _cell(a.get("seconds")), _text(a.get("binding_what")),
                              _cell(a.get("headroom"), a.get("next") and f"then {_what(a['next'])}"),
                              _cell(cli, cli and _what(cli["which"])), _cell(srv, srv and _what(srv["which"]))]
                             if stage not in ("train", "infer") else
                             [sname, name(stage, stage), _cell(a.get("seconds")), _text(a.get("binding_what")), None,
                              _cell(lim.get("link_read"), "client link (reads)"),
                              _cell(lim.get("server_read"), "storage targets (reads)")])
            if a.get("advice"):
                same_note.setdefault((sname, a["advice"]), []).append(name(stage, stage))
            for n in a.get("notes") or []:
                st, _, rest = n.partition(": ")
                same_stage.setdefault((sname, rest), []).append(name(st, st))
        per_stage_notes += [f"{sname}: {n}" for n in c.get("notes") or []]
        m = c.get("metadata")
        if m:
            meta.append([sname, _cell(m.get("creates_per_s_needed")), _cell(m.get("creates_per_s_at_pace")),
                         _cell(m.get("server_creates_per_s")), _cell(m.get("folder_lock_creates_per_s")),
                         _cell(m.get("files_per_folder"))])
            meta_notes += [f"{sname}: {m[k]}" for k in ("note", "hotspot") if m.get(k)]
    storage_notes += [f"{sname}, {_and(stages)}: {n}" for (sname, n), stages in same_note.items()]
    per_stage_notes = [f"{sname}, {_and(stages)}: {n}" for (sname, n), stages in same_stage.items()] + per_stage_notes
    blocks.append(_table("Per storage", "What each storage can take: the slides a day whose stages (preprocessing, "
                         "training, inference) add up to the window, the stage that takes most of it and what binds "
                         "that; the window over the target's stages (headroom); the GPUs it keeps fed (bound: "
                         "computed from bandwidth; measured: a feed ran on it)",
                         [("storage", ""), ("takes at most", "slides/day, one budget"),
                          ("headroom", "window / the target's stages"),
                          ("feeds", f"GPUs at AU ≥ {t['threshold']:g}")], storages, list(dict.fromkeys(storage_notes))))
    if per_stage:
        blocks.append(_table("The cluster, per stage", f"Each stage for the target's {digits(t['slides_per_day'])} "
                             "slides on the cluster: its time, what binds it, how much more of that resource gains "
                             "before the next binds, and the least limit on each side (N × a client host's; the "
                             "servers' for all hosts)",
                             [("storage", ""), ("stage", ""), ("takes", "for the target's slides"), ("binds", ""),
                              ("headroom", "then"), ("clients", "N hosts, slides/s"), ("servers", "slides/s")],
                             per_stage, list(dict.fromkeys(per_stage_notes))))
    if meta:
        blocks.append(_table("Metadata server", "The patch stage's creates against the metadata server: over the "
                             "window, at the stage's predicted pace; what the server sustained with several hosts at "
                             "once; what the folders' locks allow; the files a patch folder holds at the target's scale",
                             [("storage", ""), ("needs", "creates/s over the window"), ("at pace", "creates/s"),
                              ("sustains", "creates/s measured"), ("folder locks", "creates/s"),
                              ("a folder holds", "files")], meta, list(dict.fromkeys(meta_notes))))
    cap = doc.get("capacity") or {}
    caprows = [[k.replace("_", " "), _cell(v.get("bytes")), _cell(v.get("files"))]
               for k, v in cap.items() if isinstance(v, dict)]
    if caprows:
        blocks.append(_table("Capacity", f"What the target's {digits(t['dataset_slides'])} slides keep on the storage: "
                             "bytes, and files (inodes)", [("what", ""), ("bytes", ""), ("files", "inodes")], caprows,
                             [cap["checkpoints_note"]] if cap.get("checkpoints_note") else []))
    if predicted:
        blocks.append(_table("Predicted stage times", "Each stage's time on each storage for the measured slides, "
                             "from the measured runs and the storages' pattern costs; the target's slides a day one "
                             "worker takes, and the workers the target needs where the workers bind",
                             [("storage", ""), ("stage", ""), ("takes", "for the measured slides"),
                              ("rate", "slides/day per worker"), ("needs", "workers for the target")], predicted, []))
    return {"intro": intro, "notes": list(doc.get("notes", [])), "blocks": blocks, "sources": _number(blocks)}


def _what(key: str) -> str:
    return NAMES.get(key, key)


def _and(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _figures(blocks: list[dict]):
    for b in blocks:
        cells = b["figures"] if b["kind"] == "figures" else [c for r in b["rows"] for c in r]
        yield from (c for c in cells if isinstance(c, dict))


MEASUREMENT = re.compile(r"\b(?:feed )?run \S+ \([^)]*\)|wsibench fio \S+(?: --observe)? \([^)]*\)")


def _number(blocks: list[dict]) -> list[dict]:
    """Number each distinct source once, grouped by the measurement it names first (a run, a feed run, a fio
    characterisation; the others together, last), in the order the figures use them; set each figure's ``ref``.
    Under its heading an entry calls the measurement "this run" (or feed run, or characterisation); a source holding
    another source whole shows it by its number."""
    groups: dict[str, list[str]] = {}
    for c in _figures(blocks):
        m = MEASUREMENT.search(c["source"])
        entries = groups.setdefault(m.group(0) if m else OTHERS, [])
        if c["source"] not in entries:
            entries.append(c["source"])
    groups = dict(sorted(groups.items(), key=lambda kv: kv[0] == OTHERS))  # stable: the others last
    number, n = {}, 0
    for entries in groups.values():
        for s in entries:
            n += 1
            number[s] = n
    for c in _figures(blocks):
        c["ref"] = number[c["source"]]
    longest_first = sorted(number, key=len, reverse=True)

    def shown(s: str) -> str:
        for other in longest_first:
            if other != s and len(other) >= 40 and other in s:
                s = s.replace(other, f"[{number[other]}]")
        return s

    def this(m: str) -> str:  # how an entry under the measurement's heading names it
        return ("this characterisation" if m.startswith("wsibench") else
                "this feed run" if m.startswith("feed") else "this run")
    return [{"measurement": m if m.startswith("wsibench") else m[:1].upper() + m[1:],
             "entries": [(number[s], shown(s) if m == OTHERS else shown(s).replace(m, this(m))) for s in entries]}
            for m, entries in groups.items()]


# --- the terminal's formatter -------------------------------------------------------------------------------------

def figure_text(c: dict | None) -> str:
    """A figure with its source's number: ``2.64 KiB/s [1]`` (and its detail after it, in brackets)."""
    if not c:
        return "-"
    return f"{c['shown']} [{c['ref']}]" + (f" ({c['detail']})" if c.get("detail") else "")


def text(doc: dict) -> str:
    """The answer as terminal text, every figure numbered with its source below (``layout``)."""
    lay = layout(doc)
    lines = [lay["intro"]] + [f"Note: {n}" for n in lay["notes"]]
    for b in lay["blocks"]:
        if b["kind"] == "figures":
            lines.append(f"  {b['lead']}: " + "; ".join(figure_text(c) for c in b["figures"]))
            continue
        lines += ["", f"{b['title']}:"]
        labels = [i for i, (col, _) in enumerate(b["columns"]) if col in LABELS]
        width = max((len(", ".join(r[i] for i in labels)) for r in b["rows"]), default=0)
        for r in b["rows"]:
            parts = [f"{b['columns'][i][0]} {figure_text(c) if isinstance(c, dict) else c}"
                     for i, c in enumerate(r) if i not in labels and c]
            lines.append(f"  {', '.join(r[i] for i in labels):<{width}}  " + ("; ".join(parts) or "-"))
        lines += [f"  Note: {n}" for n in b["notes"]]
    lines += ["", "Sources:"]
    for g in lay["sources"]:
        lines.append(f"  {g['measurement']}:")
        lines += [f"    [{n}] {s}" for n, s in g["entries"]]
    return "\n".join(lines)
