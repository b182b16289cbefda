"""The Sizing section: the newest answer of ``wsibench size`` (``<results>/sizing/*.json``), as HTML. The walk over
the document, the units and the numbering of the sources are harness.sizing's (``layout``), the same as the
terminal's text; this only formats them."""
from __future__ import annotations

from pathlib import Path

from ..sizing import layout
from ..sizing.render import LABELS
from .context import STAGE_NAMES, Context
from .html import esc, head, note, num, table


def cell(c) -> str:
    """A cell of the walk: a label, nothing, or a figure with its source's number (and its detail under it)."""
    if isinstance(c, str):
        return esc(c)
    if not c:
        return num(None)
    return (f"{esc(c['shown'])}<sup>{c['ref']}</sup>"
            + (f'<br><span class="u">{esc(c["detail"])}</span>' if c.get("detail") else ""))


def html(doc: dict) -> str:
    """The sizing document as HTML: the tables, the notes, and the sources grouped by measurement."""
    lay = layout(doc, STAGE_NAMES)
    out = f"<p>{esc(lay['intro'])} (<code>wsibench size</code>, {esc(Path(doc.get('_file', '')).name)})</p>"
    out += "".join(note(f"Note: {esc(n)}") for n in lay["notes"])
    for b in lay["blocks"]:
        if b["kind"] == "figures":
            out += f"<p>{esc(b['lead'])}: " + "; ".join(cell(c) for c in b["figures"]) + ".</p>"
            continue
        labels = sum(1 for col, _ in b["columns"] if col in LABELS)
        out += table([head(col, sub) for col, sub in b["columns"]], [[cell(c) for c in r] for r in b["rows"]],
                     align="l" * labels + "r" * (len(b["columns"]) - labels), caption=esc(b["caption"]))
        out += "".join(note(f"Note: {esc(n)}") for n in b["notes"])
    out += note("Where each figure comes from (the number by each figure), by the measurement it rests on:")
    for g in lay["sources"]:
        out += (f'<p class="note src">{esc(g["measurement"])}</p><ol class="note">'
                + "".join(f'<li value="{n}">{esc(s)}</li>' for n, s in g["entries"]) + "</ol>")
    return out


def render(ctx: Context) -> str | None:
    """The newest sizing answer: what the target needs per stage, and per storage what it can take."""
    docs = getattr(ctx, "sizing", None) or []
    return html(docs[-1]) if docs else None
