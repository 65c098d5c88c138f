"""Fuzz the PS3.22 metadata grain codec and its RTP reassembly (rtstream.proto.rtv_metadata).

* :func:`decode_grain` on valid grains (spec vector; endoscopic, photographic and audio
  grains with and without the static part) mutated structure-aware -- element VRs,
  lengths and tags found by walking the grain -- and byte-level.
* :meth:`MetadataDepacketizer.feed` on datagram sequences of valid grains with packets
  dropped, duplicated, reordered, byte-mutated, re-stamped and interleaved with garbage,
  under default and small caps.

Property: ``decode_grain`` raises only RemoteProtocolError (inside an address-space cap,
so that a length-driven allocation shows up as MemoryError rather than taking the machine
down); ``feed`` raises nothing and its partial-grain state stays under its caps.
"""

from __future__ import annotations

import random
import struct
import tracemalloc

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtstream.errors import RemoteProtocolError
from rtstream.proto.clock import PtpTimestamp
from rtstream.proto.nmos_ext import ExtMap
from rtstream.proto.rtv_metadata import (
    Grain,
    GrainDropped,
    GrainEvent,
    MetadataDepacketizer,
    MetadataPacketizer,
    RtvMetaInfo,
    decode_grain,
    decode_meta,
    encode_grain,
)
from tests.fuzz.strategies import (
    GrainStream,
    address_space_cap,
    element_offsets,
    fuzz_settings,
    gen_grain,
    grain_corpus,
    mutate,
    mutate_rows,
    only_protocol_errors,
    random_extmap,
    restamp,
)

BATCH = 10

# pydicom warns about every odd value it reads; the parser's answer is what is tested
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _check_grain(data: bytes) -> None:
    grain = only_protocol_errors(decode_grain, data)
    if grain is not None:
        assert isinstance(grain, Grain) and grain.raw == data


@fuzz_settings(per_example=BATCH)
@given(seed=st.integers(0, 2**64 - 1))
def test_decode_grain_raises_only_protocol_errors(seed: int) -> None:
    rng = random.Random(seed)
    with address_space_cap():
        for _ in range(BATCH):
            _check_grain(gen_grain(rng))


def test_valid_grains_decode() -> None:
    """The corpus the mutations start from is valid (so the fuzz reaches deep code)."""
    for g in grain_corpus():
        decode_grain(g)


def _check_caps(dp: MetadataDepacketizer) -> None:
    # The caps are constructor parameters; the state they bound has no public view.
    partials = dp._partials
    assert len(partials) <= dp.max_partial_grains
    for p in partials.values():
        assert p.size <= dp.max_grain_bytes
        assert len(p.packets) <= dp.max_packets_per_grain
    assert len(dp._latest_ts) <= 4 * dp.max_partial_grains
    assert len(dp._closed) <= 64


def run_sequence(seed: int, min_rows: int = BATCH) -> int:
    """Feed one random datagram sequence of at least ``min_rows`` valid datagrams (before
    mutation); return the number of datagrams fed."""
    rng = random.Random(seed)
    extmap = ExtMap.default() if rng.random() < 0.7 else random_extmap(rng, full=True)
    small = rng.random() < 0.3
    dp = MetadataDepacketizer(
        extmap=extmap,
        max_grain_bytes=rng.choice((1024, 4096)) if small else 1 << 20,
        payload_type=rng.choice((None, 104)),
        max_packets_per_grain=rng.choice((4, 16)) if small else 1024,
        max_partial_grains=rng.choice((1, 2)) if small else 8,
        max_age_ns=rng.choice((1_000_000, 10**9)),
    )
    streams = [GrainStream(rng, extmap) for _ in range(rng.choice((1, 1, 2, 3)))]
    rows: list[bytes] = []
    clean = rng.random() < 0.2
    while len(rows) < min_rows:
        rows += rng.choice(streams).grain(rng)
    if not clean:
        rows = mutate_rows(rows, rng, max_ops=10)
        for i in range(len(rows)):
            if rng.random() < 0.05:
                rows[i] = restamp(rows[i], ts=rng.getrandbits(32), ssrc=rng.choice(
                    [s.ssrc for s in streams] + [rng.getrandbits(32)]))  # fmt: skip
            elif rng.random() < 0.05:
                rows[i] = mutate(rows[i], rng, pool=rows)
    now = rng.getrandbits(40)
    completed = 0
    for row in rows:
        try:
            events = dp.feed(row, now)
        except Exception as exc:
            raise AssertionError(
                f"{type(exc).__name__} escaped MetadataDepacketizer.feed: {exc}\n"
                f"  datagram={row.hex()}\n  sequence={[r.hex() for r in rows]}"
            ) from exc
        for ev in events:
            assert isinstance(ev, GrainEvent | GrainDropped)
            if isinstance(ev, GrainEvent):
                completed += 1
                assert isinstance(ev.grain, Grain) and ev.packets >= 1
            else:
                assert ev.reason
        _check_caps(dp)
        now += rng.choice((0, 0, 1000, 20_000_000, 2 * 10**9))
    for ev in dp.flush():
        assert isinstance(ev, GrainDropped)
    assert not dp._partials
    stats = dp.stats
    assert stats.packets == len(rows)
    assert stats.invalid <= stats.dropped and stats.grains >= completed
    return len(rows)


