"""RFC 8285 one-byte elements and the NMOS identity/timing items (PS3.22 §6.2.1)."""

from __future__ import annotations

import uuid
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtstream.errors import LocalProtocolError, RemoteProtocolError
from rtstream.proto.clock import PtpTimestamp
from rtstream.proto.nmos_ext import (
    PROFILE_ONE_BYTE,
    ExtMap,
    NmosExtension,
    NmosItem,
    decode_elements,
    encode_elements,
)
from rtstream.proto.rtp import RtpPacket, parse_rtp
from tests.vectors.nmos_vectors import (
    BAD_LENGTH_VECTORS,
    FOUR_ITEMS,
    FOUR_ITEMS_BODY,
    LENIENT,
    LENIENT_BODY,
    NMOS_VECTORS,
)
from tests.vectors.rtp_vectors import NMOS_60

EXTMAP = ExtMap.default()
ELEMENT = "RTP header extension element"
NMOS_FIELDS = {ELEMENT} | {f"NMOS {item.short_name}" for item in NmosItem}


@pytest.mark.parametrize(("name", "body", "ext"), NMOS_VECTORS, ids=[v[0] for v in NMOS_VECTORS])
def test_vector_decode(name: str, body: bytes, ext: NmosExtension) -> None:
    assert NmosExtension.decode(body, EXTMAP) == ext


@pytest.mark.parametrize(("name", "body", "ext"), NMOS_VECTORS, ids=[v[0] for v in NMOS_VECTORS])
def test_vector_encode(name: str, body: bytes, ext: NmosExtension) -> None:
    assert ext.encode(EXTMAP) == body
    assert len(body) % 4 == 0


def test_spec_60_byte_example() -> None:
    """spec §2.3: four items = 56 bytes of elements, length 14 words, 60 with the header."""
    assert len(FOUR_ITEMS_BODY) == 56
    packet = parse_rtp(NMOS_60)
    assert packet.extension_profile == PROFILE_ONE_BYTE
    assert NMOS_60[12:16] == b"\xbe\xde\x00\x0e"
    assert packet.header_size - 12 == 60
    assert NmosExtension.decode(packet.extension, EXTMAP) == FOUR_ITEMS
    assert [i for i, _ in decode_elements(packet.extension)] == [1, 2, 3, 4]
    # the four items plus grain-flags need 2 padding bytes: length 15
    with_flags = NmosExtension(
        sync_timestamp=FOUR_ITEMS.sync_timestamp,
        origin_timestamp=FOUR_ITEMS.origin_timestamp,
        flow_id=FOUR_ITEMS.flow_id,
        source_id=FOUR_ITEMS.source_id,
        grain_start=True,
    ).encode(EXTMAP)
    assert len(with_flags) == 60 and with_flags.endswith(b"\x50\x80\x00\x00")


def test_lenient_padding_unknown_id_and_reserved_15() -> None:
    assert decode_elements(LENIENT_BODY) == [(5, b"\x80"), (7, b"\xaa\xbb")]
    assert NmosExtension.decode(LENIENT_BODY, EXTMAP) == LENIENT


def test_other_extmap_ids() -> None:
    emap = ExtMap({NmosItem.FLOW_ID: 14, NmosItem.GRAIN_FLAGS: 1})
    ext = NmosExtension(flow_id=uuid.UUID(int=7), grain_end=True)
    body = ext.encode(emap)
    assert body[0] == 0xEF and body[17] == 0x10 and body[18] == 0x40  # item order
    assert NmosExtension.decode(body, emap) == ext
    # the default map reads id 1 as a sync timestamp: wrong length for it
    with pytest.raises(RemoteProtocolError) as exc:
        NmosExtension.decode(body, EXTMAP)
    assert exc.value.field == "NMOS sync-timestamp"
    # a map that knows none of the ids ignores everything
    assert NmosExtension.decode(body, ExtMap({NmosItem.SOURCE_ID: 2})) == NmosExtension()


def test_encode_needs_an_id_for_each_item() -> None:
    with pytest.raises(LocalProtocolError, match="flow-id"):
        NmosExtension(flow_id=uuid.uuid4()).encode(ExtMap({NmosItem.SOURCE_ID: 1}))


@pytest.mark.parametrize(
    ("name", "body", "item"), BAD_LENGTH_VECTORS, ids=[v[0] for v in BAD_LENGTH_VECTORS]
)
def test_bad_item_length_names_the_item(name: str, body: bytes, item: str) -> None:
    with pytest.raises(RemoteProtocolError) as exc:
        NmosExtension.decode(body, EXTMAP)
    assert exc.value.field == f"NMOS {item}"


