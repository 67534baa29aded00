"""A gateway started before Triton (the usual compose/Kubernetes race) serves as soon as Triton is up."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from gateway_process import SERVED_NAME, free_port, start_gateway, stop_gateway
from support import TritonHandle as TritonLike


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


@contextmanager
def tcp_forwarder(port: int, target: str) -> Iterator[None]:
    """Start listening on `port` only now, forwarding bytes to `target` (host:port): "Triton comes up"."""
    host, target_port = target.rsplit(":", 1)
    loop = asyncio.new_event_loop()
    connections: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(host, int(target_port))
        await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))

    def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = loop.create_task(handle(reader, writer))
        connections.add(task)
        task.add_done_callback(connections.discard)

    async def shutdown(server: asyncio.Server) -> None:
        server.close()
        for task in list(connections):
            task.cancel()
        await asyncio.gather(*connections, return_exceptions=True)

    server = loop.run_until_complete(asyncio.start_server(on_connect, "127.0.0.1", port))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        asyncio.run_coroutine_threadsafe(shutdown(server), loop).result(timeout=5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        loop.close()


def test_gateway_started_before_triton_becomes_ready_soon_after(triton: TritonLike, tmp_path: Path) -> None:
    port = free_port()  # nothing listens here yet: "Triton is still starting"
    gateway = start_gateway(
        tmp_path,
        {"TRITON_URL": f"127.0.0.1:{port}", "MODEL_NAME": triton.model_name, "SERVED_MODEL_NAME": SERVED_NAME},
        healthy=False,
    )
    try:
        assert httpx.get(f"{gateway.url}/health").status_code == 503
        time.sleep(2)  # let gRPC's reconnect backoff grow
        with tcp_forwarder(port, triton.grpc_url):
            start = time.monotonic()
            while httpx.get(f"{gateway.url}/health").status_code != 200:
                assert time.monotonic() - start < 10, gateway.log()
                time.sleep(0.1)
            response = httpx.post(f"{gateway.url}/v1/embeddings", json={"model": SERVED_NAME, "input": "你好"})
            assert response.status_code == 200
        assert "ready: Triton model" in gateway.log()
    finally:
        stop_gateway(gateway)
