"""The image's host firewall loaded into a real kernel: ``python -m firmware.firewall --apply``
(the command the image's root unit runs) inside a network namespace this test creates, probed
from a second namespace over a veth pair with two source addresses, a trusted one (the
registrar, learnt from the runtime directory's registrar file) and a stranger.

Nothing here leaves the test's own namespaces: 10.201.0.0/24 exists only on that veth pair."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.paths import REPO
from firmware import provisioning_io as pio
from firmware.provisioning import CACHE_NAME

pytestmark = pytest.mark.integration
BOX, TRUSTED, STRANGER = "10.201.0.1", "10.201.0.2", "10.201.0.3"
SIP_PORT, CLOSED_UDP, CLOSED_TCP = 5070, 5071, 5072

# run inside the namespaces: a SIP-port listener on the box, probes from the peer
LISTEN = f"""
import json, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", {SIP_PORT}))
s.settimeout(30.0)
print("ready", flush=True)
got = []
while True:
    data, addr = s.recvfrom(2048)
    if data == b"stop" and addr[0] == "127.0.0.1":
        break
    got.append(addr[0])
print(json.dumps(got), flush=True)
"""
PROBE = f"""
import json, socket, sys
src = sys.argv[1]
out = {{}}
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((src, 0))
s.sendto(b"OPTIONS sip:probe SIP/2.0\\r\\n\\r\\n", ("{BOX}", {SIP_PORT}))
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # a closed UDP port: ICMP unreachable?
u.bind((src, 0))
u.connect(("{BOX}", {CLOSED_UDP}))
u.settimeout(1.0)
u.send(b"probe")
try:
    u.recv(100)
    out["udp"] = "answered"
except ConnectionRefusedError:
    out["udp"] = "port unreachable"
except TimeoutError:
    out["udp"] = "silent"
t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # a closed TCP port: a reset?
t.bind((src, 0))
t.settimeout(1.0)
try:
    t.connect(("{BOX}", {CLOSED_TCP}))
    out["tcp"] = "connected"
except ConnectionRefusedError:
    out["tcp"] = "reset"
except TimeoutError:
    out["tcp"] = "silent"
