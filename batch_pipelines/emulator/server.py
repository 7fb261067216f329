"""Serving the app with uvicorn: in the foreground (CLI) or on a background thread (tests)."""

from __future__ import annotations

import logging
import socket
import threading

import uvicorn

from batch_pipelines.emulator.app import Emulator, create_app
from batch_pipelines.emulator.downloads import QuietDrops


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def make_server(emulator: Emulator, *, log_level: str = "warning", access_log: bool = False) -> uvicorn.Server:
    logging.getLogger("uvicorn.error").addFilter(QuietDrops())
    config = uvicorn.Config(
        create_app(emulator),
        log_level=log_level,
        access_log=access_log,
        lifespan="off",
        timeout_graceful_shutdown=5,
        timeout_keep_alive=30,
    )
    return uvicorn.Server(config)


class BackgroundServer:
    """uvicorn on a daemon thread, serving an already-bound socket."""

    def __init__(self, server: uvicorn.Server, sock: socket.socket) -> None:
        self.server = server
        self.sock = sock
        self.thread = threading.Thread(target=self._run, name="batch-pipelines-emulator", daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            self.server.run(sockets=[self.sock])
        except BaseException as exc:  # surfaced by start()/stop() in the calling thread
            self.error = exc

    def start(self) -> None:
        self.thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)
        self.sock.close()
