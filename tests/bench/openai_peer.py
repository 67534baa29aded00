"""A stand-in OpenAI-compatible embeddings server for bge-bench's peer tests (the peer is not what is tested).

`python openai_peer.py --port N [--base /v1] [--ballast-mib M] [--child-ballast-mib K]` answers
`GET {base}/models` and `POST {base}/embeddings` (float or base64 vectors of dimension 8, one per input,
`usage.prompt_tokens` = characters) and holds M MiB itself and K MiB in a child process, so the served
memory bge-bench reports can be checked against what is known to be resident.
"""

from __future__ import annotations

import argparse
import base64
import multiprocessing
import time

import numpy as np
from aiohttp import web

DIM = 8
BALLAST_MIB, CHILD_BALLAST_MIB = 96, 48  # what the tests' peer holds, in itself and in its child


def hold(mib: int) -> bytearray:
    ballast = bytearray(mib * 1024 * 1024)
    for i in range(0, len(ballast), 4096):  # touch every page so it is resident, not just reserved
        ballast[i] = 1
    return ballast


def child(mib: int) -> None:
    _ballast = hold(mib)
    while True:
        time.sleep(3600)


def app(base: str) -> web.Application:
    async def models(_: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "peer-model", "object": "model"}]})

    async def embeddings(request: web.Request) -> web.Response:
        body = await request.json()
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = []
        for i in range(len(texts)):
            vector = np.full(DIM, 1 / np.sqrt(DIM), dtype=np.float32)
            embedding: object = vector.tolist()
            if body.get("encoding_format") == "base64":
                embedding = base64.b64encode(vector.tobytes()).decode()
            data.append({"object": "embedding", "index": i, "embedding": embedding})
        tokens = sum(len(t) for t in texts)
        return web.json_response(
            {"object": "list", "data": data, "model": body["model"], "usage": {"prompt_tokens": tokens}}
        )

    application = web.Application()
    application.router.add_get(f"{base}/models", models)
    application.router.add_post(f"{base}/embeddings", embeddings)
    return application


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--base", default="/v1")
    parser.add_argument("--ballast-mib", type=int, default=0)
    parser.add_argument("--child-ballast-mib", type=int, default=0)
    args = parser.parse_args()
    if args.child_ballast_mib:
        multiprocessing.Process(target=child, args=(args.child_ballast_mib,), daemon=True).start()
    _ballast = hold(args.ballast_mib)
    web.run_app(app(args.base.rstrip("/")), host="127.0.0.1", port=args.port, print=None)


if __name__ == "__main__":
    main()
