"""DICOM-RTV metadata grains (PS3.22 §6.2.2, §7.1) and their RTP transport.

Theory of operation
-------------------
A *grain* is one DICOM data set sent on a metadata flow: the RTV Meta Information
(PS3.22 Table 7.1-1: 128-byte preamble, ``DICM``, group 0002 in Explicit VR Little
Endian) followed by the data set, always Explicit VR Little Endian whatever
(0002,0010) says, because (0002,0010) names the *bulk* flow's transfer syntax.

The data set holds the *dynamic part* -- (0006,0001) Current Frame Functional Groups
Sequence with exactly one item, one per video frame or audio grain -- and, at least once
per second, the *static part* (every other module of the IOD).  Group 0006 sorts
before 0008, so a grain is ``meta + dynamic + static`` byte for byte; builders that
cache the encoded static part just concatenate.

:func:`decode_grain` checks the layout strictly before pydicom sees it: the group 0002
elements against their group length and the body with a structural scan of every
element, item and delimiter (pydicom alone accepts truncated data sets), then validates
the fields. Anything wrong raises :class:`~rtstream.errors.RemoteProtocolError` naming
the field.

PS3.22 defines no fragmentation. :class:`MetadataPacketizer` follows the rule of
``spec/ps322.md`` §2.6: a grain too large for one datagram goes out as consecutive RTP
packets with the same timestamp as the frame it describes; the first carries the NMOS
header extension (sync, origin, flow-id, source-id, grain-flags S), the last has the
marker bit and an extension with grain-flags E. :class:`MetadataDepacketizer`
reassembles per (SSRC, timestamp) and emits a grain only when every packet from the S
packet to the marker arrived; a gap, a cap or a newer timestamp drops it with a reason.
A partial data set is never parsed.

Fast path
---------
A receiver decodes one grain per frame, and consecutive grains of a flow differ only
in a few value bytes of the dynamic part (Frame Origin Timestamp, acquisition date-time,
frame number). :func:`decode_grain` therefore keeps two small caches:

* the RTV Meta Information headers it accepted, by their bytes (decoding reads nothing
  else, so equal bytes give an equal :class:`RtvMetaInfo`);
* *templates* of data sets that pydicom read and the grain passed validation: the body
  bytes, where each leaf value lies, and the attributes of every Dataset, Sequence and
  DataElement pydicom made. A body of the same size whose bytes are equal outside the
  leaf values inside (0006,0001) has the same structure (so the structural scan would
  pass), the same fixed values and character sets; its data set is built from the
  template with fresh objects, the changed values converted by pydicom's own converter
  for their VR. Then every validation runs on it exactly as on a data set read by
  pydicom. Anything else (no matching template, a value whose conversion fails, a
  pydicom callback or hook other than its own, changed pydicom settings) goes the
  reference way (:func:`_decode_grain_reference` is that way alone, for the tests).

(0006,0001) is missing from pydicom 3.0.2's dictionary; importing this module
registers it once (:func:`register_dictionary`).
"""

from __future__ import annotations

import datetime as _dt
import io
import logging
import math
import operator
import re
import struct
import uuid
from collections import OrderedDict
from collections.abc import Callable, MutableSequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, cast

from pydicom import config as pydicom_config
from pydicom import hooks as pydicom_hooks
from pydicom.charset import default_encoding
from pydicom.datadict import add_dict_entries, dictionary_has_tag
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.tag import BaseTag
from pydicom.valuerep import CUSTOMIZABLE_CHARSET_VR
from pydicom.valuerep import VR as VR_
from pydicom.values import converters as pydicom_converters

from rtstream.errors import LocalProtocolError, RemoteProtocolError
from rtstream.proto._pydicom_private import (
    DATASET_ELEMENTS,
    ELEMENT_VALUE,
    SEQUENCE_ITEMS,
    dataset_character_set,
    dataset_elements,
    new_dataset,
    new_element,
    new_sequence,
    settings_state,
    snapshot_state,
)
from rtstream.proto.clock import NS_PER_S, PtpTimestamp, tai_to_utc_ns
from rtstream.proto.nmos_ext import PROFILE_ONE_BYTE, ExtMap, NmosExtension
from rtstream.proto.rtp import (
    RTP_HEADER_SIZE,
    RTP_VERSION,
    Arrival,
    RtpPacket,
    SequenceTracker,
    parse_rtp,
    seq_add,
    seq_diff,
    ts_diff,
)

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------
# Dictionary and constants
# --------------------------------------------------------------------------------------

CURRENT_FRAME_FUNCTIONAL_GROUPS_SEQUENCE = 0x00060001
"""(0006,0001), PS3.3 C.7.6.27; absent from pydicom 3.0.2's dictionary."""

EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"

RTV_VIDEO_ENDOSCOPIC = "1.2.840.10008.10.1"
RTV_VIDEO_PHOTOGRAPHIC = "1.2.840.10008.10.2"
RTV_AUDIO_WAVEFORM = "1.2.840.10008.10.3"
RTV_RENDITION_SELECTION = "1.2.840.10008.10.4"
RTV_SOP_CLASSES: frozenset[str] = frozenset(
    {RTV_VIDEO_ENDOSCOPIC, RTV_VIDEO_PHOTOGRAPHIC, RTV_AUDIO_WAVEFORM, RTV_RENDITION_SELECTION}
)
"""PS3.22 Table 7.2-1."""

RTV_MODALITY: dict[str, str] = {
    RTV_VIDEO_ENDOSCOPIC: "ES",
    RTV_VIDEO_PHOTOGRAPHIC: "XC",
    RTV_AUDIO_WAVEFORM: "AU",
}
"""Modality fixed by each real-time IOD (PS3.3 A.32.9, A.32.10, A.34.11)."""

RTV_META_VERSION = b"\x00\x01"
PREAMBLE_SIZE = 128
DICM = b"DICM"

_registered = False


def register_dictionary() -> None:
    """Add (0006,0001) Current Frame Functional Groups Sequence to pydicom's dictionary.

    Idempotent; called on import. PS3.6 lists the tag; pydicom 3.0.2 does not.
    """
    global _registered
    if _registered:
        return
    if not dictionary_has_tag(CURRENT_FRAME_FUNCTIONAL_GROUPS_SEQUENCE):
        add_dict_entries(
            {
                CURRENT_FRAME_FUNCTIONAL_GROUPS_SEQUENCE: (
                    "SQ",
                    "1",
                    "Current Frame Functional Groups Sequence",
                    "",
                    "CurrentFrameFunctionalGroupsSequence",
                )
            }
        )
    _registered = True


register_dictionary()

# --------------------------------------------------------------------------------------
# Explicit VR Little Endian primitives (PS3.5 §7.1.2)
# --------------------------------------------------------------------------------------

_LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
_ALL_VRS = _LONG_VRS | frozenset(
    {
        b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO",
        b"LT", b"PN", b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US",
    }
)  # fmt: skip
_SHORT_HDR = struct.Struct("<HH2sH")
_LONG_HDR = struct.Struct("<HH2sHI")
_TAG = struct.Struct("<HH")
_U32 = struct.Struct("<I")
_ITEM = 0xFFFEE000
_ITEM_DELIM = 0xFFFEE00D
_SEQ_DELIM = 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF
_MAX_DEPTH = 8
_UID_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")


def _element(tag: int, vr: bytes, value: bytes) -> bytes:
    """One explicit VR little endian element (value already padded to even length)."""
    if vr in _LONG_VRS:
        return _LONG_HDR.pack(tag >> 16, tag & 0xFFFF, vr, 0, len(value)) + value
    return _SHORT_HDR.pack(tag >> 16, tag & 0xFFFF, vr, len(value)) + value


def _item(body: bytes) -> bytes:
    return struct.pack("<HHI", 0xFFFE, 0xE000, len(body)) + body


def _sequence(tag: int, items: list[bytes]) -> bytes:
    return _element(tag, b"SQ", b"".join(_item(i) for i in items))


def _ui(uid: str) -> bytes:
    raw = uid.encode("ascii")
    return raw + b"\x00" if len(raw) % 2 else raw


def _text(value: str) -> bytes:
    raw = value.encode("ascii")
    return raw + b" " if len(raw) % 2 else raw


def is_valid_uid(uid: str) -> bool:
    """PS3.5 §9.1: digits and dots, no leading zeros in a component, at most 64 chars."""
    return 0 < len(uid) <= 64 and _UID_RE.match(uid) is not None


