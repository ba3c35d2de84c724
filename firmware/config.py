"""The one YAML configuration file -> frozen, validated objects.

Owns the schema (every key, its type, default and limits), error messages that name the key and
its line, and the rule that secrets never appear in repr() or logs. The only module that imports
yaml. Knows nothing about SIP, sockets or GPIO beyond the values it checks: the transport
names and default ports come from ``firmware.sip.transport``'s table and the button actions from
the supervisor (both pure, nothing compiled).
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import yaml

from .address import host_port, ip, looks_numeric
from .sip.transport import TRANSPORTS  # sip.transport's names, default ports, which are secure
from .supervisor import Action  # the button actions a configuration may name

DEFAULT_PATH = "/etc/intercom/intercom.yaml"


class ConfigError(Exception):
    """A configuration problem; the message names the key (and line) and what is wrong."""



@dataclass(frozen=True)
class TlsSettings:
    """``sip.tls``: how the PBX's certificate is checked, and our optional client certificate."""

    ca_file: str | None = None  # None: the system's trust store
    verify: bool = True
    server_name: str | None = None  # None: the name each server was found under
    cert_file: str | None = None
    key_file: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class SipSettings:
    server: str  # the first entry's host (YAML: one entry or an ordered list of entries)
    username: str
    password: str = field(default="", repr=False)
    port: int = 5060
    transport: str = "udp"
    auth_username: str | None = None
    display_name: str | None = None
    domain: str | None = None
    local_address: str | None = None
    local_port: int = 5070
    register: bool = True
    register_expires: int = 300
    keepalive: str = "options"
    keepalive_interval: float = 30.0
    retry_min: float = 2.0
    retry_max: float = 60.0
    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    trusted_sources: tuple[str, ...] = ()
    untrusted_policy: str = "drop"
    max_message_size: int = 8192  # bytes; larger requests get 513 (strangers: nothing)
    tls: TlsSettings = TlsSettings()
    # RFC 3261 §8.1.2: every request outside a dialog goes there with a Route <...;lr>
    outbound_proxy: str | None = None  # host[:port]; a name without a port: RFC 3263
    dns_servers: tuple[str, ...] = ()  # address[:port]; empty: the system's resolver
    failback_interval: float = 60.0  # s between probes of the preferred server when on another
    # derived, not a YAML key: sip.server's entries, "host:port" or a bare name (RFC 3263)
    servers: tuple[str, ...] = field(default=(), metadata={"derived": True})


@dataclass(frozen=True)
class CallSettings:
    auto_answer: bool = False
    auto_answer_delay: float = 0.0
    ring_timeout: float = 30.0
    default_target: str = "5001"
    max_duration: float = 600.0  # a door call; 0 = unlimited
    door_code: str = field(default="", repr=False)
    ring_tone: bool = False
    ringback: bool = False
    door_code_max_failures: int = 5
    door_code_window: float = 300.0
    door_code_lockout: float = 300.0


@dataclass(frozen=True)
class MediaSettings:
    address: str | None = None
    rtp_port: int = 10000
    codecs: tuple[str, ...] = ("PCMU", "PCMA")
    dtmf_payload_type: int = 101
    ptime: int = 20
    jitter_target_ms: int = 40
    jitter_min_ms: int = 0  # 0: no frame in hand until the path shows a late or lost packet
    jitter_max_ms: int = 200
    realtime_priority: int = 10  # SCHED_FIFO for the 20 ms loop; refused = normal scheduling
    spin_us: int = 0
    kernel_pacing: bool = True  # SO_TXTIME where the way out is the fq qdisc (the image's)
    latch: bool = False
    srtp: str = "off"  # off | optional | required; unset: required over TLS, else off
    timeout: float = 30.0  # s without an RTP packet (not on hold) -> hang up; 0 = never
    hold_timeout: float = 600.0  # the same while on hold (sendonly/recvonly/inactive); 0 = never


@dataclass(frozen=True)
class AudioSettings:
    capture: str = "silence"
    playback: str = "null"
    capture_gain_db: float = 0.0
    playback_gain_db: float = 0.0
    echo_canceller: str = "speex"  # off | speex | webrtc: README "Audio", docs/notes/aec.md
    echo_tail_ms: int = 128
    noise_suppression: bool = False
    agc: bool = False


@dataclass(frozen=True)
class ButtonSpec:
    name: str
    pin: int
    action: Action
    target: str | None = None
    active_high: bool = False
    pull_up: bool = True
    bounce_ms: int = 30
    hold_s: float = 0.0


@dataclass(frozen=True)
class LedSpec:
    name: str
    pin: int
    active_high: bool = True


@dataclass(frozen=True)
class RelaySpec:
    pin: int
    active_high: bool = True
    seconds: float = 3.0


@dataclass(frozen=True)
class GpioSettings:
    pin_factory: str = "auto"
    profile: str = "plain"
    buttons: tuple[ButtonSpec, ...] = ()
    leds: tuple[LedSpec, ...] = ()
    relay: RelaySpec | None = None


@dataclass(frozen=True)
class ControlSettings:
    socket: str = "/run/intercom/control.sock"


@dataclass(frozen=True)
class LogSettings:
    level: str = "info"
    events: int = 100  # the visitor log: the last N building events kept in RAM


