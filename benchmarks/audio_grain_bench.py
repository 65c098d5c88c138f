"""Cost of the audio metadata flow at one grain per audio packet (PS3.17 PPPP.9 read per packet).

Measures, for N seconds of 48 kHz stereo L24 audio at ptime 1 ms (1000 packets/s), the
CPU the sender spends making and packetizing metadata grains (GrainBuilder.grain +
MetadataPacketizer.packetize, the static part at 2 Hz as the sender sends it), once per
packet (now) and once per 10 packets (before), next to what our ST 2110-30 packetizer
spends on the audio itself. For scale, GStreamer packetizes the same audio
(``audiotestsrc ! rtpL24pay ! fakesink``, 48 samples per buffer) in the same run; its
start-up cost is measured with one buffer and subtracted.

usage: python benchmarks/audio_grain_bench.py [--seconds 3]     (prints JSON)
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
import uuid
from fractions import Fraction
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rtstream.dicom.context import StreamContext  # noqa: E402
from rtstream.dicom.realtime import BulkFlowRef, GrainBuilder, RtvSop  # noqa: E402
from rtstream.media.sources import tone  # noqa: E402
from rtstream.proto.clock import PtpTimestamp  # noqa: E402
from rtstream.proto.formats import AudioEncoding, AudioFormat  # noqa: E402
from rtstream.proto.nmos_ext import ExtMap  # noqa: E402
from rtstream.proto.rtv_metadata import (  # noqa: E402
    MetadataPacketizer,
    RtvMetaInfo,
    audio_packet_grains,
)
from rtstream.proto.st2110_30 import AudioPacketizer  # noqa: E402

FMT = AudioFormat(encoding=AudioEncoding.L24, sample_rate=48_000, channels=2, ptime_us=1000,
                  channel_order="SMPTE2110.(ST)")


def _builder() -> tuple[GrainBuilder, MetadataPacketizer]:
    meta = RtvMetaInfo(transfer_syntax_uid=FMT.transfer_syntax_uid,
                       sop_class_uid=RtvSop.AUDIO.value, sop_instance_uid="1.2.826.0.1.3680043.8.498.1",
                       source_id=uuid.uuid4(), flow_id=uuid.uuid4(), sampling_rate=FMT.sample_rate)
    bulk = BulkFlowRef(source_id=uuid.uuid4(), flow_id=uuid.uuid4(),
                       transfer_syntax_uid=FMT.transfer_syntax_uid, sampling_rate=FMT.sample_rate)
    builder = GrainBuilder(RtvSop.AUDIO, StreamContext(patient_id="BENCH"), meta, bulk)
    pkt = MetadataPacketizer(ssrc=1, extmap=ExtMap.default(), source_id=meta.source_id,
                             flow_id=meta.flow_id, grain_duration=Fraction(1, 1000))
    return builder, pkt


def grains_cpu(seconds: float, packets_per_grain: int) -> tuple[float, int]:
    """CPU seconds and grains for ``seconds`` of audio, one grain per N packets."""
    builder, pkt = _builder()
    spp = FMT.samples_per_packet
    chunks = int(seconds * 100)  # 10-packet chunks, as the sender reads them
    t0 = time.process_time()
    n = 0
    for c in range(chunks):
        capture = 1_700_000_000 * 10**9 + c * 10_000_000
        ts = c * 10 * spp
        if packets_per_grain == 1:
            times = audio_packet_grains(ts, capture, packets=10, samples_per_packet=spp,
                                        sample_rate=FMT.sample_rate)
        else:
            times = [(ts, PtpTimestamp.from_ns(capture))]
        for pts, origin in times:
            grain = builder.grain(origin=origin, frame_number=n + 1, now=origin.to_ns())
            pkt.packetize(grain, pts, sync=origin, origin=origin)
            n += 1
    return time.process_time() - t0, n


def audio_cpu(seconds: float) -> float:
    """CPU seconds our ST 2110-30 packetizer spends on the audio itself."""
    p = AudioPacketizer(FMT, ssrc=2)
    chunk = tone(FMT.sample_rate, FMT.channels, 0, 480, bits=24)
    t0 = time.process_time()
    for c in range(int(seconds * 100)):
        p.packetize(chunk, c * 480)
    return time.process_time() - t0


def gst_cpu(seconds: float) -> float | None:
    """CPU seconds GStreamer's rtpL24pay spends on the same audio (start-up subtracted)."""
    gst = shutil.which("gst-launch-1.0")
    if gst is None:
        return None

    def run(buffers: int) -> float:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run([gst, "-q", "audiotestsrc", f"num-buffers={buffers}", "samplesperbuffer=48",
                        "!", "audio/x-raw,format=S24BE,rate=48000,channels=2", "!",
                        "rtpL24pay", "min-ptime=1000000", "max-ptime=1000000", "!", "fakesink"],
                       check=True, capture_output=True, timeout=120)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        return (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)

    return max(0.0, run(int(seconds * 1000)) - run(1))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3.0)
    secs = ap.parse_args().seconds
    per_packet, n1 = grains_cpu(secs, 1)
    per_chunk, n10 = grains_cpu(secs, 10)
    audio = audio_cpu(secs)
    gst = gst_cpu(secs)
    out = {
        "seconds_of_audio": secs,
        "grains_per_packet": {"grains": n1, "cpu_ms_per_s": 1000 * per_packet / secs,
                              "us_per_grain": 1e6 * per_packet / n1},
        "grains_per_10_packets": {"grains": n10, "cpu_ms_per_s": 1000 * per_chunk / secs},
        "rtstream_audio_packetizer_cpu_ms_per_s": 1000 * audio / secs,
        "gstreamer_rtpL24pay_cpu_ms_per_s": None if gst is None else 1000 * gst / secs,
        "metadata_per_packet_vs_gstreamer_audio": None if not gst else per_packet / gst,
        "cpu_share_of_one_core": per_packet / secs,
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
