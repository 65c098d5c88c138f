"""The remote viewer: live streams in a browser over WebRTC (see :mod:`.server`)."""

from rtstream.viewer.encoder import Codec, EncoderConfig, SharedEncoder
from rtstream.viewer.janus import JanusConfig, JanusFeeder
from rtstream.viewer.server import (
    FrameFeed,
    SnapshotFn,
    SnapshotReply,
    TestPattern,
    ViewerConfig,
    ViewerFrame,
    ViewerServer,
    feed_from_receiver,
    snapshot_from_receiver,
)
from rtstream.viewer.whip import WhipPublisher

__all__ = [
    "Codec",
    "EncoderConfig",
    "FrameFeed",
    "JanusConfig",
    "JanusFeeder",
    "SharedEncoder",
    "SnapshotFn",
    "SnapshotReply",
    "TestPattern",
    "ViewerConfig",
    "ViewerFrame",
    "ViewerServer",
    "WhipPublisher",
    "feed_from_receiver",
    "snapshot_from_receiver",
]
