"""The control-plane flags of the commands: ``--mqtt URL``, ``--node NAME``, ``--stats-interval S``.

Argparse stays here, with the commands; :mod:`rtstream.control` takes an
:class:`~rtstream.control.mqtt.MqttConfig` (or None for no broker).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from typing import Any

from rtstream.control.mqtt import PASSWORD_ENV, MqttConfig, default_node
from rtstream.errors import ConfigError

__all__ = ["add_cli_arguments", "config_from_args"]


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--mqtt URL``, ``--node NAME`` and ``--stats-interval S`` to a subcommand."""
    group = parser.add_argument_group("control plane (MQTT, see docs/mqtt.md)")
    group.add_argument(
        "--mqtt",
        metavar="URL",
        help="broker: mqtt://[user[:password]@]host[:port] or mqtts://...?ca=FILE"
        f"[&cert=FILE&key=FILE]; the password may come from ${PASSWORD_ENV}",
    )
    group.add_argument(
        "--node", metavar="NAME", help="node name in the topics rtstream/NAME/... "
        "(default: <hostname>-<command>)",
    )
    group.add_argument(
        "--stats-interval", metavar="S", type=float, default=5.0,
        help="seconds between stats messages (0: none; default 5)",
    )


def config_from_args(args: argparse.Namespace, *, role: str) -> MqttConfig | None:
    """The :class:`MqttConfig` the flags of :func:`add_cli_arguments` ask for, or ``None``.

    Raises
    ------
    ConfigError
        For a bad URL or node name (the CLI prints it and exits with status 2).
    """
    url = getattr(args, "mqtt", None)
    if not url:
        if getattr(args, "node", None):
            raise ConfigError("--node", args.node, "only together with --mqtt URL")
        return None
    node = getattr(args, "node", None) or default_node(role)
    options: dict[str, Any] = {"stats_interval": getattr(args, "stats_interval", 5.0)}
    cfg = MqttConfig.from_url(url, node=node, **options)
    if cfg.username is not None and cfg.password is None and os.environ.get(PASSWORD_ENV):
        cfg = dataclasses.replace(cfg, password=os.environ[PASSWORD_ENV])
    return cfg