# --------------------------------------------------------------------------------------
# RTV Meta Information (PS3.22 Table 7.1-1)
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class RtvMetaInfo:
    """The RTV Meta Information header of every grain (PS3.22 Table 7.1-1).

    Parameters
    ----------
    transfer_syntax_uid : str
        (0002,0010): the transfer syntax of the referenced *bulk* flow (e.g.
        1.2.840.10008.1.2.7.1); it never describes the metadata itself.
    sop_class_uid : str
        (0002,0032) RTV Communication SOP Class UID, one of PS3.22 Table 7.2-1.
    sop_instance_uid : str
        (0002,0033): one SOP instance per RTP session (PS3.22 §7).
    source_id, flow_id : uuid.UUID
        (0002,0035)/(0002,0036): the *metadata* flow's own source and flow UUIDs, equal
        to those in the NMOS header extension.
    sampling_rate : int or None
        (0002,0037) RTV Flow RTP Sampling Rate, type 1C (required when there is a
        dynamic part): the bulk flow's RTP clock (90000 for video).
    frame_duration_ms : float or None
        (0002,0038) RTV Flow Actual Frame Duration, type 3, in milliseconds.
    """

    transfer_syntax_uid: str
    sop_class_uid: str
    sop_instance_uid: str
    source_id: uuid.UUID
    flow_id: uuid.UUID
    sampling_rate: int | None
    frame_duration_ms: float | None = None

    def __post_init__(self) -> None:
        for name in ("transfer_syntax_uid", "sop_class_uid", "sop_instance_uid"):
            value = getattr(self, name)
            if not isinstance(value, str) or not is_valid_uid(value):
                raise LocalProtocolError(f"{name}: {value!r} is not a valid UID")
        if self.sop_class_uid not in RTV_SOP_CLASSES:
            raise LocalProtocolError(
                f"sop_class_uid: {self.sop_class_uid} is not an RTV SOP class (PS3.22 Table 7.2-1)"
            )
        if self.sampling_rate is not None and not 0 < self.sampling_rate <= 0xFFFFFFFF:
            raise LocalProtocolError(f"sampling_rate: {self.sampling_rate} is not 1..2**32-1")
        if self.frame_duration_ms is not None and not (
            math.isfinite(self.frame_duration_ms) and self.frame_duration_ms >= 0
        ):
            raise LocalProtocolError(f"frame_duration_ms: {self.frame_duration_ms} is not >= 0")

    def encode(self) -> bytes:
        """Preamble, ``DICM`` and group 0002 (PS3.22 Table 7.1-1), Explicit VR LE."""
        parts = [
            _element(0x00020010, b"UI", _ui(self.transfer_syntax_uid)),
            _element(0x00020031, b"OB", RTV_META_VERSION),
            _element(0x00020032, b"UI", _ui(self.sop_class_uid)),
            _element(0x00020033, b"UI", _ui(self.sop_instance_uid)),
            _element(0x00020035, b"OB", self.source_id.bytes),
            _element(0x00020036, b"OB", self.flow_id.bytes),
        ]
        if self.sampling_rate is not None:
            parts.append(_element(0x00020037, b"UL", _U32.pack(self.sampling_rate)))
        if self.frame_duration_ms is not None:
            parts.append(_element(0x00020038, b"FD", struct.pack("<d", self.frame_duration_ms)))
        group = b"".join(parts)
        return (
            bytes(PREAMBLE_SIZE) + DICM + _element(0x00020000, b"UL", _U32.pack(len(group))) + group
        )


@dataclass(frozen=True)
class Grain:
    """One decoded metadata grain.

    Attributes
    ----------
    meta : RtvMetaInfo
    dataset : pydicom.Dataset
        The data set after the meta header (dynamic part and, maybe, the static part).
    raw : bytes
        The whole grain as received.
    """

    meta: RtvMetaInfo
    dataset: Dataset
    raw: bytes = field(repr=False)
    _decoded: tuple[bool, PtpTimestamp | None] | None = field(
        default=None, repr=False, compare=False, kw_only=True
    )
    """``(has_static, origin)`` as :func:`decode_grain` found them while validating."""

    @property
    def has_static(self) -> bool:
        """True when the grain carries a static part (any attribute of group >= 0008).

        For a grain from :func:`decode_grain` this is the answer found at decode time
        (the data set is not walked again).
        """
        if self._decoded is not None:
            return self._decoded[0]
        return any(tag.group >= 0x0008 for tag in self.dataset.keys())

    @property
    def origin(self) -> PtpTimestamp | None:
        """The Frame Origin Timestamp of the dynamic part, or None without one.

        For a grain from :func:`decode_grain` this is the value validated at decode
        time; for a Grain built by hand it is read from :attr:`dataset` (and may raise
        RemoteProtocolError when the dynamic part is malformed).
        """
        if self._decoded is not None:
            return self._decoded[1]
        return frame_origin(self.dataset)


def encode_grain(meta: RtvMetaInfo, dataset: Dataset) -> bytes:
    """Serialize one grain: RTV Meta Information then ``dataset`` in Explicit VR LE.

    Parameters
    ----------
    meta : RtvMetaInfo
    dataset : pydicom.Dataset
        Dynamic part (see :func:`dynamic_part`) and/or static part; must not contain
        group 0002 or a file meta.

    Raises
    ------
    LocalProtocolError
        When ``dataset`` contains group 0002 elements.
    """
    if any(tag.group <= 0x0002 for tag in dataset.keys()):
        raise LocalProtocolError("dataset: group 0002 belongs in RtvMetaInfo, not the data set")
    return meta.encode() + encode_dataset(dataset)


def encode_dataset(dataset: Dataset) -> bytes:
    """The Explicit VR Little Endian bytes of ``dataset`` (no preamble or meta)."""
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = False
    write_dataset(fp, dataset)
    return fp.getvalue()


def _meta_text_uid(raw: bytes, name: str) -> str:
    try:
        text = raw.decode("ascii").rstrip("\x00 ")
    except UnicodeDecodeError:
        raise RemoteProtocolError(name, "not ASCII") from None
    if not is_valid_uid(text):
        raise RemoteProtocolError(name, f"{text!r} is not a valid UID")
    return text


def decode_meta(data: bytes) -> tuple[RtvMetaInfo, int]:
    """Parse the RTV Meta Information at the start of ``data``.

    Returns
    -------
    meta : RtvMetaInfo
    end : int
        Offset of the first byte of the data set.

    Raises
    ------
    RemoteProtocolError
        Naming the field at fault (``DICOM prefix``, ``(0002,0000) group length``,
        ``(0002,0032) RTV Communication SOP Class UID``...).
    """
    n = len(data)
    if n < PREAMBLE_SIZE + 4:
        raise RemoteProtocolError("RTV preamble", f"grain of {n} bytes is shorter than 132")
    if data[PREAMBLE_SIZE : PREAMBLE_SIZE + 4] != DICM:
        raise RemoteProtocolError("DICOM prefix", "no 'DICM' at offset 128")
    pos = PREAMBLE_SIZE + 4
    if n < pos + 12:
        raise RemoteProtocolError("(0002,0000) group length", "truncated")
    g, e, vr, vlen = _SHORT_HDR.unpack_from(data, pos)
    if (g, e) != (0x0002, 0x0000) or vr != b"UL" or vlen != 4:
        raise RemoteProtocolError("(0002,0000) group length", "first element is not (0002,0000) UL")
    (glen,) = _U32.unpack_from(data, pos + 8)
    pos += 12
    end = pos + glen
    if end > n:
        raise RemoteProtocolError(
            "(0002,0000) group length", f"{glen} bytes do not fit in {n - pos} remaining"
        )
    values: dict[int, bytes] = {}
    last = 0x00020000
    while pos < end:
        if pos + 8 > end:
            raise RemoteProtocolError("RTV meta element", f"header truncated at offset {pos}")
        g, e, vr = struct.unpack_from("<HH2s", data, pos)
        tag = g << 16 | e
        if g != 0x0002:
            raise RemoteProtocolError("RTV meta element", f"({g:04X},{e:04X}) is not group 0002")
        if tag <= last:
            raise RemoteProtocolError(f"({g:04X},{e:04X})", "tags not in ascending order")
        last = tag
        if vr not in _ALL_VRS:
            raise RemoteProtocolError(f"({g:04X},{e:04X}) VR", f"unknown VR {vr!r}")
        if vr in _LONG_VRS:
            if pos + 12 > end:
                raise RemoteProtocolError(f"({g:04X},{e:04X})", "header truncated")
            (vlen,) = _U32.unpack_from(data, pos + 8)
            pos += 12
        else:
            (vlen,) = struct.unpack_from("<H", data, pos + 6)
            pos += 8
        if pos + vlen > end:
            raise RemoteProtocolError(f"({g:04X},{e:04X})", "value runs past the group length")
        values[tag] = bytes(data[pos : pos + vlen])
        pos += vlen

    def need(tag: int, name: str) -> bytes:
        if tag not in values:
            raise RemoteProtocolError(name, "missing")
        return values[tag]

    ts = _meta_text_uid(need(0x00020010, "(0002,0010) Transfer Syntax UID"),
                        "(0002,0010) Transfer Syntax UID")  # fmt: skip
    version = need(0x00020031, "(0002,0031) RTV Meta Information Version")
    if version != RTV_META_VERSION:
        raise RemoteProtocolError(
            "(0002,0031) RTV Meta Information Version", f"{version.hex()}, expected 0001"
        )
    cls_name = "(0002,0032) RTV Communication SOP Class UID"
    sop_class = _meta_text_uid(need(0x00020032, cls_name), cls_name)
    if sop_class not in RTV_SOP_CLASSES:
        raise RemoteProtocolError(cls_name, f"{sop_class} is not an RTV SOP class")
    inst_name = "(0002,0033) RTV Communication SOP Instance UID"
    sop_instance = _meta_text_uid(need(0x00020033, inst_name), inst_name)
    ids = []
    for tag, name in ((0x00020035, "(0002,0035) RTV Source Identifier"),
                      (0x00020036, "(0002,0036) RTV Flow Identifier")):  # fmt: skip
        raw = need(tag, name)
        if len(raw) != 16:
            raise RemoteProtocolError(name, f"{len(raw)} bytes, expected a 16-byte UUID")
        ids.append(uuid.UUID(bytes=raw))
    rate: int | None = None
    if 0x00020037 in values:
        raw = values[0x00020037]
        if len(raw) != 4:
            raise RemoteProtocolError("(0002,0037) RTV Flow RTP Sampling Rate", "not 4 bytes")
        rate = _U32.unpack(raw)[0]
        if rate == 0:
            raise RemoteProtocolError("(0002,0037) RTV Flow RTP Sampling Rate", "zero")
    duration: float | None = None
    if 0x00020038 in values:
        raw = values[0x00020038]
        if len(raw) != 8:
            raise RemoteProtocolError("(0002,0038) RTV Flow Actual Frame Duration", "not 8 bytes")
        duration = struct.unpack("<d", raw)[0]
        if not (math.isfinite(duration) and duration >= 0):
            raise RemoteProtocolError(
                "(0002,0038) RTV Flow Actual Frame Duration", f"{duration} is not >= 0"
            )
    if 0x00020102 in values and 0x00020100 not in values:
        raise RemoteProtocolError(
            "(0002,0100) Private Information Creator UID", "missing while (0002,0102) is present"
        )
    meta = RtvMetaInfo(
        transfer_syntax_uid=ts,
        sop_class_uid=sop_class,
        sop_instance_uid=sop_instance,
        source_id=ids[0],
        flow_id=ids[1],
        sampling_rate=rate,
        frame_duration_ms=duration,
    )
    return meta, end


