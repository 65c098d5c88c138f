"""ST 2022-7 sending: one packetized buffer, byte-identical on both legs, GSO kept; config."""

from __future__ import annotations

import argparse
import asyncio
import socket
from fractions import Fraction

import numpy as np
import pytest

from rtstream.commands import send
from rtstream.errors import ConfigError
from rtstream.net.udp import DupSender, UdpSender
from rtstream.proto.formats import Sampling, VideoFormat
from rtstream.proto.rfc4175 import VideoPacketizer
from rtstream.sender import NetworkConfig, RedundantConfig, load_sender_config


def _receiver() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    s.bind(("127.0.0.1", 0))
    s.settimeout(2)
    return s


def test_both_legs_get_the_same_datagrams_with_gso() -> None:
    fmt = VideoFormat(sampling=Sampling.YCBCR_422, depth=10, width=320, height=240,
                      exactframerate=Fraction(30))
    pk = VideoPacketizer(fmt, ssrc=7, sequence=65500)
    frame = np.random.default_rng(1).integers(0, 256, fmt.frame_bytes, dtype=np.uint8)
    batch = pk.packetize(frame, 1234)
    r1, r2 = _receiver(), _receiver()
    legs = (UdpSender(("127.0.0.1", r1.getsockname()[1])),
            UdpSender(("127.0.0.1", r2.getsockname()[1])))
    dup = DupSender(*legs)
    try:
        assert asyncio.run(dup.send_batch_async(batch)) == len(batch)
        asyncio.run(dup.send_async(b"grain"))
        got = [[r.recv(65536) for _ in range(len(batch) + 1)] for r in (r1, r2)]
    finally:
        dup.close()
        r1.close()
        r2.close()
    assert got[0] == got[1]
    assert got[0][: len(batch)] == [batch.datagram(i) for i in range(len(batch))]
    assert got[0][-1] == b"grain"
    for leg in legs:
        assert leg.stats.datagrams == len(batch) + 1
        assert leg.stats.gso_calls > 0  # each leg kept segmentation offload
    assert dup.stats is legs[0].stats and dup.legs == legs


def test_redundant_config_and_flags() -> None:
    with pytest.raises(ConfigError) as e:
        NetworkConfig(dest="127.0.0.1", redundant=RedundantConfig(dest="127.0.0.1"))
    assert e.value.key == "network.redundant.dest" and "second path" in str(e.value)
    NetworkConfig(dest="127.0.0.1", redundant=RedundantConfig(dest="127.0.0.1", port=6004))
    with pytest.raises(ConfigError) as e:
        RedundantConfig(port=6004)
    assert e.value.key == "network.redundant.dest" and "--dest2" in str(e.value)

    parser = argparse.ArgumentParser()
    send.configure(parser)
    args = parser.parse_args(["--dest", "127.0.0.1:5004", "--dest2", "127.0.0.2:6004",
                              "--interface2", "lo", "--source-address2", "127.0.0.1"])
    cfg = send.build_config(args)
    assert cfg.network.redundant == RedundantConfig(dest="127.0.0.2", port=6004, interface="lo",
                                                    source_address="127.0.0.1")
    assert cfg.network.ports2() == (6004, 6006, 6008, 6010)
    with pytest.raises(ConfigError) as e:
        send.build_config(parser.parse_args(["--interface2", "lo"]))
    assert e.value.key.startswith("network.redundant") and "--dest2 HOST:PORT" in str(e.value)
    with pytest.raises(ConfigError) as e:
        send.build_config(parser.parse_args(["--dest2", "127.0.0.1"]))
    assert e.value.key == "--dest2"


def test_toml_network_redundant(tmp_path: object) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "s.toml"
    path.write_text('[network]\ndest = "10.0.1.2"\n[network.redundant]\ndest = "10.0.2.2"\n'
                    'interface = "eth1"\n')
    cfg = load_sender_config(path)
    assert cfg.network.redundant == RedundantConfig(dest="10.0.2.2", interface="eth1")
    assert cfg.network.ports2() == cfg.network.ports()
