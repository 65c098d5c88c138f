"""Media sources: timestamped video frames and audio chunks as async iterators.

Theory of operation
-------------------
A source is opened from a spec string (:func:`open_video_source`,
:func:`open_audio_source`), which validates it and probes what it can (size, rate,
patient context) without starting anything. :meth:`VideoSource.frames` then starts one
worker thread that does the blocking work (PyAV demux/decode/scale, pydicom decoding,
file reads, picture generation) and hands ``(image, pix_fmt)`` items to the event loop
through a bounded queue, so decoding runs at most a few frames ahead and the loop never
blocks.

Timing: every stamp comes from the one media clock passed in. A *paced* source (test
picture, files, DICOM cines, raw files, ``lavfi:``) stamps frame ``i`` with the nominal
instant ``t0 + i / rate`` and yields it no earlier than that instant, so RTP timestamps
advance by exactly one frame period. A *live* device (``v4l2:``, ``alsa:``, ``pulse:``)
paces itself; each frame is stamped with the clock's time when it arrives.

Interlace: a file or ``lavfi:`` input is probed at open for its field order (the first
frames are decoded, and handed out first later): ``interlaced`` and
``bottom_field_first`` say what its decoder reports, so the sender can send the field
that comes first in time first (RFC 4175 §4.3).

Spec strings (``--source``): ``testsrc``, ``file:PATH``, ``lavfi:GRAPH``,
``v4l2:/dev/videoN``, ``dicom:PATH``, ``raw:PATH``. ``pacs:AET@HOST:PORT/UID`` needs the
network and is composed above this layer (:mod:`rtstream.pacs.source`). Audio
(``--audio-source``): ``tone`` (1 kHz), ``alsa:hw:N``, ``pulse:NAME``, ``lavfi:GRAPH``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import itertools
import logging
import os
import queue
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from rtstream.errors import ConfigError, RtstreamError
from rtstream.media.testsrc import SectorGenerator, tone
from rtstream.proto.clock import NS_PER_S, Clock
from rtstream.proto.formats import AudioFormat, VideoFormat
from rtstream.proto.pixfmt import PLANAR_PIX_FMTS, native_pix_fmt

log = logging.getLogger(__name__)

SPEC_HELP = (
    "testsrc, file:PATH, lavfi:GRAPH, v4l2:/dev/videoN, dicom:PATH, raw:PATH "
    "or pacs:AET@HOST:PORT/UID"
)
AUDIO_SPEC_HELP = "tone, alsa:hw:N, pulse:NAME or lavfi:GRAPH"
_QUEUE_DEPTH = 4
_STANDARD_RATES = [
    Fraction(r)
    for r in ("24000/1001", "24", "25", "30000/1001", "30", "50", "60000/1001", "60", "15", "10")
]


@dataclass(frozen=True, slots=True)
class VideoFrame:
    """One captured picture.

    Parameters
    ----------
    image : numpy.ndarray
        The picture in ``pix_fmt`` layout; ``"wire"`` means ST 2110-20 pgroup order for
        the flow's :class:`VideoFormat` (``frame_bytes`` uint8, any shape).
    pix_fmt : str
        ``wire``, ``rgb24``, ``yuv420p``, ``nv12``, ``uyvy422`` or ``yuv422p10le``.
    capture_ns : int
        Capture instant, TAI nanoseconds from the media clock.
    index : int
        Frame number from 0.
    """

    image: np.ndarray
    pix_fmt: str
    capture_ns: int
    index: int


@dataclass(frozen=True, slots=True)
class AudioChunk:
    """Consecutive audio samples; ``capture_ns`` is the first sample's instant."""

    samples: np.ndarray  # (n, channels) int32 in the L16/L24 range
    capture_ns: int


#: Frames decoded at open, at most, to tell an interlaced input's field order.
_FIELD_PROBE_FRAMES = 8


def _first_field_lines(frame: Any, time_base: Any) -> int | None:
    """0 when the frame's first field in time holds its even lines (top field first), 1
    for the odd lines (bottom field first), None when both fields' luma are equal (the
    order cannot be seen). FFmpeg's ``separatefields`` outputs the first field first."""
    import av

    graph = av.filter.Graph()
    src = graph.add_buffer(width=frame.width, height=frame.height, format=frame.format.name,
                           time_base=time_base)
    sep = graph.add("separatefields")
    sink = graph.add("buffersink")
    src.link_to(sep)
    sep.link_to(sink)
    graph.configure()
    graph.push(frame)
    field = graph.pull()
    if not isinstance(field, av.VideoFrame):
        return None
    whole = frame.reformat(format="gray").to_ndarray()
    first = field.reformat(format="gray").to_ndarray()
    even = np.array_equal(first, whole[0::2])
    odd = np.array_equal(first, whole[1::2])
    if even == odd:
        return None
    return 0 if even else 1


