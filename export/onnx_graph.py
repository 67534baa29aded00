"""PyTorch encoder + pooling + L2-normalize -> one ONNX graph returning ``[batch, dim]``.

Pooling inside the graph means Triton ships 4 KB per text instead of 512 x 1024 floats, and
no client can pool differently from the reference.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from bge_export.source import Pooling
from bge_model_repository.contract import ATTENTION_MASK, EMBEDDING, INPUT_IDS, TOKEN_TYPE_IDS


class PooledEncoder(nn.Module):
    """HF encoder -> CLS or masked-mean pooling -> unit vectors."""

    def __init__(self, encoder: nn.Module, pooling: Pooling) -> None:
        super().__init__()
        self.encoder = encoder
        self.pooling = pooling

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        kwargs = {INPUT_IDS: input_ids, ATTENTION_MASK: attention_mask}
        if token_type_ids is not None:
            kwargs[TOKEN_TYPE_IDS] = token_type_ids
        hidden = self.encoder(**kwargs).last_hidden_state
        if self.pooling is Pooling.CLS:
            pooled = hidden[:, 0]
        else:
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return nn.functional.normalize(pooled, p=2.0, dim=1)


class ClsOnlyLastLayer(nn.Module):
    """The last BERT layer computed for the [CLS] row only: all that CLS pooling reads.

    Keys and values still cover every token; the query, the attention output, both LayerNorms and the
    feed-forward run on one row instead of L. At bge-large's 24 layers that is 1/24 x 10/12 of the
    encoder's matrix work (about 3.5%), for every engine the graph goes to (onnxruntime, TensorRT, int8).
    """

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer
        attention = layer.attention.self
        self.heads = int(attention.num_attention_heads)
        self.head_size = int(attention.attention_head_size)

    def forward(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, *args: object, **kwargs: object
    ) -> torch.Tensor:
        attention = self.layer.attention
        batch, length = hidden_states.shape[0], hidden_states.shape[1]
        cls = hidden_states[:, :1]
        query = attention.self.query(cls).view(batch, 1, self.heads, self.head_size).transpose(1, 2)
        key = attention.self.key(hidden_states).view(batch, length, self.heads, self.head_size).transpose(1, 2)
        value = attention.self.value(hidden_states).view(batch, length, self.heads, self.head_size).transpose(1, 2)
        scores = torch.matmul(query, key.transpose(-1, -2)) * (self.head_size**-0.5)  # [batch, heads, 1, L]
        if attention_mask is not None:
            mask = attention_mask[..., :1, :]  # the [CLS] query's row of the [batch, 1, L or 1, L] mask
            if mask.dtype == torch.bool:
                scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
            else:
                scores = scores + mask
        context = torch.matmul(torch.softmax(scores, dim=-1), value)
        context = context.transpose(1, 2).reshape(batch, 1, self.heads * self.head_size)
        attended = attention.output(context, cls)  # dense, residual, LayerNorm
        return self.layer.output(self.layer.intermediate(attended), attended)  # FFN, residual, LayerNorm


def supports_cls_only_last_layer(encoder: nn.Module) -> bool:
    """A BERT-family encoder (BERT, RoBERTa, XLM-R) without cross-attention: the layer layout assumed above."""
    layers = getattr(getattr(encoder, "encoder", None), "layer", None)
    if not isinstance(layers, nn.ModuleList) or len(layers) == 0:
        return False
    last = layers[-1]
    config = getattr(encoder, "config", None)
    return (
        not getattr(config, "is_decoder", False)
        and not getattr(config, "add_cross_attention", False)
        and all(hasattr(last, name) for name in ("attention", "intermediate", "output"))
        and all(hasattr(last.attention.self, name) for name in ("query", "key", "value", "num_attention_heads"))
        and hasattr(last.attention, "output")
    )


def with_cls_only_last_layer(encoder: nn.Module) -> nn.Module:
    """`encoder` with its last layer swapped for `ClsOnlyLastLayer`: only for CLS pooling, whose output is row 0.

    ``last_hidden_state`` becomes ``[batch, 1, hidden]``; callers must read row 0 and nothing else.
    """
    if not supports_cls_only_last_layer(encoder):
        raise ValueError(f"{type(encoder).__name__} does not have the BERT layer layout ClsOnlyLastLayer needs")
    layers = encoder.encoder.layer
    if not isinstance(layers[-1], ClsOnlyLastLayer):
        layers[-1] = ClsOnlyLastLayer(layers[-1])
    return encoder


def load_encoder(directory: Path) -> nn.Module:
    """Eager attention on purpose: onnxruntime's optimizer fuses its pattern, not SDPA's."""
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(directory), attn_implementation="eager")
    return model.eval()


def export_onnx(model: PooledEncoder, input_names: list[str], path: Path, opset: int) -> None:
    """TorchScript exporter with dynamic batch and sequence axes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sample = torch.ones(2, 16, dtype=torch.long)
    args = tuple(sample if name != TOKEN_TYPE_IDS else torch.zeros_like(sample) for name in input_names)
    axes = {name: {0: "batch", 1: "sequence"} for name in input_names}
    axes[EMBEDDING] = {0: "batch"}
    with torch.inference_mode():
        torch.onnx.export(
            model,
            args,
            str(path),
            input_names=input_names,
            output_names=[EMBEDDING],
            dynamic_axes=axes,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
