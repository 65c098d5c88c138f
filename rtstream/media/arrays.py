"""A video source made of your own numpy frames: an (async) iterator in, a stream out.

Theory of operation
-------------------
:class:`ArraySource` wraps an async iterator (or a plain iterator) of numpy pictures in
the :class:`~rtstream.media.sources.VideoSource` machinery, so a :class:`~rtstream.sender.Sender`
sends them like any other source: the source's worker thread pulls the next picture
(from an async iterator through ``asyncio.run_coroutine_threadsafe`` on the loop that
runs the sender, so your generator runs on that loop; a plain iterator runs in the worker
thread), checks its shape and hands it on; the sender converts it to the wire format in
that thread and stamps it with the media clock. The queue between them holds a few
frames, so a generator that is faster than the declared rate is held back by the sender
(back-pressure), and one that is slower makes the sender's frames late (counted in its
``late_frames``). With ``live=True`` each frame is stamped when it arrives instead, for
a generator that paces itself (a camera of your own).

Registration: :func:`register_source` gives the source a spec ``numpy:<name>``, which
``SenderConfig(source=...)`` accepts like ``testsrc`` (:func:`~rtstream.media.sources.open_video_source`
looks the name up). ``context`` holds the patient/study/device values of the stream
(:class:`~rtstream.dicom.context.StreamContext` field names: ``patient_id``,
``patient_name``, ``study_description``, ``modality``, ...), merged under the
sender's own ``context``.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator, Mapping
from fractions import Fraction
from typing import Any

import numpy as np

from rtstream.errors import ConfigError, LocalProtocolError
from rtstream.media.sources import VideoFrame, VideoSource
from rtstream.proto.clock import Clock
from rtstream.proto.formats import VideoFormat

__all__ = ["ArraySource", "open_registered", "register_source", "unregister_source"]

#: pix_fmt -> (shape of a frame for width w, height h, dtype)
_LAYOUTS: dict[str, tuple[Callable[[int, int], tuple[int, ...]], type]] = {
    "rgb24": (lambda w, h: (h, w, 3), np.uint8),
    "yuv420p": (lambda w, h: (h * 3 // 2, w), np.uint8),
    "nv12": (lambda w, h: (h * 3 // 2, w), np.uint8),
    "yuv422p10le": (lambda w, h: (3, h, w), np.uint16),
    "uyvy422": (lambda w, h: (h, w * 2), np.uint8),
}

_registry: dict[str, ArraySource] = {}
_registry_lock = threading.Lock()
_names = itertools.count(1)


class ArraySource(VideoSource):
    """Your own numpy frames as a video source.

    Parameters
    ----------
    frames : AsyncIterable or Iterable of numpy.ndarray
        Pictures in ``pix_fmt`` layout (``rgb24``: ``(height, width, 3)`` uint8), or
        ``"wire"`` pgroups of the sender's format (``frame_bytes`` uint8).
    width, height : int
    fps : Fraction, int, float or str
        The declared rate (``30``, ``"60000/1001"``).
    pix_fmt : str
        ``rgb24`` (default), ``yuv420p``, ``nv12``, ``yuv422p10le``, ``uyvy422`` or ``wire``.
    context : Mapping or None
        Patient/study/device values of the stream (StreamContext field names).
    live : bool
        Stamp each frame when it arrives (your iterator paces itself) instead of at the
        nominal instants of the declared rate.
    name : str or None
        The name in the ``numpy:`` spec (default: a new number).

    Raises
    ------
    ConfigError
        For a size, rate or layout that cannot be sent, naming the parameter.
    """

    def __init__(
        self,
        frames: AsyncIterable[np.ndarray] | Iterable[np.ndarray],
        *,
        width: int,
        height: int,
        fps: Fraction | int | float | str,
        pix_fmt: str = "rgb24",
        context: Mapping[str, str] | None = None,
        live: bool = False,
        name: str | None = None,
    ) -> None:
        if not (isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0):
            raise ConfigError("ArraySource width/height", (width, height), "positive integers")
        try:
            rate = Fraction(fps) if not isinstance(fps, float) else Fraction(fps).limit_denominator(1001)
        except (ValueError, ZeroDivisionError):
            raise ConfigError("ArraySource fps", fps, "a frame rate, e.g. 30 or '60000/1001'") from None
        if not 0 < rate <= 240:
            raise ConfigError("ArraySource fps", fps, "0 < fps <= 240")
        if pix_fmt not in (*_LAYOUTS, "wire"):
            raise ConfigError("ArraySource pix_fmt", pix_fmt,
                              f"one of {', '.join((*_LAYOUTS, 'wire'))}")
        if not isinstance(frames, (AsyncIterable, Iterable)):
            raise ConfigError("ArraySource frames", type(frames).__name__,
                              "an async iterator (or iterator) of numpy arrays")
        self.name = name or f"frames{next(_names)}"
        super().__init__(f"numpy:{self.name}")
        self.live = live
        self.native_size = (width, height)
        self.native_rate = rate
        self.context = dict(context or {})
        self.pix_fmt = pix_fmt
        self._frames = frames
        self._loop: asyncio.AbstractEventLoop | None = None
        self._aiter: AsyncIterator[np.ndarray] | None = None
        self._iter: Iterator[np.ndarray] | None = None

    async def frames(
        self,
        fmt: VideoFormat,
        clock: Clock,
        *,
        start_ns: int | None = None,
        convert: Callable[[np.ndarray, str], np.ndarray] | None = None,
    ) -> AsyncIterator[VideoFrame]:
        """As :meth:`VideoSource.frames`; an async iterator of yours runs on this loop."""
        self._loop = asyncio.get_running_loop()
        async for frame in super().frames(fmt, clock, start_ns=start_ns, convert=convert):
            yield frame

    def _next(self) -> np.ndarray | None:
        """The next picture (worker thread), None at the end."""
        src = self._frames
        if isinstance(src, AsyncIterable):
            loop = self._loop
            if loop is None:
                raise LocalProtocolError("ArraySource: frames() was not started on a loop")
            if self._aiter is None:
                self._aiter = aiter(src)
            fut = asyncio.run_coroutine_threadsafe(_anext_or_none(self._aiter), loop)
            while True:
                try:
                    return fut.result(timeout=0.2)
                except TimeoutError:
                    if self._stop.is_set():
                        fut.cancel()
                        return None
        if self._iter is None:
            self._iter = iter(src)
        return next(self._iter, None)

    def _items(self, fmt: VideoFormat, t0: int, period: Fraction) -> Iterator[tuple[np.ndarray, str]]:
        index = 0
        while not self._stop.is_set():
            image = self._next()
            if image is None:
                return
            yield _checked(image, self.pix_fmt, fmt, index), self.pix_fmt
            index += 1


async def _anext_or_none(it: AsyncIterator[np.ndarray]) -> np.ndarray | None:
    try:
        return await anext(it)
    except StopAsyncIteration:
        return None


def _checked(image: Any, pix_fmt: str, fmt: VideoFormat, index: int) -> np.ndarray:
    """The picture, if it has the layout's shape and dtype for ``fmt``; else a clear error."""
    if not isinstance(image, np.ndarray):
        raise ConfigError(f"ArraySource frame {index}", type(image).__name__, "a numpy array")
    if pix_fmt == "wire":
        shape: tuple[int, ...] = (fmt.frame_bytes,)
        dtype: type = np.uint8
        image = image.reshape(-1) if image.size == fmt.frame_bytes else image
    else:
        make, dtype = _LAYOUTS[pix_fmt]
        shape = make(fmt.width, fmt.height)
    if image.shape != shape or image.dtype != dtype:
        raise ConfigError(f"ArraySource frame {index}", f"{image.shape} {image.dtype}",
                          f"{pix_fmt} frames of {shape} {np.dtype(dtype)} for "
                          f"{fmt.width}x{fmt.height}")
    return np.ascontiguousarray(image)


def register_source(source: ArraySource) -> str:
    """Make ``source`` openable by its spec; returns ``numpy:<name>`` for ``SenderConfig.source``."""
    with _registry_lock:
        if source.name in _registry and _registry[source.name] is not source:
            raise ConfigError("ArraySource name", source.name, "a name not registered yet")
        _registry[source.name] = source
    return source.spec


def unregister_source(source: ArraySource) -> None:
    """Forget ``source``'s spec (a sender opened from it keeps it)."""
    with _registry_lock:
        if _registry.get(source.name) is source:
            del _registry[source.name]


def open_registered(spec: str, name: str) -> ArraySource:
    """The source registered as ``numpy:<name>``.

    Raises
    ------
    ConfigError
        Naming ``--source`` when no source has that name (a ``numpy:`` source exists only
        inside the program that made it).
    """
    with _registry_lock:
        src = _registry.get(name)
    if src is None:
        raise ConfigError("--source", spec, "a numpy: source registered in this program "
                          "(rtstream.media.arrays.register_source)")
    return src