def preferred_pix_fmt(fmt: VideoFormat) -> str:
    """The PyAV pixel format a decoder should deliver for ``fmt``: the one that carries
    the wire's sampling and depth without loss (:func:`native_pix_fmt`), so FFmpeg's
    scaler does the colour work and the sender only packs samples."""
    return native_pix_fmt(fmt)


def av_frame_to_array(frame: Any, pix_fmt: str) -> np.ndarray:
    """A PyAV frame already in ``pix_fmt`` as the array :func:`to_wire` expects.

    Planar formats (:data:`PLANAR_PIX_FMTS`, which PyAV 18's ``to_ndarray`` mostly
    refuses) are read plane by plane from the frame's buffers, dropping row padding.
    """
    if pix_fmt == "uyvy422":
        plane = frame.planes[0]
        raw = np.frombuffer(plane, np.uint8).reshape(frame.height, plane.line_size)
        return np.ascontiguousarray(raw[:, : frame.width * 2])
    if pix_fmt in PLANAR_PIX_FMTS:
        dt = np.dtype(np.uint8) if PLANAR_PIX_FMTS[pix_fmt][1] == 8 else np.dtype("<u2")
        parts = []
        for plane in frame.planes:
            rows = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)
            rows = rows[: plane.height, : plane.width * dt.itemsize]
            parts.append(np.ascontiguousarray(rows).view(dt).reshape(-1))
        return np.concatenate(parts).astype(np.uint16 if dt.itemsize == 2 else np.uint8)
    arr: np.ndarray = frame.to_ndarray()
    return arr


async def _sleep_until(clock: Clock, t_ns: int) -> None:
    delta = t_ns - clock.now_ns()
    if delta > 0:
        await asyncio.sleep(delta / NS_PER_S)


