"""docker/: the compose file's structure, and that every file and command it uses exists.

No Docker engine runs here, so this reads the files: compose.yaml (YAML), the Dockerfile
(instruction by instruction), mosquitto.conf and orthanc.json; every ``rtstream``
command line in compose.yaml is parsed by the real CLI parser.
"""

from __future__ import annotations

import contextlib
import io
import ipaddress
import json
import re
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml  # pyyaml, in the test extra

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
RTSTREAM_SERVICES = ("sender", "viewer", "archive", "sender-or2", "recorder")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    assert isinstance(doc, dict)
    return doc


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        word, _, rest = full.partition(" ")
        out.append((word.upper(), rest.strip()))
    assert not pending, "Dockerfile ends with a continuation"
    return out


def test_dockerfile_is_slim_non_root_with_healthcheck() -> None:
    ins = dockerfile_instructions(DOCKER / "Dockerfile")
    froms = [a for i, a in ins if i == "FROM"]
    assert froms and all(a.split()[0] == "python:3.11-slim" for a in froms)
    final = max(i for i, (k, _) in enumerate(ins) if k == "FROM")
    users = [a for k, a in ins[final:] if k == "USER"]
    assert users, "the final stage must switch to a non-root user"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    # The user exists in the image: created by a RUN of the final stage with that uid.
    runs = " ".join(a for k, a in ins[final:] if k == "RUN")
    assert re.search(rf"useradd\b.*--uid {user}\b", runs)
    health = [a for k, a in ins if k == "HEALTHCHECK"]
    assert len(health) == 1
    cmd = json.loads(health[0][health[0].index("CMD") + 3:].strip())
    assert cmd[:2] == ["python", "-c"]
    compile(cmd[2], "<healthcheck>", "exec")
    assert "urllib" in cmd[2]
    env = " ".join(a for k, a in ins if k == "ENV")
    assert "RTSTREAM_HEALTH_URL=" in env
    assert json.loads(next(a for k, a in ins if k == "ENTRYPOINT")) == ["rtstream"]


def test_dockerfile_copies_only_what_exists() -> None:
    for kind, args in dockerfile_instructions(DOCKER / "Dockerfile"):
        if kind not in ("COPY", "ADD") or args.startswith("--from"):
            continue
        *sources, _dest = shlex.split(args)
        for src in sources:
            assert (ROOT / src).exists(), f"COPY {src}: missing in the build context"


def test_services_volumes_and_networks(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"orthanc", "mosquitto", *RTSTREAM_SERVICES} <= services.keys()
    assert services["orthanc"]["image"].split(":")[0] in ("jodogne/orthanc",
                                                         "orthancteam/orthanc")
    assert services["mosquitto"]["image"].split(":")[0] == "eclipse-mosquitto"
    declared = set(compose.get("volumes") or {})
    assert {"outbox", "archive"} <= declared
    used: set[str] = set()
    for name, svc in services.items():
        for vol in svc.get("volumes", []):
            src, target = vol.split(":")[:2]
            if src.startswith((".", "/")):
                assert (DOCKER / src).resolve().exists(), f"{name}: bind mount {src} missing"
            else:
                assert src in declared, f"{name}: volume {src} not declared"
                used.add(src)
        for dep in svc.get("depends_on", {}):
            assert dep in services, f"{name} depends on unknown {dep}"
        for net in svc.get("networks", []):
            assert net in (compose.get("networks") or {})
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
    assert declared <= used, f"declared but unused volumes: {declared - used}"
    outbox_targets = [v.split(":")[1] for v in services["viewer"]["volumes"]
                      if v.startswith("outbox:")]
    assert outbox_targets, "the viewer keeps its outbox on the outbox volume"
    assert any(v.startswith("archive:") for v in services["archive"]["volumes"])


def test_rtstream_services_build_the_image_and_run_non_root(compose: dict[str, Any]) -> None:
    for name in RTSTREAM_SERVICES:
        svc = compose["services"][name]
        build = svc["build"]
        context = (DOCKER / build["context"]).resolve()
        assert context == ROOT
        assert (context / build["dockerfile"]).is_file()
        assert svc.get("user", "").split(":")[0] not in ("", "root", "0")
        hc = svc.get("healthcheck")
        if hc is not None:  # otherwise the Dockerfile's HEALTHCHECK applies
            assert hc["test"][0] == "CMD"
            if hc["test"][1:3] == ["python", "-c"]:
                compile(hc["test"][3], f"<{name} healthcheck>", "exec")
        else:
            url = urlsplit(svc["environment"]["RTSTREAM_HEALTH_URL"])
            assert url.hostname == "127.0.0.1"
            http_flag = svc["command"][svc["command"].index("--http") + 1]
            assert url.port == int(http_flag.rsplit(":", 1)[1]), f"{name} checks another port"