@dataclass(frozen=True)
class MqttSettings:
    """``mqtt``: the building events and the retained state on a broker (firmware.outbound.mqtt),
    Home Assistant's discovery, and commands in only where they are safe."""

    host: str | None = None  # None: no MQTT
    port: int | None = None  # None: 8883 with TLS, 1883 without
    tls: bool = True  # the broker's certificate is always verified; false: plain TCP
    ca_file: str | None = None  # None: the system's trust store
    username: str | None = None
    password: str = field(default="", repr=False)
    prefix: str = "intercom"  # topics: <prefix>/<name>/...
    name: str | None = None  # None: system.hostname
    keepalive: int = 30
    discovery: bool = True  # Home Assistant MQTT discovery
    discovery_prefix: str = "homeassistant"
    allow_commands: bool = False  # open_door, call TARGET, hangup from command_topic (TLS only)
    command_topic: str | None = None  # None: <prefix>/<name>/command
    queue: int = 200  # events kept while the broker is away (the oldest dropped, counted)
    recent: int = 20  # events in the retained <prefix>/<name>/events/recent backlog


@dataclass(frozen=True)
class WebhookSettings:
    """``webhooks``: each event POSTed over HTTPS to every URL, signed with HMAC-SHA256."""

    urls: tuple[str, ...] = ()
    secret: str = field(default="", repr=False)
    ca_file: str | None = None  # None: the system's trust store
    timeout: float = 5.0  # seconds one POST may take
    retries: int = 4  # further attempts after a failed POST (backoff 1, 2, 4, ... s)
    queue: int = 100  # events waiting per URL (the oldest dropped, counted)


@dataclass(frozen=True)
class SystemSettings:
    hostname: str = "intercom"


@dataclass(frozen=True)
class ProvisioningSettings:
    """``provisioning``: the box fetches its settings by MAC over HTTPS (firmware.provisioning).
    Read from the boot partition's YAML only: a provisioned document cannot redirect the box."""

    # https://server/path/{mac}.yaml; "dhcp": the https:// URL of DHCP option 43 (vendor-
    # specific); None: no provisioning
    url: str | None = None
    ca_file: str | None = None  # the pinned CA (PEM); "system": the system's trust store
    interval: float = 3600.0  # seconds between two fetches after a good one
    retry: float = 30.0  # first retry after a failed fetch (doubling up to interval)
    timeout: float = 10.0  # seconds a fetch may take, all of it
    max_size: int = 65536  # bytes; a larger document is refused
    # None: /data/intercom/provisioning when that folder is writable (the data partition),
    # else <control socket's folder>/provisioning (RAM)
    cache_dir: str | None = None
    mac: str | None = None  # None: the MAC of the interface that routes to the server
    # PEM certificate (or public key) whose key signs every document: <url>.sig is fetched
    # and must verify (openssl dgst -sha256); None: no signature asked for
    signing_cert: str | None = None
    dhcp_leases: str = "/run/systemd/netif/leases"  # systemd-networkd's lease files (url: dhcp)


@dataclass(frozen=True)
class UpdateSettings:
    """``update``: signed RAUC bundles pulled over HTTPS by the root updater (firmware.update).
    Read from the boot partition's YAML only: what the network provisions cannot steer root."""

    url: str | None = None  # https://server/path/intercom.raucb; None: no pull, only the CLI
    ca_file: str | None = None  # the pinned CA (PEM); "system": the system's trust store
    interval: float = 21600.0  # seconds between two checks of the URL
    window: str | None = None  # "HH:MM-HH:MM" local time: reboot only inside it; None: any idle
    max_size: int = 384 * 1024 * 1024  # bytes; a larger bundle is refused before it is stored
    state_dir: str = "/data/update"
    keyring: str = "/etc/rauc/keyring.pem"  # the certificate bundles must be signed with
    trial_register_timeout: float = 180.0  # s after a new slot's start to register (health)
    trial_pbx_silence: float = 600.0  # s of a silent PBX before a trial boot is retried


@dataclass(frozen=True)
class Config:
    sip: SipSettings
    calls: CallSettings = CallSettings()
    media: MediaSettings = MediaSettings()
    audio: AudioSettings = AudioSettings()
    gpio: GpioSettings = GpioSettings()
    control: ControlSettings = ControlSettings()
    log: LogSettings = LogSettings()
    system: SystemSettings = SystemSettings()
    provisioning: ProvisioningSettings = ProvisioningSettings()
    update: UpdateSettings = UpdateSettings()
    mqtt: MqttSettings = MqttSettings()
    webhooks: WebhookSettings = WebhookSettings()
    path: str = ""


# ----------------------------------------------------------------------------- schema
Check = Callable[[Any], str | None]  # returns an error text or None


def _port(allow_zero: bool = False) -> Check:
    low = 0 if allow_zero else 1
    return lambda v: None if low <= v <= 65535 else f"must be a port number {low}..65535"


def _positive(v: Any) -> str | None:
    return None if v > 0 else "must be greater than 0"


def _non_negative(v: Any) -> str | None:
    return None if v >= 0 else "must not be negative"


def _one_of(*choices: str) -> Check:
    return lambda v: None if v in choices else "must be one of " + ", ".join(choices)


def _non_empty(v: Any) -> str | None:
    return None if str(v).strip() else "must not be empty"


def _range(low: int, high: int) -> Check:
    return lambda v: None if low <= v <= high else f"must be between {low} and {high}"


def _audio_spec(v: Any) -> str | None:
    kind, colon, rest = str(v).partition(":")
    if kind in ("wav", "tone") and not rest:
        return f"needs a value after '{kind}:'"
    return None if str(v).strip() else \
        "must name an ALSA PCM, usb (the USB sound card), wav:/path, tone:HZ or null"


