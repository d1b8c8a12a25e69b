"""The evaluation's results as one table: a column per weights file, a row per metric.

``print_table`` aligns it for a terminal, ``markdown_table`` writes it for a page; a weights file
is named by its run (``RUN`` for RUN/export/…, with the export's suffix) or else by its file name.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

from smartclip.export import export_run

TASKS = ("retrieval", "zeroshot", "latent_r2", "sugarcrepe", "hard_negatives")  # result keys


def weights_name(weights: str | None) -> str:
    """What names a weights file in the results table: the run of an export (with the export's
    suffix: `RUN-<stem>` for RUN/export-<stem>/), else the file's name; "random" for None."""
    if weights is None:
        return "random"
    run = export_run(weights)
    if run is None:
        return Path(weights).name
    return run.name + Path(weights).absolute().parent.name.removeprefix("export")


def column_names(weights: Sequence[str | None]) -> list[str]:
    """`weights_name` of each, those shared by several numbered in order (`name #1`, `name #2`)."""
    names = [weights_name(w) for w in weights]
    counts, seen = Counter(names), Counter()
    out = []
    for name in names:
        seen[name] += 1
        out.append(f"{name} #{seen[name]}" if counts[name] > 1 else name)
    return out


def _cells(name: str, value: int | float | dict) -> Iterator[tuple[str, str]]:
    """(row name, printed value) of one result; nested dicts give dotted row names."""
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from _cells(f"{name}.{key}", inner)
    else:
        yield name, str(value) if isinstance(value, int) else f"{value:.3f}"


def result_rows(results: list[dict]) -> tuple[list[str], dict[str, list[str]]]:
    """The results as a table: column names (`column_names`) and, per metric, one printed cell
    per weights file ("" where a file has no such metric)."""
    names = column_names([r["weights"] for r in results])
    rows: dict[str, list[str]] = {}
    for n, r in enumerate(results):
        for task in TASKS:
            for key, cell in _cells(task, r.get(task, {})):
                rows.setdefault(key, [""] * len(results))[n] = cell
    return names, rows


def print_table(results: list[dict]) -> None:
    """One column per weights file, one row per metric, aligned for a terminal."""
    names, rows = result_rows(results)
    width = max(map(len, rows), default=10)
    columns = [max(12, len(name)) for name in names]
    print(" " * width + "  " + "  ".join(f"{n:>{w}}" for n, w in zip(names, columns, strict=True)))
    for key, cells in rows.items():
        line = "  ".join(f"{c:>{w}}" for c, w in zip(cells, columns, strict=True))
        print(f"{key:<{width}}  {line}")


def markdown_table(results: list[dict]) -> str:
    """The same table as markdown: a `metric` column, then one column per weights file."""
    names, rows = result_rows(results)
    lines = ["| metric | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    lines += [f"| {key} | " + " | ".join(cells) + " |" for key, cells in rows.items()]
    return "\n".join(lines) + "\n"