@fuzz_settings(per_example=BATCH)
@given(seed=st.integers(0, 2**64 - 1))
def test_feed_never_raises_and_stays_under_caps(seed: int) -> None:
    with address_space_cap():
        run_sequence(seed)


def test_clean_sequences_complete() -> None:
    """Unmutated grains packetized with the defaults all come out (sanity of the driver)."""
    rng = random.Random(1)
    dp = MetadataDepacketizer(extmap=ExtMap.default())
    s = GrainStream(rng, ExtMap.default())
    events = []
    for i in range(20):
        for row in s.grain(rng, mutate_p=0):
            events += dp.feed(row, i)
    assert [type(e) for e in events] == [GrainEvent] * 20


def test_memory_is_bounded_under_a_flood() -> None:
    """8,000 datagrams that each open a new partial grain (new timestamps, new SSRCs,
    no end packets) leave the depacketizer's memory flat after the first 1,000."""
    rng = random.Random(5)
    dp = MetadataDepacketizer(extmap=ExtMap.default())
    first = GrainStream(rng, ExtMap.default()).grain(rng)[0]
    tracemalloc.start()
    try:
        samples = []
        for i in range(8_000):
            row = restamp(first, ts=rng.getrandbits(32), ssrc=rng.getrandbits(8), marker=False)
            dp.feed(row, i)
            if i in (999, 7_999):
                samples.append(tracemalloc.get_traced_memory()[0])
    finally:
        tracemalloc.stop()
    _check_caps(dp)
    assert samples[1] - samples[0] < 256 << 10


def retype(grain: bytes, tag: int, vr: bytes, value: bytes | None = None) -> bytes:
    """``grain`` with the VR of the first element ``tag`` replaced (same header form), and
    for a short-form VR its value replaced by ``value`` padded to the old element's span
    with a (0034,0008) filler element."""
    for pos, long in element_offsets(grain):
        g, e = struct.unpack_from("<HH", grain, pos)
        if (g << 16 | e) != tag:
            continue
        if value is None:
            return grain[:pos + 4] + vr + grain[pos + 6:]
        (vlen,) = struct.unpack_from("<I" if long else "<H", grain, pos + (8 if long else 6))
        span = (12 if long else 8) + int(vlen)
        elem = struct.pack("<HH2sH", g, e, vr, len(value)) + value
        filler = span - len(elem) - 8
        elem += struct.pack("<HH2sH", g, e + 1, b"CS", filler) + b" " * filler
        out: bytes = grain[:pos] + elem + grain[pos + span :]
        return out
    raise KeyError(hex(tag))


_VECTOR = 0  # grain_corpus()[0]: the spec vector, dynamic part only
_STATIC = 1  # grain_corpus()[1]: endoscopic grain with the static part


def test_origin_timestamp_with_a_text_vr() -> None:
    bad = retype(grain_corpus()[_VECTOR], 0x00340007, b"LO", b"ABCDEF")
    with pytest.raises(RemoteProtocolError) as info:
        decode_grain(bad)
    assert info.value.field == "(0034,0007) Frame Origin Timestamp"