class VideoSource:
    """Base of all video sources; subclasses implement :meth:`_items`.

    Attributes
    ----------
    spec : str
        The spec it was opened from.
    native_size : tuple of int or None
        (width, height) of the input, when known.
    native_rate : Fraction or None
        Frame rate of the input, when known.
    context : dict
        Patient/study/device values found in the input (StreamContext field names).
    live : bool
        Stamped on arrival instead of paced.
    interlaced : bool
        The input's frames are interlaced (two woven fields), as its decoder says.
    bottom_field_first : bool
        Of an interlaced input: the bottom field (odd lines, counting from 0) is the
        one that comes first in time.
    """

    live = False

    def __init__(self, spec: str, *, loop: bool = False) -> None:
        self.spec = spec
        self.loop = loop
        self.native_size: tuple[int, int] | None = None
        self.native_rate: Fraction | None = None
        self.context: dict[str, str] = {}
        self.interlaced = False
        self.bottom_field_first = False
        self.late_starts = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._prepared_for: VideoFormat | None = None
        self._queue: queue.Queue[Any] | None = None

    def _items(self, fmt: VideoFormat, t0: int, period: Fraction) -> Iterator[tuple[np.ndarray, str]]:
        """Blocking generator of images (runs in the worker thread)."""
        raise NotImplementedError

    def _prepare(self, fmt: VideoFormat) -> None:
        """Blocking one-time set-up for ``fmt`` (e.g. rendering the test picture)."""

    async def prepare(self, fmt: VideoFormat) -> None:
        """Do the slow set-up in a worker thread, so frame 0 can be on time.

        Call before choosing ``start_ns``; :meth:`frames` calls it when nobody did.
        """
        if self._prepared_for != fmt:
            await asyncio.to_thread(self._prepare, fmt)
            self._prepared_for = fmt

    async def frames(
        self,
        fmt: VideoFormat,
        clock: Clock,
        *,
        start_ns: int | None = None,
        convert: Callable[[np.ndarray, str], np.ndarray] | None = None,
    ) -> AsyncIterator[VideoFrame]:
        """Yield frames of ``fmt`` until the input ends (or forever).

        Parameters
        ----------
        fmt : VideoFormat
            Output size and sampling (images are scaled/converted to it).
        clock : Clock
            The media clock.
        start_ns : int or None
            Capture instant of frame 0 (default: now + 50 ms).
        convert : callable or None
            ``convert(image, pix_fmt) -> wire`` run in the worker thread (conversion to
            the wire pixel format off the event loop); frames then have ``pix_fmt ==
            "wire"``.
        """
        period = fmt.frame_duration_ns
        await self.prepare(fmt)
        t0 = clock.now_ns() + 50_000_000 if start_ns is None else start_ns
        q: queue.Queue[tuple[np.ndarray, str] | BaseException | None] = queue.Queue(_QUEUE_DEPTH)
        self._queue = q
        self._stop.clear()

        def worker() -> None:
            try:
                for item in self._items(fmt, t0, period):
                    if convert is not None:
                        item = (convert(item[0], item[1]), "wire")
                    while not self._stop.is_set():
                        try:
                            q.put(item, timeout=0.1)
                            break
                        except queue.Full:
                            continue
                    if self._stop.is_set():
                        return
                q.put(None)
            except BaseException as exc:  # handed to the consumer, which raises it
                q.put(exc)

        self._thread = threading.Thread(target=worker, name=f"source {self.spec}", daemon=True)
        self._thread.start()
        index = 0
        try:
            while True:
                try:
                    got = q.get_nowait()
                except queue.Empty:
                    got = await asyncio.to_thread(q.get)
                if got is None:
                    return
                if isinstance(got, BaseException):
                    if isinstance(got, RtstreamError):
                        raise got
                    raise RtstreamError(f"source {self.spec}: {got}") from got
                image, pix_fmt = got
                if self.live:
                    capture = clock.now_ns()
                else:
                    capture = t0 + int(index * period)
                    await _sleep_until(clock, capture)
                yield VideoFrame(image, pix_fmt, capture, index)
                index += 1
        finally:
            self.close()

    def close(self) -> None:
        """Stop the worker thread (idempotent)."""
        self._stop.set()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout=2)
        self._thread = None
        q = self._queue
        if q is not None:
            # Wake a consumer blocked in q.get (e.g. cancelled mid-wait), so the
            # executor thread it runs in can finish and the loop can shut down.
            try:
                q.put_nowait(None)
            except queue.Full:
                pass


class TestSource(VideoSource):
    """The generated ultrasound-like picture (:mod:`rtstream.media.testsrc`)."""

    __test__ = False  # not a pytest class

    def __init__(self, spec: str = "testsrc", *, loop: bool = False) -> None:
        super().__init__(spec, loop=loop)
        self.native_size = None
        self.native_rate = None
        # The picture draws a clock and labels: burned-in annotation (PS3.3 C.7.6.1.1.11).
        self.context = {"manufacturer": "rtstream", "station_name": "testsrc", "burned_in_annotation": "YES"}
        self._gen: SectorGenerator | None = None

    def _prepare(self, fmt: VideoFormat) -> None:
        if self._gen is None or self._gen.fmt != fmt:
            self._gen = SectorGenerator(fmt)

    def _items(self, fmt: VideoFormat, t0: int, period: Fraction) -> Iterator[tuple[np.ndarray, str]]:
        self._prepare(fmt)
        gen = self._gen
        assert gen is not None
        i = 0
        while True:
            img = gen.frame(i, t0 + int(i * period))
            if gen.pix_fmt == "wire":
                img = img.reshape(-1)
            yield img, gen.pix_fmt
            i += 1


