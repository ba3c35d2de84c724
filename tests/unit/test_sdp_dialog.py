"""SDP offer/answer (RFC 3264) and dialog state (RFC 3261 §12)."""

from __future__ import annotations

import pytest

from firmware.sip.dialog import Dialog
from firmware.sip.errors import RemoteProtocolError
from firmware.sip.message import parse_message
from firmware.sip.sdp import LocalMedia, accept_answer, answer_offer, build_offer, parse_sdp

LOCAL = LocalMedia("127.0.0.1", 4000)
OFFER = (b"v=0\r\no=x 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n"
         b"m=audio 5004 RTP/AVP 8 0 96\r\na=rtpmap:96 telephone-event/8000\r\na=ptime:30\r\n"
         b"m=video 5006 RTP/AVP 31\r\n")


def test_offer_lists_codecs_in_config_order_with_telephone_event() -> None:
    text = build_offer(LocalMedia("127.0.0.1", 4000, ("PCMA", "PCMU"), 101)).to_bytes().decode()
    assert "m=audio 4000 RTP/AVP 8 0 101\r\n" in text
    assert "a=rtpmap:101 telephone-event/8000\r\n" in text and "a=sendrecv" in text
    assert "c=IN IP4 127.0.0.1" in text


def test_answer_picks_offerers_first_codec_and_rejects_video() -> None:
    sd, params = answer_offer(parse_sdp(OFFER), LOCAL)
    text = sd.to_bytes().decode()
    assert "m=audio 4000 RTP/AVP 8 96\r\n" in text
    assert "m=video 0 RTP/AVP 31\r\n" in text
    assert (params.codec, params.payload_type, params.dtmf_payload_type) == ("PCMA", 8, 96)
    assert (params.remote_addr, params.remote_port, params.ptime) == ("10.0.0.1", 5004, 30)


@pytest.mark.parametrize("theirs,ours", [("sendonly", "recvonly"), ("recvonly", "sendonly"),
                                         ("inactive", "inactive"), ("sendrecv", "sendrecv")])
def test_hold_directions(theirs: str, ours: str) -> None:
    sd, params = answer_offer(parse_sdp(OFFER.replace(b"a=ptime:30", f"a={theirs}".encode())),
                              LOCAL)
    assert params.direction == ours and f"a={ours}" in sd.to_bytes().decode()


def test_session_level_direction_and_rfc2543_hold() -> None:
    offer = OFFER.replace(b"t=0 0\r\n", b"t=0 0\r\na=sendonly\r\n")
    assert answer_offer(parse_sdp(offer), LOCAL)[1].direction == "recvonly"
    hold = OFFER.replace(b"c=IN IP4 10.0.0.1", b"c=IN IP4 0.0.0.0")
    assert answer_offer(parse_sdp(hold), LOCAL)[1].direction == "inactive"


def test_no_common_codec_and_bad_sdp() -> None:
    with pytest.raises(RemoteProtocolError) as info:
        answer_offer(parse_sdp(OFFER.replace(b"8 0 96", b"18 96")), LOCAL)
    assert info.value.status == 488
    for bad in (b"garbage", b"v=0\r\ns=-\r\n", b"\xff\xfe", b"o=x\r\nm=audio x RTP/AVP 0\r\n",
                b"o=x\r\nc=IN\r\n", b"o=x\r\nm=audio 70000 RTP/AVP 0\r\n"):
        with pytest.raises(RemoteProtocolError):
            parse_sdp(bad)
    with pytest.raises(RemoteProtocolError):
        answer_offer(parse_sdp(b"o=x\r\nm=audio 5000 RTP/AVP 0\r\n"), LOCAL)  # no c=
    with pytest.raises(RemoteProtocolError):
        answer_offer(parse_sdp(b"o=x\r\nc=IN IP4 1.2.3.4\r\nm=audio 0 RTP/AVP 0\r\n"), LOCAL)


def test_accept_answer() -> None:
    answer = parse_sdp(b"v=0\r\no=a 1 1 IN IP4 1.2.3.4\r\ns=-\r\nt=0 0\r\n"
                       b"m=audio 7000 RTP/AVP 0 101\r\nc=IN IP4 1.2.3.5\r\n"
                       b"a=rtpmap:101 telephone-event/8000\r\na=recvonly\r\n")
    params = accept_answer(answer, LOCAL)
    assert (params.remote_addr, params.remote_port, params.codec) == ("1.2.3.5", 7000, "PCMU")
    assert params.direction == "sendonly" and params.dtmf_payload_type == 101
    with pytest.raises(RemoteProtocolError):
        accept_answer(parse_sdp(b"o=a\r\nc=IN IP4 1.1.1.1\r\nm=audio 1 RTP/AVP 3\r\n"), LOCAL)


