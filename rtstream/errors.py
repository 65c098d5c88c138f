"""Who is at fault, said by the exception type (the h11 convention).

* :class:`RemoteProtocolError` -- bad input from the network. The caller counts it,
  logs it at debug, drops the packet or grain and goes on.
* :class:`LocalProtocolError` -- the caller misused an API (a bug on our side of the wire).
* :class:`ConfigError` -- a user gave a bad value; the message names the field, the value
  and what is allowed.

Every message names the field at fault.
"""

from __future__ import annotations


class RtstreamError(Exception):
    """Base class of every error rtstream raises on purpose."""


class RemoteProtocolError(RtstreamError):
    """Malformed or unacceptable data received from the network.

    Parameters
    ----------
    field : str
        The protocol field that was wrong, e.g. ``"RTP version"``.
    message : str
        What was wrong with it.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class LocalProtocolError(RtstreamError):
    """The caller asked for something the protocol does not allow."""


class ConfigError(RtstreamError, ValueError):
    """A configuration value is invalid.

    Parameters
    ----------
    key : str
        The configuration key (or CLI flag) at fault.
    value : object
        The value that was given.
    allowed : str
        What would have been accepted.
    """

    def __init__(self, key: str, value: object, allowed: str) -> None:
        super().__init__(f"invalid {key} = {value!r}: {allowed}")
        self.key = key
        self.value = value
        self.allowed = allowed
