"""Run a test body inside a fresh network namespace that holds only loopback.

``run_in_netns("tests.viewer.test_browser:_body", {...})`` starts
``unshare --net python -m tests.viewer.netns TARGET KWARGS RESULT`` in its own process
group; the child brings ``lo`` up, checks that it is the only interface, runs the
(sync or async) function with the JSON keyword arguments and writes its JSON result (or
the traceback) to RESULT. With ``veth=True`` the namespace also holds a veth pair whose
end ``rts0`` carries 127.0.0.2/32: Janus offers no candidate on a loopback interface, so
Janus and Chromium meet on 127.0.0.2, which still never leaves the namespace. Everything the body starts (servers, Chromium) lives in the
namespace, so no ICE candidate or packet can leave the machine. The parent stops the
whole process group by PID when the body ends or times out.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import os
import socket
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


VETH = "rts0"
VETH_ADDRESS = "127.0.0.2"


def run_in_netns(target: str, kwargs: dict[str, Any], *, timeout: float = 120,
                 veth: bool = False) -> Any:
    """Run ``module:function(**kwargs)`` in a loopback-only namespace; return its result.

    Fails the calling test (with the child's traceback and output) when the body raises.
    """
    import pytest

    from tests.peers import require_program, require_root, stop

    require_root("a network namespace")
    unshare = require_program("unshare")
    require_program("ip")
    with tempfile.TemporaryDirectory(prefix="rts-netns-") as tmp:
        result = Path(tmp) / "result.json"
        log = Path(tmp) / "child.log"
        cmd = [unshare, "--net", "--", sys.executable, "-m", "tests.viewer.netns", target,
               json.dumps(kwargs), str(result), "veth" if veth else "lo"]
        with open(log, "wb") as out:
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
            finally:
                stop(proc)
        output = log.read_text(errors="replace")[-6000:]
        if not result.exists():
            pytest.fail(f"netns body {target} produced no result (rc={proc.returncode}):\n{output}")
        res = json.loads(result.read_text())
        if not res["ok"]:
            pytest.fail(f"netns body {target} failed:\n{res['traceback']}\n--- output ---\n{output}")
        return res["value"]


def _child(target: str, kwargs_json: str, result_path: str, links: str = "lo") -> int:
    try:
        names = sorted(name for _, name in socket.if_nameindex())
        if names != ["lo"]:
            raise RuntimeError(f"namespace holds {names}, expected only lo")
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        if links == "veth":
            subprocess.run(["ip", "link", "add", VETH, "type", "veth", "peer", "name", "rts1"],
                           check=True)
            subprocess.run(["ip", "addr", "add", f"{VETH_ADDRESS}/32", "dev", VETH], check=True)
            for name in (VETH, "rts1"):
                subprocess.run(["ip", "link", "set", name, "up"], check=True)
        module, func = target.split(":")
        fn = getattr(importlib.import_module(module), func)
        value = fn(**json.loads(kwargs_json))
        if inspect.iscoroutine(value):
            value = asyncio.run(value)
        payload = {"ok": True, "value": value}
    except BaseException:
        payload = {"ok": False, "traceback": traceback.format_exc()}
    Path(result_path).write_text(json.dumps(payload))
    sys.stdout.flush()
    os._exit(0)  # don't wait for stray non-daemon threads


if __name__ == "__main__":
    sys.exit(_child(*sys.argv[1:5]))
