"""Starting an aiohttp application on a TCP address, learning the port it got.

One helper for every HTTP server of rtstream (SDP, metrics and health, the viewer), so
that each uses aiohttp's public API (:attr:`aiohttp.web.BaseRunner.addresses`) rather
than the private ``TCPSite._server`` to learn the port the kernel chose for port 0.
"""

from __future__ import annotations

from aiohttp import web

from rtstream.errors import ConfigError


async def start_site(
    app: web.Application, host: str, port: int, *, key: str = "http"
) -> tuple[web.AppRunner, int]:
    """Serve ``app`` on ``host:port``; return the runner and the bound port.

    Parameters
    ----------
    app : aiohttp.web.Application
        The application to serve (access log off).
    host, port : str, int
        Where to listen; port 0 picks a free one, whose number is returned.
    key : str
        The configuration key or flag named when the address cannot be used.

    Returns
    -------
    runner, port : aiohttp.web.AppRunner, int
        ``await runner.cleanup()`` stops the server.

    Raises
    ------
    ConfigError
        Naming ``key`` when the address is taken or not local.
    """
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        raise ConfigError(key, shown, f"a free local address to listen on ({exc})") from None
    bound = port
    for address in runner.addresses:  # (host, port) or (host, port, flow, scope) per socket
        if isinstance(address, tuple) and len(address) >= 2:
            bound = int(address[1])
            break
    return runner, bound
