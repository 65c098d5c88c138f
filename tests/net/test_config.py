"""TOML configuration: loading, conversion, validation with key/value/allowed, flag overrides."""

from __future__ import annotations

import enum
import subprocess
import sys
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import pytest

from rtstream.config import from_mapping, load_toml, merge
from rtstream.dicom.realtime import RtvSop
from rtstream.errors import ConfigError
from rtstream.proto.formats import Sampling
from rtstream.sender import Pacing, SenderConfig, load_sender_config

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "samples" / "sender.toml"


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclass(frozen=True, kw_only=True)
class Inner:
    n: int = 1
    rate: Fraction = Fraction(30)
    color: Color = Color.RED

    def __post_init__(self) -> None:
        if self.n < 0:
            raise ConfigError("inner.n", self.n, "a non-negative integer")


@dataclass(frozen=True, kw_only=True)
class Outer:
    name: str = "x"
    path: Path | None = None
    flag: bool = False
    inner: Inner = field(default_factory=Inner)


def test_from_mapping_converts_nested_types() -> None:
    o = from_mapping(Outer, {"name": "a", "path": "/tmp/x", "flag": True,
                             "inner": {"n": 3, "rate": "60000/1001", "color": "blue"}})
    assert o == Outer(name="a", path=Path("/tmp/x"), flag=True,
                      inner=Inner(n=3, rate=Fraction(60000, 1001), color=Color.BLUE))


@pytest.mark.parametrize(
    ("data", "key", "allowed"),
    [
        ({"nmae": "a"}, "nmae", "a known key (did you mean 'name'? known: flag, inner, name, path)"),
        ({"flag": "yes"}, "flag", "true or false, e.g. flag = false"),
        ({"inner": {"n": "three"}}, "inner.n", "an integer (no quotes), e.g. n = 1"),
        ({"inner": {"n": -1}}, "inner.n", "a non-negative integer"),
        ({"inner": {"color": "green"}}, "inner.color", "one of 'red', 'blue', e.g. color = \"red\""),
        ({"inner": {"rate": "1/0"}}, "inner.rate", "a number or a ratio like 60000/1001, e.g. rate = 30"),
        ({"inner": 5}, "inner", "a table"),
    ],
)
def test_errors_name_key_value_and_allowed(data: dict[str, object], key: str, allowed: str) -> None:
    with pytest.raises(ConfigError) as err:
        from_mapping(Outer, data)
    assert err.value.key == key
    assert err.value.allowed == allowed


def test_merge_lets_flags_override_and_ignores_none() -> None:
    base = {"a": 1, "t": {"x": 1, "y": 2}}
    assert merge(base, {"a": None, "t": {"y": 3, "z": None}, "u": {"k": None}}) == {
        "a": 1, "t": {"x": 1, "y": 3}, "u": {}}


