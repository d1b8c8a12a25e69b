"""Tests for caption sentences, sentence-prefix sampling, fitting and long-caption counting."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smartclip.data import (
    MAX_SENTENCES,
    LongCaptions,
    Record,
    TextOptions,
    caption_overflows,
    count_long_captions,
    fit_caption,
    sample_sentence_prefix,
    sentences,
)
from smartclip.data.captions import short_caption
from tests.smartclip.data.helpers import byte_tokenizer


class WordTokenizer:
    """Stand-in for open_clip's tokenizer as ``fit_caption`` measures it: one id per word."""

    def __init__(self, context_length: int) -> None:
        self.context_length = context_length

    def encode(self, text: str) -> list[int]:
        return [len(word) for word in text.split()]


@settings(max_examples=60, deadline=None)
@given(
    sentences=st.lists(
        st.text(alphabet="abc xyz,", min_size=1, max_size=12).map(lambda s: s.strip() or "a"),
        min_size=1,
        max_size=6,
    ),
    separators=st.lists(st.sampled_from([" ", "  ", "\n", " \n "]), min_size=6, max_size=6),
    ends=st.lists(st.sampled_from([".", "!", "?", "..."]), min_size=6, max_size=6),
)
def test_sentence_prefix_is_whole_sentences_and_covers_every_k(
    sentences: list[str], separators: list[str], ends: list[str]
) -> None:
    full = [s + e for s, e in zip(sentences, ends, strict=False)]
    caption = "".join(s + sep for s, sep in zip(full, separators, strict=False))
    prefixes = {
        "".join(s + sep for s, sep in zip(full[:k], separators, strict=False)).rstrip()
        for k in range(1, len(full) + 1)
    }
    rng = np.random.default_rng(0)
    drawn = [sample_sentence_prefix(caption, rng) for _ in range(300)]
    assert all(caption.startswith(d) for d in drawn)
    assert set(drawn) == prefixes


def test_sentence_prefix_keeps_text_without_final_punctuation() -> None:
    rng = np.random.default_rng(1)
    drawn = {sample_sentence_prefix("One. Two. and three", rng) for _ in range(100)}
    assert drawn == {"One.", "One. Two.", "One. Two. and three"}


def test_caption_overflow_matches_what_the_tokenizer_cuts(clip_tokenizer) -> None:
    for n_words in range(70, 80):
        text = " ".join(["red"] * n_words)
        n_ids = len(clip_tokenizer.encode(text))
        kept = int((clip_tokenizer([text])[0] != 0).sum()) - 2  # without start and end tokens
        assert caption_overflows(text, clip_tokenizer) == (kept < n_ids)
    long = " ".join(["a red circle"] * 100)  # 300 words, one sentence
    assert caption_overflows(long, clip_tokenizer, context_length=400) is False
    for mode in ("truncate", "sentences"):
        assert fit_caption(long, clip_tokenizer, mode) == (long, True)
        assert fit_caption("a red circle.", clip_tokenizer, mode) == ("a red circle.", False)
    assert caption_overflows(long, byte_tokenizer) is None  # no encode: cannot tell
    assert fit_caption(long, byte_tokenizer, "sentences") == (long, False)
    with pytest.raises(ValueError, match="caption_fit"):
        fit_caption(long, clip_tokenizer, "words")


@settings(max_examples=200, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 12), min_size=1, max_size=8),
    separators=st.lists(st.sampled_from([" ", "  ", "\n"]), min_size=8, max_size=8),
    ends=st.lists(st.sampled_from([".", "!", "?", "..."]), min_size=8, max_size=8),
    context_length=st.integers(3, 40),
)
def test_sentence_fit_keeps_the_longest_whole_sentence_prefix_that_fits(
    lengths: list[int], separators: list[str], ends: list[str], context_length: int
) -> None:
    sentences = [" ".join(["w"] * n) + end for n, end in zip(lengths, ends, strict=False)]
    caption = "".join(s + sep for s, sep in zip(sentences, separators, strict=False))
    prefixes = [
        "".join(s + sep for s, sep in zip(sentences[:k], separators, strict=False)).rstrip()
        for k in range(1, len(sentences) + 1)
    ]
    tokenizer = WordTokenizer(context_length)
    too_long = len(caption.split()) + 2 > context_length  # start and end tokens count
    fitting = [p for p in prefixes if len(p.split()) + 2 <= context_length]
    expected = (fitting[-1], False) if fitting else (prefixes[0], True)
    assert fit_caption(caption, tokenizer, "sentences") == (
        expected if too_long else (caption, False)
    )
    assert fit_caption(caption, tokenizer, "truncate") == (caption, too_long)


