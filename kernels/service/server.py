"""``serve``: the training service on uvicorn, bound to a loopback address.

The socket is bound here (port 0: an ephemeral port the kernel picks) so the bound URL
is known, and announced, before the first request. SIGTERM or SIGINT: uvicorn stops
accepting connections and gives open ones (SSE streams) ``graceful_s`` to finish, then
the app's shutdown asks every running training process to stop at its next step
boundary with a complete checkpoint and waits up to ``shutdown_timeout_s`` for them;
the process exits 0. A service started again on the same evidence folder lists the
runs of the previous one.
"""

from __future__ import annotations

import ipaddress
import signal
import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from kernels.errors import KernelsError


class NotLoopback(KernelsError, ValueError):
    """The service binds to loopback addresses only."""


def loopback_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host`` (a loopback address or ``localhost``)."""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise NotLoopback(f"--host {host!r}: the service binds to loopback only (127.0.0.1, ::1)")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets whose proto says TCP,
    # and without it every keep-alive request waits out a delayed ACK (40 ms)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.set_inheritable(False)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def serve(
    evidence_root: str | Path,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    announce: Callable[[str], None] = print,
    mocks: Sequence[str] = (),
    graceful_s: float = 5.0,
    shutdown_timeout_s: float = 60.0,
    **app_options: Any,
) -> int:
    """Serve until SIGTERM or SIGINT; return 0 after a clean shutdown."""
    import uvicorn

    from kernels.service.app import create_app

    app = create_app(evidence_root, mocks=mocks, shutdown_timeout_s=shutdown_timeout_s,
                     **app_options)  # fmt: skip
    sock = loopback_socket(host, port)
    config = uvicorn.Config(app, log_level="warning", lifespan="on",
                            timeout_graceful_shutdown=max(1, round(graceful_s)))  # fmt: skip
    server = uvicorn.Server(config)
    # uvicorn re-raises the signal it caught once it has shut down, into the handler that
    # was there before it: make that one a no-op, so a clean SIGTERM shutdown exits 0
    previous = {sig: signal.signal(sig, lambda signum, frame: None)
                for sig in (signal.SIGTERM, signal.SIGINT)}  # fmt: skip
    try:
        announce(url_of(sock))
        server.run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sock.close()
    return 0 if server.started else 1
