"""The frameworks users call us from, as installed from PyPI, against the real gateway and tritonserver.

LangChain (with its defaults and with check_embedding_ctx_length=False), LlamaIndex's OpenAI-like
embeddings, litellm, and Milvus (milvus-lite, in process) for the tutorial's next step. The snippets
are README.md's "Use it from LangChain / LlamaIndex / litellm / Milvus".
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import openai
import pytest
from gateway_process import SERVED_NAME, Gateway

TEXTS = ["今天天气怎么样", "我喜欢看电影", "hello world", "这部电影非常精彩"]


@pytest.fixture(scope="module")
def base_url(gateway: Gateway) -> str:
    return f"{gateway.url}/v1"


@pytest.fixture(scope="module")
def reference(base_url: str) -> np.ndarray:
    """The openai SDK's vectors (base64, its default): what every framework must reproduce."""
    sdk = openai.Client(base_url=base_url, api_key="EMPTY", max_retries=0)
    return np.array([d.embedding for d in sdk.embeddings.create(model=SERVED_NAME, input=TEXTS).data])


class Cl100kStandIn:
    """tiktoken's cl100k_base cannot be downloaded here (and no copy ships), so LangChain's default path
    gets ids from this stand-in: the real ids for "hello world" (15339, 1917), other words hashed into
    cl100k's range. What is under test is the gateway's answer to another tokenizer's ids, not tiktoken."""

    KNOWN: ClassVar[dict[str, int]] = {"hello": 15339, " world": 1917}

    def encode(self, text: str, **_: Any) -> list[int]:
        first, *rest = text.split(" ")
        pieces = [first, *(" " + word for word in rest)]
        return [self.KNOWN.get(p) or 1000 + int(hashlib.sha256(p.encode()).hexdigest(), 16) % 99000 for p in pieces]

    encode_ordinary = encode


def test_langchain_defaults_get_a_400_naming_the_fix(base_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its defaults send tiktoken ids: the gateway refuses them instead of returning wrong vectors."""
    import tiktoken
    from langchain_openai import OpenAIEmbeddings

    monkeypatch.setattr(tiktoken, "encoding_for_model", lambda _name: Cl100kStandIn())
    embeddings = OpenAIEmbeddings(model=SERVED_NAME, base_url=base_url, api_key="EMPTY", max_retries=0)
    with pytest.raises(openai.BadRequestError) as info:
        embeddings.embed_documents(["hello world"])
    assert "check_embedding_ctx_length=False" in info.value.message


def test_langchain_with_text_matches_the_sdk_bit_for_bit(base_url: str, reference: np.ndarray) -> None:
    from langchain_openai import OpenAIEmbeddings

    embeddings = OpenAIEmbeddings(
        model=SERVED_NAME, base_url=base_url, api_key="EMPTY", check_embedding_ctx_length=False
    )
    np.testing.assert_array_equal(np.array(embeddings.embed_documents(TEXTS)), reference)
    np.testing.assert_array_equal(np.array(embeddings.embed_query(TEXTS[0])), reference[0])


def test_llama_index_openai_like(base_url: str, reference: np.ndarray) -> None:
    from llama_index.embeddings.openai_like import OpenAILikeEmbedding

    embedding = OpenAILikeEmbedding(model_name=SERVED_NAME, api_base=base_url, api_key="EMPTY")
    np.testing.assert_allclose(np.array(embedding.get_text_embedding_batch(TEXTS)), reference, atol=1e-6)
    np.testing.assert_allclose(np.array(embedding.get_query_embedding(TEXTS[1])), reference[1], atol=1e-6)


def test_litellm(base_url: str, reference: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no fetch of its price list at import
    import litellm

    response = litellm.embedding(model=f"openai/{SERVED_NAME}", api_base=base_url, api_key="EMPTY", input=TEXTS)
    vectors = np.array([item["embedding"] for item in response.data])
    np.testing.assert_allclose(vectors, reference, atol=1e-6)
    assert response.usage.prompt_tokens > 0


def test_milvus_lite_finds_each_sentence_first(base_url: str, tmp_path: Path) -> None:
    """The tutorial's next step: embed 200 sentences, insert them, each one's own vector finds it first."""
    from pymilvus import MilvusClient

    sdk = openai.Client(base_url=base_url, api_key="EMPTY", max_retries=0)
    subjects, verbs = ["我", "他", "她", "我们", "老师"], ["喜欢", "讨厌", "研究", "谈论"]
    objects = ["电影", "音乐", "足球", "历史", "天气", "城市", "小说", "数学", "咖啡", "旅行"]
    sentences = [f"{s}{v}{o}" for s in subjects for v in verbs for o in objects]
    assert len(sentences) == 200
    vectors = [d.embedding for d in sdk.embeddings.create(model=SERVED_NAME, input=sentences).data]

    milvus = MilvusClient(str(tmp_path / "milvus.db"))
    milvus.create_collection("sentences", dimension=len(vectors[0]), metric_type="COSINE")
    rows = [{"id": i, "vector": v, "text": t} for i, (v, t) in enumerate(zip(vectors, sentences, strict=True))]
    milvus.insert("sentences", rows)
    hits = milvus.search("sentences", data=vectors, limit=1, output_fields=["text"])
    assert [hit[0]["entity"]["text"] for hit in hits] == sentences
    milvus.close()
