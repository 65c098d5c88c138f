"""Where a stream's patient/study context comes from: the Modality Worklist, on request.

Theory of operation
-------------------
An OR capture device does not ask its user to type the patient's name: it asks the RIS
which procedure is scheduled on it now (the Modality Worklist, PS3.4 Annex K) and takes
the identity from the chosen order. :func:`resolve_context` does that at start-up:

1. With no worklist configured it returns the base context unchanged.
2. With an accession number it queries by Accession Number (the technician picked an
   order on a screen, or scanned its barcode).
3. Otherwise it queries the steps scheduled today for this station's AE title and the
   stream's modality (``ES`` for RTV Video Endoscopic, ``XC`` for Photographic).

Exactly one order must match. Answers that differ only in their Scheduled Procedure Step
(one order, several steps) count as one. Zero or several orders are a
:class:`~rtstream.errors.ConfigError` that lists the candidates by Accession Number only
-- never names or IDs, which could end up in logs -- so the user can rerun with
``--accession``. The chosen order's values (patient, study, accession, requested
procedure) replace those of the base context; everything else (device, institution, ...)
is kept.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

from rtstream.dicom.context import StreamContext
from rtstream.errors import ConfigError, RemoteProtocolError, RtstreamError
from rtstream.pacs.worklist import (
    WorklistConfig,
    WorklistItem,
    WorklistQuery,
    apply_to_context,
    context_fields,
    find_worklist,
    today,
)

log = logging.getLogger(__name__)

DEFAULT_STATION_AET = "RTSTREAM"
#: Modality of the stream per RTV SOP class (PS3.3 A.32.x Modality constraints: ES/XC).
MODALITY_FOR_SOP = {"endoscopic": "ES", "photographic": "XC"}
_MAX_LISTED = 10


def _distinct_orders(items: list[WorklistItem]) -> list[WorklistItem]:
    """One item per order: items whose context values are equal differ only in steps."""
    seen: list[dict[str, str]] = []
    out: list[WorklistItem] = []
    for item in items:
        fields = context_fields(item)
        if fields not in seen:
            seen.append(fields)
            out.append(item)
    return out


def _accessions(items: list[WorklistItem]) -> str:
    shown = [repr(i.accession_number) if i.accession_number else "(no accession)"
             for i in items[:_MAX_LISTED]]
    more = f" and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else ""
    return ", ".join(shown) + more


def choose_item(
    items: list[WorklistItem],
    *,
    accession: str | None,
    station_aet: str,
    modality: str,
    date: str,
    worklist: str,
) -> WorklistItem:
    """Pick the one order among the answers of a worklist query.

    Parameters
    ----------
    items : list of WorklistItem
        The C-FIND answers.
    accession, station_aet, modality, date, worklist : str
        What was asked (for narrowing and for the error message).

    Raises
    ------
    ConfigError
        Naming ``--accession`` or ``--worklist`` when no order, or more than one, matches;
        the candidates are listed by Accession Number only.
    """
    orders = _distinct_orders(items)
    if accession is not None:
        # An archive may ignore a matching key it does not support: check it ourselves.
        orders = [i for i in orders if i.accession_number == accession] or orders
        if len(orders) > 1:
            # The same accession on several orders (rare): prefer this station and modality.
            narrowed = [
                i for i in orders
                if any(s.station_aet == station_aet and s.modality in ("", modality)
                       for s in i.steps)
            ]
            orders = narrowed or orders
        if not orders:
            raise ConfigError(
                "--accession", accession, f"the Accession Number of an order in {worklist} "
                "(none found)"
            )
        if len(orders) > 1:
            raise ConfigError(
                "--accession", accession,
                f"an Accession Number matching one order in {worklist}; "
                f"{len(orders)} orders match ({_accessions(orders)})",
            )
        return orders[0]
    what = f"station {station_aet!r}, modality {modality}, on {date}"
    if not orders:
        raise ConfigError(
            "--worklist", worklist,
            f"a worklist with one order scheduled for {what}; none found "
            "(check --station-aet, or pick the order with --accession)",
        )
    if len(orders) > 1:
        raise ConfigError(
            "--worklist", worklist,
            f"a worklist with one order scheduled for {what}; {len(orders)} found: "
            f"{_accessions(orders)} (pick one with --accession)",
        )
    return orders[0]


def worklist_item(
    *,
    worklist: str,
    station_aet: str | None,
    accession: str | None,
    modality: str,
    calling_aet: str | None = None,
    date: str | None = None,
    timeout: float = 10.0,
) -> WorklistItem:
    """Query the worklist SCP ``AET@HOST:PORT`` and return the one matching order.

    Blocking (one association); see :func:`resolve_context`.
    """
    station = station_aet or DEFAULT_STATION_AET
    cfg = WorklistConfig.from_target(
        worklist, calling_aet=calling_aet or station, timeout=timeout
    )
    day = date or today()
    if accession is not None:
        if not accession or len(accession) > 16 or "\\" in accession:
            raise ConfigError("--accession", accession, "an Accession Number (SH, 1..16 chars)")
        query = WorklistQuery.by_accession(accession)
    else:
        query = WorklistQuery.for_station(station, modality=modality, date=day)
    try:
        items = find_worklist(cfg, query)
    except ConnectionError as exc:
        raise ConfigError("--worklist", worklist, f"a reachable worklist SCP ({exc})") from None
    except RemoteProtocolError as exc:
        raise RtstreamError(f"worklist {worklist}: unusable answer: {exc}") from None
    item = choose_item(
        items, accession=accession, station_aet=station, modality=modality, date=day,
        worklist=worklist,
    )
    log.info("worklist %s: using order with accession %r", worklist, item.accession_number)
    return item


def resolve_context(
    base: StreamContext,
    *,
    worklist: str | None,
    station_aet: str | None,
    accession: str | None,
    modality: str,
    calling_aet: str | None = None,
    date: str | None = None,
    timeout: float = 10.0,
) -> StreamContext:
    """``base`` with the patient/study identity of the chosen worklist order.

    Parameters
    ----------
    base : StreamContext
        The context from configuration (device, institution, ...).
    worklist : str or None
        ``AET@HOST:PORT`` of the worklist SCP; None returns ``base`` unchanged.
    station_aet : str or None
        Scheduled Station AE Title to match (default ``RTSTREAM``); also our calling AE
        title unless ``calling_aet`` is given (many RIS filter on it).
    accession : str or None
        Pick the order by Accession Number instead of station/date/modality.
    modality : str
        ``ES`` or ``XC`` (see :data:`MODALITY_FOR_SOP`).
    date : str or None
        ``YYYYMMDD`` (default today, local time).

    Raises
    ------
    ConfigError
        Bad ``--worklist``/``--station-aet``/``--accession``, an unreachable worklist,
        or not exactly one matching order (candidates listed by accession number).
    RtstreamError
        The worklist answered a failure or a malformed item, or the item's values are
        not acceptable to :class:`StreamContext`.

    Notes
    -----
    Blocking: call it before the event loop starts, or via ``asyncio.to_thread``.
    """
    if worklist is None:
        if station_aet is not None or accession is not None:
            raise ConfigError(
                "--station-aet/--accession", station_aet or accession,
                "used only together with --worklist AET@HOST:PORT",
            )
        return base
    item = worklist_item(
        worklist=worklist, station_aet=station_aet, accession=accession, modality=modality,
        calling_aet=calling_aet, date=date, timeout=timeout,
    )
    try:
        return apply_to_context(item, base)
    except RemoteProtocolError as exc:
        raise RtstreamError(f"worklist {worklist}: order not usable: {exc}") from None


def worklist_overrides(base: StreamContext, resolved: StreamContext) -> dict[str, str]:
    """The fields ``resolved`` changed relative to ``base``, as ``[context]`` strings.

    For laying a worklist's values into a configuration's ``context`` table (which other
    sources, such as a DICOM file's own values, fill underneath).
    """
    out: dict[str, str] = {}
    for f in dataclasses.fields(StreamContext):
        new = getattr(resolved, f.name)
        if new != getattr(base, f.name) and new is not None:
            out[f.name] = str(new)
    return out


def context_with_worklist(
    context: Mapping[str, str],
    *,
    worklist: str | None,
    station_aet: str | None = None,
    accession: str | None = None,
    sop: str = "endoscopic",
    **kwargs: Any,
) -> dict[str, str]:
    """A ``[context]`` table with the chosen worklist order's identity laid over it.

    The one-call form for the sender's configuration: ``context`` is
    :attr:`rtstream.sender.SenderConfig.context` (file and flags), ``sop`` the
    ``--sop`` choice (its modality, :data:`MODALITY_FOR_SOP`, filters the worklist). The
    worklist wins over configured identity values: it is the authoritative source, and a
    stale configured name must not label this patient's images. Device values are kept.

    Raises
    ------
    ConfigError, RtstreamError
        As :func:`resolve_context`; also for an unknown ``sop``.
    """
    if sop not in MODALITY_FOR_SOP:
        raise ConfigError("sop", sop, " or ".join(MODALITY_FOR_SOP))
    if worklist is None and station_aet is None and accession is None:
        return dict(context)
    try:
        base = StreamContext(**context)
    except TypeError as exc:
        raise ConfigError("context", dict(context), str(exc)) from None
    resolved = resolve_context(
        base, worklist=worklist, station_aet=station_aet, accession=accession,
        modality=MODALITY_FOR_SOP[sop], **kwargs,
    )
    return {**context, **worklist_overrides(base, resolved)}


__all__ = [
    "context_with_worklist",
    "DEFAULT_STATION_AET",
    "MODALITY_FOR_SOP",
    "choose_item",
    "resolve_context",
    "worklist_item",
    "worklist_overrides",
]
