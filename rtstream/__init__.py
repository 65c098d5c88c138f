"""rtstream: real-time DICOM PS3.22 (DICOM-RTV) streaming.

Importing the package loads nothing heavy: the wire layer (:mod:`rtstream.proto`)
must stay free of asyncio, sockets and codecs (see ``DESIGN.md`` §2). The public
Python surface (:mod:`rtstream.api`: ``Receiver``, ``Sender``, ``ArraySource``,
``Finding`` ...) is reachable as ``rtstream.<name>`` and loads on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:  # the names of rtstream.api, for type checkers and editors
    from rtstream.api import *  # noqa: F403


def __getattr__(name: str) -> Any:
    """``rtstream.Receiver`` and the other names of :mod:`rtstream.api`, loaded lazily."""
    import importlib

    api = importlib.import_module("rtstream.api")
    if name in api.__all__:
        return getattr(api, name)
    raise AttributeError(f"module 'rtstream' has no attribute {name!r}")


def __dir__() -> list[str]:
    import importlib

    api = importlib.import_module("rtstream.api")
    return sorted([*globals(), *api.__all__])