class AvVideoSource(VideoSource):
    """Anything PyAV opens: files, ``lavfi`` graphs, V4L2 devices.

    Parameters
    ----------
    url : str
        File path, device path or filter graph.
    container_format : str or None
        PyAV input format (``lavfi``, ``v4l2``) or None to guess from the file.
    live : bool
        A capture device: stamp frames on arrival.
    """

    def __init__(
        self,
        spec: str,
        url: str,
        *,
        container_format: str | None = None,
        live: bool = False,
        loop: bool = False,
        options: dict[str, str] | None = None,
    ) -> None:
        super().__init__(spec, loop=loop)
        import av

        self.live = live
        self._url = url
        self._format = container_format
        self._options = options or {}
        try:
            self._container: Any = av.open(url, format=container_format, options=self._options)
        except ValueError as exc:  # e.g. "no container format 'v4l2'"
            raise ConfigError("--source", spec, f"an input this PyAV build can open ({exc})") from None
        except OSError as exc:
            what = "device" if live else "input"
            reason = {2: "is absent", 16: "is busy (used by another program)", 13: "is not accessible (permission denied)"}
            raise ConfigError(
                "--source", spec, f"an existing, free {what}: {url} {reason.get(exc.errno or 0, str(exc))}"
            ) from None
        if not self._container.streams.video:
            self._container.close()
            raise ConfigError("--source", spec, "an input with a video stream")
        vs = self._container.streams.video[0]
        self.native_size = (vs.codec_context.width, vs.codec_context.height)
        rate = vs.average_rate or vs.guessed_rate or vs.base_rate
        self.native_rate = Fraction(rate) if rate else None
        self.context.update(_lossy_context_of_stream(vs, self.native_rate))
        #: frames decoded at open to learn the field order, handed out first
        self._probed: list[Any] = []
        if not live:
            self._probe_fields(vs)

    def _probe_fields(self, stream: Any) -> None:
        """Learn from the first frames whether the input is interlaced and which field
        comes first in time (PyAV 18 shows ``interlaced_frame`` but not the frame's
        top-field-first flag: FFmpeg's ``separatefields`` filter, which reads it, is
        asked which lines it puts first). Up to :data:`_FIELD_PROBE_FRAMES` frames are
        decoded while a frame's two fields look the same; they are sent first."""
        import av

        try:
            for frame in self._container.decode(video=0):
                self._probed.append(frame)
                if not frame.interlaced_frame:
                    return
                self.interlaced = True
                first = _first_field_lines(frame, stream.time_base)
                if first is not None:
                    self.bottom_field_first = first == 1
                    return
                if len(self._probed) >= _FIELD_PROBE_FRAMES:
                    log.info("source %s: interlaced, its fields look alike; sent top field "
                             "first", self.spec)
                    return
        except av.error.FFmpegError:
            return  # decoding fails again in the worker, which says so

    def _items(self, fmt: VideoFormat, t0: int, period: Fraction) -> Iterator[tuple[np.ndarray, str]]:
        import av

        pix = preferred_pix_fmt(fmt)
        container = self._container
        probed, self._probed = self._probed, []
        try:
            while True:
                produced = 0
                for frame in itertools.chain(probed, container.decode(video=0)):
                    if self._stop.is_set():
                        return
                    out = frame.reformat(width=fmt.width, height=fmt.height, format=pix)
                    produced += 1
                    yield av_frame_to_array(out, pix), pix
                if not self.loop or produced == 0:
                    return
                probed = []
                container.seek(0)
        except av.error.FFmpegError as exc:
            raise RtstreamError(f"source {self.spec}: decoding failed: {exc}") from None
        finally:
            container.close()

    def close(self) -> None:
        """Stop the worker; close the input if it never started."""
        started = self._thread is not None
        super().close()
        if not started:
            self._container.close()


class RawSource(VideoSource):
    """Frames already in the wire pixel format, one after another in a file."""

    def __init__(self, spec: str, path: Path, *, loop: bool = False) -> None:
        super().__init__(spec, loop=loop)
        if not path.is_file():
            raise ConfigError("--source", spec, f"an existing file ({path} not found)")
        self.path = path

    def _items(self, fmt: VideoFormat, t0: int, period: Fraction) -> Iterator[tuple[np.ndarray, str]]:
        size = self.path.stat().st_size
        fb = fmt.frame_bytes
        if size < fb or size % fb:
            raise ConfigError(
                "--source",
                self.spec,
                f"a file of whole {fmt.width}x{fmt.height} {fmt.sampling.value} {fmt.depth}-bit "
                f"frames ({fb} bytes each); it has {size} bytes",
            )
        # Frames are read-only views of the mapped file: no copy, and no fresh 5 MB
        # allocation (whose page faults would slow the first frames) per frame. The
        # first frames' pages are faulted in here, before the first one is due.
        data = np.memmap(self.path, np.uint8, mode="r")
        n = size // fb
        int(data[: min(n, 16) * fb : 4096].sum())
        while True:
            for i in range(n):
                if self._stop.is_set():
                    return
                yield data[i * fb : (i + 1) * fb], "wire"
            if not self.loop:
                return


