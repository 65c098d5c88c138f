"""A video source that lives in an archive: ``pacs:AET@HOST:PORT/<SOP Instance UID>``.

Media sources (:mod:`rtstream.media.sources`) read local devices and files only; this one
first retrieves the instance over the network (C-FIND + C-GET, :mod:`rtstream.pacs.retrieve`)
and then replays the local copy as a :class:`~rtstream.media.sources.DicomSource`. It is
composed here, above ``media/``, so that the media layer never reaches the network.
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from pathlib import Path

from rtstream.errors import ConfigError
from rtstream.media.sources import DicomSource, VideoSource, parse_spec
from rtstream.media.sources import open_video_source as open_local_source
from rtstream.pacs.retrieve import (
    ArchiveUnreachable,
    InstanceNotFound,
    RetrieveError,
    parse_pacs_spec,
    retrieve_instance,
)

__all__ = ["PacsSource", "open_video_source"]


class PacsSource(DicomSource):
    """Retrieve a stored cine or video from an archive by C-GET, then replay it.

    ``pacs:AET@HOST:PORT/<SOP Instance UID>``: opening locates the instance (C-FIND) and
    fetches it (C-GET, PS3.4 C.4.3) with :func:`rtstream.pacs.retrieve.retrieve_instance`
    into a private temporary folder, *blocking* until it is there (the size, rate and
    patient/study context must be known when the source is opened). From then on it is a
    :class:`DicomSource` on that file: same decoding, pacing and context from the file.
    The folder is removed by :meth:`cleanup`, when the source is garbage-collected, or at
    interpreter exit.

    Parameters
    ----------
    spec : str
        ``pacs:AET@HOST:PORT/UID``.
    calling_aet : str
        Our AE title towards the archive.
    timeout : float
        Network timeout in seconds for each step.

    Raises
    ------
    ConfigError
        Naming ``--source`` and the spec: a malformed spec, an unreachable archive or one
        that rejects us, an unknown UID, a refused retrieval, or a file that is not a
        replayable image.
    """

    def __init__(
        self, spec: str, *, loop: bool = False, calling_aet: str = "RTSTREAM",
        timeout: float = 30.0,
    ) -> None:
        cfg, uid = parse_pacs_spec(spec, calling_aet=calling_aet, timeout=timeout)
        tmp = Path(tempfile.mkdtemp(prefix="rtstream-pacs-"))
        self._cleanup = weakref.finalize(self, shutil.rmtree, tmp, ignore_errors=True)
        try:
            path = retrieve_instance(cfg, uid, tmp)
        except ArchiveUnreachable as exc:
            self._cleanup()
            raise ConfigError("--source", spec, f"a reachable archive that accepts us ({exc})") from None
        except InstanceNotFound as exc:
            self._cleanup()
            raise ConfigError("--source", spec, f"the UID of an instance the archive holds ({exc})") from None
        except RetrieveError as exc:
            self._cleanup()
            raise ConfigError("--source", spec, f"an instance the archive lets us retrieve ({exc})") from None
        except BaseException:
            self._cleanup()
            raise
        try:
            super().__init__(spec, path, loop=loop)
        except BaseException:
            self._cleanup()
            raise
        self.archive = cfg.where
        self.sop_instance_uid = uid

    def cleanup(self) -> None:
        """Stop and delete the retrieved file (the source cannot replay afterwards)."""
        self.close()
        self._cleanup()


def open_video_source(spec: str, *, loop: bool = False) -> VideoSource:
    """Open any ``--source`` spec: ``pacs:`` here, every other kind by the media layer.

    Raises
    ------
    ConfigError
        As :func:`rtstream.media.sources.open_video_source`, and for an archive that cannot
        hand over the instance.
    """
    kind, _ = parse_spec(spec)
    if kind == "pacs":
        return PacsSource(spec, loop=loop)
    return open_local_source(spec, loop=loop)