def _hostname(v: Any) -> str | None:
    ok = re.fullmatch(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?", str(v))
    return None if ok else "must be a host name (letters, digits, '-', up to 63)"


def _gain(v: Any) -> str | None:
    return None if -30 <= v <= 30 else "must be between -30 and +30 dB"


def _dtmf(v: Any) -> str | None:
    text = str(v)
    return None if all(c in "0123456789*#ABCDabcd" for c in text) else \
        "may only contain DTMF digits 0-9 * # A-D"


# the widest block a trust list may name: a wider one trusts strangers, /0 every address
_WIDEST_TRUSTED = {4: 8, 6: 32}


def _sources(v: Any) -> str | None:
    for item in v:
        if isinstance(item, bool) or not isinstance(item, str):
            return "must be a list of IP addresses or CIDR blocks (as strings)"
        try:
            net = ipaddress.ip_network(item.strip(), strict=False)
        except ValueError:
            return f"has {item!r}, which is not an IP address or CIDR block"
        widest = _WIDEST_TRUSTED[net.version]
        if net.prefixlen < widest:
            what = "every address" if net.prefixlen == 0 else "far too many addresses"
            return (f"has {item!r}, which trusts {what} (at most a /{widest}): "
                    "list the PBX's and SBC's addresses")
    return None


def _host(v: Any) -> str | None:
    """A host name or an IP address; digits and dots must be a strict dotted quad (the C
    library reads 010.0.0.1 as octal, 8.0.0.1: another host than the installer meant)."""
    text = str(v).strip()
    if not text:
        return "must not be empty"
    if looks_numeric(text) or ":" in text:
        return None if ip(text) is not None else \
            "is not a valid IP address (four numbers 0-255 without leading zeros, or IPv6)"
    return None


MAX_SERVERS = 8  # entries of sip.server (each may resolve to several addresses)


def _server_entries(v: Any, what: str) -> str | None:
    """One entry or a list: each ``host``, ``host:port``, ``[IPv6]:port``."""
    items = v if isinstance(v, list) else [v]
    if not items:
        return "must not be an empty list"
    if len(items) > MAX_SERVERS:
        return f"may list at most {MAX_SERVERS} servers"
    for item in items:
        if isinstance(item, bool) or not isinstance(item, str):
            return "must be a host, host:port, or a list of them (as strings)"
        if (problem := _host(item.rsplit(":", 1)[0] if item.count(":") == 1 else item)):
            return problem
        if host_port(item) is None:
            return f"has {item!r}, which is not {what} with an optional :port (1..65535)"
    return None


def _dns_servers(v: Any) -> str | None:
    for item in v:
        found = host_port(item) if isinstance(item, str) else None
        if found is None or ip(found[0]) is None:
            return f"has {item!r}, which is not an IP address with an optional :port"
    return None


def _entries(v: str | tuple[str, ...], port: int, explicit: bool) -> tuple[str, ...]:
    """Checked entries, normalised: ``host:port`` where the port is known (given with the
    entry, by sip.port, or the entry is an address), a bare name where RFC 3263 chooses it."""
    out = []
    for item in (v,) if isinstance(v, str) else v:
        host, own = host_port(item) or (item, None)
        shown = f"[{host}]" if ":" in host else host
        if own is None and (explicit or ip(host) is not None):
            own = port
        out.append(f"{shown}:{own}" if own is not None else host)
    return tuple(out)


def _address(v: Any) -> str | None:
    return None if ip(str(v).strip()) is not None else \
        "must be an IP address of this box (four numbers 0-255 without leading zeros, or IPv6)"


def _tls_name(v: Any) -> str | None:
    """What the PBX's certificate must name: a DNS name or an IP address, never empty, never
    a pattern (an empty or odd name must not turn the check into something else)."""
    text = str(v)
    if ip(text) is not None:
        return None
    if looks_numeric(text) or not re.fullmatch(
            r"(?=.{1,253}$)(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
            r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?", text):
        return "must be the DNS name (or IP address) in the PBX's certificate, no wildcard"
    return None


def normalise_mac(text: str) -> str | None:
    """A MAC written with ':' / '-' / '.' or none, any case -> 12 lowercase hex digits; None
    for anything that is not a unicast Ethernet address (multicast, broadcast, all zeros)."""
    digits = re.sub(r"[:.-]", "", str(text).strip()).lower()
    if not re.fullmatch(r"[0-9a-f]{12}", digits):
        return None
    if int(digits[:2], 16) & 1 or digits == "0" * 12:
        return None
    return digits


def _mac(v: Any) -> str | None:
    return None if normalise_mac(v) else "must be a MAC address (unicast, 12 hex digits, " \
        "e.g. b8:27:eb:12:34:56)"


def _https_url(v: Any) -> str | None:
    """HTTPS only (never a fallback to clear text), no credentials in the URL (it is shown by
    status), and {mac} the only placeholder."""
    text = str(v)
    m = re.fullmatch(r"https://([^/?#@\s]+)(/[^\s#]*)?", text)
    if not m:
        return "must be an https:// URL without user name or password, e.g. " \
            "https://provisioning.example/intercom/{mac}.yaml"
    if re.sub(r"\{mac\}", "", text).count("{") or re.sub(r"\{mac\}", "", text).count("}"):
        return "may only contain the placeholder {mac}"
    return None


def _update_url(v: Any) -> str | None:
    """HTTPS only, no credentials in the URL (status shows it), no placeholder."""
    if not re.fullmatch(r"https://[^/?#@\s{}]+(/[^\s#{}]*)?", str(v)):
        return "must be an https:// URL without user name or password, e.g. " \
            "https://updates.example/intercom/intercom.raucb"
    return None


def window_minutes(text: str) -> tuple[int, int] | None:
    """"HH:MM-HH:MM" -> (start, end) in minutes after midnight; None if it is not one.
    A window may cross midnight (22:00-02:00); start and end must differ."""
    m = re.fullmatch(r"([01]?\d|2[0-3]):([0-5]\d)-([01]?\d|2[0-3]):([0-5]\d)", str(text).strip())
    if not m:
        return None
    start, end = int(m[1]) * 60 + int(m[2]), int(m[3]) * 60 + int(m[4])
    return (start, end) if start != end else None


def _window(v: Any) -> str | None:
    return None if window_minutes(v) else \
        "must be a local time window HH:MM-HH:MM with two different times, e.g. 02:00-04:00"


def _absolute(v: Any) -> str | None:
    return None if str(v).startswith("/") else "must be an absolute path"


def https_url_problem(text: str) -> str | None:
    """Why ``text`` cannot be a provisioning URL (None: it can); also for a URL from DHCP."""
    return _https_url(text)


def _provisioning_url(v: Any) -> str | None:
    return None if v == "dhcp" else _https_url(v)


def _signing_cert(v: Any) -> str | None:
    try:
        head = Path(str(v)).read_text(encoding="ascii", errors="replace")[:65536]
    except OSError as exc:
        return f"must name the PEM certificate of the signing key: {exc.strerror or exc}"
    if "-----BEGIN CERTIFICATE-----" not in head and "-----BEGIN PUBLIC KEY-----" not in head:
        return "must be a PEM certificate (or public key) of the key that signs the documents"
    return None


def _ca_file(v: Any) -> str | None:
    return None if v == "system" or Path(str(v)).is_file() else \
        f"must name the CA certificate file (PEM) the server's certificate is checked " \
        f"against, or 'system': no such file {v!r}"


def _topic_part(v: Any) -> str | None:
    """A topic level or a few: no wildcard, no empty level, no $ at the start (broker-owned)."""
    text = str(v)
    if not re.fullmatch(r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*", text) or text.startswith("$"):
        return "must be topic levels of letters, digits, '_', '.', '-' separated by '/' " \
            "(no wildcard, no empty level)"
    return None


def _webhook_urls(v: Any) -> str | None:
    for url in v:
        if not isinstance(url, str) or _update_url(url):
            return f"has {url!r}: each must be an https:// URL without user name or password"
    return None


def _codecs(v: Any) -> str | None:
    if not v or any(c not in ("PCMU", "PCMA") for c in v):
        return "must be a non-empty list of PCMU and/or PCMA"
    return None


_NUM = (int, float)
# the checks beyond the type; types, defaults and required keys come from the dataclasses
_CHECKS: dict[str, Check] = {
    "sip.server": lambda v: _server_entries(v, "a host name or an IP address"),
    "sip.outbound_proxy": lambda v: _server_entries([v], "a host name or an IP address"),
    "sip.dns_servers": lambda v: _dns_servers(v), "sip.failback_interval": _positive,
    "sip.username": _non_empty, "sip.port": _port(),
    "sip.local_address": _address, "media.address": _address,
    "sip.transport": lambda v: _one_of(*TRANSPORTS)(v), "sip.local_port": _port(True),
    "sip.register_expires": lambda v: None if 30 <= v <= 86400 else
    "must be between 30 and 86400 seconds",
    "sip.keepalive": _one_of("options", "crlf", "off"),
    "sip.keepalive_interval": _positive, "sip.retry_min": _positive,
    "sip.retry_max": _positive, "sip.t1": _positive, "sip.t2": _positive, "sip.t4": _positive,
    "sip.trusted_sources": _sources, "sip.max_message_size": _range(2048, 65535),
    "sip.untrusted_policy": lambda v: None if str(v) in ("drop", "403") else
    "must be drop (send nothing back) or 403",
    "calls.auto_answer_delay": _non_negative, "calls.ring_timeout": _positive,
    "calls.default_target": _non_empty, "calls.max_duration": _non_negative,
    "calls.door_code": _dtmf, "calls.door_code_max_failures": _range(1, 1000),
    "calls.door_code_window": _positive, "calls.door_code_lockout": _positive,
    "media.rtp_port": _port(True), "media.codecs": _codecs,
    "media.dtmf_payload_type": lambda v: None if 96 <= v <= 127 else
    "must be a dynamic payload type 96..127",
    "media.ptime": lambda v: None if v in (10, 20, 30, 40) else "must be 10, 20, 30 or 40 (ms)",
    "media.jitter_target_ms": _range(20, 200), "media.jitter_min_ms": _range(0, 200),
    "media.jitter_max_ms": _range(20, 1000), "media.realtime_priority": _range(0, 99),
    "media.spin_us": _range(0, 2000),
    "media.timeout": _non_negative, "media.hold_timeout": _non_negative,
    # YAML reads a bare `off` as false: accept it, refuse true
    "media.srtp": lambda v: None if v is False or v in ("off", "optional", "required") else
    "must be one of off, optional, required",
    "audio.capture": _audio_spec, "audio.playback": _audio_spec,
    "audio.capture_gain_db": _gain, "audio.playback_gain_db": _gain,
    # YAML reads a bare `off` as false: accept it, refuse true
    "audio.echo_canceller": lambda v: None if v is False or v in ("off", "speex", "webrtc") else
    "must be one of off, speex, webrtc",
    "audio.echo_tail_ms": _range(16, 500),
    "gpio.pin_factory": _one_of("auto", "gpiod", "mock", "rpigpio", "lgpio", "native"),
    "gpio.profile": _non_empty, "control.socket": _non_empty,
    "log.level": _one_of("debug", "info", "warning", "error"),
    "system.hostname": _hostname,
    "provisioning.url": _provisioning_url, "provisioning.ca_file": _ca_file,
    "provisioning.interval": lambda v: None if v >= 1 else "must be at least 1 second",
    "provisioning.retry": lambda v: None if v >= 1 else "must be at least 1 second",
    "provisioning.timeout": _positive, "provisioning.max_size": _range(1024, 1 << 20),
    "provisioning.cache_dir": _non_empty, "provisioning.mac": _mac,
    "provisioning.signing_cert": _signing_cert, "provisioning.dhcp_leases": _non_empty,
    "update.url": _update_url, "update.ca_file": _ca_file,
    "update.interval": lambda v: None if v >= 60 else "must be at least 60 seconds",
    "update.window": _window, "update.max_size": _range(1 << 20, 1 << 32),
    "update.state_dir": _absolute, "update.keyring": _absolute,
    "update.trial_register_timeout": lambda v: None if v >= 30 else
    "must be at least 30 seconds",
    "update.trial_pbx_silence": lambda v: None if v >= 60 else "must be at least 60 seconds",
    "log.events": _range(1, 1000),
    "mqtt.host": _host, "mqtt.port": _port(), "mqtt.ca_file": _ca_file,
    "mqtt.username": _non_empty, "mqtt.prefix": _topic_part, "mqtt.name": _topic_part,
    "mqtt.keepalive": _range(5, 3600), "mqtt.discovery_prefix": _topic_part,
    "mqtt.command_topic": _topic_part, "mqtt.queue": _range(1, 10000),
    "mqtt.recent": _range(0, 100),
    "webhooks.urls": _webhook_urls, "webhooks.ca_file": _ca_file,
    "webhooks.timeout": _positive, "webhooks.retries": _range(0, 20),
    "webhooks.queue": _range(1, 10000),
}
# what YAML may give where the dataclass type alone would be too strict: numbers where text
# is meant (a username 5002), YAML's `off` = false, and nested mappings built separately
_YAML_TYPES: dict[str, tuple[type, ...]] = {
    "sip.server": (str, list), "sip.username": (str, int), "sip.password": (str, int),
    "sip.auth_username": (str, int),
    "sip.untrusted_policy": (str, int), "calls.default_target": (str, int),
    "calls.door_code": (str, int), "media.srtp": (str, bool), "sip.tls": (dict,),
    "audio.echo_canceller": (str, bool),
    "gpio.buttons": (dict,), "gpio.leds": (dict,), "gpio.relay": (dict,),
    "mqtt.username": (str, int), "mqtt.password": (str, int), "webhooks.secret": (str,),
}
_SECTION_TYPES: dict[str, type] = {
    "sip": SipSettings, "calls": CallSettings, "media": MediaSettings, "audio": AudioSettings,
    "gpio": GpioSettings, "control": ControlSettings, "log": LogSettings,
    "system": SystemSettings, "provisioning": ProvisioningSettings, "update": UpdateSettings,
    "mqtt": MqttSettings, "webhooks": WebhookSettings}
_STRINGY = {"username", "password", "auth_username", "default_target", "door_code",
            "untrusted_policy"}
MIN_WEBHOOK_SECRET = 16


def _yaml_types(hint: Any) -> tuple[type, ...]:
    """The YAML value types a dataclass field of this type accepts."""
    if hint is float:
        return _NUM
    if hint in (int, str, bool):
        return (hint,)
    args = [a for a in get_args(hint) if a is not type(None)]
    if get_origin(hint) is tuple:
        return (list,)
    if len(args) == 1:  # X | None
        return _yaml_types(args[0])
    raise TypeError(f"no YAML type for {hint!r}")


def _schema() -> dict[str, dict[str, tuple[tuple[type, ...], Check | None, bool]]]:
    """section -> key -> (YAML types, check, required), derived from the dataclasses."""
    schema: dict[str, dict[str, tuple[tuple[type, ...], Check | None, bool]]] = {}
    for section, cls in _SECTION_TYPES.items():
        hints = get_type_hints(cls)
        schema[section] = {}
        for f in fields(cls):
            if f.metadata.get("derived"):
                continue
            dotted = f"{section}.{f.name}"
            required = f.default is MISSING and f.default_factory is MISSING
            types = _YAML_TYPES.get(dotted) or _yaml_types(hints[f.name])
            schema[section][f.name] = (types, _CHECKS.get(dotted), required)
    unknown = set(_CHECKS) - {f"{s}.{k}" for s, keys in schema.items() for k in keys}
    assert not unknown, f"checks for keys no dataclass has: {unknown}"
    return schema


SCHEMA = _schema()


def _line_map(text: str) -> dict[str, int]:
    """Dotted key path -> 1-based line of that key in the YAML text."""
    lines: dict[str, int] = {}
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return lines

    def walk(node: yaml.Node, path: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                sub = f"{path}.{key_node.value}" if path else str(key_node.value)
                lines[sub] = key_node.start_mark.line + 1
                walk(value_node, sub)

    if root is not None:
        walk(root, "")
    return lines


def _where(key: str, lines: dict[str, int]) -> str:
    return f"{key} (line {lines[key]})" if key in lines else key


def _suggest(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _load_yaml(text: str, path: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}: "
                          f"{getattr(exc, 'problem', None) or exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections "
                          f"({', '.join(SCHEMA)})")
    return data


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``, key by key at every depth (a mapping merges into a mapping;
    anything else, null included, replaces)."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_config(text: str, path: str = "<string>",
                 defaults: dict[str, dict[str, Any]] | None = None) -> Config:
    """``defaults``: per-section values (a system's defaults file, or the boot YAML under a
    provisioned document) that the text overrides key by key."""
    data = _load_yaml(text, path)
    lines = _line_map(text)
    sections: dict[str, Any] = {}
    for section in data:
        if section not in SCHEMA:
            raise ConfigError(f"{path}: unknown section {_where(str(section), lines)}"
                              f"{_suggest(str(section), list(SCHEMA))}")
    for section, keys in SCHEMA.items():
        raw = data.get(section) or {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: {_where(section, lines)} must be a mapping")
        if defaults and isinstance(defaults.get(section), dict):
            raw = merge(defaults[section], raw)
        values: dict[str, Any] = {}
        for key, value in raw.items():
            dotted = f"{section}.{key}"
            if key not in keys:
                raise ConfigError(f"{path}: unknown key {_where(dotted, lines)}"
                                  f"{_suggest(str(key), list(keys))}")
            types, check, _ = keys[key]
            if value is None:
                if section == "gpio":  # "relay: null" removes the profile's relay
                    values[key] = None
                continue
            if isinstance(value, bool) and bool not in types:
                raise ConfigError(f"{path}: {_where(dotted, lines)} must be "
                                  f"{'/'.join(t.__name__ for t in types)}, not a boolean")
            if not isinstance(value, types):
                raise ConfigError(f"{path}: {_where(dotted, lines)} must be "
                                  f"{'/'.join(t.__name__ for t in types)}, "
                                  f"got {type(value).__name__}")
            if check and (problem := check(value)):
                raise ConfigError(f"{path}: {_where(dotted, lines)} {problem}")
            if key in _STRINGY:
                value = str(value)
            if dotted in ("media.srtp", "audio.echo_canceller") and value is False:
                value = "off"
            if isinstance(value, list):
                value = tuple(value)
            values[key] = value
        if section == "gpio":
            calls = merge((defaults or {}).get("calls") or {}, data.get("calls") or {})
            sections[section] = _gpio(values, calls, lines, path)
            continue
        if section == "sip":
            values["tls"] = _tls(values.get("tls") or {}, lines, path)
            explicit = "port" in values
            if not explicit:  # e.g. 5061 for TLS (RFC 3261 §19.1.2)
                name = values.get("transport", SipSettings.transport)
                values["port"] = TRANSPORTS[name].default_port
            if "server" in values:
                values["servers"] = _entries(values["server"], values["port"], explicit)
                values["server"] = host_port(values["servers"][0])[0]  # type: ignore[index]
            if values.get("outbound_proxy"):
                values["outbound_proxy"] = _entries(values["outbound_proxy"],
                                                    values["port"], False)[0]
        for key, (_, _, required) in keys.items():
            if required and key not in values:
                raise ConfigError(f"{path}: missing required key {section}.{key}")
        sections[section] = _SECTION_TYPES[section](**values)
    sip: SipSettings = sections["sip"]
    media: MediaSettings = sections["media"]
    if merge((defaults or {}).get("media") or {}, data.get("media") or {}).get("srtp") is None:
        media = sections["media"] = replace(media, srtp=default_srtp(sip.transport))
    if not media.jitter_min_ms <= media.jitter_target_ms <= media.jitter_max_ms:
        raise ConfigError(f"{path}: {_where('media.jitter_target_ms', lines)} must lie between "
                          "media.jitter_min_ms and media.jitter_max_ms")
    if sip.retry_max < sip.retry_min:
        raise ConfigError(f"{path}: {_where('sip.retry_max', lines)} must not be smaller "
                          f"than sip.retry_min")
    prov: ProvisioningSettings = sections["provisioning"]
    if prov.url and not prov.ca_file:
        raise ConfigError(f"{path}: {_where('provisioning.url', lines)} needs "
                          "provisioning.ca_file: the CA that signed the server's certificate "
                          "('system' for the system's trust store)")
    if prov.url == "dhcp" and prov.ca_file == "system":
        raise ConfigError(f"{path}: {_where('provisioning.ca_file', lines)} must name a pinned "
                          "CA with provisioning.url: dhcp, not 'system' (any DHCP server could "
                          "send the box to a server with a public certificate)")
    if prov.mac:
        sections["provisioning"] = replace(prov, mac=normalise_mac(prov.mac))
    upd: UpdateSettings = sections["update"]
    if upd.url and not upd.ca_file:
        raise ConfigError(f"{path}: {_where('update.url', lines)} needs update.ca_file: the CA "
                          "that signed the update server's certificate ('system' for the "
                          "system's trust store)")
    sections["mqtt"] = _mqtt(sections["mqtt"], lines, path)
    hooks: WebhookSettings = sections["webhooks"]
    if hooks.urls and len(hooks.secret) < MIN_WEBHOOK_SECRET:
        raise ConfigError(f"{path}: {_where('webhooks.secret', lines)} must be set, at least "
                          f"{MIN_WEBHOOK_SECRET} characters, with webhooks.urls: the receivers "
                          "check each event's signature with it")
    return Config(**sections, path=path)


def _mqtt(m: MqttSettings, lines: dict[str, int], path: str) -> MqttSettings:
    """The rules between mqtt's keys: commands and passwords only over verified TLS."""
    if m.host is None:
        return m
    if m.allow_commands and not m.tls:
        raise ConfigError(f"{path}: {_where('mqtt.allow_commands', lines)} needs mqtt.tls: "
                          "true: a command that opens the door never travels in clear text")
    if m.password and not m.tls:
        raise ConfigError(f"{path}: {_where('mqtt.password', lines)} would cross the network "
                          "in clear text: set mqtt.tls: true")
    if m.password and not m.username:
        raise ConfigError(f"{path}: {_where('mqtt.password', lines)} needs mqtt.username")
    return replace(m, port=m.port or (8883 if m.tls else 1883))


# ----------------------------------------------------------------------------- provisioning
@dataclass(frozen=True)
class BootConfig:
    """The boot partition's YAML as the floor of a provisioned box."""

    config: Config | None  # None: incomplete alone (no sip.server/username): waits for a server
    provisioning: ProvisioningSettings
    base: dict[str, Any]  # system defaults + the boot YAML: what a provisioned file overrides
    path: str
    update: UpdateSettings = UpdateSettings()  # like provisioning: the card's alone


_STANDIN = {"sip": {"server": "provisioning.invalid", "username": "provisioned"}}


def parse_boot(text: str, path: str = "<string>",
               defaults: dict[str, dict[str, Any]] | None = None) -> BootConfig:
    """Validate the boot YAML like any configuration. With ``provisioning.url`` set it may leave
    sip.server and sip.username to the provisioned file (every key it has is still checked)."""
    data = _load_yaml(text, path)
    base = merge(defaults or {}, {k: v or {} for k, v in data.items() if k != "provisioning"})
    has_url = isinstance(data.get("provisioning"), dict) and data["provisioning"].get("url")
    sip: dict[str, Any] = base["sip"] if isinstance(base.get("sip"), dict) else {}
    if has_url and not (sip.get("server") and sip.get("username")):
        checked = parse_config(text, path, merge(_STANDIN, defaults or {}))
        return BootConfig(None, checked.provisioning, base, path, checked.update)
    cfg = parse_config(text, path, defaults)
    return BootConfig(cfg, cfg.provisioning, base, path, cfg.update)


def parse_provisioned(text: str, source: str, boot: BootConfig) -> Config:
    """A provisioned document over the boot YAML, validated like it (errors name the source's
    line). It may not carry ``provisioning``: only the card says where the box fetches from."""
    data = _load_yaml(text, source)
    for section in ("provisioning", "update"):
        if section in data:
            raise ConfigError(f"{source}: {_where(section, _line_map(text))} may only be set "
                              "in the boot partition's YAML")
    cfg = parse_config(text, source, boot.base)
    return replace(cfg, provisioning=boot.provisioning, update=boot.update)


def default_srtp(transport: str) -> str:
    """SRTP keys travel in SIP: demand SRTP where SIP is encrypted, leave it off elsewhere."""
    return "required" if TRANSPORTS[transport].secure else "off"


def read_yaml(text: str, path: str = "<string>") -> tuple[Any, dict[str, int]]:
    """One YAML document for a tool beside the box (firmware.fleet's inventory and secrets):
    the data and the 1-based line of every mapping key and list item by dotted path
    (``boxes.2.mac``). This module stays the only one importing yaml; errors name the line."""
    try:
        data = yaml.safe_load(text)
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}: "
                          f"{getattr(exc, 'problem', None) or exc}") from None
    lines: dict[str, int] = {}

    def walk(node: yaml.Node, prefix: str) -> None:
        pairs: list[tuple[str, yaml.Node, yaml.Node]] = []
        if isinstance(node, yaml.MappingNode):
            pairs = [(str(k.value), k, v) for k, v in node.value]
        elif isinstance(node, yaml.SequenceNode):
            pairs = [(str(i), v, v) for i, v in enumerate(node.value)]
        for name, mark_node, value in pairs:
            sub = f"{prefix}.{name}" if prefix else name
            lines[sub] = mark_node.start_mark.line + 1
            walk(value, sub)

    if root is not None:
        walk(root, "")
    return data, lines


# ----------------------------------------------------------------------------- TLS
_TLS_KEYS: dict[str, type] = {"ca_file": str, "verify": bool, "server_name": str,
                              "cert_file": str, "key_file": str}


def _tls(raw: dict[str, Any], lines: dict[str, int], path: str) -> TlsSettings:
    for key, value in raw.items():
        where = _where(f"sip.tls.{key}", lines)
        if key not in _TLS_KEYS:
            raise ConfigError(f"{path}: unknown key {where}{_suggest(str(key), list(_TLS_KEYS))}")
        if value is not None and not isinstance(value, _TLS_KEYS[key]):
            raise ConfigError(f"{path}: {where} must be {_TLS_KEYS[key].__name__}")
        if key.endswith("_file") and isinstance(value, str) and not Path(value).is_file():
            raise ConfigError(f"{path}: {where}: no such file {value!r}")
        if key == "server_name" and isinstance(value, str) and (why := _tls_name(value)):
            raise ConfigError(f"{path}: {where} {why}")
    values = {k: v for k, v in raw.items() if v is not None}
    if ("cert_file" in values) != ("key_file" in values):
        raise ConfigError(f"{path}: sip.tls.cert_file and sip.tls.key_file go together")
    return TlsSettings(**values)


# ----------------------------------------------------------------------------- GPIO
# an installed package carries the profiles (setup.py copies hw/profiles into it); a source
# checkout reads hw/profiles; the image also keeps a copy in /usr/share
PROFILE_DIRS = [Path(__file__).resolve().parent / "profiles",
                Path(__file__).resolve().parents[1] / "hw" / "profiles",
                Path("/usr/share/intercom/hw/profiles")]
_BUTTON_KEYS = {"pin": int, "action": str, "target": (str, int), "active_high": bool,
                "pull_up": bool, "bounce_ms": int, "hold_s": (int, float)}
_LED_KEYS = {"pin": int, "active_high": bool}
_RELAY_KEYS = {"pin": int, "active_high": bool, "seconds": (int, float)}


def load_profile(name: str) -> dict[str, Any]:
    dirs = [Path(d) for d in os.environ.get("INTERCOM_HW_DIR", "").split(":") if d] + PROFILE_DIRS
    for d in dirs:
        f = d / f"{name}.yaml"
        if f.exists():
            data = yaml.safe_load(f.read_text()) or {}
            if not isinstance(data, dict):
                raise ConfigError(f"{f}: a board profile must be a mapping")
            return data
    known = sorted({p.stem for d in dirs if d.is_dir() for p in d.glob("*.yaml")})
    raise ConfigError(f"gpio.profile {name!r} not found (known: {', '.join(known) or 'none'})")


def _check_item(kind: str, name: str, item: Any, keys: dict[str, Any], lines: dict[str, int],
                path: str) -> dict[str, Any]:
    where = _where(f"gpio.{kind}.{name}", lines)
    if not isinstance(item, dict):
        raise ConfigError(f"{path}: {where} must be a mapping")
    for key, value in item.items():
        if key not in keys:
            raise ConfigError(f"{path}: unknown key {where}.{key}{_suggest(key, list(keys))}")
        if isinstance(value, bool) and keys[key] is not bool:
            raise ConfigError(f"{path}: {where}.{key} must not be a boolean")
        if not isinstance(value, keys[key]):
            raise ConfigError(f"{path}: {where}.{key} has the wrong type "
                              f"({type(value).__name__})")
    if "pin" in item and not 0 <= item["pin"] <= 53:
        raise ConfigError(f"{path}: {where}.pin must be a BCM GPIO number 0..53")
    return item


def _gpio(values: dict[str, Any], calls: dict[str, Any], lines: dict[str, int],
          path: str) -> GpioSettings:
    profile = load_profile(values.get("profile", GpioSettings.profile))
    buttons: dict[str, dict[str, Any]] = {k: dict(v) for k, v in
                                          (profile.get("buttons") or {}).items()}
    for name, item in (values.get("buttons") or {}).items():
        if item is None:  # "name: null" removes a profile button
            buttons.pop(str(name), None)
            continue
        buttons.setdefault(str(name), {}).update(
            _check_item("buttons", str(name), item, _BUTTON_KEYS, lines, path))
    leds: dict[str, dict[str, Any]] = {k: dict(v) for k, v in (profile.get("leds") or {}).items()}
    for name, item in (values.get("leds") or {}).items():
        if item is None:  # every LED is optional
            leds.pop(str(name), None)
            continue
        leds.setdefault(str(name), {}).update(
            _check_item("leds", str(name), item, _LED_KEYS, lines, path))
    relay = dict(profile.get("relay") or {})
    if "relay" in values and values["relay"] is None:
        relay = {}
    elif values.get("relay"):
        relay.update(_check_item("relay", "", values["relay"], _RELAY_KEYS, lines, path))
    default_target = str(calls.get("default_target", CallSettings.default_target))
    specs: list[ButtonSpec] = []
    used: dict[int, str] = {}
    for name, b in buttons.items():
        if "pin" not in b:
            raise ConfigError(f"{path}: gpio.buttons.{name} needs a pin")
        try:
            action = Action(b.get("action", Action.CALL))
        except ValueError:
            raise ConfigError(f"{path}: {_where(f'gpio.buttons.{name}', lines)}.action must be "
                              f"{', '.join(Action)}") from None
        target = b.get("target")
        if action in (Action.CALL, Action.TALK):
            target = str(target) if target is not None else default_target
        extra: dict[str, Any] = {k: b[k] for k in ("active_high", "pull_up", "bounce_ms")
                                 if k in b}
        if "hold_s" in b:
            extra["hold_s"] = float(b["hold_s"])
        specs.append(ButtonSpec(name, b["pin"], action, target, **extra))
    led_specs = [LedSpec(n, **v) for n, v in leds.items()]
    if "seconds" in relay:
        relay["seconds"] = float(relay["seconds"])
    relay_spec = RelaySpec(**relay) if "pin" in relay else None
    for owner, pin in ([(f"button {b.name}", b.pin) for b in specs]
                       + [(f"LED {led.name}", led.pin) for led in led_specs]
                       + ([("relay", relay_spec.pin)] if relay_spec else [])):
        if pin in used:
            raise ConfigError(f"{path}: GPIO {pin} is used twice ({used[pin]} and {owner})")
        used[pin] = owner
    chosen = {k: values[k] for k in ("pin_factory", "profile") if k in values}
    return GpioSettings(**chosen, buttons=tuple(specs), leds=tuple(led_specs), relay=relay_spec)


DEFAULTS_PATH = "/etc/intercom/defaults.yaml"


def load_defaults(path: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """The system's defaults file (the SD-card image ships one: audio on the USB sound card);
    ``INTERCOM_DEFAULTS`` names another. Missing = no defaults. Validated with the config."""
    p = Path(path or os.environ.get("INTERCOM_DEFAULTS") or DEFAULTS_PATH)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{p}: cannot read the defaults file: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ConfigError(f"{p}: the defaults file must map sections to mappings")
    for section in data:
        if section not in SCHEMA:
            raise ConfigError(f"{p}: unknown section {section!r} in the defaults file")
        for key in data[section]:
            if key not in SCHEMA[section]:
                raise ConfigError(f"{p}: unknown key {section}.{key} in the defaults file")
    return data


def _read_text(p: Path) -> str:
    """The configuration file's text; a missing or unreadable file is one ConfigError line."""
    try:
        return p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{p}: configuration file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        why = getattr(exc, "strerror", None) or exc
        raise ConfigError(f"{p}: cannot read configuration: {why}") from None


def load_config(path: str | Path) -> Config:
    p = Path(path)
    return parse_config(_read_text(p), str(p), load_defaults())


def load_boot(path: str | Path) -> BootConfig:
    """The boot YAML (with the system's defaults) as the floor of a provisioned box."""
    p = Path(path)
    return parse_boot(_read_text(p), str(p), load_defaults())
