"""The reference assistant answers a kept-alive connection without the Nagle stall: the
connections it accepts have TCP_NODELAY (the bench: bench/request_stall.py)."""

from __future__ import annotations

import socket

from pipeline.assistant.server import listening_socket


def test_accepted_connections_have_nagle_off():
    server = listening_socket()
    try:
        # asyncio sets TCP_NODELAY itself only when proto is IPPROTO_TCP
        assert server.proto == socket.IPPROTO_TCP
        assert server.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        with socket.create_connection(server.getsockname(), timeout=5):
            conn, _ = server.accept()
            with conn:
                # what uvicorn's transports write on: the response head and body go out
                # at once instead of the body waiting for the client's delayed ACK
                assert conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    finally:
        server.close()
