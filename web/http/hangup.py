"""Ending a connection whose request body the service refused unread, so that no thread waits for that body."""

from __future__ import annotations

import socket

from flask import Response, request

from web.services import services


def close_unread(response: Response) -> Response:
    """Once `response` is sent, the connection's reading side is shut: gunicorn would otherwise drain the
    unread body before serving the connection again, and a client trickling it holds the thread. (The
    development server closes every connection after its response anyway. Behind a proxy the body comes
    whole and at once, and the proxy may reuse the connection for its next request: it is left alone.)"""
    sock = request.environ.get("gunicorn.socket")
    if isinstance(sock, socket.socket) and not services().config.behind_proxy:
        def shut() -> None:
            try:
                sock.shutdown(socket.SHUT_RD)
            except OSError:
                pass

        response.call_on_close(shut)
    return response