def test_origin_timestamp_with_a_ul_vr_is_no_memory_bomb() -> None:
    """A UL value n must never become bytes(n): the VR is checked before the value."""
    bad = retype(grain_corpus()[_VECTOR], 0x00340007, b"UL", (0xFFFFFFF0).to_bytes(4, "little"))
    with address_space_cap(), pytest.raises(RemoteProtocolError) as info:
        decode_grain(bad)
    assert info.value.field == "(0034,0007) Frame Origin Timestamp"
    assert "VR UL" in str(info.value)


@pytest.mark.parametrize("size", [0, 8, 12])
def test_origin_timestamp_of_the_wrong_length(size: int) -> None:
    grain = decode_grain(grain_corpus()[_VECTOR])
    ds = grain.dataset
    tof = ds[0x00060001].value[0][0x0034000D].value[0]
    tof[0x00340007].value = bytes(size)
    with pytest.raises(RemoteProtocolError) as info:
        decode_grain(encode_grain(grain.meta, ds))
    assert info.value.field == "(0034,0007) Frame Origin Timestamp"
    assert f"{size} bytes, expected 10" in str(info.value)


@pytest.mark.parametrize("tag", [0x0034000A, 0x00340001])
@pytest.mark.parametrize("vr", [b"OB", b"UT", b"OL", b"OV", b"UC"])
def test_bulk_flow_sequences_with_another_vr(tag: int, vr: bytes) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        decode_grain(retype(grain_corpus()[_STATIC], tag, vr))
    assert info.value.field.startswith(f"({tag >> 16:04X},{tag & 0xFFFF:04X})")


@pytest.mark.parametrize("vr", [b"UV", b"SV"])
def test_shared_functional_groups_with_a_number_vr(vr: bytes) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        decode_grain(retype(grain_corpus()[_STATIC], 0x52009229, vr))
    assert info.value.field == "(5200,9229) Shared Functional Groups Sequence"


@pytest.mark.parametrize("vr", [b"OB", b"UL"])
def test_empty_dynamic_part_with_another_vr(vr: bytes) -> None:
    vector = grain_corpus()[_VECTOR]
    meta = vector[: vector.index(bytes.fromhex("06000100"))]
    if vr == b"OB":
        bad = meta + bytes.fromhex("06000100") + vr + bytes(6)  # long form, length 0
    else:
        bad = meta + bytes.fromhex("06000100") + vr + bytes(2)  # short form, length 0
    with pytest.raises(RemoteProtocolError) as info:
        decode_grain(bad)
    assert info.value.field == "(0006,0001) Current Frame Functional Groups Sequence"


def test_time_of_frame_group_with_another_vr() -> None:
    bad = retype(grain_corpus()[_VECTOR], 0x0034000D, b"OB")
    with pytest.raises(RemoteProtocolError) as info:
        decode_grain(bad)
    assert info.value.field == "(0034,000D) Time of Frame Group Sequence"


def test_frame_content_with_another_vr() -> None:
    bad = retype(grain_corpus()[_VECTOR], 0x00209111, b"UT")
    with pytest.raises(RemoteProtocolError) as info:
        decode_grain(bad)
    assert info.value.field == "(0020,9111) Frame Content Sequence"


def test_an_invalid_grain_is_dropped_by_feed_with_a_reason() -> None:
    """A grain whose content fails decode_grain is a GrainDropped, counted as invalid."""
    bad = retype(grain_corpus()[_VECTOR], 0x00340007, b"UL", (0xFFFFFFF0).to_bytes(4, "little"))
    meta, _ = decode_meta(bad)
    assert isinstance(meta, RtvMetaInfo)
    pk = MetadataPacketizer(
        ssrc=7, extmap=ExtMap.default(), source_id=meta.source_id, flow_id=meta.flow_id
    )
    t = PtpTimestamp(1, 0)
    dp = MetadataDepacketizer(extmap=ExtMap.default())
    events = []
    with address_space_cap():
        for row in pk.packetize(bad, 1234, sync=t, origin=t):
            events += dp.feed(row, 0)
    assert len(events) == 1 and isinstance(events[0], GrainDropped)
    assert "(0034,0007) Frame Origin Timestamp" in events[0].reason
    assert dp.stats.invalid == 1 and dp.stats.dropped == 1 and dp.stats.grains == 0
