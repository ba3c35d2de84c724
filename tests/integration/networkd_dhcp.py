"""A real DHCP exchange for the provisioning tests: Debian's dnsmasq answers in one network
namespace, the build host's systemd-networkd asks from another (the image's 20-wired.network
settings), and the lease file networkd writes is handed back. Everything stays on a veth pair
between two namespaces this module creates (10.203.0.0/24 exists nowhere else).

networkd runs in the box namespace's own mount namespace (``ip netns exec``) with a tmpfs over
/run/systemd, /run/dbus and /run/udev, /sys read-only (so it does not wait for a udev that is not
there) and its netif/ folder bound to the caller's directory, so the lease appears there."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

NETWORKD = next((p for p in ("/lib/systemd/systemd-networkd",
                             "/usr/lib/systemd/systemd-networkd") if os.path.exists(p)), None)
SERVER, PREFIX = "10.203.0.1", "10.203.0.0/24"

# the image's images/overlay/etc/systemd/network/20-wired.network with the lines it needs
# for provisioning.url: dhcp (the interface name differs: a veth here)
NETWORK = """[Match]
Name={dev}

[Network]
DHCP=yes

[DHCPv4]
UseHostname=no
RequestOptions=43
VendorClassIdentifier=intercom-rpi
"""


class UnavailableError(Exception):
    """A tool the exchange needs is missing or the namespaces cannot be built."""


def _sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, check=check, timeout=30)


def lease(workdir: Path, dnsmasq_options: list[str], network: str = NETWORK,
          wait: float = 60.0) -> tuple[str, str]:
    """(the lease file networkd wrote, dnsmasq's log of the exchange) for a DHCP server sending
    ``dnsmasq_options`` (``--dhcp-option`` values)."""
    if NETWORKD is None or shutil.which("dnsmasq") is None:
        raise UnavailableError("systemd-networkd and dnsmasq are needed (./build.sh setup installs "
                          "Debian's dnsmasq-base; networkd comes with systemd)")
    tag = uuid.uuid4().hex[:6]
    box, srv, dev = f"dhb-{tag}", f"dhs-{tag}", f"vdh{tag}"
    netif = workdir / "netif"
    conf = workdir / "network"
    for d in (netif / "leases", netif / "links", conf):
        d.mkdir(parents=True, exist_ok=True)
    (conf / "20-wired.network").write_text(network.format(dev=f"{dev}a"))
    uid = _sh("id", "-u", "systemd-network", check=False).stdout.strip()
    if not uid:
        raise UnavailableError("no systemd-network user on this host")
    _sh("chown", "-R", f"{uid}:{uid}", str(netif))
    procs: list[subprocess.Popen] = []
    server_log = workdir / "dnsmasq.log"
    try:
        try:
            _sh("ip", "netns", "add", box)
            _sh("ip", "netns", "add", srv)
            _sh("ip", "link", "add", f"{dev}a", "netns", box, "type", "veth", "peer", "name",
                f"{dev}b", "netns", srv)
            _sh("ip", "-n", srv, "addr", "add", f"{SERVER}/24", "dev", f"{dev}b")
            for ns in (box, srv):
                _sh("ip", "-n", ns, "link", "set", "lo", "up")
            _sh("ip", "-n", srv, "link", "set", f"{dev}b", "up")
        except (subprocess.CalledProcessError, FileNotFoundError) as exc:
            raise UnavailableError(f"cannot build the namespaces: {getattr(exc, 'stderr', exc)}") \
                from None
        args = ["ip", "netns", "exec", srv, "dnsmasq", "--no-daemon", "--port=0",
                "--log-dhcp", f"--interface={dev}b", "--bind-interfaces",
                f"--dhcp-leasefile={workdir / 'dnsmasq.leases'}",
                "--dhcp-range=10.203.0.50,10.203.0.60,1h",
                *(f"--dhcp-option={o}" for o in dnsmasq_options)]
        with server_log.open("w") as out:
            procs.append(subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT))
        inner = (f"mount -t tmpfs tmpfs /run/systemd && mount -t tmpfs tmpfs /run/dbus && "
                 f"mkdir -p /run/udev && mount -t tmpfs tmpfs /run/udev && "
                 f"mount -o remount,ro /sys && mkdir /run/systemd/netif && "
                 f"mount --bind {netif} /run/systemd/netif && "
                 f"mount --bind {conf} /etc/systemd/network && exec {NETWORKD}")
        with (workdir / "networkd.log").open("w") as out:
            procs.append(subprocess.Popen(["ip", "netns", "exec", box, "sh", "-c", inner],
                                          stdout=out, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            found = [p for p in (netif / "leases").iterdir() if p.name.isdigit()]
            if found and "ADDRESS=" in (text := found[0].read_text()):
                return text, server_log.read_text()
            if any(p.poll() is not None for p in procs):
                break
            time.sleep(0.2)
        raise UnavailableError(f"no lease within {wait:g} s; networkd said: "
                          f"{(workdir / 'networkd.log').read_text()[-600:]!r}; dnsmasq said: "
                          f"{server_log.read_text()[-600:]!r}")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
        _sh("ip", "netns", "del", box, check=False)
        _sh("ip", "netns", "del", srv, check=False)
