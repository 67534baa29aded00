"""Triton Python backend: ``text`` -> ``input_ids``, ``attention_mask``, ``token_type_ids``, ``num_tokens``.

Thin on purpose; the logic lives in ``bge_model_repository.tokenization``.
"""

from __future__ import annotations

import json

import numpy as np
import triton_python_backend_utils as pb_utils

from bge_model_repository.contract import (
    ATTENTION_MASK,
    INPUT_IDS,
    NUM_TOKENS,
    TEXT,
    TOKEN_TYPE_IDS,
    TRUNCATE_PARAMETER,
)
from bge_model_repository.model_args import ModelArgs
from bge_model_repository.parameters import TokenizerParameters
from bge_model_repository.tokenization import (
    InputError,
    common_width,
    decode_texts,
    encode,
    load_tokenizer,
    pad,
    parse_truncate,
)


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        model = ModelArgs(args)
        params = model.parameters(TokenizerParameters)
        self.tokenizer = load_tokenizer(model.path(params.tokenizer_dir))
        self.max_length = params.max_length
        self.pad_to_multiple_of = params.pad_to_multiple_of

    def execute(self, requests: list) -> list:
        # Each request is tokenized on its own so a bad one fails alone; all good ones are
        # padded to one common width, so the encoder's batcher can merge them.
        encoded: list = []
        for request in requests:
            try:
                texts = decode_texts(pb_utils.get_input_tensor_by_name(request, TEXT).as_numpy())
                truncate = parse_truncate(json.loads(request.parameters() or "{}").get(TRUNCATE_PARAMETER))
                encoded.append(encode(self.tokenizer, texts, self.max_length, truncate))
            except InputError as exc:
                encoded.append(exc)
        lengths = [len(e.ids) for enc in encoded if not isinstance(enc, InputError) for e in enc]
        width = common_width(lengths, self.pad_to_multiple_of, self.max_length)
        responses = []
        for enc in encoded:
            if isinstance(enc, InputError):
                error = pb_utils.TritonError(str(enc), pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=error))
                continue
            batch = pad(enc, width)
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor(INPUT_IDS, batch.input_ids),
                        pb_utils.Tensor(ATTENTION_MASK, batch.attention_mask),
                        pb_utils.Tensor(TOKEN_TYPE_IDS, batch.token_type_ids),
                        pb_utils.Tensor(NUM_TOKENS, batch.num_tokens.astype(np.int32)),
                    ]
                )
            )
        return responses