_DICOM_CONTEXT = {
    "PatientName": "patient_name",
    "PatientID": "patient_id",
    "IssuerOfPatientID": "issuer_of_patient_id",
    "PatientBirthDate": "birth_date",
    "PatientSex": "sex",
    "StudyInstanceUID": "study_instance_uid",
    "StudyDescription": "study_description",
    "StudyDate": "study_date",
    "StudyTime": "study_time",
    "TimezoneOffsetFromUTC": "timezone_offset",
    "Modality": "modality",
    "BodyPartExamined": "body_part",
    "Laterality": "laterality",
    "BurnedInAnnotation": "burned_in_annotation",
    "Manufacturer": "manufacturer",
    "StationName": "station_name",
    "InstitutionName": "institution",
    "DeviceSerialNumber": "device_serial",
    "SOPClassUID": "source_sop_class_uid",
    "SOPInstanceUID": "source_sop_instance_uid",
    "SeriesInstanceUID": "source_series_instance_uid",
}
# Study-level values a derived object must repeat unchanged, empty ones included
# (PS3.3 C.7.2.1; dcentvfy compares them across the study's instances).
_DICOM_STUDY_KEPT_EMPTY = {
    "StudyID": "study_id",
    "AccessionNumber": "accession_number",
    "ReferringPhysicianName": "referring_physician",
}
# Lossy Image Compression Method (PS3.3 C.7.6.1.1.5.1) of the lossy-only codecs.
_LOSSY_METHOD_OF_CODEC = {
    "h264": "ISO_14496_10", "hevc": "ISO_23008_2", "mpeg2video": "ISO_13818_2",
    "mpeg1video": "ISO_13818_2", "mjpeg": "ISO_10918_1",
}  # fmt: skip
_LOSSY_CODECS_WITHOUT_METHOD = frozenset({"mpeg4", "msmpeg4v3", "h263", "vp8", "vp9", "av1", "theora", "wmv3"})
_LOSSY_METHOD_OF_TS = {
    "1.2.840.10008.1.2.4.50": "ISO_10918_1", "1.2.840.10008.1.2.4.51": "ISO_10918_1",
    "1.2.840.10008.1.2.4.100": "ISO_13818_2", "1.2.840.10008.1.2.4.101": "ISO_13818_2",
    **{f"1.2.840.10008.1.2.4.{n}": "ISO_14496_10" for n in range(102, 107)},
    "1.2.840.10008.1.2.4.107": "ISO_23008_2", "1.2.840.10008.1.2.4.108": "ISO_23008_2",
}  # fmt: skip


def _lossy_context_of_stream(vs: Any, rate: Fraction | None) -> dict[str, str]:
    """Lossy history of a PyAV video stream (PS3.3 C.7.6.1.1.5): ``01`` with the method
    for a lossy codec, and the ratio when the bit rate is known; nothing for others."""
    name = str(vs.codec_context.name)
    method = _LOSSY_METHOD_OF_CODEC.get(name, "")
    if not method and name not in _LOSSY_CODECS_WITHOUT_METHOD:
        return {}
    out = {"lossy_compression": "01"}
    if method:
        out["lossy_method"] = method
        try:
            import av

            bpp = av.VideoFormat(vs.codec_context.pix_fmt).bits_per_pixel
            width, height = vs.codec_context.width, vs.codec_context.height
            bit_rate = vs.bit_rate or vs.codec_context.bit_rate
            if bpp and bit_rate and rate and width and height:
                ratio = width * height * bpp * float(rate) / bit_rate
                out["lossy_ratio"] = f"{ratio:.4g}"
        except (ValueError, TypeError, AttributeError):
            pass
    return out


def _acceptable_context(values: dict[str, str], spec: str) -> dict[str, str]:
    """The values :class:`~rtstream.dicom.context.StreamContext` accepts; a file's odd
    value (e.g. a Modality that is not a defined term) is logged and left out."""
    from rtstream.dicom.context import StreamContext

    out: dict[str, str] = {}
    for name, value in values.items():
        try:
            StreamContext(**{name: value})
        except ConfigError as exc:
            log.warning("source %s: its %s is not a usable context value, left out", spec, name)
            log.debug("source %s: %s", spec, exc)  # may name patient data: debug only
            continue
        out[name] = value
    return out


def _multi(value: Any) -> list[str]:
    """The values of a possibly multi-valued element as strings."""
    if value is None or value == "":
        return []
    if isinstance(value, str) or not hasattr(value, "__iter__"):
        return [str(value)]
    return [str(v) for v in value]


