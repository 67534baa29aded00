"""PyTorch encoder + pooling + L2-normalize -> one ONNX graph returning ``[batch, dim]``.

Pooling inside the graph means Triton ships 4 KB per text instead of 512 x 1024 floats, and
no client can pool differently from the reference.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from bge_export.source import Pooling


class PooledEncoder(nn.Module):
    """HF encoder -> CLS or masked-mean pooling -> unit vectors."""

    def __init__(self, encoder: nn.Module, pooling: Pooling) -> None:
        super().__init__()
        self.encoder = encoder
        self.pooling = pooling

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        hidden = self.encoder(**kwargs).last_hidden_state
        if self.pooling is Pooling.CLS:
            pooled = hidden[:, 0]
        else:
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return nn.functional.normalize(pooled, p=2.0, dim=1)


def load_encoder(directory: Path) -> nn.Module:
    """Eager attention on purpose: onnxruntime's optimizer fuses its pattern, not SDPA's."""
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(directory), attn_implementation="eager")
    return model.eval()


def export_onnx(model: PooledEncoder, input_names: list[str], path: Path, opset: int) -> None:
    """TorchScript exporter with dynamic batch and sequence axes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sample = torch.ones(2, 16, dtype=torch.long)
    args = tuple(sample if name != "token_type_ids" else torch.zeros_like(sample) for name in input_names)
    axes = {name: {0: "batch", 1: "sequence"} for name in input_names}
    axes["embedding"] = {0: "batch"}
    with torch.inference_mode():
        torch.onnx.export(
            model,
            args,
            str(path),
            input_names=input_names,
            output_names=["embedding"],
            dynamic_axes=axes,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
