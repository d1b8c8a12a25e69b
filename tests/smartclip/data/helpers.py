"""Helpers shared by the data tests: sizes of the scenes dataset, a byte tokenizer, readers."""

from __future__ import annotations

import io
import json
import tarfile

import torch

from synthetic.scenes import SplitFiles

N_TRAIN, N_VAL, SHARD_SIZE = 18, 6, 3
CONTEXT = 512


def byte_tokenizer(texts: list[str]) -> torch.Tensor:
    """Stand-in tokenizer: UTF-8 bytes, zero padded, so tests can decode what was sampled."""
    tokens = torch.zeros(len(texts), CONTEXT, dtype=torch.long)
    for i, text in enumerate(texts):
        encoded = list(text.encode())[:CONTEXT]
        tokens[i, : len(encoded)] = torch.tensor(encoded, dtype=torch.long)
    return tokens


def decode(tokens: torch.Tensor) -> str:
    return bytes(t for t in tokens.tolist() if t).decode()


def captions_by_id(files: SplitFiles) -> dict[int, list[str]]:
    entries = json.loads(files.scenes.read_text())
    return {e["image_id"]: [c["text"] for c in e["captions"]] for e in entries}


def image_bytes(files: SplitFiles) -> dict[int, bytes]:
    return {i: p.read_bytes() for i, p in zip(files.image_ids, files.images, strict=True)}


def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))
