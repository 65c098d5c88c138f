"""The only place rtstream reaches into pydicom's private object layout.

Why
---
The grain decoder's template path (:mod:`rtstream.proto.rtv_metadata`, "Fast path")
rebuilds a grain's :class:`~pydicom.dataset.Dataset` from a remembered layout instead of
letting pydicom read the bytes again, about seven times faster per 1080p60 grain (173 µs
-> 24 µs when it was introduced).
To produce objects *equal attribute by attribute* to what pydicom's reader makes, it must

* read a data set's elements as stored, without converting raw elements
  (``Dataset._dict``; the public mapping API converts) and its character set
  (``Dataset._character_set``);
* copy an object's instance attributes (``vars(obj)``) and create objects with a given
  set of them without running ``__init__`` (``object.__new__`` plus an assigned
  ``__dict__``; ``Dataset.__setattr__`` is overridden, hence ``object.__setattr__``);
* know which attribute holds the payload of each container: ``Dataset._dict``,
  ``DataElement._value``, ``Sequence._list``.

pydicom offers no public API for any of this. Everything that depends on it is here, in
small named functions; ``tests/proto/test_pydicom_private.py`` checks the attributes
relied on, with their types, and that a data set built here equals pydicom's own
reading, so a pydicom upgrade that changes the layout fails loudly there rather than
quietly in the decoder. The decoder also checks each layout it remembers against
pydicom's reading of the same bytes and falls back to pydicom when anything differs.

Checked against pydicom 3.0.2 (:data:`CHECKED_PYDICOM_VERSION`).
"""

from __future__ import annotations

from typing import Any

from pydicom import config as pydicom_config
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag

CHECKED_PYDICOM_VERSION = "3.0.2"
"""The pydicom version whose object layout this module was written and tested against."""

DATASET_ELEMENTS = "_dict"
"""Instance attribute of a Dataset holding its elements by tag (raw or converted)."""
ELEMENT_VALUE = "_value"
"""Instance attribute of a DataElement holding its value."""
SEQUENCE_ITEMS = "_list"
"""Instance attribute of a Sequence holding its item data sets."""


def dataset_elements(ds: Dataset) -> dict[BaseTag, Any]:
    """The elements of ``ds`` as stored, in insertion order, without converting any
    raw element (``Dataset._dict``); the live mapping, not a copy."""
    elements: dict[BaseTag, Any] = getattr(ds, DATASET_ELEMENTS)
    return elements


def dataset_character_set(ds: Dataset) -> Any:
    """The character set ``ds`` decodes text with when it has no (0008,0005) of its own
    (``Dataset._character_set``: inherited from the parent data set)."""
    return ds._character_set


def snapshot_state(obj: object) -> dict[str, Any]:
    """The instance attributes of ``obj`` (its ``__dict__``): the live mapping."""
    state: dict[str, Any] = vars(obj)
    return state


def settings_state() -> tuple[tuple[str, Any], ...]:
    """Every attribute of ``pydicom.config.settings`` (validation modes...), by its
    stored name: what pydicom's conversions read besides the module-level options."""
    return tuple(vars(pydicom_config.settings).items())


def new_element(state: dict[str, Any], value: Any) -> DataElement:
    """A DataElement with the attributes ``state`` and the value ``value``, made
    without ``__init__`` (no validation, no conversion)."""
    elem: DataElement = object.__new__(DataElement)
    elem.__dict__ = {**state, ELEMENT_VALUE: value}
    return elem


def new_sequence(state: dict[str, Any], items: list[Dataset]) -> Sequence:
    """A Sequence with the attributes ``state`` holding ``items`` (their parent links
    are not touched), made without ``__init__``."""
    seq: Sequence = object.__new__(Sequence)
    seq.__dict__ = {**state, SEQUENCE_ITEMS: items}
    return seq


def new_dataset(state: dict[str, Any]) -> Dataset:
    """A Dataset whose instance attributes are exactly ``state`` (which must hold
    :data:`DATASET_ELEMENTS`), made without ``__init__``."""
    ds: Dataset = object.__new__(Dataset)
    object.__setattr__(ds, "__dict__", state)
    return ds


__all__ = [
    "CHECKED_PYDICOM_VERSION",
    "DATASET_ELEMENTS",
    "ELEMENT_VALUE",
    "SEQUENCE_ITEMS",
    "dataset_character_set",
    "dataset_elements",
    "new_dataset",
    "new_element",
    "new_sequence",
    "settings_state",
    "snapshot_state",
]
