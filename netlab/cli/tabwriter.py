"""Column alignment as Go's text/tabwriter does it with kubectl's settings.

`kubectl describe` writes lines with tab-separated cells through
`tabwriter.NewWriter(out, 0, 8, 2, ' ', 0)`; its characteristic layout (the
values of `Name:` and `Namespace:` aligned, `Containers:` starting a new
alignment, `Volumes:` lining up with the conditions table above it) comes from
the writer's rule: a column is aligned over a run of consecutive lines that all
have a cell in it, and a line's last cell (the text after its last tab) belongs
to no column. Reproducing the rule gives kubectl's output byte for byte.
"""

from __future__ import annotations

PADDING = 2


def align(text: str, padding: int = PADDING) -> str:
    """`text` with tab-terminated cells padded to their column block's width."""
    lines = [line.split("\t") for line in text.split("\n")]
    widths: list[list[int]] = [[0] * (len(cells) - 1) for cells in lines]
    columns = max((len(w) for w in widths), default=0)
    for column in range(columns):
        start = 0
        while start < len(lines):
            if len(widths[start]) <= column:
                start += 1
                continue
            end = start
            while end < len(lines) and len(widths[end]) > column:
                end += 1
            width = max(len(lines[i][column]) for i in range(start, end)) + padding
            for i in range(start, end):
                widths[i][column] = width
            start = end
    return "\n".join("".join(cell.ljust(width) for cell, width in zip(cells, w, strict=False))
                     + cells[-1] for cells, w in zip(lines, widths, strict=True))
