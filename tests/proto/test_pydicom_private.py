"""rtstream/proto/_pydicom_private.py: the pydicom object layout the grain decoder's
template path relies on. These tests fail loudly when a pydicom upgrade changes it."""

from __future__ import annotations

from collections.abc import Iterator

import pydicom
import pytest
from pydicom import config as pydicom_config
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag

from rtstream.dicom.realtime import RtvSop
from rtstream.proto import _pydicom_private as pp
from rtstream.proto import rtv_metadata as rm
from tests.proto.test_grain_decode_fast import (
    assert_same_dataset,
    assert_same_outcome,
    body_of,
    sender_stream,
    template_hits,
)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(autouse=True)
def _fresh_caches() -> Iterator[None]:
    rm._clear_caches()
    yield
    rm._clear_caches()


def read(body: bytes) -> Dataset:
    """pydicom's own reading of an explicit VR little endian body."""
    ds: Dataset = read_dataset(DicomBytesIO(body), is_implicit_VR=False, is_little_endian=True)
    return ds


def grain_body() -> bytes:
    return body_of(sender_stream(RtvSop.ENDOSCOPIC, 1)[0])  # with the static part


def test_pydicom_version_is_the_checked_one() -> None:
    assert pydicom.__version__ == pp.CHECKED_PYDICOM_VERSION, (
        f"pydicom {pydicom.__version__} is not {pp.CHECKED_PYDICOM_VERSION}, the version "
        "rtstream/proto/_pydicom_private.py was checked against: run these tests, check "
        "the layout it relies on, then update CHECKED_PYDICOM_VERSION"
    )


def test_dataset_layout() -> None:
    ds = read(grain_body())
    state = pp.snapshot_state(ds)
    assert state is vars(ds) and pp.DATASET_ELEMENTS in state
    elements = pp.dataset_elements(ds)
    assert type(elements) is dict and elements is state[pp.DATASET_ELEMENTS]
    assert elements and all(type(k) is BaseTag for k in elements)
    # as read, elements stay raw (converted on first access through the public API)
    assert all(type(e) is RawDataElement for e in elements.values())
    assert list(elements) == sorted(elements)
    first = next(iter(elements))
    converted = ds[first]
    assert type(converted) is DataElement and pp.dataset_elements(ds)[first] is converted
    assert pp.dataset_character_set(ds) == ds._character_set  # inherited/default charset


def test_element_and_sequence_layout() -> None:
    ds = read(grain_body())
    seq_elem = ds[rm.CURRENT_FRAME_FUNCTIONAL_GROUPS_SEQUENCE]
    assert type(seq_elem) is DataElement
    estate = pp.snapshot_state(seq_elem)
    assert pp.ELEMENT_VALUE in estate and estate[pp.ELEMENT_VALUE] is seq_elem.value
    seq = seq_elem.value
    assert type(seq) is Sequence
    sstate = pp.snapshot_state(seq)
    assert type(sstate[pp.SEQUENCE_ITEMS]) is list and sstate[pp.SEQUENCE_ITEMS][0] is seq[0]
    assert type(seq[0]) is Dataset


def test_settings_state_names_every_setting() -> None:
    state = dict(pp.settings_state())
    assert state and all(isinstance(k, str) for k in state)
    before = pp.settings_state()
    old = pydicom_config.settings.reading_validation_mode
    pydicom_config.settings.reading_validation_mode = pydicom_config.IGNORE
    try:
        assert pp.settings_state() != before  # a setting change shows in the state
    finally:
        pydicom_config.settings.reading_validation_mode = old


def rebuild(ds: Dataset) -> Dataset:
    """A copy of ``ds`` made only with the adapter's constructors."""
    elements: dict[BaseTag, DataElement] = {}
    for tag in list(pp.dataset_elements(ds)):
        elem = ds[tag]  # converted by pydicom
        state = {k: v for k, v in pp.snapshot_state(elem).items() if k != pp.ELEMENT_VALUE}
        value = elem.value
        if type(value) is Sequence:
            sstate = {k: v for k, v in pp.snapshot_state(value).items()
                      if k != pp.SEQUENCE_ITEMS}  # fmt: skip
            value = pp.new_sequence(sstate, [rebuild(item) for item in value])
        elements[tag] = pp.new_element(state, value)
    state = {**pp.snapshot_state(ds), pp.DATASET_ELEMENTS: elements}
    return pp.new_dataset(state)


def test_objects_made_by_the_adapter_equal_pydicoms() -> None:
    theirs = read(grain_body())
    ours = rebuild(theirs)  # converts every element of theirs on the way, as pydicom does
    assert ours is not theirs
    assert_same_dataset(ours, theirs)
    assert ours == theirs
    assert ours.PatientID == theirs.PatientID  # the public API works on them


def test_fast_decoder_round_trip_equals_pydicoms_decoding() -> None:
    grains = sender_stream(RtvSop.ENDOSCOPIC, 4, first=1)  # no static part: same size
    for g in grains:
        assert_same_outcome(g)
    assert template_hits(body_of(grains[-1]))  # the adapter-built path was taken
    fast = rm.decode_grain(grains[-1])
    assert_same_dataset(fast.dataset, rm._decode_grain_reference(grains[-1]).dataset)
