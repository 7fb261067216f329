"""Run the emulator inside a test or a script: ``with run_emulator(...) as emu: ...``.

The server runs on a background thread on 127.0.0.1 with a free port. The clock stands still
unless advanced (``time_scale=0``), so tests move time with ``emu.advance(seconds)`` instead of
sleeping.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from batch_pipelines.emulator.app import Emulator
from batch_pipelines.emulator.server import BackgroundServer, bind, make_server

DEFAULT_TEST_KEY = "emulator-test-key"
_READY_TIMEOUT_SECONDS = 15.0
_READY_POLL_SECONDS = 0.01


@dataclass
class RunningEmulator:
    base_url: str
    api_key: str
    state_dir: Path
    _client: httpx.Client = field(repr=False)
    app: Emulator | None = field(default=None, repr=False)  # the served emulator itself, for tests of its internals

    @property
    def openai_base_url(self) -> str:
        return self.base_url + "/v1"

    def advance(self, seconds: float) -> None:
        self._control("POST", "/_emulator/clock/advance", json={"seconds": seconds})

    def now(self) -> float:
        return float(self._control("GET", "/_emulator/clock")["now"])

    def set_profile(self, profile: Mapping[str, Any]) -> None:
        self._control("PUT", "/_emulator/profile", json=dict(profile))

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = self._control("GET", "/_emulator/stats")
        return stats

    def _control(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._client.request(method, self.base_url + path, **kwargs)
        if response.status_code != 200:
            raise RuntimeError(f"emulator {method} {path} answered {response.status_code}: {response.text[:500]}")
        return response.json()


@contextlib.contextmanager
def run_emulator(
    profile: Mapping[str, Any] | str | Path | None = None,
    *,
    state_dir: Path | None = None,
    time_scale: float = 0.0,
    api_key: str | None = None,
    port: int = 0,
) -> Iterator[RunningEmulator]:
    """Start an emulator, wait until it answers its health check, yield it, stop it.

    Without ``state_dir`` the state lives in a temporary directory removed afterwards. Without
    ``api_key`` any non-empty key is accepted and ``.api_key`` is a placeholder to send.
    """
    with contextlib.ExitStack() as stack:
        if state_dir is None:
            state_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bp-emulator-")))
        emulator = Emulator(Path(state_dir), profile=profile, time_scale=time_scale, api_key=api_key)
        sock = bind("127.0.0.1", port)
        actual_port = sock.getsockname()[1]
        background = BackgroundServer(make_server(emulator), sock)
        background.start()
        stack.callback(background.stop)
        client = stack.enter_context(httpx.Client(timeout=30.0))
        base_url = f"http://127.0.0.1:{actual_port}"
        _wait_until_ready(client, base_url, background)
        yield RunningEmulator(
            base_url=base_url,
            api_key=api_key or DEFAULT_TEST_KEY,
            state_dir=Path(state_dir),
            _client=client,
            app=emulator,
        )


def _wait_until_ready(client: httpx.Client, base_url: str, background: BackgroundServer) -> None:
    # A bounded readiness poll on the server thread, not a test waiting on a clock.
    deadline = time.monotonic() + _READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if background.error is not None:
            raise RuntimeError(f"the emulator failed to start: {background.error!r}")
        if background.server.started:
            try:
                if client.get(base_url + "/_emulator/health", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
        time.sleep(_READY_POLL_SECONDS)
    raise RuntimeError(f"the emulator at {base_url} did not become healthy within {_READY_TIMEOUT_SECONDS} s")
