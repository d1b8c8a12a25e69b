"""Exports of training checkpoints: loadable in plain open_clip, written atomically, from any
checkpoint through the CLI."""

from __future__ import annotations

import open_clip
import pytest
import torch

from smartclip import export
from smartclip.checkpoint import atomic_save
from smartclip.export import EXPORT_CONFIG_NAME, EXPORT_WEIGHTS_NAME, export_open_clip
from smartclip.model import TINY_MODEL, build_model


def checkpoint(path, seed: int = 0):
    torch.manual_seed(seed)
    model = build_model(TINY_MODEL, context_length=248, mask_heads=4).eval()
    atomic_save(
        {"model": model.state_dict(), "model_name": TINY_MODEL, "context_length": 248}, path
    )
    return model


def test_export_loads_in_open_clip_with_the_same_embeddings(tmp_path) -> None:
    model = checkpoint(tmp_path / "ckpt.pt")
    path = export_open_clip(tmp_path / "ckpt.pt", tmp_path / "export")
    assert path == tmp_path / "export" / EXPORT_WEIGHTS_NAME
    state = torch.load(path, weights_only=True)
    assert not any("masknet" in k for k in state) and "positional_embedding" in state
    assert (path.parent / EXPORT_CONFIG_NAME).is_file()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    text = open_clip.get_tokenizer(TINY_MODEL, context_length=248)(["a red star", "a circle"])
    by_name = open_clip.create_model(TINY_MODEL, pretrained=str(path), force_context_length=248)
    by_dir = open_clip.create_model(f"local-dir:{path.parent}")
    for loaded in (by_name.eval(), by_dir.eval()):
        assert loaded.context_length == 248
        torch.testing.assert_close(loaded.encode_image(x, normalize=True), model.encode_image(x))
        torch.testing.assert_close(
            loaded.encode_text(text, normalize=True), model.encode_text(text)
        )


def test_a_crash_while_exporting_keeps_the_previous_export(tmp_path, monkeypatch) -> None:
    checkpoint(tmp_path / "a.pt", seed=0)
    checkpoint(tmp_path / "b.pt", seed=1)
    first = export_open_clip(tmp_path / "a.pt", tmp_path / "export")
    before = torch.load(first, weights_only=True)

    def crash(obj, fh) -> None:
        fh.write(b"half an export")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        export_open_clip(tmp_path / "b.pt", tmp_path / "export")
    monkeypatch.undo()
    after = torch.load(first, weights_only=True)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert [p.name for p in (tmp_path / "export").iterdir() if p.name.startswith(".")] == []


def test_cli_exports_any_checkpoint_beside_its_run(tmp_path, capsys, one_line_error) -> None:
    ckpt_dir = tmp_path / "run" / "checkpoints"
    checkpoint(ckpt_dir / "epoch_2.pt")
    weights = export.main(["--checkpoint", str(ckpt_dir / "epoch_2.pt")])
    assert weights == tmp_path / "run" / "export-epoch_2" / EXPORT_WEIGHTS_NAME
    assert weights.is_file() and str(weights) in capsys.readouterr().out
    assert export.default_out(ckpt_dir / "latest.pt") == tmp_path / "run" / "export"
    one_line_error(export.main, ["--checkpoint", str(tmp_path / "none.pt")], "--checkpoint")
    one_line_error(export.main, [], "--checkpoint")
