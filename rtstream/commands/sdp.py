"""``rtstream sdp``: print the SDP a ``send`` with the same options would publish."""

from __future__ import annotations

import argparse

from rtstream.commands.send import add_sender_options, build_config
from rtstream.sender import Sender

HELP = "print the SDP of the flows 'rtstream send' would send with this configuration"
DESCRIPTION = """\
Print the SDP (video, metadata and, with --audio, audio flows) that 'rtstream send' would
publish for the same --config file and flags, without sending anything. SSRCs and UUIDs
are chosen when sending, so they never appear in the SDP; the session id differs per run.

example:
  rtstream sdp --config samples/sender.toml --dest 239.1.1.1:5004
"""


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the options shared with ``send``."""
    add_sender_options(parser)


def run(args: argparse.Namespace) -> int:
    """Print the SDP; returns 0."""
    cfg = build_config(args)
    tx = Sender(cfg)
    try:
        print(tx.sdp_text(), end="")
    finally:
        tx.source.close()
    return 0
