"""report.html: the whole of report.md as one self-contained page, every figure embedded in it.

One file a person can open in any browser or attach to a message, without Python and without the
figures folder. It is redrawn from report.md (all sections, in order, with any text a person added)
by every command that rewrites a section, so the two never disagree. Markdown is rendered by
markdown-it-py (CommonMark and its tables); raw HTML in the text is shown as text, never obeyed, and
the page's security policy forbids scripts and any request outside the page, so a run name or a note
that looks like markup cannot change what the page does.
"""

import base64
import html
from pathlib import Path
from urllib.parse import unquote

from markdown_it import MarkdownIt
from markdown_it.token import Token

from analysis.reporting.document import split_sections
from scaling.files import write_text

IMAGE_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".svg": "image/svg+xml",
}
# Nothing loads from outside the page and no script runs; `data:` images are the embedded figures.
POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
STYLE = """
body { font: 15px/1.5 system-ui, sans-serif; color: #1a1a1a; margin: 0; background: #fafafa; }
main { max-width: 1180px; margin: 0 auto; padding: 1.5em 2em 4em; background: white; }
nav { border: 1px solid #ddd; background: #f5f7fa; padding: 0.6em 1.2em; margin-bottom: 1.5em; }
nav ul { margin: 0.3em 0; padding-left: 1.2em; } nav li.h1 { list-style: none; margin-left: -1.2em; font-weight: 600; }
section { border-top: 3px solid #2b5c8a; margin-top: 2.5em; } section.notes { border-top-color: #aaa; }
h1 { font-size: 1.6em; } h2 { font-size: 1.3em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.8em 0; display: block; overflow-x: auto; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; white-space: nowrap; }
th, td:first-child { white-space: normal; }  /* numbers with their intervals stay on one line */
th { background: #eef2f6; } tr:nth-child(even) td { background: #fafbfc; }
img { max-width: 100%; height: auto; display: block; margin: 1em auto 0.2em; }
p > em:only-child { display: block; text-align: center; color: #444; }
code { background: #f0f0f0; padding: 0 0.2em; }
.missing { color: #b00020; font-weight: 600; }
"""


def _parser() -> MarkdownIt:
    """CommonMark with tables; `html: False` renders raw HTML in the text as visible, escaped text."""
    return MarkdownIt("commonmark", {"html": False}).enable("table")


def data_uri(folder: Path, src: str) -> str | None:
    """The image file at `src` (relative to the report) as a data URI, or None when `src` is not an image
    file inside the report folder: an outside path or a URL would make the page depend on more than itself."""
    root = folder.resolve()
    path = (root / unquote(src)).resolve()
    if not path.is_relative_to(root) or path.suffix.lower() not in IMAGE_TYPES or not path.is_file():
        return None
    return f"data:{IMAGE_TYPES[path.suffix.lower()]};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def _embed_figures(tokens: list[Token], folder: Path) -> None:
    """Point every image at its data URI; an image that cannot be embedded becomes a visible notice, never
    a broken icon a reader could overlook."""
    for block, inline in zip(tokens, tokens[1:]):
        for i, child in enumerate(inline.children or []):
            if child.type != "image":
                continue
            src = str(child.attrGet("src"))
            uri = data_uri(folder, src)
            if uri is not None:
                child.attrSet("src", uri)
            else:
                notice = f"[figure missing: {unquote(src)} is not an image file in the report's folder]"
                inline.children[i] = Token("text", "", 0, content=notice)
                block.attrSet("class", "missing")  # the paragraph (or table cell) that holds it


def _anchor_headings(tokens: list[Token], first: int) -> list[tuple[str, str, str]]:
    """Give each h1/h2 an id, numbered from `first`; (id, tag, text) of each for the contents list."""
    found = []
    for opening, inline in zip(tokens, tokens[1:]):
        if opening.type == "heading_open" and opening.tag in ("h1", "h2"):
            anchor = f"s{first + len(found)}"
            opening.attrSet("id", anchor)
            found.append((anchor, opening.tag, inline.content))
    return found


def _contents(headings: list[tuple[str, str, str]]) -> str:
    items = "".join(
        f'<li class="{tag}"><a href="#{anchor}">{html.escape(text)}</a></li>' for anchor, tag, text in headings
    )
    return f"<nav><strong>Contents</strong><ul>{items}</ul></nav>" if headings else ""


def render_page(document: str, folder: Path, title: str) -> str:
    """The HTML page of a report.md document; images are read from `folder`, the report's folder."""
    md, sections, headings = _parser(), [], []
    for name, text in split_sections(document):
        tokens = md.parse(text)
        _embed_figures(tokens, folder)
        headings += _anchor_headings(tokens, len(headings))
        kind = f'id="{name}"' if name else 'class="notes"'
        sections.append(f"<section {kind}>\n{md.renderer.render(tokens, md.options, {})}</section>")
    body = "\n".join(sections)
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{POLICY}">\n'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f'<title>{html.escape(title)}</title>\n<link rel="icon" href="data:,">\n<style>{STYLE}</style>\n</head>\n'
        f"<body>\n<main>\n{_contents(headings)}\n{body}\n</main>\n</body>\n</html>\n"
    )


def write_page(report: Path) -> Path:
    """Write report.html beside `report` (report.md) from its whole text, atomically; returns its path."""
    page = report.with_suffix(".html")
    write_text(page, render_page(report.read_text(), report.parent, f"Report: {report.parent.name}"))
    return page