print(json.dumps(out))
"""


STOP = f"""
import socket
socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"stop", ("127.0.0.1", {SIP_PORT}))
"""


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, check=check, timeout=30)


@pytest.fixture
def namespaces() -> Iterator[tuple[str, str]]:
    if shutil.which("nft") is None:
        pytest.fail("nft is missing: ./build.sh setup installs Debian's nftables")
    tag = uuid.uuid4().hex[:6]
    box, peer, dev = f"fwb-{tag}", f"fwp-{tag}", f"vfw{tag}"
    try:
        sh("ip", "netns", "add", box)
        sh("ip", "netns", "add", peer)
        sh("ip", "link", "add", f"{dev}a", "netns", box, "type", "veth", "peer", "name",
           f"{dev}b", "netns", peer)
        sh("ip", "-n", box, "addr", "add", f"{BOX}/24", "dev", f"{dev}a")
        for ip in (TRUSTED, STRANGER):
            sh("ip", "-n", peer, "addr", "add", f"{ip}/24", "dev", f"{dev}b")
        for ns, d in ((box, f"{dev}a"), (peer, f"{dev}b")):
            sh("ip", "-n", ns, "link", "set", d, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
    except (subprocess.CalledProcessError, FileNotFoundError) as exc:
        pytest.fail(f"cannot build the test namespaces: {getattr(exc, 'stderr', exc)}")
    yield box, peer
    sh("ip", "netns", "del", box, check=False)
    sh("ip", "netns", "del", peer, check=False)


def probe(box: str, peer: str) -> dict[str, dict]:
    """Both sources send to the SIP port and knock on a closed UDP and TCP port."""
    listener = subprocess.Popen(["ip", "netns", "exec", box, sys.executable, "-c", LISTEN],
                                stdout=subprocess.PIPE, text=True)
    assert listener.stdout is not None and listener.stdout.readline().strip() == "ready"
    found = {}
    for src in (TRUSTED, STRANGER):
        r = sh("ip", "netns", "exec", peer, sys.executable, "-c", PROBE, src)
        found[src] = json.loads(r.stdout)
    sh("ip", "netns", "exec", box, sys.executable, "-c", STOP)
    out, _ = listener.communicate(timeout=15)
    reached = json.loads(out)
    for src in (TRUSTED, STRANGER):
        found[src]["sip"] = "reached" if src in reached else "dropped"
    return found


def apply(box: str, config: Path, runtime: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", box, sys.executable, "-m", "firmware.firewall",
                           "--apply", "--config", str(config), "--runtime", str(runtime),
                           "--ssh", "no"], cwd=REPO, capture_output=True, text=True,
                          timeout=30)


def test_only_the_registrar_reaches_sip_and_a_scan_learns_nothing(namespaces,
                                                                  tmp_path: Path) -> None:
    box, peer = namespaces
    before = probe(box, peer)  # no firewall: the kernel answers for closed ports
    assert before[STRANGER] == {"udp": "port unreachable", "tcp": "reset", "sip": "reached"}

    config = tmp_path / "intercom.yaml"  # a name as server: the registrar file says where
    config.write_text("sip: {server: pbx.invalid, username: '5002'}\n")
    (tmp_path / "registrar").write_text(f"{TRUSTED}\n")
    done = apply(box, config, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "table inet intercom" in sh("ip", "netns", "exec", box, "nft", "list", "ruleset").stdout

    after = probe(box, peer)
    assert after[TRUSTED]["sip"] == "reached", after
    assert after[STRANGER] == {"udp": "silent", "tcp": "silent", "sip": "dropped"}, after

    # the registrar moved: the app rewrites the file, the .path unit runs the command again
    (tmp_path / "registrar").write_text(f"{STRANGER}\n")
    assert apply(box, config, tmp_path).returncode == 0
    moved = probe(box, peer)
    assert moved[TRUSTED]["sip"] == "dropped" and moved[STRANGER]["sip"] == "reached", moved
    rules = sh("ip", "netns", "exec", box, "nft", "list", "ruleset").stdout
    assert rules.count("table inet intercom") == 1, "replaced, not stacked"


def test_a_tampered_registrar_file_or_config_admits_nobody(namespaces, tmp_path: Path) -> None:
    box, peer = namespaces
    config = tmp_path / "intercom.yaml"
    config.write_text("sip: {server: pbx.invalid, username: '5002'}\n")
    (tmp_path / "registrar").write_text(f"{TRUSTED}\n0.0.0.0/0 ; flush ruleset\n")
    done = apply(box, config, tmp_path)
    assert done.returncode == 0 and "registrar ignored: line 2" in done.stderr
    found = probe(box, peer)
    assert found[TRUSTED]["sip"] == "dropped" and found[STRANGER]["sip"] == "dropped", found

    config.write_text("sip: {server: 10.201.0.2}\n")  # invalid: no username
    (tmp_path / "registrar").write_text(f"{TRUSTED}\n")
    done = apply(box, config, tmp_path)
    assert done.returncode == 1 and "admitting no SIP or RTP source" in done.stderr
    found = probe(box, peer)
    assert found[TRUSTED]["sip"] == "dropped" and found[STRANGER]["udp"] == "silent", found


def test_the_trust_follows_the_provisioned_configuration_with_the_units_capabilities(
        namespaces, tmp_path: Path) -> None:
    """The card names the PBX by name and trusts nobody; the document the intercom runs
    (kept on the data partition by the intercom user, 0700) trusts TRUSTED. The command runs
    with the capabilities intercom-firewall.service leaves root: CAP_NET_ADMIN alone cannot
    read the intercom's folder (the card's trust, with one line saying why); with
    CAP_DAC_READ_SEARCH the provisioned trust is loaded."""
    box, peer = namespaces
    runtime = tmp_path / "run"
    runtime.mkdir()
    (tmp_path / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    config = tmp_path / "intercom.yaml"
    config.write_text("sip: {server: pbx.invalid, username: '5002'}\n"
                      f"control: {{socket: {runtime}/intercom.sock}}\n"
                      "provisioning: {url: 'https://prov.invalid/{mac}.yaml', "
                      f"ca_file: {tmp_path}/ca.crt, mac: b8-27-eb-12-34-56}}\n")
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    pio.save_cache(data / "provisioning", CACHE_NAME,
                   f"sip: {{trusted_sources: [{TRUSTED}/32]}}\n".encode(), None)
    sh("chown", "-R", "65534:65534", str(data))  # the intercom user's, not root's

    def as_unit(caps: str) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", box, "setpriv",
                               f"--bounding-set=-all,{caps}", "--inh-caps=-all",
                               sys.executable, "-m", "firmware.firewall", "--apply",
                               "--config", str(config), "--runtime", str(runtime),
                               "--ssh", "no", "--data", str(data)],
                              cwd=REPO, capture_output=True, text=True, timeout=30)

    done = as_unit("+net_admin")
    assert done.returncode == 0, done.stderr
    assert "ignored: cannot read it: Permission denied" in done.stderr
    found = probe(box, peer)
    assert found[TRUSTED]["sip"] == "dropped" and found[STRANGER]["sip"] == "dropped", found

    done = as_unit("+net_admin,+dac_read_search")
    assert done.returncode == 0, done.stderr
    assert "trust from the provisioned configuration" in done.stderr
    found = probe(box, peer)
    assert found[TRUSTED]["sip"] == "reached", found
    assert found[STRANGER] == {"udp": "silent", "tcp": "silent", "sip": "dropped"}, found