def test_sample_config_loads_and_flags_override() -> None:
    cfg = load_sender_config(SAMPLE)
    assert cfg.video.width == 1920 and cfg.video.fps == Fraction(60)
    assert cfg.video.sampling is Sampling.YCBCR_422 and cfg.video.depth == 10
    assert cfg.network.dest == "239.10.1.1" and cfg.network.ports() == (5004, 5006, 5008, 5010)
    assert cfg.pacing.mode is Pacing.LINEAR and cfg.rtv_sop is RtvSop.ENDOSCOPIC
    assert cfg.context["patient_name"] == "Doe^Jane"
    cfg2 = load_sender_config(SAMPLE, {"network": {"dest": "127.0.0.1", "port": 6000},
                                       "video": {"depth": 8}, "sop": "photographic"})
    assert cfg2.network.dest == "127.0.0.1" and cfg2.network.ports()[1] == 6002
    assert cfg2.video.depth == 8 and cfg2.video.width == 1920
    assert cfg2.rtv_sop is RtvSop.PHOTOGRAPHIC


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"video": {"depth": 11}}, "video.depth"),
        ({"video": {"field_timestamps": "quarter"}}, "video.field_timestamps"),
        ({"video": {"sampling": "YCbCr-4:1:1"}}, "video.sampling"),
        ({"network": {"dscp": 99}}, "network.dscp"),
        ({"network": {"port": 70000}}, "network.port"),
        ({"pacing": {"mode": "fast"}}, "pacing.mode"),
        ({"static_interval_ms": 2000}, "static_interval_ms"),
        ({"context": {"shoe_size": "44"}}, "context.shoe_size"),
        ({"audio": {"sample_rate": 22050}}, "audio.sample_rate"),
        ({"sop": "radiographic"}, "sop"),
    ],
)
def test_bad_sender_values(overrides: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_sender_config(None, overrides)
    assert err.value.key == key


def test_missing_and_broken_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="an existing TOML file"):
        load_toml(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[video\nwidth = 3\n")
    with pytest.raises(ConfigError, match="valid TOML"):
        load_toml(bad)


def test_defaults_are_valid() -> None:
    cfg = SenderConfig()
    assert cfg.network.ports() == (5004, 5006, 5008, 5010)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rtstream", *args], capture_output=True,
                          text=True, timeout=60, cwd=ROOT)


def test_cli_bad_config_exits_2_with_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[video]\ndepth = 9\n')
    r = run_cli("sdp", "--config", str(bad))
    assert r.returncode == 2
    assert "video.depth" in r.stderr and "9" in r.stderr and "8, 10, 12 or 16" in r.stderr


def test_cli_sdp_prints_the_session() -> None:
    r = run_cli("sdp", "--config", str(SAMPLE), "--dest", "239.1.2.3:7000", "--audio")
    assert r.returncode == 0, r.stderr
    from rtstream.proto.sdp import parse_sdp

    s = parse_sdp(r.stdout)
    assert [m.port for m in s.media] == [7000, 7002, 7004, 7006, 7012]  # 7012: rendition
    assert s.video()[0].address == "239.1.2.3" and s.video()[0].ttl == 1
    assert s.video()[0].video is not None and s.video()[0].video.tp == "2110TPW"


# -- TOML values of the wrong type, unknown keys, one spelling for flags and files ----------


def _toml(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.toml"
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    ("text", "key", "expected", "example"),
    [
        ('[video]\nwidth = "1280"\n', "video.width", "an integer", "width = "),
        ('[network]\nport = "5004"\n', "network.port", "an integer", "port = 5004"),
        ('[pacing]\nwindow = "0.5"\n', "pacing.window", "a number", "window = 0.8"),
        ('loop = "yes"\n', "loop", "true or false", "loop = false"),
        ('[audio]\nenabled = 1\n', "audio.enabled", "true or false", "enabled = false"),
        ('network = "239.1.1.1"\n', "network", "a table", None),
    ],
)
def test_wrong_type_names_key_type_and_example(tmp_path: Path, text: str, key: str,
                                               expected: str, example: str | None) -> None:
    with pytest.raises(ConfigError) as err:
        load_sender_config(_toml(tmp_path, text))
    assert err.value.key == key
    assert expected in err.value.allowed
    if example is not None:
        assert f"e.g. {example}" in err.value.allowed, err.value.allowed


def test_a_table_given_as_a_value_is_not_dropped_by_flags(tmp_path: Path) -> None:
    # the --depth/--sampling defaults (None) used to replace `network = "..."` silently
    with pytest.raises(ConfigError) as err:
        load_sender_config(_toml(tmp_path, 'network = "x"\n'),
                           {"network": {"ttl": None}, "video": {"depth": None}})
    assert err.value.key == "network"


@pytest.mark.parametrize(
    ("text", "key", "near"),
    [
        ('[video]\nwidht = 1280\n', "video.widht", "width"),
        ('[network]\ninterfase = "lo"\n', "network.interfase", "interface"),
        ('sdp_ot = "x.sdp"\n', "sdp_ot", "sdp_out"),
    ],
)
def test_unknown_keys_suggest_the_nearest(tmp_path: Path, text: str, key: str, near: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_sender_config(_toml(tmp_path, text))
    assert err.value.key == key
    assert f"did you mean {near!r}?" in err.value.allowed


def test_video_text_form_works_in_the_file_as_on_the_command_line(tmp_path: Path) -> None:
    cfg = load_sender_config(_toml(tmp_path, 'video = "640x480@25"\n'))
    assert (cfg.video.width, cfg.video.height, cfg.video.fps) == (640, 480, Fraction(25))
    # a flag setting one key of the table keeps the others the text gave
    cfg = load_sender_config(_toml(tmp_path, 'video = "640x480@60000/1001"\n'),
                             {"video": {"depth": 8, "sampling": None}})
    assert (cfg.video.width, cfg.video.fps, cfg.video.depth) == (640, Fraction(60000, 1001), 8)
    # ... and what the flag refuses, the file refuses
    with pytest.raises(ConfigError) as err:
        load_sender_config(_toml(tmp_path, 'video = "640x480x3"\n'))
    assert err.value.key == "video" and "WxH@FPS" in err.value.allowed
    r = run_cli("sdp", "--config", str(_toml(tmp_path, 'video = "320x240@30"\n')))
    assert r.returncode == 0, r.stderr
    r2 = run_cli("sdp", "--video", "320x240@30")
    assert "width=320; height=240; exactframerate=30" in r.stdout
    assert "width=320; height=240; exactframerate=30" in r2.stdout


def test_cli_wrong_type_is_one_line_with_the_example(tmp_path: Path) -> None:
    r = run_cli("sdp", "--config", str(_toml(tmp_path, '[video]\nwidth = "1280"\n')))
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "rtstream sdp: invalid video.width = '1280': an integer (no quotes), e.g. width = 1"]
