"""The one fixed-width text table of the project (training summary, search, export)."""

from __future__ import annotations

from collections.abc import Sequence


def format_table(header: Sequence[str], rows: Sequence[Sequence], align: str | None = None) -> str:
    """A header, a rule and the rows, columns padded to their widest cell.

    Args:
        header: column titles.
        rows: cells (converted with ``str``; ``None`` shows as ``-``).
        align: one character per column, ``"<"`` left or ``">"`` right; default: the first
            column left, the others right (names, then numbers).
    """
    align = align or "<" + ">" * (len(header) - 1)
    if len(align) != len(header):
        raise ValueError(f"`align` needs one character per column. Received: align={align!r}")
    cells = [[str(c) for c in header]] + [["-" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(header))]

    def line(values):
        padded = (v.ljust(w) if a == "<" else v.rjust(w) for v, w, a in zip(values, widths, align, strict=True))
        return "  ".join(padded).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule, *(line(r) for r in cells[1:])])
