"""Fuzz targets: one function per parser or entry point, taking raw bytes.

Each target lets the documented errors through silently (RemoteProtocolError for the SIP
core, ValueError for the media core's ``rtp_parse``) and fails on anything else: an escaping
exception of another type, a broken round trip, or a transaction that is never reaped. The
same targets run under hypothesis (tests/fuzz/test_fuzz.py, in every pytest run) and under
atheris for long coverage-guided runs (tests/fuzz/run_atheris.py).
"""

from __future__ import annotations

from collections.abc import Callable

from firmware import _rtpcore as core
from firmware.sip.errors import RemoteProtocolError
from firmware.sip.message import Request, StreamParser, parse_message, validate_request
from firmware.sip.sdp import LocalMedia, accept_answer, answer_offer, parse_sdp
from firmware.sip.ua import UAConfig, UserAgent
from firmware.sip.uri import parse_uri

from .corpus import A_ADDR, B_ADDR, STRANGER, live_call
from .trusted import decode, run_sequence

LOCAL = LocalMedia("127.0.0.1", 4000)


def sip_message(data: bytes) -> None:
    """The message parser, every typed accessor, the UAS checks and serialisation."""
    try:
        msg = parse_message(data)
    except RemoteProtocolError:
        return
    again = parse_message(msg.to_bytes())  # what we serialise we can read back
    assert type(again) is type(msg)
    for accessor in ("call_id", "cseq", "from_", "to", "vias", "top_via", "contacts"):
        try:
            getattr(msg, accessor)
        except RemoteProtocolError:
            pass
    if isinstance(msg, Request):
        try:
            validate_request(msg)
        except RemoteProtocolError:
            pass


def sip_uri(data: bytes) -> None:
    text = data.decode("utf-8", "surrogateescape")
    try:
        uri = parse_uri(text)
    except RemoteProtocolError:
        return
    assert str(parse_uri(str(uri))) == str(uri), "a URI survives its own round trip"


def sdp(data: bytes) -> None:
    try:
        sd = parse_sdp(data)
    except RemoteProtocolError:
        return
    sd.to_bytes()
    for step in (lambda: answer_offer(sd, LOCAL), lambda: accept_answer(sd, LOCAL)):
        try:
            params = step()
        except RemoteProtocolError:
            continue
        params = params[1] if isinstance(params, tuple) else params
        assert 0 <= params.remote_port <= 65535 and params.ptime in (10, 20, 30, 40)
        assert params.remote_addr.count(".") == 3


def stream_framing(data: bytes) -> None:
    parser = StreamParser(4096)
    cut = data[0] if data else 0
    try:
        for chunk in (data[:cut], data[cut:]):
            for msg in parser.feed(chunk):
                assert len(msg) <= 4096
    except RemoteProtocolError:
        return


def _settle(ua: UserAgent, now: float, seconds: float) -> None:
    end = now + seconds
    for _ in range(10_000):
        t = ua.get_timer()
        if t is None or t > end:
            return
        ua.handle_timer(max(now, t))
        now = max(now, t)
        ua.datagrams_to_send()
        while ua.next_event() is not None:
            pass
    raise AssertionError("timers never settle")


def ua_datagram(data: bytes) -> None:
    """``receive_datagram`` of a box in a live call (the fuzzer's seeds carry its IDs), from
    the PBX and from a stranger, then ``handle_timer`` until every transaction is reaped."""
    pair = live_call()
    box = pair.a
    now = pair.now
    for src in (B_ADDR, STRANGER):
        box.receive_datagram(data, src, now)
        box.datagrams_to_send()
    while box.next_event() is not None:
        pass
    _settle(box, now, 400.0)
    assert box.open_transactions == 0, "a transaction was never reaped"


def ua_fresh(data: bytes) -> None:
    """A registering box (no call) fed the datagram as if from its registrar."""
    ua = UserAgent(UAConfig(server=B_ADDR[0], port=B_ADDR[1], username="a", password="pw",
                            keepalive="options", keepalive_interval=5), A_ADDR)
    ua.start(0.0)
    ua.datagrams_to_send()
    ua.receive_datagram(data, B_ADDR, 0.1)
    _settle(ua, 0.1, 100.0)


def rtp(data: bytes) -> None:
    try:
        pt, marker, seq, ts, ssrc, payload = core.rtp_parse(data)
    except ValueError:
        return
    assert 0 <= pt < 128 and 0 <= seq < 65536 and len(payload) <= len(data) - 12


def jitter(data: bytes) -> None:
    """The jitter buffer's put/pop with arbitrary headers (RTP header fields from the bytes)."""
    jb = core.JitterBuffer(160, 2, 1, 10)
    for i in range(0, len(data) - 9, 10):
        chunk = data[i:i + 10]
        ts = int.from_bytes(chunk[0:4], "big")
        seq = int.from_bytes(chunk[4:6], "big")
        ssrc = int.from_bytes(chunk[6:8], "big")
        size = chunk[8] * 2
        jb.put(ts, seq, ssrc, bytes(size))
        if chunk[9] & 1:
            frame = jb.pop()
            assert frame is None or 0 < len(frame) <= 320


def trusted_call(data: bytes) -> None:
    """A full call on the App with forged in-dialog steps from the PBX's address (templates of
    tests/fuzz/trusted.py, decoded from the bytes), then the verdict: the PBX's hang-up ends
    it, the box is registered, its transactions reaped, and it answers a new call with media.
    The first byte picks whether the steps come while the box rings or once it answered."""
    run_sequence(decode(data[1:]), ringing=bool(data[:1]) and data[0] & 1 == 1)


TARGETS: dict[str, Callable[[bytes], None]] = {
    "sip_message": sip_message, "sip_uri": sip_uri, "sdp": sdp, "stream_framing": stream_framing,
    "ua_datagram": ua_datagram, "ua_fresh": ua_fresh, "rtp": rtp, "jitter": jitter,
    "trusted_call": trusted_call,
}