def _lossy_context_of_dicom(ds: Any, ts: str) -> dict[str, str]:
    """A cine's lossy history: its Lossy Image Compression attributes, or its transfer
    syntax when that is lossy only (PS3.3 C.7.6.1.1.5, PS3.5 §8.2)."""
    flag = str(ds.get("LossyImageCompression", "") or "")
    method_of_ts = _LOSSY_METHOD_OF_TS.get(ts, "")
    if flag != "01" and not method_of_ts:
        return {"lossy_compression": flag} if flag == "00" else {}
    out = {"lossy_compression": "01"}
    methods = _multi(ds.get("LossyImageCompressionMethod"))
    ratios = _multi(ds.get("LossyImageCompressionRatio"))
    if methods:
        out["lossy_method"] = "\\".join(methods)
    elif method_of_ts:
        out["lossy_method"] = method_of_ts
    if ratios and len(ratios) == len(methods):
        out["lossy_ratio"] = "\\".join(ratios)
    return out
_H264_TS_PREFIX = ("1.2.840.10008.1.2.4.102", "1.2.840.10008.1.2.4.103", "1.2.840.10008.1.2.4.104",
                   "1.2.840.10008.1.2.4.105", "1.2.840.10008.1.2.4.106")
_MPEG_TS = ("1.2.840.10008.1.2.4.100", "1.2.840.10008.1.2.4.101", "1.2.840.10008.1.2.4.107",
            "1.2.840.10008.1.2.4.108")


def _nice_rate(fps: float) -> Fraction:
    """The standard rate nearest ``fps`` when within 0.2%, else ``fps`` as a Fraction."""
    best = min(_STANDARD_RATES, key=lambda r: abs(float(r) - fps))
    if abs(float(best) - fps) / float(best) < 2e-3:
        return best
    return Fraction(fps).limit_denominator(1001)


class DicomSource(VideoSource):
    """Replay a multi-frame DICOM image (native, JPEG-family or H.264/MPEG encapsulated).

    The rate comes from Frame Time (0018,1063), else Cine Rate (0018,0040), else
    Recommended Display Frame Rate (0008,2144), else 30 (PS3.3 C.7.6.5 Cine Module).
    """

    def __init__(self, spec: str, path: Path, *, loop: bool = False) -> None:
        super().__init__(spec, loop=loop)
        import pydicom
        from pydicom.errors import InvalidDicomError

        if not path.is_file():
            raise ConfigError("--source", spec, f"an existing DICOM file ({path} not found)")
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError) as exc:
            raise ConfigError("--source", spec, f"a readable DICOM file ({exc})") from None
        if "Rows" not in ds or "Columns" not in ds:
            raise ConfigError("--source", spec, "a DICOM image with Rows and Columns")
        self.path = path
        self.ts = str(ds.file_meta.get("TransferSyntaxUID", "1.2.840.10008.1.2.1"))
        self.frames_in_file = int(ds.get("NumberOfFrames", 1) or 1)
        self.native_size = (int(ds.Columns), int(ds.Rows))
        rate: Fraction | None = None
        if ds.get("FrameTime"):
            rate = _nice_rate(1000.0 / float(ds.FrameTime))
        elif ds.get("CineRate"):
            rate = Fraction(int(ds.CineRate))
        elif ds.get("RecommendedDisplayFrameRate"):
            rate = Fraction(int(ds.RecommendedDisplayFrameRate))
        self.native_rate = rate or Fraction(30)
        for kw, name in _DICOM_CONTEXT.items():
            v = ds.get(kw)
            if v not in (None, ""):
                self.context[name] = str(v)
        for kw, name in _DICOM_STUDY_KEPT_EMPTY.items():
            if kw in ds:
                self.context[name] = str(ds.get(kw) or "")
        if ds.get("StudyInstanceUID"):
            self.context["source_study_instance_uid"] = str(ds.StudyInstanceUID)
        image_type = [str(v) for v in (ds.get("ImageType") or [])][:2]
        if len(image_type) == 2:
            self.context["image_type"] = "\\".join(image_type)
        self.context.update(_lossy_context_of_dicom(ds, self.ts))
        self.context = _acceptable_context(self.context, spec)

    def _rgb_frames(self) -> Iterator[np.ndarray]:
        if self.ts.startswith(_H264_TS_PREFIX) or self.ts in _MPEG_TS:
            yield from self._video_frames()
            return
        from pydicom.pixels.utils import iter_pixels

        for arr in iter_pixels(self.path):
            yield _to_rgb8(arr)

    def _video_frames(self) -> Iterator[np.ndarray]:
        import av
        import pydicom
        from pydicom.encaps import generate_fragments

        ds = pydicom.dcmread(self.path)
        data = b"".join(generate_fragments(ds.PixelData))
        # PS3.5 §8.2.7-8.2.10: the fragments hold an MPEG-TS or MP4 container; older
        # writers (and rtstream before it) put a bare elementary stream there.
        elementary = "h264" if self.ts.startswith(_H264_TS_PREFIX) else "mpegvideo"
        if self.ts in ("1.2.840.10008.1.2.4.107", "1.2.840.10008.1.2.4.108"):
            elementary = "hevc"
        container = data[4:8] == b"ftyp" or data[:1] == b"\x47"  # MP4 box / TS sync byte
        c: Any = av.open(io.BytesIO(data), format=None if container else elementary)
        with c:
            for frame in c.decode(video=0):
                yield frame.to_ndarray(format="rgb24")

    def _items(self, fmt: VideoFormat, t0: int, period: Fraction) -> Iterator[tuple[np.ndarray, str]]:
        import av

        pix = preferred_pix_fmt(fmt)
        while True:
            produced = 0
            for rgb in self._rgb_frames():
                if self._stop.is_set():
                    return
                vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
                out = vf.reformat(width=fmt.width, height=fmt.height, format=pix)
                produced += 1
                yield av_frame_to_array(out, pix), pix
            if not self.loop or produced == 0:
                return


