"""The README and the pages under docs/ cannot drift from what they cite.

- A block quoted between `<!-- begin: PATH -->` and `<!-- end -->` (PATH relative to the page,
  e.g. `results/compare_objectives/summary.md` for a committed copy under docs/results/) is
  byte-identical to the file it names.
- Every relative link and image points to an existing file, and every `#anchor` to a heading of
  the page it names (GitHub's heading ids).
- The README's first fenced block is exactly the two commands a newcomer runs, and the README
  stays short.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
PAGES = sorted((ROOT / "docs").glob("*.md"))
COMMANDS = [
    "pip install -e . && python experiments/synthetic_recovery.py",
    'pip install -e ".[test]" && python -m pytest -q -n 2',
]
MAX_README_LINES = 220

FENCE = re.compile(r"^```[^\n]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)
CODE_SPAN = re.compile(r"(`+).*?\1", re.DOTALL)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)(?:[ \t]+#+)?[ \t]*$", re.MULTILINE)
MARKER = re.compile(r"<!-- (begin: (\S+)|end) -->")
EXTERNAL = ("http://", "https://", "mailto:")


def prose(text: str) -> str:
    """`text` without fenced code blocks and inline code spans, where `[a](b)` is not a link."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def kept_in_slug(char: str) -> bool:
    """Whether GitHub keeps `char` in a heading id: letters, marks, decimal digits, connector
    punctuation such as `_`, hyphens and spaces (so `²` and `≥` go)."""
    category = unicodedata.category(char)
    return char in "- " or category[0] in "LM" or category in ("Nd", "Pc")


def slug(heading: str) -> str:
    """GitHub's id for a heading: its text without markup, lower-cased, every character it does
    not keep dropped, spaces turned into hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()  # a link: its text
    return "".join(c for c in text if kept_in_slug(c)).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """The ids of every heading of a page; a repeated id gets -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    ids = set()
    for heading in HEADING.findall(FENCE.sub("", text)):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        ids.add(base if count == 0 else f"{base}-{count}")
    return ids


def links(text: str) -> Iterator[str]:
    """Every link and image target of a page's prose, external ones left out."""
    for target in LINK.findall(prose(text)):
        if not target.startswith(EXTERNAL):
            yield target


def broken_links(page: Path) -> list[str]:
    """The targets of `page` that name a missing file or a heading its page does not have."""
    broken = []
    for target in links(page.read_text(encoding="utf-8")):
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.is_file():
            broken.append(target)
        elif anchor and (file.suffix != ".md" or anchor not in anchors(file.read_text("utf-8"))):
            broken.append(target)
    return broken


def quoted_blocks(text: str) -> list[tuple[str, str]]:
    """(path, quoted text) for every `<!-- begin: path -->\\n...<!-- end -->` block, the text
    being everything between the begin marker's line end and the end marker. A begin inside a
    block, an end outside one, or a block left open is a ValueError."""
    blocks, open_at = [], None
    for match in MARKER.finditer(text):
        path = match.group(2)
        if path is not None:
            if open_at is not None:
                raise ValueError(f"begin: {path} inside the block of {open_at[0]}")
            if not text.startswith("\n", match.end()):
                raise ValueError(f"begin: {path} is not alone on its line")
            open_at = (path, match.end() + 1)
        elif open_at is None:
            raise ValueError("an end marker without its begin")
        else:
            blocks.append((open_at[0], text[open_at[1] : match.start()]))
            open_at = None
    if open_at is not None:
        raise ValueError(f"begin: {open_at[0]} never ends")
    return blocks


def stale_blocks(page: Path) -> list[str]:
    """The quoted blocks of `page` whose file is missing or differs from the quote."""
    stale = []
    for path, quote in quoted_blocks(page.read_text(encoding="utf-8")):
        file = page.parent / path
        if not file.is_file() or file.read_bytes() != quote.encode("utf-8"):
            stale.append(path)
    return stale


def first_fenced_block(text: str) -> list[str]:
    """The lines of the first fenced code block of `text`."""
    match = FENCE.search(text)
    assert match is not None, "no fenced code block"
    return match.group(1).splitlines()


