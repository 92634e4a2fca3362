"""Small HTML helpers shared by the run report and the run comparison: escaping, tables, page."""

from __future__ import annotations

import html
import math

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1180px;color:#222;
line-height:1.4;padding:0 16px}
h1{font-size:1.6em;margin-bottom:4px}h2{border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:32px}
h3{margin-bottom:6px}.muted{color:#666;font-size:.9em}nav a{margin-right:12px}
table{border-collapse:collapse;margin:8px 0 16px;font-size:.88em}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:right;vertical-align:top}
th{background:#f4f4f6}td.l,th.l{text-align:left}tr:nth-child(even) td{background:#fafafa}
.plots{display:flex;flex-wrap:wrap;gap:8px}.plots figure{margin:0;border:1px solid #eee;padding:4px}
.plots img{display:block;max-width:100%}
pre{background:#f6f8fa;padding:8px;overflow:auto;font-size:.85em;max-height:480px}
pre.c{margin:0;padding:2px 4px;max-height:none;font-size:1em;white-space:pre-wrap;word-break:break-all;background:none}
pre.episode{white-space:pre-wrap}.turn{background:#dbeafe}.obs{background:#fef3c7;font-style:italic}
.ok{color:#0a7d29;font-weight:600}.bad{color:#b3261e;font-weight:600}.trained{background:#e8f0fe!important}
details{margin:6px 0}summary{cursor:pointer;font-weight:600}.prob{border-left:3px solid #ccc;padding:2px 10px;
margin:10px 0}.prob.solved{border-color:#0a7d29}.prob.unsolved{border-color:#b3261e}
"""


class Raw(str):
    """Already-escaped HTML: `table` puts it in a cell as is."""


def esc(x) -> str:
    return x if isinstance(x, Raw) else html.escape(str(x))


def pct(v, digits: int = 1) -> str:
    """A fraction as a percentage string; '-' when missing or not finite."""
    if not isinstance(v, (int, float)) or not math.isfinite(v):
        return "-"
    return f"{100 * v:.{digits}f}"


def num(v, digits: int = 2) -> str:
    if not isinstance(v, (int, float)) or not math.isfinite(v):
        return "-"
    return f"{v:.{digits}f}"


def table(header: list, rows: list[list], table_id: str = "", left: int = 1, groups: list[tuple[str, int]] = (),
          row_classes: list[str] | None = None) -> str:
    """An HTML table; the first `left` columns are left-aligned; `groups` adds a header row
    of (label, colspan) above `header`; a cell given as (value, css class) gets that class."""
    out = [f'<table id="{esc(table_id)}">' if table_id else "<table>", "<thead>"]
    if groups:
        out.append("<tr>" + "".join(f'<th colspan="{n}">{esc(g)}</th>' for g, n in groups) + "</tr>")
    out.append("<tr>" + "".join(f'<th class="{"l" if i < left else ""}">{esc(h)}</th>'
                                for i, h in enumerate(header)) + "</tr></thead><tbody>")
    for r, row in enumerate(rows):
        cls = f' class="{row_classes[r]}"' if row_classes and row_classes[r] else ""
        out.append(f"<tr{cls}>" + "".join(_cell(c, "l" if i < left else "") for i, c in enumerate(row)) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _cell(c, cls: str) -> str:
    if isinstance(c, tuple):
        c, extra = c
        cls = f"{cls} {extra}".strip()
    return f'<td class="{cls}">{esc(c)}</td>' if cls else f"<td>{esc(c)}</td>"


def img(b64: str | None, alt: str) -> str:
    if not b64:
        return ""
    return f'<figure><img alt="{esc(alt)}" src="data:image/png;base64,{b64}"></figure>'


def plots(figs: list[tuple[str, str | None]]) -> str:
    """A wrapping row of embedded PNGs ((alt, base64) pairs; None entries skipped)."""
    inner = "".join(img(b, alt) for alt, b in figs if b)
    return f'<div class="plots">{inner}</div>' if inner else '<p class="muted">no data to plot</p>'


def page(title: str, body: list[str], nav: list[tuple[str, str]] = ()) -> str:
    links = "".join(f'<a href="#{esc(a)}">{esc(t)}</a>' for a, t in nav)
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
            + (f"<nav>{links}</nav>" if links else "") + "\n".join(body) + "</body></html>")


def section(anchor: str, title: str, *content: str) -> str:
    return f'<section id="{esc(anchor)}"><h2>{esc(title)}</h2>' + "".join(content) + "</section>"
