"""The report's HTML pieces: numbers with sensible digits, tables that fit the page, inline figures, swatches."""
from __future__ import annotations

import html
import math

MAX_COLUMNS = 8  # wider tables are transposed when that makes them narrower

esc = html.escape


def missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def num(v, unit: str = "") -> str:
    """A measured figure with about three significant digits: 13,961 / 798 / 12.3 / 1.06 / 0.0532."""
    if missing(v):
        return '<span class="na">–</span>'
    v = float(v)
    a = abs(v)
    if v.is_integer() and a < 1e15:
        return f"{int(v):,}" + (f" {esc(unit)}" if unit else "")
    text = (f"{v:,.0f}" if a >= 100 else f"{v:.1f}" if a >= 10 else f"{v:.2f}" if a >= 1
            else "0" if a == 0 else f"{v:.3g}")
    return text + (f" {esc(unit)}" if unit else "")


def pct(v) -> str:
    """A fraction as a percentage: 91%, 5.3%."""
    if missing(v):
        return '<span class="na">–</span>'
    p = 100 * float(v)
    return f"{p:.0f}%" if abs(p) >= 10 else f"{p:.1f}%"


def times(r) -> str:
    """A ratio against the baseline: 3.1×, 1.0×, 0.42×."""
    if missing(r):
        return ""
    return f"{r:.0f}×" if r >= 10 else f"{r:.1f}×" if r >= 1 else f"{r:.2f}×"


def setting(v) -> str:
    """A configured value (not a measurement): as written, without invented digits."""
    return "" if missing(v) else f"{v:,g}" if isinstance(v, (int, float)) else esc(str(v))


def cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def mib(nbytes) -> str:
    return num(None if missing(nbytes) else nbytes / 2**20)


def breakable(text: str, after: str = "-/_") -> str:
    """Escaped text that may wrap after the given characters only (run ids, paths), never inside a word."""
    out = esc(text)
    for ch in after:
        out = out.replace(ch, ch + "<wbr>")
    return out


def head(title: str, unit: str = "") -> str:
    """A column heading with its unit on a second line."""
    return esc(title) + (f'<br><span class="u">{esc(unit)}</span>' if unit else "")


def swatch(cfg) -> str:
    """The configuration's colour, its label and its marks (emulated, lab, baseline), as used in every table."""
    style = f"background:{cfg.colour}" + (";background-image:repeating-linear-gradient(135deg,transparent 0 2px,"
                                          "rgba(255,255,255,.7) 2px 4px)" if cfg.emulated else "")
    marks = ('<span class="badge emu">EMULATED</span>' if cfg.emulated else "") + \
            ('<span class="badge lab">LAB</span>' if cfg.lab else "") + \
            ('<span class="badge base">baseline</span>' if cfg.baseline else "")
    return f'<span class="sw" style="{style}"></span>{esc(cfg.label)}{marks}'


def table(heads: list[str], rows: list[list[str]], align: str | None = None, caption: str = "",
          row_classes: list[str] | None = None, fit: bool = True) -> str:
    """A table of pre-formatted cells (numbers right-aligned, text left). With more than MAX_COLUMNS columns and
    fewer rows than columns it is transposed, so that it stays narrow enough for the page."""
    align = align or "l" + "r" * (len(heads) - 1)
    if fit and len(heads) > MAX_COLUMNS and len(rows) + 1 < len(heads):
        cells = [heads] + rows
        t_heads = [cells[0][0]] + [r[0] for r in rows]
        t_rows = [[c[i] for c in cells] for i in range(1, len(heads))]
        body = "".join(f'<tr><th class="l" scope="row">{r[0]}</th>'
                       + "".join(f'<td class="{align[i + 1]}">{c}</td>' for c in r[1:]) + "</tr>"
                       for i, r in enumerate(t_rows))
        thead = "".join(f'<th class="{"l" if j == 0 else "r"}">{h}</th>' for j, h in enumerate(t_heads))
        return _wrap(thead, body, caption, "transposed")
    thead = "".join(f'<th class="{a}">{h}</th>' for h, a in zip(heads, align))
    body = "".join(f'<tr class="{(row_classes or [""] * len(rows))[i]}">'
                   + "".join(f'<td class="{a}">{c}</td>' for c, a in zip(r, align)) + "</tr>"
                   for i, r in enumerate(rows))
    return _wrap(thead, body, caption)


def props(rows: list[tuple[str, str]], caption: str = "") -> str:
    """Readable property rows: name on the left, value on the right (environment, topology, mounts)."""
    body = "".join(f'<tr><th class="l" scope="row">{esc(k)}</th><td class="l">{v}</td></tr>' for k, v in rows)
    return f'<table class="props">{f"<caption>{caption}</caption>" if caption else ""}<tbody>{body}</tbody></table>'


def _wrap(thead: str, body: str, caption: str, cls: str = "") -> str:
    cap = f"<caption>{caption}</caption>" if caption else ""
    return f'<table class="{cls}">{cap}<thead><tr>{thead}</tr></thead><tbody>{body}</tbody></table>'


def figure(svg: str, caption: str, cls: str = "") -> str:
    return f'<figure class="keep {cls}">{svg}<figcaption>{caption}</figcaption></figure>'


def note(text: str) -> str:
    return f'<p class="note">{text}</p>'
