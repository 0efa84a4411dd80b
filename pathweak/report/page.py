"""The report page: sections, images (click to enlarge), the inline stylesheet and the HTML around them."""

from __future__ import annotations

import html
import time
from typing import Any

FILES = "report_files"


def section(title: str, body: str, note: str = "") -> str:
    return f"<section><h2>{html.escape(title)}</h2>{f'<p class=note>{note}</p>' if note else ''}{body}</section>"


def img(name: str, alt: str) -> str:
    return f"<img src='{FILES}/{html.escape(name)}' alt='{html.escape(alt)}'>"


def linked(name: str, alt: str) -> str:
    """A full-width image that opens at its own size when clicked."""
    src = f"{FILES}/{html.escape(name)}"
    return f"<a href='{src}' target='_blank'><img class=wide src='{src}' alt='{html.escape(alt)}'></a>"


CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1200px;
color:#222;padding:0 1em}h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:.3em .6em;text-align:left;font-size:.92em}
th{background:#f4f4f4}img{max-width:100%;margin:.3em .6em .3em 0;vertical-align:top}.note{color:#555;font-size:.92em}
img.wide{width:100%;margin:.4em 0}.slide{margin:1.2em 0 2.4em}.small{font-size:.85em;color:#555;font-weight:normal}
.warn{background:#fff3cd;border:1px solid #d9a400;padding:.6em 1em;margin:1em 0}code{background:#f4f4f4;padding:0 .2em}"""


def page(s: dict[str, Any], sections: list[str], seconds: float) -> str:
    title = f"pathweak report: {s.get('head')} ({s.get('task')})"
    stamp = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    return (
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>"
        f"<p class=note>Written {stamp} by pathweak in {seconds:.1f} s; open offline (the images are in "
        f"{FILES}/ beside this file).</p>{''.join(sections)}</body></html>\n"
    )