INVITE = (b"INVITE sip:box@10.0.0.2 SIP/2.0\r\nVia: SIP/2.0/UDP p1;branch=z9hG4bK1\r\n"
          b"Record-Route: <sip:p1;lr>, <sip:p2;lr>\r\nFrom: <sip:a@x>;tag=ft\r\n"
          b"To: <sip:box@y>\r\nCall-ID: d1\r\nCSeq: 10 INVITE\r\n"
          b"Contact: <sip:a@10.0.0.1:5060>\r\nContent-Length: 0\r\n\r\n")


def test_uas_dialog_route_set_and_cseq() -> None:
    req = parse_message(INVITE)
    d = Dialog.from_uas(req, "lt")
    assert d.key == ("d1", "lt", "ft") and d.remote_cseq == 10
    bye = d.create_request("BYE")
    assert bye.uri == "sip:a@10.0.0.1:5060"
    assert bye.headers.get_all("Route") == ["<sip:p1;lr>", "<sip:p2;lr>"]
    assert bye.cseq.number == 1 and bye.to.tag == "ft" and bye.from_.tag == "lt"
    later = parse_message(INVITE.replace(b"10 INVITE", b"11 INVITE").replace(
        b"10.0.0.1:5060", b"10.0.0.9:5070"))
    d.receive_request(later)
    assert d.remote_target == "sip:a@10.0.0.9:5070", "re-INVITE refreshes the target"
    with pytest.raises(RemoteProtocolError) as info:
        d.receive_request(parse_message(INVITE))
    assert info.value.status == 500


def _ok(record_route: bytes = b"", contact: bytes = b"<sip:box@10.0.0.2>",
        cseq: bytes = b"10 INVITE") -> bytes:
    return (b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP p1;branch=z9hG4bK1\r\n" + record_route +
            b"From: <sip:a@x>;tag=ft\r\nTo: <sip:box@y>;tag=tt\r\nCall-ID: d1\r\n"
            b"CSeq: " + cseq + b"\r\n" + (b"Contact: " + contact + b"\r\n" if contact else b"")
            + b"\r\n")


def test_uac_dialog_reverses_record_route_and_strict_routing() -> None:
    req = parse_message(INVITE)
    ok = parse_message(_ok(b"Record-Route: <sip:p1>, <sip:p2;lr>\r\n"))
    d = Dialog.from_uac(req, ok)
    assert d.route_set == ["<sip:p2;lr>", "<sip:p1>"], "route set is Record-Route reversed"
    assert d.remote_target == "sip:box@10.0.0.2"
    loose = d.create_request("BYE")
    assert loose.uri == "sip:box@10.0.0.2", "first hop loose-routes: URI is the remote target"
    assert loose.headers.get_all("Route") == ["<sip:p2;lr>", "<sip:p1>"]
    assert loose.cseq.number == 11 and loose.from_.tag == "ft" and loose.to.tag == "tt"
    ack = d.create_request("ACK", cseq=10)
    assert ack.cseq.number == 10 and d.local_cseq == 11

    # §12.2.1.1: the first hop (last Record-Route) is a strict router: it becomes the
    # Request-URI and the remote target goes last in Route.
    strict = Dialog.from_uac(req, parse_message(
        _ok(b"Record-Route: <sip:p2;lr>\r\nRecord-Route: <sip:strict.example.com>\r\n")))
    assert strict.route_set == ["<sip:strict.example.com>", "<sip:p2;lr>"]
    bye = strict.create_request("BYE")
    assert bye.uri == "sip:strict.example.com"
    assert bye.headers.get_all("Route") == ["<sip:p2;lr>", "<sip:box@10.0.0.2>"]


def test_uac_target_refresh_by_2xx_contact() -> None:
    """§12.2.1.2: a 2xx to a target refresh replaces the remote target with its Contact;
    a 2xx without Contact leaves it as it was."""
    d = Dialog.from_uac(parse_message(INVITE), parse_message(_ok()))
    d.refresh_target(parse_message(_ok(contact=b"<sip:box@10.0.0.7:5080;transport=udp>",
                                       cseq=b"11 INVITE")))
    assert d.remote_target == "sip:box@10.0.0.7:5080;transport=udp"
    assert d.create_request("BYE").uri == "sip:box@10.0.0.7:5080;transport=udp"
    d.refresh_target(parse_message(_ok(contact=b"", cseq=b"12 INVITE")))
    assert d.remote_target == "sip:box@10.0.0.7:5080;transport=udp"


def test_uac_dialog_needs_to_tag() -> None:
    req = parse_message(INVITE)
    no_tag = parse_message(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP p1;branch=z9hG4bK1\r\n"
                           b"From: <sip:a@x>;tag=ft\r\nTo: <sip:box@y>\r\nCall-ID: d1\r\n"
                           b"CSeq: 10 INVITE\r\n\r\n")
    with pytest.raises(RemoteProtocolError):
        Dialog.from_uac(req, no_tag)
