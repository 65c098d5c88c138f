"""``--store-tls-ca/-cert/-key``: DICOM TLS flags shared by the commands that store.

argparse lives under :mod:`rtstream.commands`; the flags become a
:class:`~rtstream.pacs.store.TlsSettings`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rtstream.errors import ConfigError
from rtstream.pacs.store import TlsSettings


def add_tls_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--store-tls-ca/-cert/-key`` (DICOM TLS for ``--store``) to a command."""
    group = parser.add_argument_group("DICOM TLS for --store (PS3.15 Annex B.1)")
    group.add_argument("--store-tls-ca", type=Path, metavar="PEM",
                       help="CA bundle the archive's certificate must chain to; turns TLS on")
    group.add_argument("--store-tls-cert", type=Path, metavar="PEM",
                       help="our client certificate, when the archive asks for one")
    group.add_argument("--store-tls-key", type=Path, metavar="PEM",
                       help="the key of --store-tls-cert")


def tls_from_args(args: argparse.Namespace) -> TlsSettings | None:
    """The :class:`TlsSettings` of :func:`add_tls_arguments`' flags, None without a CA."""
    if args.store_tls_ca is None:
        if args.store_tls_cert is not None or args.store_tls_key is not None:
            raise ConfigError("--store-tls-cert", str(args.store_tls_cert),
                              "only together with --store-tls-ca")
        return None
    return TlsSettings(ca_file=args.store_tls_ca, cert_file=args.store_tls_cert,
                       key_file=args.store_tls_key)