# --------------------------------------------------------------------------------------
# Structural scan of an Explicit VR LE data set (no pydicom, strict)
# --------------------------------------------------------------------------------------


def _tagname(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def _scan_elements(buf: bytes, pos: int, limit: int, depth: int, until_delim: bool) -> int:
    """Check elements from ``pos``: up to ``limit`` or, when ``until_delim``, up to an
    item delimitation item. Return the offset after the last byte consumed."""
    if depth > _MAX_DEPTH:
        raise RemoteProtocolError("RTV data set", f"sequences nested deeper than {_MAX_DEPTH}")
    last = -1
    while True:
        if pos == limit and not until_delim:
            return pos
        if pos + 8 > limit:
            raise RemoteProtocolError("RTV data set", f"element header truncated at offset {pos}")
        g, e = _TAG.unpack_from(buf, pos)
        tag = g << 16 | e
        if tag == _ITEM_DELIM and until_delim:
            if _U32.unpack_from(buf, pos + 4)[0] != 0:
                raise RemoteProtocolError("Item Delimitation Item", "length not zero")
            return pos + 8
        if g == 0xFFFE:
            raise RemoteProtocolError("RTV data set", f"stray delimiter {_tagname(tag)}")
        if tag <= last:
            raise RemoteProtocolError(_tagname(tag), "tags not in ascending order")
        last = tag
        vr = buf[pos + 4 : pos + 6]
        if vr not in _ALL_VRS:
            raise RemoteProtocolError(f"{_tagname(tag)} VR", f"unknown VR {vr!r}")
        if vr in _LONG_VRS:
            if pos + 12 > limit:
                raise RemoteProtocolError(_tagname(tag), "header truncated")
            (vlen,) = _U32.unpack_from(buf, pos + 8)
            pos += 12
        else:
            (vlen,) = struct.unpack_from("<H", buf, pos + 6)
            pos += 8
        if vr == b"SQ":
            pos = _scan_sequence(buf, pos, vlen, limit, depth + 1, tag)
            continue
        if vlen == _UNDEFINED:
            raise RemoteProtocolError(_tagname(tag), "undefined length on a non-sequence")
        if pos + vlen > limit:
            raise RemoteProtocolError(_tagname(tag), f"value of {vlen} bytes is truncated")
        pos += vlen


def _scan_sequence(buf: bytes, pos: int, vlen: int, limit: int, depth: int, tag: int) -> int:
    if vlen != _UNDEFINED:
        end = pos + vlen
        if end > limit:
            raise RemoteProtocolError(_tagname(tag), f"sequence of {vlen} bytes is truncated")
    else:
        end = limit
    while True:
        if vlen != _UNDEFINED and pos == end:
            return pos
        if pos + 8 > end:
            raise RemoteProtocolError(_tagname(tag), "item header truncated")
        g, e, ilen = struct.unpack_from("<HHI", buf, pos)
        itag = g << 16 | e
        pos += 8
        if itag == _SEQ_DELIM and vlen == _UNDEFINED:
            if ilen != 0:
                raise RemoteProtocolError(_tagname(tag), "sequence delimiter length not zero")
            return pos
        if itag != _ITEM:
            raise RemoteProtocolError(_tagname(tag), f"expected an item, found {_tagname(itag)}")
        if ilen == _UNDEFINED:
            pos = _scan_elements(buf, pos, end, depth, True)
        else:
            if pos + ilen > end:
                raise RemoteProtocolError(_tagname(tag), f"item of {ilen} bytes is truncated")
            pos = _scan_elements(buf, pos, pos + ilen, depth, False)


def _check_body(body: bytes) -> None:
    pos = _scan_elements(body, 0, len(body), 0, False)
    assert pos == len(body)
    if body and _TAG.unpack_from(body, 0)[0] <= 0x0002:
        raise RemoteProtocolError("RTV data set", "group 0000-0002 element in the data set")


# --------------------------------------------------------------------------------------
# Dynamic part (PS3.3 C.7.6.27, macros C.7.6.16.2.2/27/28/29)
# --------------------------------------------------------------------------------------


def tai_to_dicom_datetime(tai_ns: int) -> str:
    """A DT value (UTC, microseconds, ``+0000``) for a TAI instant in nanoseconds.

    PTP counts TAI; DICOM DT values are civil time, so TAI - UTC (37 s) is removed.
    """
    utc_ns = tai_to_utc_ns(tai_ns)
    secs, ns = divmod(utc_ns, NS_PER_S)
    try:
        t = _dt.datetime(1970, 1, 1) + _dt.timedelta(seconds=secs, microseconds=ns // 1000)
    except OverflowError:
        raise LocalProtocolError(f"origin: {tai_ns} ns is outside years 1..9999") from None
    return t.strftime("%Y%m%d%H%M%S.%f") + "+0000"


def dynamic_part(
    *,
    origin: PtpTimestamp,
    frame_number: int | None,
    acquisition_datetime: str | None = None,
    frame_duration_ms: float | None = None,
    includes_imaging_subject: bool | None = None,
    includes_information: bool | None = None,
    camera_position: Dataset | None = None,
) -> Dataset:
    """The dynamic part of one grain: (0006,0001) with exactly one item.

    Parameters
    ----------
    origin : PtpTimestamp
        Capture instant of the frame: Time of Frame Group Sequence > Frame Origin
        Timestamp (0034,0007), IEEE 1588 seconds and nanoseconds, big-endian
        (PS3.3 C.7.6.16.2.29, C.7.6.27.1.1).
    frame_number : int or None
        Frame Content Sequence > Frame Acquisition Number (US, taken modulo 65536);
        None leaves out the Frame Content macro (audio, PS3.3 A.34.11).
    acquisition_datetime : str or None
        Frame Acquisition DateTime / Frame Reference DateTime; derived from ``origin``
        (TAI -> UTC) when None.
    frame_duration_ms : float or None
        Frame Acquisition Duration (0018,9220), milliseconds.
    includes_imaging_subject, includes_information : bool or None
        Frame Usefulness macro (C.7.6.16.2.27): YES/NO, left out when both are None.
    camera_position : pydicom.Dataset or None
        The item of Camera Position Group Sequence (C.7.6.16.2.28), copied as given.

    Returns
    -------
    pydicom.Dataset
        A data set holding only (0006,0001); merge it with a static part to form the
        data set of a grain.
    """
    item = Dataset()
    if frame_number is not None:
        dt = acquisition_datetime or tai_to_dicom_datetime(origin.to_ns())
        fc = Dataset()
        fc.add(DataElement(0x00189074, "DT", dt))
        fc.add(DataElement(0x00189151, "DT", dt))
        if frame_duration_ms is not None:
            fc.add(DataElement(0x00189220, "FD", float(frame_duration_ms)))
        fc.add(DataElement(0x00209156, "US", frame_number & 0xFFFF))
        item.add(DataElement(0x00209111, "SQ", DicomSequence([fc])))
    if includes_imaging_subject is not None or includes_information is not None:
        fu = Dataset()
        if includes_imaging_subject is not None:
            fu.add(DataElement(0x00340008, "CS", "YES" if includes_imaging_subject else "NO"))
        if includes_information is not None:
            fu.add(DataElement(0x0034000C, "CS", "YES" if includes_information else "NO"))
        item.add(DataElement(0x00340009, "SQ", DicomSequence([fu])))
    if camera_position is not None:
        item.add(DataElement(0x0034000B, "SQ", DicomSequence([camera_position])))
    tof = Dataset()
    tof.add(DataElement(0x00340007, "OB", origin.to_bytes()))
    item.add(DataElement(0x0034000D, "SQ", DicomSequence([tof])))
    ds = Dataset()
    ds.add(DataElement(CURRENT_FRAME_FUNCTIONAL_GROUPS_SEQUENCE, "SQ", DicomSequence([item])))
    return ds


def encode_dynamic_part(
    *,
    origin: PtpTimestamp,
    frame_number: int | None,
    acquisition_datetime: str | None = None,
    frame_duration_ms: float | None = None,
) -> bytes:
    """Fast path: the bytes :func:`encode_dataset` gives for :func:`dynamic_part`.

    Hand-encoded with defined lengths (as pydicom writes them) for the per-frame path;
    the test suite checks byte equality with the pydicom route.
    """
    parts: list[bytes] = []
    if frame_number is not None:
        dt = _text(acquisition_datetime or tai_to_dicom_datetime(origin.to_ns()))
        fc = [_element(0x00189074, b"DT", dt), _element(0x00189151, b"DT", dt)]
        if frame_duration_ms is not None:
            fc.append(_element(0x00189220, b"FD", struct.pack("<d", frame_duration_ms)))
        fc.append(_element(0x00209156, b"US", struct.pack("<H", frame_number & 0xFFFF)))
        parts.append(_sequence(0x00209111, [b"".join(fc)]))
    parts.append(_sequence(0x0034000D, [_element(0x00340007, b"OB", origin.to_bytes())]))
    return _sequence(CURRENT_FRAME_FUNCTIONAL_GROUPS_SEQUENCE, [b"".join(parts)])


def _sequence_items(ds: Dataset, tag: int, name: str) -> list[Dataset]:
    """The items of the sequence ``tag`` of ``ds`` (which must hold it).

    The VR is checked before the value is used: a value of another VR (a number, text,
    bytes or None) is never treated as a sequence (PS3.5 §7.5).

    Raises
    ------
    RemoteProtocolError
        Naming ``name`` when the element is not an SQ.
    """
    elem = ds[tag]
    if elem.VR != "SQ":
        raise RemoteProtocolError(name, f"VR {elem.VR}, expected SQ")
    return list(elem.value)


_ORIGIN_NAME = "(0034,0007) Frame Origin Timestamp"


def frame_origin(dataset: Dataset) -> PtpTimestamp | None:
    """Frame Origin Timestamp of a grain's dynamic part, or None without a dynamic part.

    (0006,0001) and (0034,000D) must be SQ with exactly one item and (0034,0007) an OB
    of exactly 10 bytes (PS3.3 C.7.6.16.2.29); the VRs and the length are checked before
    any value is used.

    Raises
    ------
    RemoteProtocolError
        When the dynamic part is present but malformed.
    """
    if CURRENT_FRAME_FUNCTIONAL_GROUPS_SEQUENCE not in dataset:
        return None
    name = "(0006,0001) Current Frame Functional Groups Sequence"
    seq = _sequence_items(dataset, CURRENT_FRAME_FUNCTIONAL_GROUPS_SEQUENCE, name)
    if len(seq) != 1:
        raise RemoteProtocolError(name, f"{len(seq)} items, expected exactly one")
    item = seq[0]
    tof_name = "(0034,000D) Time of Frame Group Sequence"
    if 0x0034000D not in item:
        raise RemoteProtocolError(tof_name, "missing")
    tof = _sequence_items(item, 0x0034000D, tof_name)
    if len(tof) != 1:
        raise RemoteProtocolError(tof_name, "not one item")
    if 0x00340007 not in tof[0]:
        raise RemoteProtocolError(_ORIGIN_NAME, "missing")
    elem = tof[0][0x00340007]
    if elem.VR != "OB":
        raise RemoteProtocolError(_ORIGIN_NAME, f"VR {elem.VR}, expected OB")
    raw = elem.value
    if not isinstance(raw, bytes) or len(raw) != 10:
        size = len(raw) if isinstance(raw, bytes) else 0
        raise RemoteProtocolError(_ORIGIN_NAME, f"{size} bytes, expected 10")
    return PtpTimestamp.from_bytes(raw, _ORIGIN_NAME)


# --------------------------------------------------------------------------------------
# Grain decoding and validation
# --------------------------------------------------------------------------------------


def _walk(ds: Dataset) -> None:
    """Convert every raw element (forces pydicom to decode each value once)."""
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value:
                _walk(item)


def _require(ds: Dataset, tag: int, name: str) -> Any:
    if tag not in ds:
        raise RemoteProtocolError(name, "missing from the static part")
    return ds[tag].value


def _require_items(ds: Dataset, tag: int, name: str, *, exactly_one: bool = False) -> list[Dataset]:
    if tag not in ds:
        raise RemoteProtocolError(name, "missing from the static part")
    seq = _sequence_items(ds, tag, name)
    if not seq:
        raise RemoteProtocolError(name, "empty")
    if exactly_one and len(seq) != 1:
        raise RemoteProtocolError(name, f"{len(seq)} items, expected one")
    return list(seq)


def _uid_value(ds: Dataset, tag: int, name: str) -> str:
    value = _require(ds, tag, name)
    if not isinstance(value, str) or not is_valid_uid(value):
        raise RemoteProtocolError(name, f"{value!r} is not a valid UID")
    return value


def validate_static(meta: RtvMetaInfo, ds: Dataset) -> None:
    """Check the static part's required attributes against the meta header.

    Checks SOP Common, Study/Series identity, Modality, the Synchronization module, the
    Real-Time Bulk Data Flow module (PS3.3 C.7.6.26: one flow item's transfer syntax
    and rate must match (0002,0010)/(0002,0037)), Acquisition Context and, for video,
    the Real-Time Acquisition module (C.7.6.28).

    Raises
    ------
    RemoteProtocolError
        Naming the first attribute at fault.
    """
    cls = _uid_value(ds, 0x00080016, "(0008,0016) SOP Class UID")
    if cls != meta.sop_class_uid:
        raise RemoteProtocolError("(0008,0016) SOP Class UID", "differs from (0002,0032)")
    inst = _uid_value(ds, 0x00080018, "(0008,0018) SOP Instance UID")
    if inst != meta.sop_instance_uid:
        raise RemoteProtocolError("(0008,0018) SOP Instance UID", "differs from (0002,0033)")
    if meta.sop_class_uid == RTV_RENDITION_SELECTION:
        return
    _uid_value(ds, 0x0020000D, "(0020,000D) Study Instance UID")
    _uid_value(ds, 0x0020000E, "(0020,000E) Series Instance UID")
    _require(ds, 0x00100020, "(0010,0020) Patient ID")
    modality = _require(ds, 0x00080060, "(0008,0060) Modality")
    if modality != RTV_MODALITY[meta.sop_class_uid]:
        raise RemoteProtocolError(
            "(0008,0060) Modality",
            f"{modality!r}, the IOD requires {RTV_MODALITY[meta.sop_class_uid]}",
        )
    _uid_value(ds, 0x00200200, "(0020,0200) Synchronization Frame of Reference UID")
    flows = _require_items(ds, 0x0034000A, "(0034,000A) Real-Time Bulk Data Flow Sequence")
    ts_match = rate_match = False
    for src in flows:
        sid = _require(src, 0x00340005, "(0034,0005) Source Identifier")
        if not isinstance(sid, bytes) or len(sid) != 16:
            raise RemoteProtocolError("(0034,0005) Source Identifier", "not a 16-byte UUID")
        for flow in _require_items(src, 0x00340001, "(0034,0001) Flow Identifier Sequence"):
            fid = _require(flow, 0x00340002, "(0034,0002) Flow Identifier")
            if not isinstance(fid, bytes) or len(fid) != 16:
                raise RemoteProtocolError("(0034,0002) Flow Identifier", "not a 16-byte UUID")
            fts = _uid_value(flow, 0x00340003, "(0034,0003) Flow Transfer Syntax UID")
            rate = _require(flow, 0x00340004, "(0034,0004) Flow RTP Sampling Rate")
            ts_match |= fts == meta.transfer_syntax_uid
            rate_match |= meta.sampling_rate is None or rate == meta.sampling_rate
    if not ts_match:
        raise RemoteProtocolError(
            "(0034,0003) Flow Transfer Syntax UID", "no bulk flow matches (0002,0010)"
        )
    if not rate_match:
        raise RemoteProtocolError(
            "(0034,0004) Flow RTP Sampling Rate", "no bulk flow matches (0002,0037)"
        )
    if meta.sop_class_uid != RTV_AUDIO_WAVEFORM:
        _require_items(
            ds, 0x52009229, "(5200,9229) Shared Functional Groups Sequence", exactly_one=True
        )
        stereo = _require(ds, 0x00220028, "(0022,0028) Stereo Pairs Present")
        if stereo not in ("YES", "NO"):
            raise RemoteProtocolError("(0022,0028) Stereo Pairs Present", f"{stereo!r}")
    if 0x00400555 not in ds:
        raise RemoteProtocolError("(0040,0555) Acquisition Context Sequence", "missing")


def _read_body(body: bytes) -> Dataset:
    """The data set of a grain, every value converted (the reference reader).

    The structure is checked byte by byte first (:func:`_check_body`), then pydicom
    reads it as Explicit VR Little Endian and every element is converted once.
    """
    _check_body(body)
    try:
        ds = read_dataset(io.BytesIO(body), is_implicit_VR=False, is_little_endian=True)
        _walk(ds)
    except RemoteProtocolError:
        raise
    except Exception as exc:  # pydicom signals bad values with many exception types
        raise RemoteProtocolError("RTV data set", f"unreadable: {exc}") from exc
    return ds


def _validate_dataset(meta: RtvMetaInfo, ds: Dataset) -> tuple[bool, PtpTimestamp | None]:
    """Check a grain's data set against its meta header; return ``(has_static, origin)``.

    Raises
    ------
    RemoteProtocolError
        Naming the field at fault.
    """
    for tag in ds.keys():
        if tag >= 0x00080000:
            break
        if tag != CURRENT_FRAME_FUNCTIONAL_GROUPS_SEQUENCE:
            raise RemoteProtocolError(
                _tagname(int(tag)), "only (0006,0001) may precede group 0008 in a grain"
            )
    has_dynamic = CURRENT_FRAME_FUNCTIONAL_GROUPS_SEQUENCE in ds
    origin: PtpTimestamp | None = None
    if meta.sop_class_uid == RTV_RENDITION_SELECTION:
        if has_dynamic:
            raise RemoteProtocolError(
                "(0006,0001) Current Frame Functional Groups Sequence",
                "present in a Rendition Selection grain",
            )
    else:
        if not has_dynamic:
            raise RemoteProtocolError(
                "(0006,0001) Current Frame Functional Groups Sequence", "missing"
            )
        if meta.sampling_rate is None:
            raise RemoteProtocolError(
                "(0002,0037) RTV Flow RTP Sampling Rate", "missing while a dynamic part exists"
            )
        origin = frame_origin(ds)
        item = ds[CURRENT_FRAME_FUNCTIONAL_GROUPS_SEQUENCE].value[0]
        if meta.sop_class_uid != RTV_AUDIO_WAVEFORM:
            fc_name = "(0020,9111) Frame Content Sequence"
            if 0x00209111 not in item or len(_sequence_items(item, 0x00209111, fc_name)) != 1:
                raise RemoteProtocolError(fc_name, "missing or not exactly one item")
    has_static = any(tag.group >= 0x0008 for tag in ds.keys())
    if has_static or meta.sop_class_uid == RTV_RENDITION_SELECTION:
        validate_static(meta, ds)
    return has_static, origin


def decode_grain(data: bytes | bytearray | memoryview) -> Grain:
    """Parse and validate one complete grain.

    The data set is read as Explicit VR Little Endian whatever (0002,0010) says
    (PS3.22 §6.2.2); its structure is checked byte by byte first, so a truncated or
    corrupt grain never reaches pydicom half-parsed.

    A grain laid out like a recent one (same structure and fixed values, only values
    inside (0006,0001) differing: the common case of consecutive grains of one flow) is
    read through a template of that layout instead of pydicom's reader; the result and
    every validation are the same (see "Fast path" in the module notes).

    Raises
    ------
    RemoteProtocolError
        Naming the field at fault.
    """
    raw = bytes(data)
    meta, start = _decode_meta_cached(raw)
    body = raw[start:]
    ds = _from_template(body)
    if ds is not None:
        decoded = _validate_dataset(meta, ds)
    else:
        ds = _read_body(body)
        decoded = _validate_dataset(meta, ds)
        _remember(body, ds)
    return Grain(meta, ds, raw, _decoded=decoded)


def _decode_grain_reference(data: bytes | bytearray | memoryview) -> Grain:
    """:func:`decode_grain` without its caches: pydicom reads every grain.

    The reference the fast path is tested against; the Grain computes ``has_static``
    and ``origin`` from its data set on each access, as it always did.
    """
    raw = bytes(data)
    meta, start = decode_meta(raw)
    body = raw[start:]
    ds = _read_body(body)
    _validate_dataset(meta, ds)
    return Grain(meta, ds, raw)


# --------------------------------------------------------------------------------------
# Fast path: caches of recent meta headers and data set layouts
# --------------------------------------------------------------------------------------

_META_CACHE: dict[bytes, tuple[RtvMetaInfo, int]] = {}
_META_CACHE_MAX = 64


def _decode_meta_cached(raw: bytes) -> tuple[RtvMetaInfo, int]:
    """:func:`decode_meta`, remembering the headers it accepted.

    decode_meta reads nothing outside ``raw[128:end]`` (``end`` given by the group
    length at offset 140) and needs only ``end <= len(raw)``, so a header whose bytes
    equal an accepted one's decodes to an equal :class:`RtvMetaInfo` (a frozen value,
    shared).
    """
    head = PREAMBLE_SIZE + 16
    if len(raw) >= head:
        end = head + _U32.unpack_from(raw, head - 4)[0]
        if end <= len(raw):
            key = raw[PREAMBLE_SIZE:end]
            hit = _META_CACHE.get(key)
            if hit is not None:
                return hit
            found = decode_meta(raw)
            if found[1] == end:
                if len(_META_CACHE) >= _META_CACHE_MAX:
                    _META_CACHE.clear()
                _META_CACHE[key] = found
            return found
    return decode_meta(raw)


_VALUE_TYPES: frozenset[type] = frozenset({str, int, float, bytes, bool, type(None)})
"""Value types shared between grains (immutable); other values are converted anew."""
_STATE_TYPES: frozenset[type] = _VALUE_TYPES | {BaseTag, VR_}
_CONTAINER_TYPES: frozenset[type] = frozenset({dict, list, set, tuple})
_NO_VALUE = object()
_LUT_TAGS = (0x00281101, 0x00281102, 0x00281103, 0x00283002)
"""LUT Descriptors, whose first value pydicom's hook fixes up after conversion."""
_STATE_TAGS = frozenset({0x00080005, 0x00280103, *_LUT_TAGS})
"""Tags whose values change the state of their data set (character set, pixel
representation, LUT descriptor fix-up): never a varying slot."""
_MAX_TEMPLATES = 32
_MAX_TEMPLATES_PER_SIZE = 4
_MAX_TEMPLATE_ELEMENTS = 4096


class _Slot:
    """One leaf element of a template: where its value lies and how to convert it."""

    __slots__ = ("start", "end", "raw", "value", "varying", "vr", "tag", "tell",
                 "encoding", "convert", "fmt")  # fmt: skip

    def __init__(self, start: int, end: int, raw: bytes, vr: str, tag: BaseTag,
                 tell: int | None, encoding: str | MutableSequence[str],
                 varying: bool) -> None:  # fmt: skip
        self.start = start
        self.end = end
        self.raw = raw
        self.vr = vr
        self.tag = tag
        self.tell = tell
        self.encoding = encoding
        self.varying = varying
        self.value: Any = _NO_VALUE
        self.convert: Any = None
        self.fmt: str | None = None


class _ElemNode:
    """A DataElement of a template: its attributes but the value, and either the index
    of its slot (a leaf) or its Sequence's attributes and items."""

    __slots__ = ("tag", "state", "slot", "seq_state", "items")

    def __init__(self, tag: BaseTag, state: dict[str, Any]) -> None:
        self.tag = tag
        self.state = state
        self.slot = -1
        self.seq_state: dict[str, Any] = {}
        self.items: list[_DatasetNode] = []


class _DatasetNode:
    """A Dataset of a template: its attributes but the elements (``copies`` name the
    containers each new data set gets its own copy of) and its elements in order."""

    __slots__ = ("state", "copies", "elems")

    def __init__(self, state: dict[str, Any], copies: tuple[str, ...]) -> None:
        self.state = state
        self.copies = copies
        self.elems: list[_ElemNode] = []


class _Template:
    """The layout of one accepted data set: fixed bytes, value slots, object states."""

    __slots__ = ("fixed", "slots", "root")

    def __init__(self, fixed: list[tuple[int, bytes]], slots: list[_Slot],
                 root: _DatasetNode) -> None:  # fmt: skip
        self.fixed = fixed
        self.slots = slots
        self.root = root


_templates: dict[int, list[_Template]] = {}
_templates_state: tuple[object, ...] | None = None
_accepted_sizes: set[int] = set()


def _pydicom_state() -> tuple[object, ...] | None:
    """What pydicom's conversion of a value depends on besides its bytes, or None when
    a callback or hook other than pydicom's own is installed (no fast path then)."""
    if (
        pydicom_config.data_element_callback is not None
        or pydicom_hooks.hooks.raw_element_kwargs
        or pydicom_hooks.hooks.raw_element_vr is not pydicom_hooks.raw_element_vr
        or pydicom_hooks.hooks.raw_element_value is not pydicom_hooks.raw_element_value
    ):
        return None
    return (_CONFIG_VALUES(pydicom_config), settings_state())


def _config_getter() -> Callable[[Any], Any]:
    names = sorted(
        name
        for name, value in vars(pydicom_config).items()
        if not name.startswith("__") and type(value) in (bool, int, float, str)
    )
    return operator.attrgetter(*names)


_CONFIG_VALUES = _config_getter()


def _snapshot(obj: object, skip: str) -> tuple[dict[str, Any], tuple[str, ...]] | None:
    """The attributes of ``obj`` but ``skip``, when all are plain values or containers
    of plain values (copied); None otherwise."""
    state: dict[str, Any] = {}
    copies: list[str] = []
    for name, value in snapshot_state(obj).items():
        if name == skip:
            continue
        kind = type(value)
        if kind in _STATE_TYPES:
            state[name] = value
            continue
        if kind not in _CONTAINER_TYPES:
            return None
        members = list(value.items()) if kind is dict else [(v, None) for v in value]
        for key, member in members:
            if type(key) not in _STATE_TYPES or type(member) not in _STATE_TYPES:
                return None
        state[name] = value if kind is tuple else value.copy()
        if kind is not tuple:
            copies.append(name)
    return state, tuple(copies)


def _hook_convert(slot: _Slot, raw: bytes) -> Any:
    """The value pydicom's ``raw_element_value`` hook gives for ``raw`` in ``slot``."""
    data: dict[str, Any] = {"VR": slot.vr}
    element = RawDataElement(slot.tag, slot.vr, len(raw), raw, slot.tell or 0, False, True)
    pydicom_hooks.raw_element_value(element, data, encoding=slot.encoding, ds=None)
    if data["VR"] != slot.vr:
        raise ValueError("VR changed")
    return data["value"]


def _same_value(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    try:
        return bool(a == b)
    except Exception:  # e.g. numpy arrays: not comparable as one bool
        return False


class _Builder:
    """Walk an accepted body and its data set in step, making a :class:`_Template`."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.slots: list[_Slot] = []
        self.varying: list[tuple[int, int]] = []

    def dataset(
        self, ds: Dataset, pos: int, limit: int, until_delim: bool, dynamic: bool
    ) -> tuple[_DatasetNode, int] | None:
        snap = _snapshot(ds, DATASET_ELEMENTS)
        if snap is None or type(ds) is not Dataset:
            return None
        node = _DatasetNode(*snap)
        encoding = ds.original_character_set or dataset_character_set(ds)
        elements = list(dataset_elements(ds).items())
        body = self.body
        i = 0
        while not (pos == limit and not until_delim):
            g, e = _TAG.unpack_from(body, pos)
            tag = g << 16 | e
            if tag == _ITEM_DELIM and until_delim:
                pos += 8
                break
            vr_bytes = body[pos + 4 : pos + 6]
            if vr_bytes in _LONG_VRS:
                (vlen,) = _U32.unpack_from(body, pos + 8)
                pos += 12
            else:
                (vlen,) = struct.unpack_from("<H", body, pos + 6)
                pos += 8
            if i >= len(elements) or len(self.slots) > _MAX_TEMPLATE_ELEMENTS:
                return None
            key, elem = elements[i]
            i += 1
            if key != tag or type(elem) is not DataElement:
                return None
            esnap = _snapshot(elem, ELEMENT_VALUE)
            vr = vr_bytes.decode("ascii")
            if esnap is None or esnap[1] or elem.VR != vr or vr == "UN":
                return None
            enode = _ElemNode(key, esnap[0])
            node.elems.append(enode)
            if vr == "SQ":
                found = self.sequence(elem.value, pos, vlen, limit, dynamic or (
                    tag == CURRENT_FRAME_FUNCTIONAL_GROUPS_SEQUENCE), enode)  # fmt: skip
                if found is None:
                    return None
                pos = found
                continue
            enode.slot = len(self.slots)
            slot = self.leaf(elem, pos, vlen, vr, key, encoding if tag != 0x00080005 else (
                default_encoding), dynamic)  # fmt: skip
            if slot is None:
                return None
            self.slots.append(slot)
            pos += vlen
        if i != len(elements):
            return None
        return node, pos

    def sequence(
        self, seq: Any, pos: int, vlen: int, limit: int, dynamic: bool, enode: _ElemNode
    ) -> int | None:
        snap = _snapshot(seq, SEQUENCE_ITEMS) if type(seq) is DicomSequence else None
        if snap is None or snap[1]:
            return None
        enode.seq_state = snap[0]
        items = list(seq)
        end = limit if vlen == _UNDEFINED else pos + vlen
        body = self.body
        k = 0
        while not (vlen != _UNDEFINED and pos == end):
            g, e, ilen = struct.unpack_from("<HHI", body, pos)
            pos += 8
            if g << 16 | e == _SEQ_DELIM:
                break
            if k >= len(items):
                return None
            if ilen == _UNDEFINED:
                found = self.dataset(items[k], pos, end, True, dynamic)
            else:
                found = self.dataset(items[k], pos, pos + ilen, False, dynamic)
            if found is None:
                return None
            enode.items.append(found[0])
            pos = found[1]
            k += 1
        return pos if k == len(items) else None

    def leaf(self, elem: DataElement, pos: int, vlen: int, vr: str, tag: BaseTag,
             encoding: str | MutableSequence[str], dynamic: bool) -> _Slot | None:  # fmt: skip
        raw = self.body[pos : pos + vlen]
        varying = dynamic and vlen > 0 and tag not in _STATE_TAGS and not tag.is_private
        slot = _Slot(pos, pos + vlen, raw, vr, tag, elem.file_tell, encoding, varying)
        value = elem.value
        if type(value) in _VALUE_TYPES:
            slot.value = value
        # A value is converted by pydicom's converter for its VR when calling it directly
        # is what the hook would do (plain VRs, non-empty value), else by the hook.
        converter = cast(dict[str, Any], pydicom_converters).get(vr)
        if vlen and converter is not None and vr not in _HOOK_VRS and tag not in _STATE_TAGS:
            slot.convert, slot.fmt = converter if isinstance(converter, tuple) else (
                converter, None)  # fmt: skip
        if varying or slot.value is _NO_VALUE:
            # converted again for each grain: the conversion must give pydicom's value
            try:
                again = (
                    slot.convert(raw, True, slot.fmt) if slot.convert is not None
                    else _hook_convert(slot, raw)
                )  # fmt: skip
            except Exception:
                return None
            if not _same_value(again, value):
                return None
        if varying:
            self.varying.append((pos, pos + vlen))
        return slot


_HOOK_VRS = frozenset({"SQ", "PN", *(str(vr) for vr in CUSTOMIZABLE_CHARSET_VR)})
"""VRs whose conversion needs the character set: always through pydicom's hook."""


def _remember(body: bytes, ds: Dataset) -> None:
    """Keep the layout of an accepted body (read by pydicom) as a template.

    Only from the second accepted body of a size on: a grain that never repeats (a
    one-off, a fuzzer's) costs no template.
    """
    global _templates_state
    state = _pydicom_state()
    if state is None:
        return
    if state != _templates_state:
        _templates.clear()
        _accepted_sizes.clear()
        _templates_state = state
    if len(body) not in _accepted_sizes:
        if len(_accepted_sizes) >= 4 * _MAX_TEMPLATES:
            _accepted_sizes.clear()
        _accepted_sizes.add(len(body))
        return
    builder = _Builder(body)
    found = builder.dataset(ds, 0, len(body), False, False)
    if found is None or found[1] != len(body):
        return
    fixed: list[tuple[int, bytes]] = []
    pos = 0
    for start, end in sorted(builder.varying):
        if start > pos:
            fixed.append((pos, body[pos:start]))
        pos = end
    if pos < len(body):
        fixed.append((pos, body[pos:]))
    template = _Template(fixed, builder.slots, found[0])
    if sum(map(len, list(_templates.values()))) >= _MAX_TEMPLATES:
        _templates.clear()
    same_size = _templates.setdefault(len(body), [])
    same_size.insert(0, template)
    del same_size[_MAX_TEMPLATES_PER_SIZE:]


def _clear_caches() -> None:
    """Forget every remembered meta header and template (tests)."""
    global _templates_state
    _META_CACHE.clear()
    _templates.clear()
    _accepted_sizes.clear()
    _templates_state = None


def _from_template(body: bytes) -> Dataset | None:
    """The data set of ``body`` built from a matching template, or None.

    A template matches when every byte outside its varying values is equal: the body
    then has the same structure (so :func:`_check_body` would pass), the same fixed
    values and character sets, and pydicom would read the same objects with the values
    its converters give for the varying bytes. A value whose conversion fails sends the
    body to the reference reader, which reports it.
    """
    candidates = _templates.get(len(body))
    if not candidates or _pydicom_state() != _templates_state:
        return None
    for template in candidates:
        if all(body.startswith(part, at) for at, part in template.fixed):
            break
    else:
        return None
    values: list[Any] = []
    for slot in template.slots:
        value = slot.value
        if value is _NO_VALUE or (slot.varying and not body.startswith(slot.raw, slot.start)):
            raw = body[slot.start : slot.end]
            try:
                if slot.convert is not None:
                    value = slot.convert(raw, True, slot.fmt)
                else:
                    value = _hook_convert(slot, raw)
            except Exception:  # the reference reader reports it, in its own words
                return None
        values.append(value)
    return _build(template.root, values)


def _build(node: _DatasetNode, values: list[Any]) -> Dataset:
    """A new data set from ``node``: fresh objects, states copied, values from ``values``."""
    elements: dict[BaseTag, DataElement] = {}
    for enode in node.elems:
        if enode.slot >= 0:
            value = values[enode.slot]
        else:
            value = new_sequence(enode.seq_state, [_build(i, values) for i in enode.items])
        elements[enode.tag] = new_element(enode.state, value)
    state = {**node.state, DATASET_ELEMENTS: elements}
    for name in node.copies:
        state[name] = state[name].copy()
    return new_dataset(state)


def split_static(dataset: Dataset) -> Dataset:
    """The static part of a grain's data set: every element but group 0006."""
    out = Dataset()
    for elem in dataset:
        if elem.tag.group != 0x0006:
            out.add(elem)
    return out


# --------------------------------------------------------------------------------------
# RTP transport of grains (spec/ps322.md §2.6, our rule; PS3.22 §6.2.1 for the extension)
# --------------------------------------------------------------------------------------

_RTP_FIXED = 12
_EXT_HEADER = 4


class MetadataPacketizer:
    """Split grains into RTP packets of one metadata flow.

    Parameters
    ----------
    ssrc : int
        The metadata flow's SSRC.
    extmap : ExtMap
        The ``a=extmap`` identifiers of this flow's SDP.
    source_id, flow_id : uuid.UUID
        The metadata flow's NMOS identifiers (equal to (0002,0035)/(0002,0036)).
    payload_type : int
        Dynamic payload type, 104 by default (PS3.2 L example).
    max_payload : int
        Largest datagram (UDP payload: RTP header, extension and grain bytes), 1460 by
        default (the ST 2110-10 standard UDP size limit).
    sequence : int
        Sequence number of the first packet.
    grain_duration : Fraction or None
        Sent as the NMOS grain-duration item in the first packet when given.
    """

    def __init__(
        self,
        *,
        ssrc: int,
        extmap: ExtMap,
        source_id: uuid.UUID,
        flow_id: uuid.UUID,
        payload_type: int = 104,
        max_payload: int = 1460,
        sequence: int = 0,
        grain_duration: Fraction | None = None,
    ) -> None:
        if not 0 <= ssrc <= 0xFFFFFFFF:
            raise LocalProtocolError(f"ssrc: {ssrc} is outside 0..2**32-1")
        if not 96 <= payload_type <= 127:
            raise LocalProtocolError(f"payload_type: {payload_type} is not dynamic (96..127)")
        if not 128 <= max_payload <= 65507:
            raise LocalProtocolError(f"max_payload: {max_payload} is not 128..65507")
        self.ssrc = ssrc
        self.extmap = extmap
        self.source_id = source_id
        self.flow_id = flow_id
        self.payload_type = payload_type
        self.max_payload = max_payload
        self.sequence = sequence & 0xFFFF
        self.grain_duration = grain_duration
        self._last_ext = NmosExtension(grain_end=True).encode(extmap)

    def packetize(
        self, grain: bytes, rtp_timestamp: int, *, sync: PtpTimestamp, origin: PtpTimestamp
    ) -> list[bytes]:
        """The datagrams of one grain, all with ``rtp_timestamp`` (the described frame's).

        Raises
        ------
        LocalProtocolError
            For an empty grain.
        """
        if not grain:
            raise LocalProtocolError("grain: empty")
        ts = rtp_timestamp & 0xFFFFFFFF

        def first_ext(end: bool) -> bytes:
            return NmosExtension(
                sync_timestamp=sync,
                origin_timestamp=origin,
                flow_id=self.flow_id,
                source_id=self.source_id,
                grain_start=True,
                grain_end=end,
                grain_duration=self.grain_duration,
            ).encode(self.extmap)

        only = first_ext(True)
        if len(grain) <= self.max_payload - _RTP_FIXED - _EXT_HEADER - len(only):
            return [self._packet(ts, only, grain, marker=True)]
        head = first_ext(False)
        first_cap = self.max_payload - _RTP_FIXED - _EXT_HEADER - len(head)
        middle_cap = self.max_payload - _RTP_FIXED
        last_cap = self.max_payload - _RTP_FIXED - _EXT_HEADER - len(self._last_ext)
        out = [self._packet(ts, head, grain[:first_cap], marker=False)]
        pos = first_cap
        while len(grain) - pos > last_cap:
            n = min(middle_cap, len(grain) - pos - 1)
            out.append(self._packet(ts, None, grain[pos : pos + n], marker=False))
            pos += n
        out.append(self._packet(ts, self._last_ext, grain[pos:], marker=True))
        return out

    def _packet(self, ts: int, ext: bytes | None, payload: bytes, *, marker: bool) -> bytes:
        pkt = RtpPacket(
            payload_type=self.payload_type,
            sequence=self.sequence,
            timestamp=ts,
            ssrc=self.ssrc,
            marker=marker,
            extension_profile=None if ext is None else PROFILE_ONE_BYTE,
            extension=ext or b"",
            payload=payload,
        )
        self.sequence = (self.sequence + 1) & 0xFFFF
        return pkt.to_bytes()


@dataclass
class GrainEvent:
    """A complete, validated grain.

    Attributes
    ----------
    ssrc, rtp_timestamp : int
    grain : Grain
    extension : NmosExtension
        The NMOS items of the grain's first packet (sync/origin/flow/source).
    packets : int
        Datagrams the grain spanned.
    """

    ssrc: int
    rtp_timestamp: int
    grain: Grain
    extension: NmosExtension
    packets: int = 1


@dataclass
class GrainDropped:
    """A grain that was dropped; ``reason`` says why (gap, cap, invalid field...)."""

    ssrc: int
    rtp_timestamp: int
    reason: str


@dataclass
class MetadataStats:
    """Counters of a :class:`MetadataDepacketizer`.

    ``lost``, ``reordered`` and ``duplicates`` are sequence accounting (RFC 3550 A.1,
    :class:`~rtstream.proto.rtp.SequenceTracker`) of every datagram with an RTP version 2
    fixed header, whatever becomes of it afterwards: a duplicate is a sequence number
    seen within the last 1024 (or again within its grain, when SSRCs interleave);
    ``lost`` keeps what earlier SSRCs lost. A duplicate is dropped; one of a grain
    already closed also counts as ``late``.
    """

    packets: int = 0
    malformed: int = 0
    wrong_payload_type: int = 0
    duplicates: int = 0
    lost: int = 0
    reordered: int = 0
    late: int = 0
    grains: int = 0
    dropped: int = 0
    invalid: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counters by name."""
        return dict(self.__dict__)


@dataclass
class _Partial:
    ssrc: int
    ts: int
    created_ns: int
    packets: dict[int, bytes] = field(default_factory=dict)
    size: int = 0
    start_seq: int | None = None
    end_seq: int | None = None
    ext: NmosExtension | None = None


class MetadataDepacketizer:
    """Reassemble grains from metadata datagrams, per (SSRC, RTP timestamp).

    A grain is emitted only when every packet from the start (grain-flags S, or the
    packet carrying the origin timestamp) to the end (marker bit or grain-flags E) has
    arrived; packets may come in any order within a grain. It is dropped, never
    partially parsed, when a packet with a newer timestamp arrives on its SSRC first,
    when it outlives ``max_age_ns``, when it exceeds ``max_grain_bytes`` or
    ``max_packets_per_grain``, when more than ``max_partial_grains`` are open, or when
    its content fails :func:`decode_grain`. Every drop is a :class:`GrainDropped` with a
    reason, counted in ``stats.dropped`` (and ``stats.invalid`` for content that fails
    decoding, reason ``"invalid grain: <field>: ..."``); :meth:`feed` never raises for
    network input, because :func:`decode_grain` raises only RemoteProtocolError, the one
    exception caught here.

    Parameters
    ----------
    extmap : ExtMap
        The ``a=extmap`` identifiers of the flow's SDP.
    max_grain_bytes : int
        Largest grain accepted (memory cap), 1 MiB by default.
    payload_type : int or None
        Accept only this payload type when given.
    max_packets_per_grain : int
    max_partial_grains : int
        Partial grains kept at once, over all SSRCs; the oldest goes first.
    max_age_ns : int
        A partial grain older than this (by ``now``) is dropped.
    """

    def __init__(
        self,
        *,
        extmap: ExtMap,
        max_grain_bytes: int = 1 << 20,
        payload_type: int | None = None,
        max_packets_per_grain: int = 1024,
        max_partial_grains: int = 8,
        max_age_ns: int = 1_000_000_000,
    ) -> None:
        if max_grain_bytes < PREAMBLE_SIZE + 16:
            raise LocalProtocolError(f"max_grain_bytes: {max_grain_bytes} is too small")
        if max_packets_per_grain < 1 or max_partial_grains < 1 or max_age_ns <= 0:
            raise LocalProtocolError("max_packets_per_grain, max_partial_grains, max_age_ns: > 0")
        self.extmap = extmap
        self.max_grain_bytes = max_grain_bytes
        self.payload_type = payload_type
        self.max_packets_per_grain = max_packets_per_grain
        self.max_partial_grains = max_partial_grains
        self.max_age_ns = max_age_ns
        self.stats = MetadataStats()
        self._seq = SequenceTracker(window=1024)
        self._grain_repeats = 0  # duplicates only the grain noticed (interleaved SSRCs)
        self._partials: OrderedDict[tuple[int, int], _Partial] = OrderedDict()
        self._latest_ts: OrderedDict[int, int] = OrderedDict()  # ssrc -> newest timestamp
        self._closed: OrderedDict[tuple[int, int], None] = OrderedDict()

    def feed(
        self, datagram: bytes | bytearray | memoryview, now: int
    ) -> list[GrainEvent | GrainDropped]:
        """Take one datagram; return the grains it completed or caused to be dropped."""
        events: list[GrainEvent | GrainDropped] = []
        self._expire(now, events)
        self.stats.packets += 1
        arrival = None
        if len(datagram) >= RTP_HEADER_SIZE and datagram[0] >> 6 == RTP_VERSION:
            arrival = self._seq.add(
                int.from_bytes(datagram[8:12], "big"), int.from_bytes(datagram[2:4], "big")
            )
            self._update_seq_stats()
        try:
            pkt = parse_rtp(datagram)
            ext = None
            if pkt.extension_profile == PROFILE_ONE_BYTE:
                ext = NmosExtension.decode(pkt.extension, self.extmap)
        except RemoteProtocolError as exc:
            self.stats.malformed += 1
            logger.debug("metadata packet dropped: %s", exc)
            return events
        if self.payload_type is not None and pkt.payload_type != self.payload_type:
            self.stats.wrong_payload_type += 1
            return events
        key = (pkt.ssrc, pkt.timestamp)
        if key in self._closed:
            self.stats.late += 1
            return events
        partial = self._partials.get(key)
        if partial is None:
            newest = self._latest_ts.get(pkt.ssrc)
            if newest is not None and ts_diff(pkt.timestamp, newest) < 0:
                self.stats.late += 1
                return events
            old = self._partials.get((pkt.ssrc, newest)) if newest is not None else None
            if old is not None:
                self._drop(old, self._incomplete_reason(old) + " (closed by a newer timestamp)",
                           events)  # fmt: skip
            self._latest_ts[pkt.ssrc] = pkt.timestamp
            self._latest_ts.move_to_end(pkt.ssrc)
            while len(self._latest_ts) > 4 * self.max_partial_grains:
                self._latest_ts.popitem(last=False)
            partial = _Partial(pkt.ssrc, pkt.timestamp, now)
            self._partials[key] = partial
            while len(self._partials) > self.max_partial_grains:
                oldest = next(iter(self._partials.values()))
                self._drop(oldest, "too many concurrent partial grains", events)
        if pkt.sequence in partial.packets:
            if arrival is not Arrival.DUPLICATE:
                self._grain_repeats += 1
                self._update_seq_stats()
            return events
        partial.packets[pkt.sequence] = pkt.payload
        partial.size += len(pkt.payload)
        if partial.size > self.max_grain_bytes:
            self._drop(partial, f"grain exceeds max_grain_bytes={self.max_grain_bytes}", events)
            return events
        if len(partial.packets) > self.max_packets_per_grain:
            self._drop(
                partial, f"grain exceeds max_packets_per_grain={self.max_packets_per_grain}", events
            )
            return events
        if ext is not None and (ext.grain_start or ext.origin_timestamp is not None):
            if partial.start_seq is not None:
                self._drop(partial, "two start packets in one grain", events)
                return events
            partial.start_seq = pkt.sequence
            partial.ext = ext
        if pkt.marker or (ext is not None and ext.grain_end):
            if partial.end_seq is not None and partial.end_seq != pkt.sequence:
                self._drop(partial, "two end packets in one grain", events)
                return events
            partial.end_seq = pkt.sequence
        if partial.start_seq is not None and partial.end_seq is not None:
            self._try_complete(partial, events)
        return events

    def _update_seq_stats(self) -> None:
        seq = self._seq
        self.stats.lost = seq.lost
        self.stats.reordered = seq.reordered
        self.stats.duplicates = seq.duplicates + self._grain_repeats

    def flush(self) -> list[GrainEvent | GrainDropped]:
        """Drop every partial grain (end of stream)."""
        events: list[GrainEvent | GrainDropped] = []
        for partial in list(self._partials.values()):
            self._drop(partial, self._incomplete_reason(partial) + " (flushed)", events)
        return events

    def _expire(self, now: int, events: list[GrainEvent | GrainDropped]) -> None:
        for partial in list(self._partials.values()):
            if now - partial.created_ns > self.max_age_ns:
                self._drop(partial, self._incomplete_reason(partial) + " (timed out)", events)

    @staticmethod
    def _incomplete_reason(p: _Partial) -> str:
        if p.start_seq is None:
            return "first packet (grain-flags S) lost"
        if p.end_seq is None:
            return "last packet (marker) lost"
        span = seq_diff(p.end_seq, p.start_seq) + 1
        return f"sequence gap: {span - len(p.packets)} of {span} packets missing"

    def _close(self, p: _Partial) -> None:
        self._partials.pop((p.ssrc, p.ts), None)
        self._closed[(p.ssrc, p.ts)] = None
        while len(self._closed) > 64:
            self._closed.popitem(last=False)

    def _drop(self, p: _Partial, reason: str, events: list[GrainEvent | GrainDropped]) -> None:
        self._close(p)
        self.stats.dropped += 1
        logger.debug("grain ssrc=%08x ts=%d dropped: %s", p.ssrc, p.ts, reason)
        events.append(GrainDropped(p.ssrc, p.ts, reason))

    def _try_complete(self, p: _Partial, events: list[GrainEvent | GrainDropped]) -> None:
        assert p.start_seq is not None and p.end_seq is not None
        span = seq_diff(p.end_seq, p.start_seq) + 1
        if span < 1 or span > self.max_packets_per_grain:
            self._drop(p, f"end packet precedes or is too far from the start ({span})", events)
            return
        seqs = [seq_add(p.start_seq, i) for i in range(span)]
        if len(p.packets) < span or any(s not in p.packets for s in seqs):
            if len(p.packets) > span:
                self._drop(p, "packets outside the grain's start..end range", events)
            return  # wait: the missing packets may only be reordered
        if len(p.packets) != span:
            self._drop(p, "packets outside the grain's start..end range", events)
            return
        data = b"".join(p.packets[s] for s in seqs)
        self._close(p)
        assert p.ext is not None
        try:
            grain = decode_grain(data)
            if p.ext.flow_id is not None and p.ext.flow_id != grain.meta.flow_id:
                raise RemoteProtocolError(
                    "(0002,0036) RTV Flow Identifier", "differs from the NMOS flow-id"
                )
            if p.ext.source_id is not None and p.ext.source_id != grain.meta.source_id:
                raise RemoteProtocolError(
                    "(0002,0035) RTV Source Identifier", "differs from the NMOS source-id"
                )
        except RemoteProtocolError as exc:
            self.stats.invalid += 1
            self.stats.dropped += 1
            logger.debug("grain ssrc=%08x ts=%d invalid: %s", p.ssrc, p.ts, exc)
            events.append(GrainDropped(p.ssrc, p.ts, f"invalid grain: {exc}"))
            return
        self.stats.grains += 1
        events.append(GrainEvent(p.ssrc, p.ts, grain, p.ext, span))


# --------------------------------------------------------------------------------------
# Audio metadata: one grain per audio packet (spec/ps322.md §2.5 and §9 question 5)
# --------------------------------------------------------------------------------------


def audio_packet_grains(
    rtp_timestamp: int, capture_ns: int, *, packets: int, samples_per_packet: int, sample_rate: int
) -> list[tuple[int, PtpTimestamp]]:
    """RTP timestamp and Frame Origin Timestamp of each audio packet of a chunk.

    PS3.22 §6.2.2 puts the dynamic part of the Real-Time Audio Waveform IOD in every
    grain, and PS3.17 PPPP.9 says the audio metadata is sent "for every sample"; we read
    one grain per ST 2110-30 packet (per ``ptime``), stamped with that packet's RTP
    timestamp (its first sample, RFC 3551 §4.2) so a receiver pairs grain and packet as
    it pairs a video frame with its grain (PS3.17 PPPP.7). Packet ``i`` of a chunk that
    starts at ``rtp_timestamp``/``capture_ns`` starts ``i * samples_per_packet`` samples
    later; its origin is that sample's instant, rounded down to the nanosecond.

    Raises
    ------
    LocalProtocolError
        For a non-positive packet count, packet size or rate.
    """
    if packets < 1 or samples_per_packet < 1 or sample_rate < 1:
        raise LocalProtocolError(
            f"audio grains: packets={packets}, samples_per_packet={samples_per_packet}, "
            f"sample_rate={sample_rate} must all be positive")
    out = []
    for i in range(packets):
        offset = i * samples_per_packet
        out.append(((rtp_timestamp + offset) & 0xFFFFFFFF,
                    PtpTimestamp.from_ns(capture_ns + offset * NS_PER_S // sample_rate)))
    return out
