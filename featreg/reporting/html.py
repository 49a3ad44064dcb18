"""One self-contained HTML report: images embedded as base64, tables inline, inline CSS."""

from __future__ import annotations

import base64
import html
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from featreg.io import atomic_path

logger = logging.getLogger(__name__)

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; max-width: 1280px;
       margin: 2em auto; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #ddd; padding-bottom: .2em; }
h2 { margin-top: 2em; border-bottom: 1px solid #eee; }
figure { margin: 1em 0; }
img { max-width: 100%; border: 1px solid #eee; }
figcaption, .caption { font-size: .9em; color: #444; margin-top: .4em; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: .85em; margin: .5em 0; }
details { margin-top: 1.5em; border-top: 1px solid #eee; padding-top: .3em; }
summary { cursor: pointer; font-size: 1.15em; font-weight: bold; }
.answer > h2 { margin-top: .6em; }
.family { display: grid; grid-template-columns: 3fr 2fr; gap: 0 1.2em; align-items: start; }
.family > h3, .family > .wide { grid-column: 1 / -1; }
.family > h3 { margin: .4em 0 .2em; }
.family figure { margin: .3em 0 0; }
.sentence p { background: #f7f9fc; border-left: 4px solid #4a78b5; padding: .4em .7em; margin: .2em 0; }
.sentence p:first-child { font-size: 1.1em; font-weight: 600; }
th, td { border: 1px solid #ccc; padding: .25em .5em; text-align: right; }
td { white-space: nowrap; }
th { background: #f4f4f4; }
td:first-child, th:first-child { text-align: left; }
"""


@dataclass(frozen=True)
class Section:
    """One block of the report.

    ``kind`` is "figure" (``content``: a PNG path), "table" (a DataFrame),
    "text" (a string; blank lines separate paragraphs) or "block" (a sequence of
    sections shown inside this one, each under a heading one level lower: the
    answer block groups a family's sentence, counts and forest plot). ``caption``
    is shown under figures and tables and must state definitions, units, n and the
    mean ± std convention. A ``collapsed`` section shows only its title until
    opened (long tables that back the findings); ``css_class`` styles it.
    """

    title: str
    kind: str
    content: object
    caption: str = ""
    collapsed: bool = False
    css_class: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ("figure", "table", "text", "block"):
            raise ValueError(f"section kind must be 'figure', 'table', 'text' or 'block', got {self.kind!r}")
        if self.kind in ("figure", "table") and not self.caption.strip():
            raise ValueError(f"section {self.title!r}: a {self.kind} needs a caption")


def render_section(section: Section, level: int = 2) -> str:
    """The HTML of one section under an ``<h{level}>`` title: ``<section>``, or ``<details>`` when collapsed.

    An empty title gives no heading (a block's parts that its own heading names).
    """
    title = html.escape(section.title)
    caption = html.escape(section.caption)
    if section.kind == "figure":
        data = base64.b64encode(Path(section.content).read_bytes()).decode("ascii")
        alt = html.escape(section.title or section.caption)
        body = (f'<figure><img src="data:image/png;base64,{data}" alt="{alt}">'
                f"<figcaption>{caption}</figcaption></figure>")
    elif section.kind == "table":
        frame = section.content
        if not isinstance(frame, pd.DataFrame):
            raise TypeError(f"section {section.title!r}: a table needs a DataFrame, got {type(frame).__name__}")
        table = frame.to_html(index=False, escape=True, na_rep="–", border=0)
        body = f'<div class="scroll">{table}</div><p class="caption">{caption}</p>'
    elif section.kind == "block":
        body = "".join(render_section(part, level + 1) for part in section.content)
    else:
        paragraphs = [p for p in str(section.content).split("\n\n") if p.strip()]
        body = "".join(f"<p>{html.escape(p)}</p>" for p in paragraphs)
    css = f' class="{html.escape(section.css_class)}"' if section.css_class else ""
    if section.collapsed:
        return f"<details{css}><summary>{title}</summary>{body}</details>"
    heading = f"<h{level}>{title}</h{level}>" if title else ""
    return f"<section{css}>{heading}{body}</section>"


def write_report(out_html: str | Path, sections: Sequence[Section], *, title: str = "featreg report") -> Path:
    """Write ONE self-contained HTML file (no external assets) holding ``sections`` in order."""
    out_html = Path(out_html)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        *(render_section(s) for s in sections),
        "</body></html>",
    ]
    with atomic_path(out_html) as tmp:
        tmp.write_text("\n".join(parts), encoding="utf-8")
    logger.info("wrote %s (%d sections)", out_html, len(sections))
    return out_html
