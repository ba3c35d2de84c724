"""The host firewall of the SD-card image: SIP and RTP/RTCP only from the PBX and the trusted
sources, silence for everyone else.

Owns the nftables ruleset (``ruleset``, a pure function of ``FirewallSpec``), the small file in
the runtime directory through which the running intercom tells the firewall where the registrar
is now (``write_registrar`` / ``read_registrar``: that file is an input and is checked), which
configuration the trust comes from (``running_config``: the one the intercom runs — the last
provisioned document it started with, from its cache file, checked exactly as the intercom
checks it, over the card's YAML; else the card's YAML), and the command ``python3 -m
firmware.firewall`` that a root oneshot unit runs at boot and again when the registrar file or
the provisioned cache changes (``intercom-firewall.service`` / ``.path`` in images/overlay).

Inbound policy: drop, so a closed port answers nothing (no ICMP port unreachable, no TCP
reset) and a port scan learns nothing. Admitted: loopback, replies to what the box itself sent
(conntrack), IPv6 neighbour discovery, DHCP replies, SSH when the boot partition enabled it,
and from the registrar's addresses and ``sip.trusted_sources`` only: the SIP port (UDP) and
the RTP/RTCP ports. A configuration that cannot be read yields the same ruleset with no source
admitted (fail closed). Knows nothing about SIP messages, media or GPIO.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from . import provisioning_io
from .address import host_port
from .config import BootConfig, Config, ConfigError, load_boot
from .provisioning import CACHE_NAME, Provisioner, cache_dir, digest
from .sip.transport import TRANSPORTS

REGISTRAR_FILE = "registrar"
MAX_REGISTRAR_BYTES = 4096
MAX_REGISTRAR_ADDRESSES = 16
SSH_KEYS = Path("/run/intercom-ssh/authorized_keys")  # images/overlay/usr/lib/intercom/boot-setup
RANDOM_RTP = (20000, 60001)  # media.rtp_port 0: an even port in 20000..59998 and the next one
TABLE = "intercom"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class FirewallSpec:
    """What the ruleset admits. ``sources``: networks allowed to reach the SIP and media ports;
    ``sip_port`` None: no inbound SIP port (TCP/TLS: the box opens the connection), 0: any
    UDP port; ``rtp_ports``: first and last port, None: any UDP port."""

    sources: tuple[Network, ...] = ()
    sip_port: int | None = 5070
    rtp_ports: tuple[int, int] | None = (10000, 10001)
    ssh: bool = False


def spec_from_config(cfg: Config | None, registrar: Iterable[str] = (),
                     ssh: bool = False) -> FirewallSpec:
    """The spec for a configuration (None: unreadable, nothing admitted) and the registrar's
    current addresses."""
    if cfg is None:
        return FirewallSpec(sources=(), ssh=ssh)
    found: list[Network] = []
    candidates = [*registrar, *cfg.sip.trusted_sources]
    for entry in (*(cfg.sip.servers or (cfg.sip.server,)), cfg.sip.outbound_proxy or ""):
        host = (host_port(entry) or ("", None))[0]
        if _is_address(host):  # configured addresses; resolved names come in the file
            candidates.append(host)
    for text in candidates:
        net = ipaddress.ip_network(text.strip(), strict=False)
        if net not in found:
            found.append(net)
    sip_port = cfg.sip.local_port if TRANSPORTS[cfg.sip.transport].listens else None
    rtp = cfg.media.rtp_port
    return FirewallSpec(tuple(found), sip_port, (rtp, rtp + 1) if rtp else RANDOM_RTP, ssh)


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _elements(nets: Sequence[Network]) -> str:
    return f" elements = {{ {', '.join(str(n) for n in nets)} }}" if nets else ""


def ruleset(spec: FirewallSpec) -> str:
    """The nft script that replaces the intercom's table atomically (one transaction)."""
    v4 = [n for n in spec.sources if n.version == 4]
    v6 = [n for n in spec.sources if n.version == 6]
    ports: list[str] = []
    if spec.sip_port is not None and spec.sip_port > 0:
        ports.append(str(spec.sip_port))
    if spec.rtp_ports is not None:
        first, last = spec.rtp_ports
        ports.append(f"{first}-{last}" if last != first else str(first))
    any_port = spec.sip_port == 0 or spec.rtp_ports is None
    dports = "" if any_port else f"udp dport {{ {', '.join(ports)} }} "
    box = f"meta l4proto udp {dports}" if any_port else dports
    lines = [
        f"table inet {TABLE}",
        f"delete table inet {TABLE}",
        f"table inet {TABLE} {{",
        f"  set sources_v4 {{ type ipv4_addr; flags interval;{_elements(v4)} }}",
        f"  set sources_v6 {{ type ipv6_addr; flags interval;{_elements(v6)} }}",
        "  chain input {",
        "    type filter hook input priority filter; policy drop;",
        '    iif "lo" accept',
        "    ct state established,related accept",
        "    ct state invalid drop",
        "    # IPv6 neighbour discovery and router adverts (link-local, hop limit 255)",
        "    icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-advert } "
        "ip6 hoplimit 255 accept",
        "    # DHCP replies (an offer may come before conntrack knows the exchange)",
        "    udp sport 67 udp dport 68 accept",
        "    udp sport 547 udp dport 546 accept",
    ]
    if spec.ssh:
        lines.append("    tcp dport 22 accept")
    if ports or any_port:
        lines += [f"    ip saddr @sources_v4 {box}accept",
                  f"    ip6 saddr @sources_v6 {box}accept"]
    lines += ["    # everything else: dropped without an answer", "  }", "}"]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------- the registrar file
