"""The [CLS]-only last layer: the same vectors as the full model, on padded batches, in both attention modes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from transformers import AutoModel

from bge_export.onnx_graph import (
    ClsOnlyLastLayer,
    PooledEncoder,
    supports_cls_only_last_layer,
    with_cls_only_last_layer,
)
from bge_export.source import Pooling


def _batch(length: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(length)
    ids = torch.randint(1000, 20000, (4, length), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, max(1, length // 3) :] = 0  # right-padded rows of different lengths
    mask[3, max(1, length - 2) :] = 0
    return ids, mask, torch.zeros_like(ids)


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
@pytest.mark.parametrize("length", [1, 7, 40])
def test_cls_only_last_layer_gives_the_full_models_vectors(tiny_bge_dir: Path, attention: str, length: int) -> None:
    full = PooledEncoder(AutoModel.from_pretrained(str(tiny_bge_dir), attn_implementation=attention), Pooling.CLS)
    trimmed_encoder = with_cls_only_last_layer(
        AutoModel.from_pretrained(str(tiny_bge_dir), attn_implementation=attention)
    )
    trimmed = PooledEncoder(trimmed_encoder, Pooling.CLS)
    assert isinstance(trimmed_encoder.encoder.layer[-1], ClsOnlyLastLayer)
    inputs = _batch(length)
    with torch.inference_mode():
        expected = full.eval()(*inputs)
        got = trimmed.eval()(*inputs)
        rows = trimmed_encoder(input_ids=inputs[0], attention_mask=inputs[1]).last_hidden_state.shape[1]
    assert rows == 1, "the last layer returns the [CLS] row alone"
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_only_bert_layouts_are_trimmed() -> None:
    assert not supports_cls_only_last_layer(nn.Linear(4, 4))
    with pytest.raises(ValueError, match="BERT layer layout"):
        with_cls_only_last_layer(nn.Linear(4, 4))
