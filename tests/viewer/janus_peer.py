"""A real Janus Gateway (Debian ``janus`` 1.1.2) for the suite, with a config folder of its own.

Only the Streaming plugin and the HTTP transport load (folders of symlinks to those two
``.so`` files); the HTTP API binds 127.0.0.1 on a free port; the Streaming plugin has an
``admin_key`` and, optionally, one RTP mountpoint (H.264 video with keyframe buffering,
an RTCP port and a data port) protected by a secret and a pin. ``ice_enforce_list``
names the interface Janus may offer to browsers (it never offers loopback interfaces;
see tests/viewer/netns.py for the veth holding 127.0.0.2). Started as
``janus -C DIR/janus.jcfg -F DIR -o``, ready when ``GET /janus/info`` answers, stopped by
PID.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.peers import free_port, require_program, stop

PLUGINS = Path("/usr/lib/x86_64-linux-gnu/janus/plugins")
TRANSPORTS = Path("/usr/lib/x86_64-linux-gnu/janus/transports")
ADMIN_KEY = "test-admin-key-0042"
SECRET = "test-mount-secret-0042"
PIN = "test-pin-0042"
MOUNTPOINT = 42


class Janus:
    """One Janus process; ``mountpoint=True`` configures mountpoint 42 with fixed ports."""

    def __init__(self, workdir: Path, *, mountpoint: bool = True, enforce: str | None = None,
                 debug_level: int = 4) -> None:
        self.program = require_program("janus")
        for so in (PLUGINS / "libjanus_streaming.so", TRANSPORTS / "libjanus_http.so"):
            if not so.exists():
                from tests.peers import peer_missing

                peer_missing(f"{so} is missing (make deps installs janus)")
        self.dir = Path(workdir)
        (self.dir / "plugins").mkdir(parents=True, exist_ok=True)
        (self.dir / "transports").mkdir(exist_ok=True)
        for folder, so in (("plugins", PLUGINS / "libjanus_streaming.so"),
                           ("transports", TRANSPORTS / "libjanus_http.so")):
            link = self.dir / folder / so.name
            if not link.exists():
                link.symlink_to(so)
        self.http_port = free_port(kind=socket.SOCK_STREAM)
        self.video_port = free_port(count=2, step=2)
        self.data_port = self.video_port + 2
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.dir / "janus.log"
        nat = f'ice_enforce_list = "{enforce}"' if enforce else ""
        (self.dir / "janus.jcfg").write_text(f"""
general: {{
  configs_folder = "{self.dir}"
  plugins_folder = "{self.dir}/plugins"
  transports_folder = "{self.dir}/transports"
  events_folder = "{self.dir}/none"
  loggers_folder = "{self.dir}/none"
  debug_level = {debug_level}
  admin_secret = "test-admin-secret-0042"
}}
media: {{ }}
nat: {{ {nat} }}
""")
        (self.dir / "janus.transport.http.jcfg").write_text(f"""
general: {{ json = "plain" base_path = "/janus" http = true port = {self.http_port}
           ip = "127.0.0.1" https = false }}
admin: {{ admin_http = false }}
""")
        mp = ""
        if mountpoint:
            mp = f"""
rtstream-test: {{
  type = "rtp"
  id = {MOUNTPOINT}
  description = "rtstream test"
  secret = "{SECRET}"
  pin = "{PIN}"
  video = true
  videoport = {self.video_port}
  videortcpport = {self.video_port + 1}
  videoiface = "127.0.0.1"
  videopt = 96
  videocodec = "h264"
  videofmtp = "profile-level-id=42e01f;packetization-mode=1"
  videobufferkf = true
  data = true
  dataport = {self.data_port}
  dataiface = "127.0.0.1"
}}
"""
        (self.dir / "janus.plugin.streaming.jcfg").write_text(
            f'general: {{ admin_key = "{ADMIN_KEY}" }}\n' + mp)

    @property
    def url(self) -> str:
        """Janus's HTTP API."""
        return f"http://127.0.0.1:{self.http_port}/janus"

    def start(self, timeout: float = 20) -> None:
        """Start Janus and wait until ``GET /janus/info`` answers."""
        log = open(self.log_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [self.program, "-C", str(self.dir / "janus.jcfg"), "-F", str(self.dir), "-o"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(self.url + "/info", timeout=1) as r:
                    if json.loads(r.read()).get("janus") == "server_info":
                        return
            except (OSError, urllib.error.URLError, ValueError):
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"Janus did not start; see {self.log_path}:\n"
                                   + self.log_path.read_text(errors="replace")[-3000:])
            time.sleep(0.1)

    def kill(self) -> None:
        """Kill Janus at once (SIGKILL), as a crash would."""
        if self.proc is not None:
            stop(self.proc, signal.SIGKILL)
            self.proc = None

    def stop(self) -> None:
        """Stop Janus by PID (TERM, then KILL)."""
        if self.proc is not None:
            stop(self.proc)
            self.proc = None

    def streaming(self, body: dict[str, Any]) -> dict[str, Any]:
        """One Streaming-plugin request in a throwaway session; its ``plugindata.data``."""
        def post(path: str, payload: dict[str, Any]) -> dict[str, Any]:
            req = urllib.request.Request(
                self.url + path, json.dumps({**payload, "transaction": "t"}).encode(),
                {"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=5) as r:
                out: dict[str, Any] = json.loads(r.read())
                return out

        session = post("", {"janus": "create"})["data"]["id"]
        try:
            handle = post(f"/{session}", {"janus": "attach",
                                          "plugin": "janus.plugin.streaming"})["data"]["id"]
            data: dict[str, Any] = post(f"/{session}/{handle}",
                                        {"janus": "message", "body": body})["plugindata"]["data"]
            return data
        finally:
            post(f"/{session}", {"janus": "destroy"})