def _to_rgb8(arr: np.ndarray) -> np.ndarray:
    """A decoded DICOM frame (gray or RGB, any bit depth) as (h, w, 3) uint8."""
    if arr.ndim == 2:
        if arr.dtype != np.uint8:
            lo, hi = float(arr.min()), float(arr.max())
            scale = 255.0 / (hi - lo) if hi > lo else 0.0
            gray: np.ndarray = ((arr.astype(np.float32) - lo) * scale).astype(np.uint8)
            return np.repeat(gray[:, :, None], 3, axis=2)
        return np.repeat(arr[:, :, None], 3, axis=2)
    if arr.dtype != np.uint8:
        shift = max(0, int(arr.dtype.itemsize * 8) - 8)
        wide: np.ndarray = arr.astype(np.uint32)
        narrow: np.ndarray = np.right_shift(wide, shift).astype(np.uint8)
        return narrow[:, :, :3]
    return arr[:, :, :3]


def parse_spec(spec: str, allowed: str = SPEC_HELP) -> tuple[str, str]:
    """Split ``kind:argument``; ``testsrc``/``tone`` have no argument."""
    kind, sep, arg = spec.partition(":")
    if not sep:
        return spec, ""
    if not arg:
        raise ConfigError("--source", spec, f"a spec with an argument after '{kind}:' ({allowed})")
    return kind, arg


def open_video_source(spec: str, *, loop: bool = False) -> VideoSource:
    """Validate ``spec`` and open the video source it names.

    Raises
    ------
    ConfigError
        For an unknown kind, a missing file, an absent or busy device, or an input
        without video.
    """
    kind, arg = parse_spec(spec)
    if kind == "testsrc" and not arg:
        return TestSource(spec, loop=loop)
    if kind == "file":
        p = Path(arg)
        if not p.is_file():
            raise ConfigError("--source", spec, f"an existing media file ({p} not found)")
        return AvVideoSource(spec, str(p), loop=loop)
    if kind == "lavfi":
        return AvVideoSource(spec, arg, container_format="lavfi", loop=loop)
    if kind == "v4l2":
        if not os.path.exists(arg):
            raise ConfigError("--source", spec, f"an existing V4L2 device: {arg} is absent")
        return AvVideoSource(spec, arg, container_format="v4l2", live=True)
    if kind == "dicom":
        return DicomSource(spec, Path(arg), loop=loop)
    if kind == "raw":
        return RawSource(spec, Path(arg), loop=loop)
    if kind == "numpy":  # frames of your own (rtstream.media.arrays.register_source)
        from rtstream.media.arrays import open_registered

        return open_registered(spec, arg)
    if kind == "pacs":
        raise ConfigError("--source", spec, "a local source here: pacs: specs are opened by "
                          "rtstream.pacs.source.open_video_source, which retrieves first")
    if kind in ("alsa", "pulse", "tone"):
        raise ConfigError("--source", spec, f"a video source ({SPEC_HELP}); "
                          f"{kind} is an audio input: use --audio-source")
    raise ConfigError("--source", spec, f"one of {SPEC_HELP}")


