"""A TCP proxy a test can cut: a dependency outage for one service, without stopping the shared server."""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit, urlunsplit

from services.dev.embedded import free_port


class TcpProxy:
    """Forwards 127.0.0.1:port to (host, target_port) until `cut()`; `restore()` listens again."""

    @classmethod
    def before(cls, url: str) -> tuple[TcpProxy, str]:
        """A proxy in front of the server of a URL (a database's), and the URL through it, credentials kept."""
        address = urlsplit(url)
        assert address.hostname is not None and address.port is not None
        proxy = cls(address.hostname, address.port)
        credentials = address.netloc.rpartition("@")[0]
        netloc = f"{credentials}@127.0.0.1:{proxy.port}" if credentials else f"127.0.0.1:{proxy.port}"
        return proxy, urlunsplit(address._replace(netloc=netloc))

    def __init__(self, host: str, target_port: int) -> None:
        self.host = host
        self.target_port = target_port
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.Task[None]] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()

    def freeze(self) -> None:
        """Keep every connection open and accept new ones, but pass no byte: a hung server."""
        self._flowing.clear()

    def thaw(self) -> None:
        self._flowing.set()

    async def restore(self) -> None:
        self._server = await asyncio.start_server(self._link, "127.0.0.1", self.port)

    async def cut(self) -> None:
        """Refuse new connections and drop the open ones, as a stopped server would."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for link in list(self._links):
            link.cancel()
        for link in list(self._links):
            with contextlib.suppress(asyncio.CancelledError):
                await link

    async def _link(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._links.add(task)
        try:
            server_reader, server_writer = await asyncio.open_connection(self.host, self.target_port)
        except OSError:
            client_writer.close()
            self._links.discard(task)
            return
        try:
            await asyncio.gather(
                _pipe(client_reader, server_writer, self._flowing), _pipe(server_reader, client_writer, self._flowing)
            )
        finally:
            for writer in (client_writer, server_writer):
                writer.close()
            self._links.discard(task)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, flowing: asyncio.Event) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(65536):
            await flowing.wait()
            writer.write(data)
            await writer.drain()
    with contextlib.suppress(OSError):
        writer.write_eof()
