"""SDP for one G.711 audio stream: parse, build, and offer/answer (RFC 4566, RFC 3264).

Owns what the box says about its media and what it understood of the peer's: address, port,
codec, telephone-event payload type, ptime, direction (hold = sendonly/inactive) and, through
``sdes``, the SRTP profile and keys (RTP/SAVP, a=crypto). Other media lines (video...) are
answered with port 0. Knows nothing about RTP or sockets.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from ..address import ipv4, is_unicast_ipv4
from ..events import MediaParams
from . import sdes
from .errors import RemoteProtocolError
from .headers import is_ascii_digits

_MAX_MEDIA = 16
_MAX_ATTRIBUTES = 256
STATIC_CODECS = {0: ("PCMU", 8000), 8: ("PCMA", 8000)}
CODEC_PT = {"PCMU": 0, "PCMA": 8}
DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
_ANSWER_DIRECTION = {"sendrecv": "sendrecv", "sendonly": "recvonly",
                     "recvonly": "sendonly", "inactive": "inactive"}


@dataclass
class MediaLine:
    kind: str
    port: int
    proto: str
    formats: list[str]
    connection: str | None = None
    attributes: list[tuple[str, str | None]] = field(default_factory=list)

    def attr(self, name: str) -> list[str | None]:
        return [v for k, v in self.attributes if k == name]

    @property
    def direction(self) -> str:
        for name, _ in self.attributes:
            if name in DIRECTIONS:
                return name
        return "sendrecv"

    def rtpmap(self) -> dict[int, tuple[str, int]]:
        maps = {pt: codec for pt, codec in STATIC_CODECS.items() if str(pt) in self.formats}
        for value in self.attr("rtpmap"):
            pt_text, _, enc = (value or "").partition(" ")
            name, _, rate = enc.partition("/")
            rate = rate.split("/")[0]
            if _is_pt(pt_text) and is_ascii_digits(rate, 6):
                maps[int(pt_text)] = (name.upper(), int(rate))
        return maps


@dataclass
class SessionDescription:
    origin: str
    connection: str | None
    media: list[MediaLine]
    session_name: str = "-"
    session_direction: str | None = None

    def to_bytes(self) -> bytes:
        lines = ["v=0", f"o={self.origin}", f"s={self.session_name}"]
        if self.connection:
            lines.append(f"c=IN IP4 {self.connection}")
        lines.append("t=0 0")
        for m in self.media:
            lines.append(f"m={m.kind} {m.port} {m.proto} {' '.join(m.formats)}")
            if m.connection:
                lines.append(f"c=IN IP4 {m.connection}")
            for name, value in m.attributes:
                lines.append(f"a={name}" if value is None else f"a={name}:{value}")
        return ("\r\n".join(lines) + "\r\n").encode()


def parse_sdp(body: bytes) -> SessionDescription:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RemoteProtocolError("SDP is not UTF-8", 488) from exc
    origin = None
    connection = None
    session_name = "-"
    session_dir = None
    media: list[MediaLine] = []
    for line in text.replace("\r\n", "\n").split("\n"):
        if not line:
            continue
        if len(line) < 2 or line[1] != "=":
            raise RemoteProtocolError(f"malformed SDP line {line[:40]!r}", 400)
        if len(media) > _MAX_MEDIA or sum(len(m.attributes) for m in media) > _MAX_ATTRIBUTES:
            raise RemoteProtocolError("SDP with too many media lines or attributes", 400)
        key, value = line[0], line[2:]
        if key == "o":
            origin = value
        elif key == "s":
            session_name = value
        elif key == "c":
            addr = _parse_connection(value)
            if media:
                media[-1].connection = addr
            else:
                connection = addr
        elif key == "m":
            parts = value.split()
            if len(parts) < 4 or not is_ascii_digits(parts[1].split("/")[0], 5):
                raise RemoteProtocolError(f"malformed SDP media line {line[:80]!r}", 400)
            port = int(parts[1].split("/")[0])
            if port > 65535:
                raise RemoteProtocolError(f"SDP port out of range in {line[:80]!r}", 400)
            media.append(MediaLine(parts[0], port, parts[2], parts[3:]))
        elif key == "a":
            name, sep, val = value.partition(":")
            if media:
                media[-1].attributes.append((name, val if sep else None))
            elif name in DIRECTIONS:
                session_dir = name
    if origin is None:
        raise RemoteProtocolError("SDP without o= line", 400)
    sd = SessionDescription(origin, connection, media, session_name, session_dir)
    return sd


def _parse_connection(value: str) -> str:
    """``IN IP4 addr``: only a strict unicast dotted quad (or 0.0.0.0, RFC 2543 hold) reaches
    the media core, which speaks IPv4 only and judges addresses with the same parser
    (``firmware.address``). Anything else is a 488: a stream must never be left without a
    peer address it can check packets against."""
    parts = value.split()
    if len(parts) != 3 or parts[0] != "IN":
        raise RemoteProtocolError(f"malformed SDP connection line {value[:80]!r}", 400)
    addr = parts[2]
    if parts[1] != "IP4" or ipv4(addr) is None or not (
            addr == "0.0.0.0" or is_unicast_ipv4(addr)):
        raise RemoteProtocolError(f"unsupported SDP connection address {value[:80]!r}", 488)
    return addr


def _is_pt(text: str) -> bool:
    return is_ascii_digits(text, 3) and int(text) <= 127


@dataclass
class LocalMedia:
    """Our side of the negotiation: where we receive and what we accept, in preference order."""

    address: str
    port: int
    codecs: tuple[str, ...] = ("PCMU", "PCMA")
    dtmf_payload_type: int = 101
    ptime: int = 20
    session_id: int = 1
    version: int = 1
    srtp: str = "off"  # media.srtp: off | optional | required
    keys: sdes.LocalKeys | None = field(default=None, repr=False)  # fresh per call

    def __post_init__(self) -> None:
        if self.srtp not in sdes.POLICIES:
            raise ValueError(f"srtp must be one of {', '.join(sdes.POLICIES)}")
        if self.srtp != "off" and self.keys is None:
            self.keys = sdes.LocalKeys.generate()

    def origin(self) -> str:
        return f"intercom {self.session_id} {self.version} IN IP4 {self.address}"


def build_offer(local: LocalMedia, direction: str = "sendrecv") -> SessionDescription:
    formats = [str(CODEC_PT[c]) for c in local.codecs] + [str(local.dtmf_payload_type)]
    attrs: list[tuple[str, str | None]] = [
        ("rtpmap", f"{CODEC_PT[c]} {c}/8000") for c in local.codecs]
    attrs += [("rtpmap", f"{local.dtmf_payload_type} telephone-event/8000"),
              ("fmtp", f"{local.dtmf_payload_type} 0-16"),
              ("ptime", str(local.ptime))]
    proto = "RTP/AVP"
    if local.keys is not None and local.srtp != "off":
        # required: RTP/SAVP; optional: best effort, crypto offered on RTP/AVP (RFC 4568 §5.1)
        attrs += [("crypto", value) for value in sdes.offer_values(local.keys)]
        proto = "RTP/SAVP" if local.srtp == "required" else "RTP/AVP"
    attrs.append((direction, None))
    media = MediaLine("audio", local.port, proto, formats, attributes=attrs)
    return SessionDescription(local.origin(), local.address, [media])


def _audio_line(sd: SessionDescription, srtp: str = "off") -> MediaLine:
    for m in sd.media:
        proto = m.proto.upper()
        if m.kind == "audio" and m.port != 0 and (
                proto.startswith("RTP/AVP") or (srtp != "off" and proto == "RTP/SAVP")):
            return m
    if any(m.kind == "audio" and m.port != 0 and m.proto.upper() == "RTP/SAVP"
           for m in sd.media):
        raise RemoteProtocolError("the peer requires SRTP (RTP/SAVP) and media.srtp is off",
                                  488)
    raise RemoteProtocolError("no usable audio stream offered", 488)


def _params(sd: SessionDescription, m: MediaLine, pt: int, codec: str,
            dtmf: int | None, direction: str) -> MediaParams:
    addr = m.connection or sd.connection
    if addr is None:
        raise RemoteProtocolError("SDP has no connection address", 488)
    ptimes = [v for v in m.attr("ptime") if v and is_ascii_digits(v, 4)]
    ptime = int(ptimes[0]) if ptimes else 20
    if ptime not in (10, 20, 30, 40):
        ptime = 20
    if addr == "0.0.0.0":  # RFC 2543 hold
        direction = "inactive"
    return MediaParams(addr, m.port, pt, codec, dtmf, ptime, direction)


def _direction(sd: SessionDescription, m: MediaLine) -> str:
    """Media-level direction attribute, else session-level, else sendrecv (RFC 4566 §6)."""
    if any(name in DIRECTIONS for name, _ in m.attributes):
        return m.direction
    return sd.session_direction or "sendrecv"


def _dtmf_pt(maps: dict[int, tuple[str, int]]) -> int | None:
    for pt, (name, rate) in maps.items():
        if name == "TELEPHONE-EVENT" and rate == 8000:
            return pt
    return None


def answer_offer(offer: SessionDescription,
                 local: LocalMedia) -> tuple[SessionDescription, MediaParams]:
    """Choose a codec from the offer (offerer's order) and build our answer. 488 if none."""
    audio = _audio_line(offer, local.srtp)
    maps = audio.rtpmap()
    chosen = None
    for fmt in audio.formats:
        if _is_pt(fmt) and int(fmt) in maps:
            name, rate = maps[int(fmt)]
            if name in local.codecs and rate == 8000:
                chosen = (int(fmt), name)
                break
    if chosen is None:
        raise RemoteProtocolError("no codec in common (we accept " +
                                  ", ".join(local.codecs) + ")", 488)
    dtmf = _dtmf_pt(maps)
    our_dir = _ANSWER_DIRECTION[_direction(offer, audio)]
    formats = [str(chosen[0])] + ([str(dtmf)] if dtmf is not None else [])
    attrs: list[tuple[str, str | None]] = [("rtpmap", f"{chosen[0]} {chosen[1]}/8000")]
    if dtmf is not None:
        attrs += [("rtpmap", f"{dtmf} telephone-event/8000"), ("fmtp", f"{dtmf} 0-16")]
    params = _params(offer, audio, chosen[0], chosen[1], dtmf, our_dir)
    attrs.append(("ptime", str(params.ptime)))
    if local.keys is not None:
        srtp, crypto = sdes.answer(audio.proto, audio.attr("crypto"), local.srtp, local.keys)
        if crypto is not None:
            attrs.append(("crypto", crypto))
            params = replace(params, srtp=srtp)
    attrs.append((our_dir, None))
    media = []
    for m in offer.media:
        if m is audio:
            media.append(MediaLine("audio", local.port, m.proto, formats, attributes=attrs))
        else:
            media.append(MediaLine(m.kind, 0, m.proto, m.formats[:1]))
    return SessionDescription(local.origin(), local.address, media), params


def accept_answer(answer: SessionDescription, local: LocalMedia) -> MediaParams:
    """Read the peer's answer to our offer."""
    audio = _audio_line(answer, local.srtp)
    maps = audio.rtpmap()
    for fmt in audio.formats:
        if _is_pt(fmt) and int(fmt) in maps:
            name, rate = maps[int(fmt)]
            if name in local.codecs and rate == 8000:
                params = _params(answer, audio, int(fmt), name, _dtmf_pt(maps),
                                 _ANSWER_DIRECTION[_direction(answer, audio)])
                if local.keys is None:
                    return params
                return replace(params, srtp=sdes.accept(audio.proto, audio.attr("crypto"),
                                                        local.srtp, local.keys))
    raise RemoteProtocolError("answer has no codec we offered", 488)
