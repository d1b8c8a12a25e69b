"""Tests for the retrieval evaluation set."""

from __future__ import annotations

import io

import pytest
import torch
from PIL import Image
from torchvision.transforms import ToTensor

from smartclip.data import build_eval_set
from synthetic.scenes import SplitFiles
from tests.smartclip.data.helpers import N_VAL, captions_by_id, image_bytes


@pytest.mark.parametrize("fmt", ["coco", "csv", "wds"])
def test_eval_set_indexes_every_caption_to_its_image(
    scenes: dict[str, SplitFiles], fmt: str
) -> None:
    files = scenes["val"]
    options = {"id_key": "image_id"} if fmt == "csv" else {}
    evalset = build_eval_set(files.annotations[fmt], **options)
    expected = captions_by_id(files)
    assert len(evalset.images) == N_VAL and len(evalset.captions) == 3 * N_VAL
    assert evalset.n_malformed == 0 and evalset.n_bad_images == 0
    for t, caption in enumerate(evalset.captions):
        assert caption in expected[int(evalset.image_ids[evalset.text_to_image[t]])]
    groups = evalset.image_to_texts()
    assert sorted(t for g in groups for t in g) == list(range(3 * N_VAL))
    for i, texts in enumerate(groups):
        assert [evalset.captions[t] for t in texts] == expected[int(evalset.image_ids[i])]
    batches = list(evalset.image_loader(ToTensor(), batch_size=4))
    loaded = torch.cat(batches)
    originals = image_bytes(files)
    for image_id, tensor in zip(evalset.image_ids, loaded, strict=True):
        original = ToTensor()(Image.open(io.BytesIO(originals[int(image_id)])).convert("RGB"))
        assert torch.equal(tensor, original)
