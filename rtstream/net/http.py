"""Starting an aiohttp application on a TCP address, learning the port it got.

One helper for every HTTP server of rtstream (SDP, metrics and health, the viewer), so
that each uses aiohttp's public API (:attr:`aiohttp.web.BaseRunner.addresses`) rather
than the private ``TCPSite._server`` to learn the port the kernel chose for port 0.
"""

from __future__ import annotations

import errno

from aiohttp import web

from rtstream.errors import ConfigError


def address_in_use(key: str, shown: str, kind: str = "TCP", *, fix: str | None = None) -> ConfigError:
    """The one-line error for a listening address another program holds.

    Parameters
    ----------
    key : str
        The flag (``--http``) or TOML key (``http``) that chose the address.
    shown : str
        The address as ``HOST:PORT``.
    kind : str
        ``TCP`` or ``UDP``.
    fix : str or None
        What to do; by default: stop the other program or choose another port with ``key``.
    """
    flag = key if key.startswith("-") else f"--{key.replace('_', '-')} (TOML {key})"
    if fix is None:
        fix = f"stop the program using it, or choose another port with {flag} (0 picks a free one)"
    return ConfigError(key, shown, f"{kind} port already in use by another program: {fix}")


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
        if exc.errno == errno.EADDRINUSE:
            raise address_in_use(key, shown, "TCP") from None
        raise ConfigError(key, shown, f"a free local address to listen on ({exc})") from None
    bound = port
    for address in runner.addresses:  # (host, port) or (host, port, flow, scope) per socket
        if isinstance(address, tuple) and len(address) >= 2:
            bound = int(address[1])
            break
    return runner, bound
