#!/usr/bin/env python3
"""Long fuzz run of every rtstream wire parser (issue 9 part 1).

Usage::

    python scripts/fuzz.py [--inputs N] [--parser NAME] [--json FILE]
                           [--engine auto|atheris|random] [--seed S] [--max-seconds T]

Each parser gets ``--inputs`` inputs (default 1,000,000). An *input* is one datagram,
grain, SDP text or command payload; the feed-style targets (audio, rfc4175,
metadata_feed) get them as sequences of datagrams, each counted.

Engines
-------
``atheris`` (the default when it imports): coverage-guided libFuzzer in one child process
per parser, started from a corpus of valid inputs made by rtstream's own packetizers and
writers, with a structure-aware custom mutator (``tests/fuzz/strategies.py``: element
VRs/lengths/tags of grains, SDP lines and tokens, datagram drops/duplicates/reorders,
length-field lies) alternating with libFuzzer's own byte mutations.
``random``: the same structure-aware mutations in a plain loop (no coverage feedback,
several times faster).

Property checked: only :class:`rtstream.errors.RemoteProtocolError` escapes a parser and
nothing escapes a ``feed()``; every child runs under an address-space cap so that a
length-driven allocation is reported as MemoryError. A failing input is saved under
``artifacts/fuzz/<parser>-<sha1>.bin`` with its traceback in ``.txt`` (one per distinct
exception site) and the run goes on. The JSON summary (stdout, and ``--json FILE``) gives
per parser: inputs, seconds, inputs/s, inputs rejected with RemoteProtocolError, distinct
crashes and their reproducers.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import resource
import struct
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
ARTIFACTS = ROOT / "artifacts" / "fuzz"

PARSERS = ("rtp", "nmos", "sdp", "audio", "rfc4175", "metadata_grain", "metadata_feed",
           "mqtt_cmd")  # fmt: skip


# ------------------------------------------------------------------ datagram sequences


def pack_rows(rows: list[bytes]) -> bytes:
    """Datagram sequence -> one fuzz input: ``u16 length`` + bytes per datagram."""
    return b"".join(struct.pack("!H", min(len(r), 0xFFFF)) + r[:0xFFFF] for r in rows)


def unpack_rows(data: bytes, limit: int = 256) -> list[bytes]:
    """One fuzz input -> datagram sequence (a short last record takes what is left)."""
    rows: list[bytes] = []
    pos = 0
    while pos + 2 <= len(data) and len(rows) < limit:
        (n,) = struct.unpack_from("!H", data, pos)
        rows.append(data[pos + 2 : pos + 2 + n])
        pos += 2 + n
    return rows


# ------------------------------------------------------------------------------ targets


class Target:
    """One parser: valid seeds, a structure-aware mutator and the call under test."""

    name = ""

    def __init__(self) -> None:
        self.rejected = 0  # inputs answered with RemoteProtocolError (or counted malformed)
        self.count = 0

    def seeds(self, rng: random.Random) -> list[bytes]:
        raise NotImplementedError

    def mutate(self, data: bytes, rng: random.Random) -> bytes:
        from tests.fuzz.strategies import mutate

        return mutate(data, rng)

    def run(self, data: bytes) -> int:
        """Parse one fuzz input; return how many parser inputs it held."""
        raise NotImplementedError

    def check_bounds(self) -> None:
        """Assert the documented caps of long-lived state (feed targets)."""


def _rpe() -> type[Exception]:
    from rtstream.errors import RemoteProtocolError

    return RemoteProtocolError


class RtpTarget(Target):
    name = "rtp"

    def __init__(self) -> None:
        super().__init__()
        from rtstream.proto.rtp import parse_rtp

        self.parse = parse_rtp
        self.rpe = _rpe()

    def seeds(self, rng: random.Random) -> list[bytes]:
        from tests.fuzz.strategies import gen_rtp

        return [gen_rtp(rng) for _ in range(64)]

    def run(self, data: bytes) -> int:
        try:
            pkt = self.parse(data)
        except self.rpe:
            self.rejected += 1
            return 1
        if self.parse(pkt.to_bytes()) != pkt:
            raise AssertionError("parse(to_bytes(p)) != p")
        return 1


class NmosTarget(Target):
    name = "nmos"

    def __init__(self) -> None:
        super().__init__()
        from rtstream.proto.nmos_ext import ExtMap, NmosExtension, decode_elements

        self.decode_elements = decode_elements
        self.decode = NmosExtension.decode
        self.extmap = ExtMap.default()
        self.rpe = _rpe()

    def seeds(self, rng: random.Random) -> list[bytes]:
        from tests.fuzz.strategies import gen_nmos_body

        return [gen_nmos_body(rng) for _ in range(64)]

    def run(self, data: bytes) -> int:
        try:
            self.decode_elements(data)
        except self.rpe:
            self.rejected += 1
        try:
            self.decode(data, self.extmap)
        except self.rpe:
            pass
        return 1


class SdpTarget(Target):
    name = "sdp"

    def __init__(self) -> None:
        super().__init__()
        from rtstream.proto.sdp import parse_sdp, write_sdp

        self.parse = parse_sdp
        self.write = write_sdp
        self.rpe = _rpe()

    def seeds(self, rng: random.Random) -> list[bytes]:
        from tests.fuzz.strategies import gen_sdp, sdp_samples

        return [s.encode() for s in sdp_samples()] + [gen_sdp(rng).encode() for _ in range(64)]

    def mutate(self, data: bytes, rng: random.Random) -> bytes:
        from tests.fuzz.strategies import mutate, mutate_sdp

        if rng.random() < 0.3:
            return mutate(data, rng)
        return mutate_sdp(data.decode("utf-8", "replace"), rng).encode("utf-8", "surrogatepass")

    def run(self, data: bytes) -> int:
        try:
            session = self.parse(data)
        except self.rpe:
            self.rejected += 1
            return 1
        if self.parse(self.write(session)) != session:
            raise AssertionError("parse(write(s)) != s")
        return 1


class RowsTarget(Target):
    """Datagram-sequence targets: the mutator works on the sequence."""

    def mutate(self, data: bytes, rng: random.Random) -> bytes:
        from tests.fuzz.strategies import mutate, mutate_rows

        if rng.random() < 0.15:
            return mutate(data, rng)
        return pack_rows(mutate_rows(unpack_rows(data), rng))

    #: the depacketizers (one per format) and the time step per input
    dps: list[Any]
    step_ns = 1_000_000

    def check_event(self, ev: Any, dp: Any) -> None:
        """Invariants of one event a depacketizer emitted."""

    def run(self, data: bytes) -> int:
        from tests.fuzz.strategies import to_batch

        rows = unpack_rows(data)
        if not rows:
            return 0
        buf, lengths = to_batch(rows)
        dp = self.dps[data[-1] % len(self.dps)]
        before = dp.stats.malformed
        for ev in dp.feed(buf, lengths, self.now):
            self.check_event(ev, dp)
        self.now += self.step_ns
        self.rejected += dp.stats.malformed - before
        return len(rows)


class AudioTarget(RowsTarget):
    name = "audio"

    def __init__(self) -> None:
        super().__init__()
        from rtstream.proto.st2110_30 import AudioDepacketizer
        from tests.fuzz.strategies import AUDIO_FORMATS

        self.dps = [AudioDepacketizer(f) for f in AUDIO_FORMATS]
        self.now = 0

    def seeds(self, rng: random.Random) -> list[bytes]:
        from tests.fuzz.strategies import AUDIO_FORMATS, AudioStream

        out = []
        for fmt in AUDIO_FORMATS:
            s = AudioStream(fmt, rng)
            out += [pack_rows(s.packets(rng, rng.randint(1, 16))) for _ in range(8)]
        return out

    def check_bounds(self) -> None:
        for dp in self.dps:
            tracker = dp._seq  # its fixed-size duplicate window is the only per-flow state
            assert tracker.window == 4096 and tracker._ring.shape == (4096,)


class VideoTarget(RowsTarget):
    name = "rfc4175"

    def __init__(self) -> None:
        super().__init__()
        from rtstream.proto.rfc4175 import VideoDepacketizer
        from tests.fuzz.strategies import VIDEO_FORMATS

        self.dps = [VideoDepacketizer(f) for f in VIDEO_FORMATS]
        self.now = 0

    def seeds(self, rng: random.Random) -> list[bytes]:
        from tests.fuzz.strategies import VIDEO_FORMATS, VideoStream

        out = []
        for fmt in VIDEO_FORMATS:
            s = VideoStream(fmt, rng)
            out += [pack_rows(s.frame(rng)) for _ in range(8)]
        return out

    step_ns = 10_000_000

    def check_event(self, ev: Any, dp: Any) -> None:
        assert ev.data.size == dp.fmt.frame_bytes

    def check_bounds(self) -> None:
        for dp in self.dps:
            pend = dp._pending
            assert pend is None or pend.data.size == dp.fmt.frame_bytes
            assert len(dp._recent) <= 16


class GrainTarget(Target):
    name = "metadata_grain"

    def __init__(self) -> None:
        super().__init__()
        from rtstream.proto.rtv_metadata import decode_grain

        self.decode = decode_grain
        self.rpe = _rpe()

    def seeds(self, rng: random.Random) -> list[bytes]:
        from tests.fuzz.strategies import grain_corpus

        return list(grain_corpus())

    def mutate(self, data: bytes, rng: random.Random) -> bytes:
        from tests.fuzz.strategies import grain_corpus, mutate_grain

        return mutate_grain(data, rng, pool=grain_corpus())

    def run(self, data: bytes) -> int:
        try:
            self.decode(data)
        except self.rpe:
            self.rejected += 1
        return 1


class MetadataFeedTarget(RowsTarget):
    name = "metadata_feed"

    def __init__(self) -> None:
        super().__init__()
        from rtstream.proto.nmos_ext import ExtMap
        from rtstream.proto.rtv_metadata import MetadataDepacketizer

        self.dps = [
            MetadataDepacketizer(extmap=ExtMap.default()),
            MetadataDepacketizer(extmap=ExtMap.default(), max_grain_bytes=2048,
                                 max_packets_per_grain=8, max_partial_grains=2),  # fmt: skip
        ]
        self.now = 0

    def seeds(self, rng: random.Random) -> list[bytes]:
        from rtstream.proto.nmos_ext import ExtMap
        from tests.fuzz.strategies import GrainStream

        out = []
        for _ in range(16):
            s = GrainStream(rng, ExtMap.default())
            out.append(pack_rows(s.grain(rng, mutate_p=0) + s.grain(rng, mutate_p=0)))
        return out

    def run(self, data: bytes) -> int:
        rows = unpack_rows(data)
        dp = self.dps[(data[-1] if data else 0) % len(self.dps)]
        before = dp.stats.malformed
        for row in rows:
            dp.feed(row, self.now)
            self.now += 1_000_000
        self.rejected += dp.stats.malformed - before
        return len(rows)

    def check_bounds(self) -> None:
        for dp in self.dps:
            assert len(dp._partials) <= dp.max_partial_grains
            for p in dp._partials.values():
                assert p.size <= dp.max_grain_bytes
                assert len(p.packets) <= dp.max_packets_per_grain
            assert len(dp._latest_ts) <= 4 * dp.max_partial_grains
            assert len(dp._closed) <= 64


class MqttTarget(Target):
    name = "mqtt_cmd"

    def __init__(self) -> None:
        super().__init__()
        from rtstream.control.schema import InvalidCommand, parse_command

        self.parse = parse_command
        self.invalid = InvalidCommand

    def seeds(self, rng: random.Random) -> list[bytes]:
        from tests.fuzz.strategies import gen_command, mutate_command

        return [mutate_command(gen_command(rng), rng) for _ in range(64)]

    def mutate(self, data: bytes, rng: random.Random) -> bytes:
        from tests.fuzz.strategies import gen_command, mutate, mutate_command

        if rng.random() < 0.5:
            return mutate_command(gen_command(rng), rng)
        return mutate(data, rng)

    def run(self, data: bytes) -> int:
        import math

        try:
            cmd = self.parse(data)
        except self.invalid:
            self.rejected += 1
            return 1
        for key, value in cmd.args.items():
            if isinstance(value, float) and not math.isfinite(value):
                raise AssertionError(f"args.{key} = {value} accepted")
        return 1


TARGETS: dict[str, Callable[[], Target]] = {
    t.name: t
    for t in (RtpTarget, NmosTarget, SdpTarget, AudioTarget, VideoTarget, GrainTarget,
              MetadataFeedTarget, MqttTarget)  # fmt: skip
}


# -------------------------------------------------------------------------- crash records


class Crashes:
    """Distinct failures (by exception type and innermost rtstream frame), saved once."""

    def __init__(self, parser: str) -> None:
        self.parser = parser
        self.found: dict[str, dict[str, Any]] = {}

    def record(self, data: bytes, exc: BaseException) -> None:
        frames = traceback.extract_tb(exc.__traceback__)
        ours = [f for f in frames if "/rtstream/" in f.filename] or frames
        where = f"{Path(ours[-1].filename).name}:{ours[-1].lineno} {ours[-1].name}"
        key = f"{type(exc).__name__} at {where}"
        if key in self.found:
            self.found[key]["count"] += 1
            return
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha1(data).hexdigest()[:16]
        path = ARTIFACTS / f"{self.parser}-{digest}.bin"
        path.write_bytes(data)
        text = "".join(traceback.format_exception(exc))
        path.with_suffix(".txt").write_text(f"{key}\ninput: {data.hex()}\n\n{text}")
        self.found[key] = {"count": 1, "reproducer": str(path.relative_to(ROOT)),
                           "message": str(exc)[:200]}  # fmt: skip


def cap_memory(extra: int = 2 << 30) -> None:
    with open("/proc/self/status") as f:
        size = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (size + extra, hard))


# ----------------------------------------------------------------------------- engines


def run_random(name: str, inputs: int, seed: int, max_seconds: float) -> dict[str, Any]:
    """Structure-aware mutation loop without coverage feedback."""
    import warnings

    warnings.simplefilter("ignore")
    target = TARGETS[name]()
    rng = random.Random(seed)
    corpus = target.seeds(rng)
    crashes = Crashes(name)
    rpe = _rpe()
    done = 0
    start = time.monotonic()
    while done < inputs and time.monotonic() - start < max_seconds:
        base = rng.choice(corpus)
        data = base if rng.random() < 0.02 else target.mutate(base, rng)
        try:
            done += max(1, target.run(data))
        except rpe:  # a feed-style API must not raise even this; parsers did not get here
            done += 1
            crashes.record(data, sys.exc_info()[1])  # type: ignore[arg-type]
        except Exception as exc:
            done += 1
            crashes.record(data, exc)
        if rng.random() < 0.001:
            corpus.append(data)  # keep some mutants as further seeds
            del corpus[: max(0, len(corpus) - 512)]
        if done % 997 == 0:
            try:
                target.check_bounds()
            except AssertionError as exc:
                crashes.record(data, exc)
    try:
        target.check_bounds()
    except AssertionError as exc:
        crashes.record(b"", exc)
    secs = time.monotonic() - start
    return _summary(name, "random", done, secs, target.rejected, crashes)


def _summary(name: str, engine: str, done: int, secs: float, rejected: int,
             crashes: Crashes) -> dict[str, Any]:  # fmt: skip
    return {
        "parser": name,
        "engine": engine,
        "inputs": done,
        "seconds": round(secs, 1),
        "inputs_per_s": round(done / secs) if secs else None,
        "rejected_as_protocol_error": rejected,
        "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "crashes": crashes.found,
    }


def child_atheris(name: str, inputs: int, seed: int, max_seconds: float, stats: Path) -> None:
    """Run one parser under libFuzzer (this process never returns)."""
    import warnings

    import atheris

    warnings.simplefilter("ignore")
    with atheris.instrument_imports(include=["rtstream"]):
        import rtstream.control.schema  # noqa: F401
        import rtstream.proto.nmos_ext  # noqa: F401
        import rtstream.proto.rfc4175  # noqa: F401
        import rtstream.proto.rtp  # noqa: F401
        import rtstream.proto.rtv_metadata  # noqa: F401
        import rtstream.proto.sdp  # noqa: F401
        import rtstream.proto.st2110_30  # noqa: F401
    target = TARGETS[name]()
    rng = random.Random(seed)
    corpus_dir = stats.parent / "corpus"  # inside the parent's temporary directory
    corpus_dir.mkdir(exist_ok=True)
    for i, s in enumerate(target.seeds(rng)):
        (corpus_dir / f"seed{i:03d}").write_bytes(s)
    crashes = Crashes(name)
    state = {"done": 0, "start": time.monotonic(), "last": 0.0}

    def dump() -> None:
        secs = time.monotonic() - state["start"]
        stats.write_text(json.dumps(
            _summary(name, "atheris", int(state["done"]), secs, target.rejected, crashes)))  # fmt: skip

    def one(data: bytes) -> None:
        try:
            state["done"] += max(1, target.run(data))
        except Exception as exc:
            state["done"] += 1
            crashes.record(data, exc)
        if state["done"] % 997 == 0:
            try:
                target.check_bounds()
            except AssertionError as exc:
                crashes.record(data, exc)
        now = time.monotonic()
        if now - state["last"] > 2 or state["done"] >= inputs:
            state["last"] = now
            dump()
            if state["done"] >= inputs or now - state["start"] > max_seconds:
                os._exit(0)

    def custom_mutator(data: bytes, max_size: int, seed_: int) -> bytes:
        r = random.Random(seed_)
        if r.random() < 0.4:
            return bytes(atheris.Mutate(data, max_size))
        return target.mutate(data, r)[:max_size]

    cap_memory()
    atheris.Setup(
        [sys.argv[0], f"-seed={seed}", "-max_len=65536", "-rss_limit_mb=0",
         f"-artifact_prefix={ARTIFACTS}/{name}-", str(corpus_dir)],
        one, custom_mutator=custom_mutator,
    )  # fmt: skip
    atheris.Fuzz()


def run_atheris(name: str, inputs: int, seed: int, max_seconds: float) -> dict[str, Any]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        stats = Path(tmp) / "stats.json"
        cmd = [sys.executable, __file__, "--child", name, "--inputs", str(inputs),
               "--seed", str(seed), "--max-seconds", str(max_seconds), "--stats", str(stats)]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)  # noqa: S603
        if not stats.exists():
            return {"parser": name, "engine": "atheris", "error": proc.stderr[-2000:]}
        result: dict[str, Any] = json.loads(stats.read_text())
        if proc.returncode:
            result["exit_code"] = proc.returncode
            result["stderr_tail"] = proc.stderr[-1000:]
        return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--inputs", type=int, default=1_000_000, help="inputs per parser")
    ap.add_argument("--parser", choices=PARSERS, action="append",
                    help="parser to fuzz (repeatable; default: all)")
    ap.add_argument("--json", type=Path, help="also write the summary to this file")
    ap.add_argument("--engine", choices=("auto", "atheris", "random"), default="auto")
    ap.add_argument("--seed", type=int, default=20240909)
    ap.add_argument("--max-seconds", type=float, default=float("inf"),
                    help="stop each parser after this long")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--stats", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child_atheris(args.child, args.inputs, args.seed, args.max_seconds, args.stats)
        return 0
    engine = args.engine
    if engine == "auto":
        try:
            import atheris  # noqa: F401

            engine = "atheris"
        except ImportError:
            engine = "random"
    results = []
    for name in args.parser or PARSERS:
        run = run_atheris if engine == "atheris" else run_random
        if engine == "random":
            cap_memory()
        res = run(name, args.inputs, args.seed, args.max_seconds)
        results.append(res)
        print(json.dumps(res), file=sys.stderr, flush=True)
    summary = {"engine": engine, "seed": args.seed, "inputs_per_parser": args.inputs,
               "results": results}  # fmt: skip
    text = json.dumps(summary, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    bad = any(r.get("crashes") or r.get("error") for r in results)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