def write_registrar(folder: Path, addresses: Sequence[str]) -> bool:
    """Tell the firewall the registrar's addresses (one per line; replaced atomically, only
    when they changed, so the .path unit re-applies the rules only then). True if written."""
    text = "".join(f"{a}\n" for a in addresses)
    path = folder / REGISTRAR_FILE
    try:
        if path.read_text() == text:
            return False
    except (OSError, UnicodeDecodeError):
        pass
    tmp = folder / f".{REGISTRAR_FILE}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o640)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
    return True


def parse_registrar(data: bytes) -> list[str]:
    """The addresses in the registrar file; ValueError (naming the problem) when it is not
    exactly a short list of IP addresses: the whole file is then ignored."""
    if len(data) > MAX_REGISTRAR_BYTES:
        raise ValueError(f"larger than {MAX_REGISTRAR_BYTES} bytes")
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise ValueError("not ASCII") from None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) > MAX_REGISTRAR_ADDRESSES:
        raise ValueError(f"more than {MAX_REGISTRAR_ADDRESSES} addresses")
    out = []
    for n, line in enumerate(lines, 1):
        try:
            addr = ipaddress.ip_address(line)
        except ValueError:
            raise ValueError(f"line {n} is not an IP address") from None
        if addr.is_unspecified or addr.is_multicast:
            raise ValueError(f"line {n} is not a host address")
        out.append(str(addr))
    return out


def read_registrar(folder: Path) -> tuple[list[str], str | None]:
    """(addresses, problem): a missing file is no addresses and no problem."""
    try:
        with (folder / REGISTRAR_FILE).open("rb") as f:
            data = f.read(MAX_REGISTRAR_BYTES + 1)
    except FileNotFoundError:
        return [], None
    except OSError as exc:
        return [], exc.strerror or str(exc)
    try:
        return parse_registrar(data), None
    except ValueError as exc:
        return [], str(exc)


# --------------------------------------------------------------------- which configuration
def running_config(boot: BootConfig, data: Path | None) -> tuple[Config | None, str]:
    """(the configuration the intercom runs, where it came from): with ``provisioning.url`` the
    document in the intercom's cache file (its checksum, signature and validation checked by the
    intercom's own code; a bad one is one line on stderr) over the card's YAML, else the card's
    YAML alone (None when it leaves sip.* to the server: nothing is admitted yet). ``data``: the
    data partition's folder when it is usable; the cache is looked for there first, then in
    the runtime directory (the intercom uses the latter when it cannot write the former)."""
    if not boot.provisioning.url:
        return boot.config, boot.path
    p = boot.provisioning
    folders = [cache_dir(boot, data)[0], cache_dir(boot, None)[0]]
    prov = Provisioner(boot)
    for folder in dict.fromkeys(folders):
        try:
            cached = provisioning_io.read_cache(folder, CACHE_NAME, p.max_size, p.signing_cert)
        except provisioning_io.CacheError as exc:
            print(f"intercom-firewall: {folder / CACHE_NAME} ignored: {exc}", file=sys.stderr)
            continue
        if cached is None:
            continue
        if prov.offer(cached[0], "cache", 0.0, cached[1]) and prov.good is not None:
            return prov.good, f"the provisioned configuration {digest(cached[0])} in {folder}"
    return boot.config, boot.path


# --------------------------------------------------------------------- the root command
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m firmware.firewall",
                                 description="Build (and apply) the intercom's nftables rules.")
    ap.add_argument("--config", default=os.environ.get("INTERCOM_CONFIG",
                                                       "/etc/intercom/intercom.yaml"))
    ap.add_argument("--runtime", default="/run/intercom",
                    help="the intercom's runtime directory (the registrar file)")
    ap.add_argument("--ssh", choices=["auto", "yes", "no"], default="auto",
                    help=f"admit SSH (auto: when {SSH_KEYS} exists)")
    ap.add_argument("--data", default=str(provisioning_io.DATA),
                    help="the data partition's folder of the intercom (the provisioned cache)")
    ap.add_argument("--apply", action="store_true", help="load the rules with nft")
    args = ap.parse_args(argv)
    status = 0
    cfg: Config | None = None
    try:
        boot = load_boot(args.config)
    except ConfigError as exc:
        print(f"intercom-firewall: {exc}: admitting no SIP or RTP source", file=sys.stderr)
        status = 1
    else:
        data = Path(args.data)  # root reads it; whether the intercom can write it, not asked
        cfg, source = running_config(boot, data if data.is_dir() else None)
        if cfg is None:
            print("intercom-firewall: the card leaves sip.* to the provisioning server and no "
                  "provisioned configuration is kept yet: admitting no SIP or RTP source",
                  file=sys.stderr)
        else:
            print(f"intercom-firewall: trust from {source}", file=sys.stderr)
    registrar, problem = read_registrar(Path(args.runtime))
    if problem:
        print(f"intercom-firewall: {Path(args.runtime) / REGISTRAR_FILE} ignored: {problem}",
              file=sys.stderr)
    ssh = SSH_KEYS.exists() if args.ssh == "auto" else args.ssh == "yes"
    text = ruleset(spec_from_config(cfg, registrar, ssh))
    if not args.apply:
        sys.stdout.write(text)
        return status
    done = subprocess.run(["nft", "-f", "-"], input=text, text=True, capture_output=True)
    if done.returncode != 0:
        print(f"intercom-firewall: nft refused the rules: {done.stderr.strip()}",
              file=sys.stderr)
        return 3
    return status


if __name__ == "__main__":
    sys.exit(main())
