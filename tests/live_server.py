"""Run an ASGI app with uvicorn on a free loopback port in a background thread, for tests that need a real
socket (a browser, raw requests that a client library would normalise)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def live_server(app: Any, timeout: float = 20.0) -> Iterator[str]:
    """Serve `app` on 127.0.0.1:<free port> while the context is open; yields the base URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout)
        sock.close()


def raw_request(url: str, request: bytes, timeout: float = 10.0, wait_for_close: bool = True) -> bytes:
    """Send bytes as they are (no client-side path normalisation) and return the response: all of it until
    the server closes, or (`wait_for_close` False) what the first read brings."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as conn:
        conn.sendall(request)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
            if not wait_for_close:
                break
    return b"".join(chunks)
