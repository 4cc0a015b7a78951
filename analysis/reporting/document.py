"""report.md as a set of sections, each owned by one command and kept between its own markers.

`analysis.report` writes the fit section, `analysis.probe` the probe section, and so on. Each
command rewrites only its own section and keeps everything else, including text a person added.
Sections stay in one order (SECTIONS) whatever order the commands ran in. Every write is atomic
(a temporary file renamed over the old one), so an interrupted command never leaves half a report.
After its section, a command redraws report.html from the whole of report.md (`page.write_page`).
A marker that lost its partner (an edit deleted the other one) is refused in one line: guessing where the
section ends could delete a person's text, or leave a stale copy of the section behind.
"""

from pathlib import Path

from analysis.failures import InputError
from scaling import contract
from scaling.files import write_text

SECTIONS = (
    "summary",
    "fit",
    "prediction",
    "placement",
    "noise",
    "transfer",
    "families",
    "compare",
    "backtest",
    "probe",
    "tasks",
)


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def _span(document: str, name: str) -> tuple[int, int] | None:
    """(start, end) of a section's text, markers and one trailing newline included; None if absent."""
    start, end = markers(name)
    i = document.find(start)
    j = document.find(end, i + len(start)) if i >= 0 else -1
    if j < 0:
        return None
    j += len(end)
    return i, j + 1 if document[j : j + 1] == "\n" else j


def split_sections(document: str) -> list[tuple[str | None, str]]:
    """The document as (section name, text inside its markers) in document order; text outside every
    section (a person's notes) comes as (None, text), so a reader of the whole report loses nothing."""
    spans = sorted((span, name) for name in SECTIONS if (span := _span(document, name)) is not None)
    pieces, at = [], 0
    for (i, j), name in spans:
        start, end = markers(name)
        pieces += [(None, document[at:i]), (name, document[i + len(start) : document.rindex(end, i, j)])]
        at = j
    pieces.append((None, document[at:]))
    return [(name, text.strip("\n")) for name, text in pieces if text.strip()]


def figure(name: str, caption: str) -> str:
    """A figure as report.md shows it: the image from figures/ (its file name as the short alternative
    text), then its caption, which says what every mark means, as a line of its own."""
    alt = Path(name).stem.replace("_", " ")
    return f"![{alt}]({contract.FIGURES_DIR}/{name})\n\n*{caption[:1].upper()}{caption[1:]}.*\n"


def place_section(document: str, name: str, body: str) -> str:
    """`document` with section `name` set to `body`: replaced where it is, else inserted in SECTIONS order."""
    if name not in SECTIONS:
        raise ValueError(f"unknown report section {name!r}; known: {', '.join(SECTIONS)}")
    start, end = markers(name)
    block = f"{start}\n{body.strip()}\n{end}\n"
    span = _span(document, name)
    if span is not None:
        return document[: span[0]] + block + document[span[1] :]
    order = SECTIONS.index(name)
    later = [s[0] for s in (_span(document, other) for other in SECTIONS[order + 1 :]) if s]
    earlier = [s[1] for s in (_span(document, other) for other in SECTIONS[:order]) if s]
    at = min(later) if later else (max(earlier) if earlier else 0)
    before, after = document[:at], document[at:]
    if before and not before.endswith("\n\n"):
        before += "\n" if before.endswith("\n") else "\n\n"
    return before + block + ("\n" + after if after and not after.startswith("\n") else after)


def check_markers(report: Path) -> None:
    """Every section of report.md has one start marker and one end marker after it, or neither; else an
    InputError naming the marker, its line, and the fix."""
    document = report.read_text() if report.exists() else ""
    for name in SECTIONS:
        start, end = markers(name)
        starts, ends = document.count(start), document.count(end)
        if starts == ends == 0:
            continue
        if starts == ends == 1 and document.index(start) < document.index(end):
            continue
        present = start if starts else end
        line = document[: document.index(present)].count("\n") + 1
        missing = end if starts and not ends else start if ends and not starts else f"one pair of {start} ... {end}"
        raise InputError(
            f"{report}: the {name} section's markers are broken ({present} on line {line}, {starts} start and "
            f"{ends} end markers; want {missing}); restore them around the section, or delete the section with "
            "its markers, and run again (nothing was written)"
        )


def write_section(report: Path, name: str, body: str) -> None:
    """Set one section of report.md (created if missing), atomically; a broken marker is refused."""
    check_markers(report)
    document = report.read_text() if report.exists() else ""
    report.parent.mkdir(parents=True, exist_ok=True)
    write_text(report, place_section(document, name, body))