# ---------------------------------------------------------------------------- the repository


@pytest.mark.parametrize("page", [README, *PAGES], ids=lambda p: p.relative_to(ROOT).as_posix())
def test_quoted_blocks_match_the_files_they_cite(page: Path) -> None:
    assert stale_blocks(page) == []


@pytest.mark.parametrize("page", [README, *PAGES], ids=lambda p: p.relative_to(ROOT).as_posix())
def test_links_images_and_anchors_resolve(page: Path) -> None:
    assert broken_links(page) == []


def test_every_page_is_linked_from_the_readme() -> None:
    linked = {(ROOT / t.partition("#")[0]).resolve() for t in links(README.read_text("utf-8"))}
    assert PAGES and [p for p in PAGES if p.resolve() not in linked] == []


def test_readme_first_fenced_block_is_the_two_commands() -> None:
    assert first_fenced_block(README.read_text(encoding="utf-8")) == COMMANDS


def test_readme_is_short() -> None:
    assert len(README.read_text(encoding="utf-8").splitlines()) < MAX_README_LINES


# ---------------------------------------------------------------------------- the checks


def test_slug_follows_github() -> None:
    assert slug("Predicted vs. measured (assumptions broken on purpose)") == (
        "predicted-vs-measured-assumptions-broken-on-purpose"
    )
    assert slug("Reproducing the papers' tables") == "reproducing-the-papers-tables"
    assert slug("P4, CLIP on partial captions") == "p4-clip-on-partial-captions"
    assert slug("The `block_r2` matrix: R² ≥ 0.9") == "the-block_r2-matrix-r--09"
    assert slug("See [the recipe](training.md)") == "see-the-recipe"


def test_repeated_headings_get_numbered_ids() -> None:
    text = "# Title\n## Runs\n```\n## not a heading\n```\n## Runs\n"
    assert anchors(text) == {"title", "runs", "runs-1"}


def test_broken_links_names_missing_files_and_anchors(tmp_path: Path) -> None:
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "a.png").write_bytes(b"png")
    (tmp_path / "other.md").write_text("# Other page\n## Its part\n", encoding="utf-8")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n![ok](figures/a.png) ![gone](figures/b.png) [ok](other.md#its-part)\n"
        "[bad](other.md#no-part) [self](#page) [bad self](#nothing) [web](https://x.org/y)\n"
        "`[code](not/a/link.md)` and a fence:\n```\n[fenced](nor/this.md)\n```\n",
        encoding="utf-8",
    )
    assert broken_links(page) == ["figures/b.png", "other.md#no-part", "#nothing"]


def test_quoted_blocks_must_equal_their_file(tmp_path: Path) -> None:
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "summary.md").write_text("| a |\n|---|\n| 1 |\n", encoding="utf-8")
    page = tmp_path / "page.md"
    exact = "<!-- begin: results/summary.md -->\n| a |\n|---|\n| 1 |\n<!-- end -->\n"
    page.write_text(f"# Page\n{exact}", encoding="utf-8")
    assert stale_blocks(page) == []
    for drifted in (exact.replace("| 1 |", "| 2 |"), exact.replace("| 1 |\n", "| 1 |\n\n")):
        page.write_text(drifted, encoding="utf-8")
        assert stale_blocks(page) == ["results/summary.md"]
    page.write_text(exact.replace("summary.md", "missing.md"), encoding="utf-8")
    assert stale_blocks(page) == ["results/missing.md"]


@pytest.mark.parametrize(
    "text",
    [
        "<!-- begin: a.md -->\nx\n",
        "x\n<!-- end -->\n",
        "<!-- begin: a.md -->\n<!-- begin: b.md -->\n<!-- end -->\n",
        "<!-- begin: a.md --> x\n<!-- end -->\n",
    ],
)
def test_malformed_markers_are_errors(text: str) -> None:
    with pytest.raises(ValueError):
        quoted_blocks(text)


def test_first_fenced_block_is_read_whole() -> None:
    text = "intro `inline`\n\n```bash\none\ntwo\n```\n\n```\nthree\n```\n"
    assert first_fenced_block(text) == ["one", "two"]