def test_bad_item_values() -> None:
    bad_ns = b"\x19" + bytes(6) + (10**9).to_bytes(4, "big") + b"\x00"
    with pytest.raises(RemoteProtocolError) as exc:
        NmosExtension.decode(bad_ns, EXTMAP)
    assert exc.value.field == "NMOS sync-timestamp"
    zero_den = b"\x67" + b"\x00\x00\x00\x01" + bytes(4) + bytes(3)
    with pytest.raises(RemoteProtocolError) as exc:
        NmosExtension.decode(zero_den, EXTMAP)
    assert exc.value.field == "NMOS grain-duration"
    twice = b"\x50\x80\x50\x40"
    with pytest.raises(RemoteProtocolError) as exc:
        NmosExtension.decode(twice, EXTMAP)
    assert exc.value.field == "NMOS grain-flags"
    with pytest.raises(RemoteProtocolError) as exc:
        decode_elements(b"\x05\x00\x00\x00")  # id 0 with a length: not padding
    assert exc.value.field == ELEMENT


@pytest.mark.parametrize(("name", "body", "ext"), NMOS_VECTORS, ids=[v[0] for v in NMOS_VECTORS])
def test_every_truncated_prefix(name: str, body: bytes, ext: NmosExtension) -> None:
    boundaries = {0}
    pos = 0
    for _, data in decode_elements(body):
        pos += 1 + len(data)
        boundaries.add(pos)
    for k in range(len(body)):
        prefix = body[:k]
        if k in boundaries or k >= pos:  # whole elements, maybe padding: fewer items
            got = NmosExtension.decode(prefix, EXTMAP)
            assert got != ext or k >= pos
        else:  # cut inside an element
            with pytest.raises(RemoteProtocolError) as exc:
                NmosExtension.decode(prefix, EXTMAP)
            assert exc.value.field == ELEMENT


@given(st.binary(max_size=80))
def test_garbage_raises_only_remote_errors_naming_the_field(body: bytes) -> None:
    try:
        NmosExtension.decode(body, EXTMAP)
    except RemoteProtocolError as e:
        assert e.field in NMOS_FIELDS


elements = st.lists(st.tuples(st.integers(1, 14), st.binary(min_size=1, max_size=16)), max_size=12)


@given(elements)
def test_elements_roundtrip(els: list[tuple[int, bytes]]) -> None:
    body = encode_elements(els)
    assert len(body) % 4 == 0
    assert decode_elements(body) == els


def test_encode_elements_misuse() -> None:
    for bad in ([(0, b"x")], [(15, b"x")], [(1, b"")], [(1, bytes(17))]):
        with pytest.raises(LocalProtocolError):
            encode_elements(bad)


ptp = st.builds(PtpTimestamp, st.integers(0, (1 << 48) - 1), st.integers(0, 10**9 - 1))
extensions = st.builds(
    NmosExtension,
    sync_timestamp=st.none() | ptp,
    origin_timestamp=st.none() | ptp,
    flow_id=st.none() | st.uuids(),
    source_id=st.none() | st.uuids(),
    grain_start=st.booleans(),
    grain_end=st.booleans(),
    grain_duration=st.none()
    | st.builds(Fraction, st.integers(0, 0xFFFFFFFF), st.integers(1, 0xFFFFFFFF)),
)
extmaps = st.permutations(list(range(1, 15))).map(
    lambda ids: ExtMap(dict(zip(NmosItem, ids[:6], strict=True)))
)


@given(extensions, extmaps)
def test_extension_roundtrip(ext: NmosExtension, emap: ExtMap) -> None:
    body = ext.encode(emap)
    assert NmosExtension.decode(body, emap) == ext
    # and inside a whole RTP packet
    pkt = RtpPacket(
        payload_type=104,
        sequence=1,
        timestamp=2,
        ssrc=3,
        extension_profile=PROFILE_ONE_BYTE,
        extension=body,
    )
    assert NmosExtension.decode(parse_rtp(pkt.to_bytes()).extension, emap) == ext


def test_extmap_validation_and_lookup() -> None:
    m = ExtMap.default()
    assert m.item(3) is NmosItem.FLOW_ID and m.item(9) is None
    assert [i for i, _ in m] == [1, 2, 3, 4, 5, 6]
    assert m == ExtMap(dict(reversed(list(m.ids.items()))))
    assert hash(m) == hash(ExtMap.default())
    assert NmosItem.GRAIN_DURATION.short_name == "grain-duration"
    for bad in (
        {NmosItem.FLOW_ID: 0},
        {NmosItem.FLOW_ID: 15},
        {NmosItem.FLOW_ID: 1, NmosItem.SOURCE_ID: 1},
    ):
        with pytest.raises(LocalProtocolError):
            ExtMap(bad)


def test_bad_grain_duration_is_local_error() -> None:
    with pytest.raises(LocalProtocolError):
        NmosExtension(grain_duration=Fraction(-1, 2))
    with pytest.raises(LocalProtocolError):
        NmosExtension(grain_duration=Fraction(1 << 33, 1))