@dataclass
class AudioSource:
    """An audio input; :meth:`chunks` yields :class:`AudioChunk` of ``chunk`` samples."""

    spec: str
    kind: str
    url: str = ""
    live: bool = False
    _stop: threading.Event = field(default_factory=threading.Event)
    _container: Any = None
    _started: bool = False

    async def chunks(self, fmt: AudioFormat, clock: Clock, *, start_ns: int | None = None,
                     chunk_packets: int = 10) -> AsyncIterator[AudioChunk]:
        """Yield chunks of ``chunk_packets`` packets' worth of samples, forever."""
        n = fmt.samples_per_packet * chunk_packets
        bits = 16 if fmt.encoding.value == "L16" else 24
        t0 = clock.now_ns() + 50_000_000 if start_ns is None else start_ns
        if self.kind == "tone":
            start = 0
            while True:
                capture = t0 + start * NS_PER_S // fmt.sample_rate
                samples = tone(fmt.sample_rate, fmt.channels, start, n, bits=bits)
                await _sleep_until(clock, capture + n * NS_PER_S // fmt.sample_rate)
                yield AudioChunk(samples, capture)
                start += n
        async for chunk in self._av_chunks(fmt, clock, n, bits):
            yield chunk

    def open(self) -> None:
        """Open the PyAV input now, so an absent or busy device fails at start."""
        if self.kind == "tone" or self._container is not None:
            return
        import av

        try:
            self._container = av.open(self.url, format=self.kind)
        except ValueError as exc:
            raise ConfigError("--audio-source", self.spec, f"an input this PyAV build can open ({exc})") from None
        except OSError as exc:
            what = "an existing, free audio device" if self.live else "a valid audio input"
            raise ConfigError("--audio-source", self.spec, f"{what} ({exc})") from None
        if not self._container.streams.audio:
            self._container.close()
            raise ConfigError("--audio-source", self.spec, "an input with an audio stream")

    def close(self) -> None:
        """Stop reading and close the input."""
        self._stop.set()
        if self._container is not None and not self._started:
            self._container.close()

    async def _av_chunks(self, fmt: AudioFormat, clock: Clock, n: int, bits: int) -> AsyncIterator[AudioChunk]:
        import av

        self.open()
        container = self._container
        self._started = True
        q: queue.Queue[np.ndarray | None] = queue.Queue(8)
        resampler = av.AudioResampler(format="s32", layout="stereo" if fmt.channels == 2 else "mono",
                                      rate=fmt.sample_rate)

        def worker() -> None:
            try:
                for frame in container.decode(audio=0):
                    if self._stop.is_set():
                        return
                    for out in resampler.resample(frame):
                        a: np.ndarray = np.asarray(out.to_ndarray(), np.int32).reshape(-1, fmt.channels)
                        q.put(np.right_shift(a, 32 - bits))
            finally:
                q.put(None)
                container.close()

        threading.Thread(target=worker, name=f"audio {self.spec}", daemon=True).start()
        pending = np.zeros((0, fmt.channels), np.int32)
        t_next: int | None = None
        try:
            while True:
                got = await asyncio.to_thread(q.get)
                if got is None:
                    return
                pending = np.concatenate([pending, got])
                while len(pending) >= n:
                    now = clock.now_ns()
                    if t_next is None:
                        t_next = now - n * NS_PER_S // fmt.sample_rate
                    yield AudioChunk(pending[:n], t_next)
                    t_next += n * NS_PER_S // fmt.sample_rate
                    pending = pending[n:]
                    if not self.live:
                        await _sleep_until(clock, t_next)
        finally:
            self._stop.set()


def open_audio_source(spec: str) -> AudioSource:
    """Validate an ``--audio-source`` spec."""
    kind, arg = parse_spec(spec, AUDIO_SPEC_HELP)
    if kind == "tone" and not arg:
        return AudioSource(spec, "tone")
    if kind in ("alsa", "pulse", "lavfi"):
        src = AudioSource(spec, kind, arg, live=kind != "lavfi")
        src.open()
        return src
    raise ConfigError("--audio-source", spec, f"one of {AUDIO_SPEC_HELP}")


def context_fields(context: dict[str, str], cls: type[Any]) -> dict[str, str]:
    """The subset of ``context`` that names fields of dataclass ``cls``."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in context.items() if k in names}
