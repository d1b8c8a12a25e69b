"""The results table: column names and the markdown form of the printed table."""

from __future__ import annotations

from smartclip.results_table import column_names, markdown_table, print_table, weights_name


def test_column_names_number_repeated_file_names_and_name_random_weights():
    assert column_names([None, "/export/w.bin", "w.bin"]) == ["random", "w.bin #1", "w.bin #2"]
    assert weights_name(None) == "random"


def test_markdown_and_printed_tables_hold_the_same_cells(capsys):
    results = [
        {"weights": None, "retrieval": {"images": 10, "t2i": {"R@1": 0.25}}},
        {"weights": "a.bin", "latent_r2": {"bg_r": 0.5}},
    ]
    table = markdown_table(results).splitlines()
    assert table[:2] == ["| metric | random | a.bin |", "|---|---|---|"]
    assert table[2:] == [
        "| retrieval.images | 10 |  |",
        "| retrieval.t2i.R@1 | 0.250 |  |",
        "| latent_r2.bg_r |  | 0.500 |",
    ]
    print_table(results)
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].split() == ["random", "a.bin"]
    assert [line.split() for line in printed[1:]] == [
        ["retrieval.images", "10"],
        ["retrieval.t2i.R@1", "0.250"],
        ["latent_r2.bg_r", "0.500"],
    ]
