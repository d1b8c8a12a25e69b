"""Image-text data for full-scale training: four annotation formats behind one record model.

Modules, each depending only on those listed before it:

- ``records``: ``Record(image, captions, image_id)``, ``Annotations(records, n_malformed)`` and
  the bookkeeping of skipped entries;
- ``shards``: webdataset shards (``expand_shards``, ``load_wds``);
- ``formats``: CSV/TSV, ShareGPT4V and COCO loaders, ``detect_format``, ``annotation_options``,
  ``load_annotations``;
- ``captions``: sentences, sentence-prefix sampling, caption fitting, long-caption counting,
  ``TextOptions``;
- ``samples``: ``Sample``, ``Batch``, ``collate_skipping`` and image decoding;
- ``datasets``: ``ImageTextDataset`` over records, ``ShardDataset`` over shards;
- ``loader``: ``build_train_loader -> TrainData``;
- ``evalset``: ``build_eval_set -> EvalSet``.

Every public name is importable from ``smartclip.data``. Nothing bad in the data crashes a run:
malformed annotation entries are counted in ``Annotations.n_malformed``, unreadable images,
malformed shard samples and unreadable shards become ``None`` samples that ``collate_skipping``
drops and counts in ``Batch.n_dropped``; all are logged through ``logging``.
"""

from smartclip.data.captions import (
    CAPTION_FITS,
    MAX_SENTENCES,
    TEXT_VIEWS,
    LongCaptions,
    TextOptions,
    caption_overflows,
    count_long_captions,
    fit_caption,
    sample_sentence_prefix,
    sentences,
)
from smartclip.data.datasets import ImageTextDataset, ShardDataset
from smartclip.data.evalset import EvalSet, build_eval_set
from smartclip.data.formats import (
    FORMATS,
    annotation_options,
    detect_format,
    load_annotations,
    load_coco,
    load_csv,
    load_sharegpt4v,
)
from smartclip.data.formats import _csv_rows as _csv_rows  # private helpers that
from smartclip.data.formats import _read_json as _read_json  # smartclip.hard_negatives
from smartclip.data.loader import TrainData, build_train_loader
from smartclip.data.records import Annotations, Record
from smartclip.data.records import _Skips as _Skips  # reads, re-exported
from smartclip.data.records import _text as _text
from smartclip.data.samples import Batch, Sample, Tokenizer, Transform, collate_skipping
from smartclip.data.samples import _open_image as _open_image
from smartclip.data.shards import IMAGE_EXTENSIONS, expand_shards, load_wds

__all__ = [
    "CAPTION_FITS",
    "FORMATS",
    "IMAGE_EXTENSIONS",
    "MAX_SENTENCES",
    "TEXT_VIEWS",
    "Annotations",
    "Batch",
    "EvalSet",
    "ImageTextDataset",
    "LongCaptions",
    "Record",
    "Sample",
    "ShardDataset",
    "TextOptions",
    "Tokenizer",
    "TrainData",
    "Transform",
    "annotation_options",
    "build_eval_set",
    "build_train_loader",
    "caption_overflows",
    "collate_skipping",
    "count_long_captions",
    "detect_format",
    "expand_shards",
    "fit_caption",
    "load_annotations",
    "load_coco",
    "load_csv",
    "load_sharegpt4v",
    "load_wds",
    "sample_sentence_prefix",
    "sentences",
]
