"""Serving the front door with uvicorn: in the foreground (``batch-pipelines serve``) or on a thread (tests)."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

import uvicorn

from batch_pipelines.emulator.server import BackgroundServer, bind
from batch_pipelines.frontdoor.app import FrontDoorSettings, create_app
from batch_pipelines.services.router import Router

SERVE_KEYS_ENV = "BATCH_PIPELINES_SERVE_KEYS"
_READY_TIMEOUT_SECONDS = 15.0


class InsecureBindError(ValueError):
    """Serving beyond loopback without caller keys would let anyone spend the vendor keys."""


def keys_from_env(environ: dict[str, str] | None = None) -> frozenset[str] | None:
    """The callers' keys from $BATCH_PIPELINES_SERVE_KEYS (comma-separated), or None when unset or empty."""
    raw = (os.environ if environ is None else environ).get(SERVE_KEYS_ENV, "")
    keys = frozenset(k.strip() for k in raw.split(",") if k.strip())
    return keys or None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, keys: frozenset[str] | None) -> str | None:
    """Refuse a non-loopback address without keys; on loopback without keys, the notice to print."""
    if keys is not None:
        return None
    if not is_loopback(host):
        raise InsecureBindError(
            f"refusing to serve on {host} without caller keys: set {SERVE_KEYS_ENV} (comma-separated keys), "
            "or serve on 127.0.0.1"
        )
    return f"{SERVE_KEYS_ENV} is not set: serving on loopback only, accepting any non-empty key"


def make_server(router: Router, settings: FrontDoorSettings, *, log_level: str = "warning") -> uvicorn.Server:
    config = uvicorn.Config(
        create_app(router, settings),
        log_level=log_level,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=5,
        timeout_keep_alive=30,
    )
    return uvicorn.Server(config)


@dataclass(frozen=True)
class RunningFrontDoor:
    base_url: str

    @property
    def openai_base_url(self) -> str:
        return self.base_url + "/v1"


@contextlib.contextmanager
def run_front_door(router: Router, settings: FrontDoorSettings, *, port: int = 0) -> Iterator[RunningFrontDoor]:
    """The front door on 127.0.0.1 on a background thread, until the block ends."""
    sock = bind("127.0.0.1", port)
    background = BackgroundServer(make_server(router, settings), sock)
    background.start()
    base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        _wait_until_serving(background)
        yield RunningFrontDoor(base_url)
    finally:
        background.stop()


def _wait_until_serving(background: BackgroundServer) -> None:
    # A bounded readiness poll on the server thread, not a test waiting on a clock.
    deadline = time.monotonic() + _READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if background.error is not None:
            raise RuntimeError(f"the front door failed to start: {background.error!r}")
        if background.server.started:
            return
        time.sleep(0.01)
    raise RuntimeError("the front door did not start in time")
