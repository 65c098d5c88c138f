"""docs/python.md runs as written: its ``python`` code blocks, in order, in one fresh
interpreter (they share a namespace, like a session), on free loopback ports."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.peers import free_port

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "python.md"


def code_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", text, flags=re.S | re.M)


def test_python_guide_runs_as_written(tmp_path: Path) -> None:
    blocks = code_blocks(DOC.read_text())
    assert len(blocks) >= 5
    script = tmp_path / "python_md.py"
    script.write_text("\n\n".join(blocks))
    env = dict(os.environ, RTSTREAM_PORT=str(free_port(count=4, step=2)))
    res = subprocess.run([sys.executable, str(script)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stdout + res.stderr
    out = res.stdout
    print(out)
    assert "last frame: (240, 320, 3) (360, 320)" in out
    assert "patient: DOC-0001 complete: True" in out
    assert re.search(r"analysed \d+ skipped \d+ latency p50 \d+ us", out)
    assert "first finding:" in out and "'label': 'bar'" in out
    assert "stored: ['ES', 'ES', 'PR', 'SR']" in out
