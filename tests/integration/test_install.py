"""``pip install .`` (not editable) of a clean copy of the project gives an ``intercom`` that
starts and registers with the real Asterisk: the Cython core is compiled, the board profiles
are package data, nothing is read from the source tree, and the generated C is not installed
(the image would carry ~15 MB of it). Needs the package registry (as a
user's install does)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from devtools.asterisk import PASSWORDS, Asterisk
from devtools.loopback import free_port
from devtools.paths import REPO
from devtools.waiting import wait_for

pytestmark = pytest.mark.integration


def test_pip_install_gives_a_working_intercom(tmp_path: Path) -> None:
    src = tmp_path / "src"
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                            "--exclude-standard"], cwd=REPO, capture_output=True,
                           check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        if (REPO / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            (src / name).write_bytes((REPO / name).read_bytes())
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    # one compiler per core, as the image build does (setuptools reads DIST_EXTRA_CONFIG)
    build_cfg = tmp_path / "build.cfg"
    build_cfg.write_text(f"[build_ext]\nparallel = {os.cpu_count() or 1}\n")
    pip = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(src)],
                         capture_output=True, text=True, timeout=900,
                         env={**os.environ, "DIST_EXTRA_CONFIG": str(build_cfg)})
    assert pip.returncode == 0, pip.stderr[-3000:]
    intercom = venv / "bin" / "intercom"
    elsewhere = tmp_path / "run"
    elsewhere.mkdir()
    site = subprocess.run([str(venv / "bin" / "python"), "-c",
                           "import firmware, firmware._rtpcore as c; print(firmware.__file__)"],
                          cwd=elsewhere, capture_output=True, text=True, check=True).stdout
    assert str(venv) in site, "the installed package, not the source tree"
    package = Path(site.strip()).parent
    assert (package / "core").is_dir(), "the compiled core's package"
    assert len(list(package.glob("_*.so")) + list((package / "core").glob("_*.so"))) >= 14, \
        "the I/O shell and the compiled core's units"
    built = [p.name for p in package.rglob("*") if p.suffix in (".c", ".cpp", ".h")]
    assert not built, f"build inputs installed with the package: {built}"

    pbx = Asterisk().start()
    proc = None
    try:
        sock = tmp_path / "control.sock"
        config = tmp_path / "intercom.yaml"
        config.write_text(json.dumps({
            "sip": {"server": "127.0.0.1", "port": pbx.port, "username": "5002",
                    "password": PASSWORDS["5002"], "local_port": free_port()},
            "control": {"socket": str(sock)}, "media": {"rtp_port": 0}}))
        check = subprocess.run([str(intercom), "check-config", str(config)], cwd=elsewhere,
                               capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
        log = open(tmp_path / "intercom.log", "wb")
        proc = subprocess.Popen([str(intercom), "run", "--config", str(config)], cwd=elsewhere,
                                stdout=log, stderr=subprocess.STDOUT)
        wait_for(lambda: pbx.registered("5002") or proc.poll() is not None, 30, 0.2,
                 "the pip-installed intercom to register")
        assert proc.poll() is None, (tmp_path / "intercom.log").read_text()
        status = json.loads(subprocess.run(
            [str(intercom), "--socket", str(sock), "status", "--json"], capture_output=True,
            text=True, check=True).stdout)
        assert status["registered"] is True
        # the plain profile came from the package: every button and LED exists (simulated here)
        assert set(status["leds"]) >= {"registered", "ringing", "in_call", "error", "relay"}
        assert status["gpio"]["simulated"] is True
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        time.sleep(0.1)
        pbx.cleanup()