def test_sentence_fit_with_open_clip_keeps_whole_sentences(clip_tokenizer) -> None:
    sentences = [f"The {colour} circle sits above the square." for colour in ["red"] * 30]
    caption = " ".join(sentences)
    text, truncated = fit_caption(caption, clip_tokenizer, "sentences")
    assert not truncated and caption.startswith(text) and text.endswith(".")
    k = len(text.split(". "))
    assert text == " ".join(sentences[:k])
    assert not caption_overflows(text, clip_tokenizer)
    assert caption_overflows(" ".join(sentences[: k + 1]), clip_tokenizer)


def test_count_long_captions_counts_all_or_a_seeded_sample() -> None:
    tokenizer = WordTokenizer(12)  # 10 words fit
    records = [
        Record(Path(f"{i}.png"), (" ".join(["w"] * (20 if i % 4 == 0 else 5)), "w w"), str(i))
        for i in range(40)
    ]  # 80 captions, 10 of them long
    everything = count_long_captions(records, tokenizer, 12)
    assert everything == LongCaptions(10, 80, 80, 12)
    assert str(everything) == "captions over the 12-token context: 10 of 80 (12.5%)"
    assert count_long_captions(records, tokenizer, 30).n_long == 0  # the given context counts
    sample = count_long_captions(records, tokenizer, 12, limit=75, seed=1)
    assert (sample.n_checked, sample.n_total) == (75, 80) and 5 <= sample.n_long <= 10
    assert count_long_captions(records, tokenizer, 12, limit=75, seed=1) == sample
    share = f"{sample.n_long / 75:.1%}"
    assert str(sample) == (
        f"captions over the 12-token context: {sample.n_long} of a random 75 of 80 ({share})"
    )
    assert count_long_captions(records, byte_tokenizer, 12) is None


@pytest.mark.parametrize(
    ("caption", "release", "sentence"),
    [
        (
            "The image shows a red circle. It sits above a blue square.",
            "The image shows a red circle",
            "The image shows a red circle.",
        ),
        ("Is it red? Yes. It is.", "Is it red? Yes", "Is it red?"),
        ("A circle, e.g. a red one.\nMore.", "A circle, e.g", "A circle, e.g."),
        ("Line one.\nLine two.", "Line one", "Line one."),
        ("No full stop and a space here.", "No full stop and a space here.", None),
        ("Dots...then more. End", "Dots...then more", "Dots...then more."),
    ],
)
def test_the_short_caption_is_the_release_s_text_before_the_first_full_stop_and_space(
    caption: str, release: str, sentence: str | None
) -> None:
    """Long-CLIP's `train/sharegpt4v.py`: caption.replace("\\n", " ").split(". ")[0] (no stop
    kept, newlines count as spaces); the "sentence" rule is the first of `sentences`."""
    assert short_caption(caption) == release
    assert TextOptions().short(caption) == release
    assert release == caption.replace("\n", " ").split(". ")[0]
    assert short_caption(caption, "sentence") == (sentence or caption)
    assert TextOptions(short_rule="sentence").short(caption) == (sentence or caption)
    with pytest.raises(ValueError, match="short caption rule"):
        short_caption(caption, "first")


def test_sub_captions_are_the_first_max_sentences_sentences() -> None:
    caption = " ".join(f"Sentence {i}." for i in range(11))
    assert TextOptions().sub_captions(caption) == [f"Sentence {i}." for i in range(MAX_SENTENCES)]
    assert TextOptions(max_sentences=3).sub_captions(caption) == [
        "Sentence 0.",
        "Sentence 1.",
        "Sentence 2.",
    ]
    assert TextOptions(max_sentences=20).sub_captions(caption) == sentences(caption)
    with pytest.raises(ValueError, match="max_sentences"):
        TextOptions(max_sentences=0)
    with pytest.raises(ValueError, match="short_rule"):
        TextOptions(short_rule="first")