def _parse(argv: list[str]) -> Any:
    from rtstream.cli import build_parser

    parser = build_parser()
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return parser.parse_args(argv)
    except SystemExit:
        pytest.fail(f"`rtstream {shlex.join(argv)}` is refused by the CLI: {err.getvalue()}")


@pytest.mark.parametrize("service", RTSTREAM_SERVICES)
def test_commands_exist_in_the_cli(compose: dict[str, Any], service: str) -> None:
    argv = compose["services"][service]["command"]
    assert isinstance(argv, list) and all(isinstance(a, str) for a in argv)
    args = _parse(argv)
    assert args.command == argv[0]


def test_addresses_line_up(compose: dict[str, Any]) -> None:
    services = compose["services"]
    subnet = ipaddress.ip_network(compose["networks"]["rtv"]["ipam"]["config"][0]["subnet"])
    send = services["sender"]["command"]
    dest_host, dest_port = send[send.index("--dest") + 1].rsplit(":", 1)
    viewer_ip = services["viewer"]["networks"]["rtv"]["ipv4_address"]
    assert dest_host == viewer_ip and ipaddress.ip_address(viewer_ip) in subnet
    assert 1024 <= int(dest_port) < 65535
    view = services["viewer"]["command"]
    sdp = urlsplit(view[view.index("--sdp") + 1])
    assert sdp.hostname == "sender"
    assert sdp.port == int(send[send.index("--http") + 1].rsplit(":", 1)[1])
    send2, rec = services["sender-or2"]["command"], services["recorder"]["command"]
    assert send2[send2.index("--dest") + 1].split(":")[0] == (
        services["recorder"]["networks"]["rtv"]["ipv4_address"])
    assert urlsplit(rec[rec.index("--sdp") + 1]).hostname == "sender-or2"
    archive = services["archive"]["command"]
    aet2, hostport2 = rec[rec.index("--store") + 1].split("@")
    assert aet2 == archive[archive.index("--aet") + 1]
    assert hostport2 == f"archive:{archive[archive.index('--port') + 1]}"
    for name in ("sender", "viewer", "sender-or2", "recorder"):
        argv = services[name]["command"]
        mqtt = urlsplit(argv[argv.index("--mqtt") + 1])
        assert (mqtt.scheme, mqtt.hostname) == ("mqtt", "mosquitto")
        assert mqtt.port == 1883
    # The viewer stores to Orthanc's AET and DICOM port.
    orthanc = json.loads((DOCKER / "orthanc.json").read_text())
    aet, hostport = view[view.index("--store") + 1].split("@")
    assert aet == orthanc["DicomAet"]
    assert hostport == f"orthanc:{orthanc['DicomPort']}"
    assert orthanc["AuthenticationEnabled"] is True and orthanc["RegisteredUsers"]
    orthanc_ports = services["orthanc"]["ports"]
    assert any(p.endswith(f":{orthanc['HttpPort']}") for p in orthanc_ports)


def test_mqtt_urls_are_valid_configs(compose: dict[str, Any]) -> None:
    from rtstream.control.mqtt import MqttConfig

    for name in ("sender", "viewer", "sender-or2", "recorder"):
        argv = compose["services"][name]["command"]
        cfg = MqttConfig.from_url(argv[argv.index("--mqtt") + 1],
                                  node=argv[argv.index("--node") + 1])
        assert cfg.node == name


def test_mosquitto_conf(compose: dict[str, Any]) -> None:
    lines = [ln.split() for ln in (DOCKER / "mosquitto.conf").read_text().splitlines()
             if ln.strip() and not ln.lstrip().startswith("#")]
    conf: dict[str, list[list[str]]] = {}
    for words in lines:
        conf.setdefault(words[0], []).append(words[1:])
    assert conf["listener"] == [["1883", "0.0.0.0"]]
    assert int(conf["max_queued_messages"][0][0]) >= 1000
    assert conf["persistence"] == [["true"]]
    mount = [v for v in compose["services"]["mosquitto"]["volumes"]
             if v.startswith("./mosquitto.conf:")]
    assert mount and mount[0].split(":")[1] == "/mosquitto/config/mosquitto.conf"
    data = [v for v in compose["services"]["mosquitto"]["volumes"]
            if v.split(":")[1] == conf["persistence_location"][0][0].rstrip("/")]
    assert data, "mosquitto persistence is on a volume"
