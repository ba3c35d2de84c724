"""SDES (RFC 4568): a=crypto parsing, offer/answer under media.srtp, refusals, secrecy of keys.

Covers the crypto-line grammar the box accepts and refuses, the offer/answer matrix for the
three policies (off, optional, required) including RTP/SAVP, call flows between two user agents
in memory (488 before ringing, hang-up when an answer drops SRTP), the config key, and that a
key never shows in repr(), error messages or the SIP debug log.
"""

from __future__ import annotations

import base64
import os
import re

import pytest

from firmware.config import ConfigError, default_srtp, parse_config
from firmware.events import CallAnswered, CallEnded, MediaParams, SrtpParams
from firmware.net import redact
from firmware.sip import sdes
from firmware.sip.errors import RemoteProtocolError
from firmware.sip.sdp import LocalMedia, accept_answer, answer_offer, build_offer, parse_sdp

from .pair import B_ADDR, Pair

KEY = bytes(range(30))
KEY_B64 = base64.b64encode(KEY).decode()
B_URI = "sip:b@127.0.0.2:5080"


def offer_sdp(proto: str = "RTP/SAVP", crypto: list[str] | None = None) -> bytes:
    lines = ["v=0", "o=pbx 1 1 IN IP4 10.0.0.1", "s=-", "c=IN IP4 10.0.0.1", "t=0 0",
             f"m=audio 5004 {proto} 0 8 101", "a=rtpmap:101 telephone-event/8000"]
    lines += [f"a=crypto:{c}" for c in (crypto if crypto is not None else
                                        [f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_B64}"])]
    return ("\r\n".join(lines) + "\r\n").encode()


def crypto_lines(sdp: bytes) -> list[str]:
    return re.findall(r"a=crypto:(.*)\r\n", sdp.decode())


# ------------------------------------------------------------------ the a=crypto grammar
def test_parse_and_format_a_crypto_line() -> None:
    c = sdes.parse_crypto(f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_B64}")
    assert (c.tag, c.suite, c.key) == (1, "AES_CM_128_HMAC_SHA1_80", KEY)
    assert c.value() == f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_B64}"
    long_life = sdes.parse_crypto(f"7 AES_CM_128_HMAC_SHA1_32 inline:{KEY_B64}|2^31 WSH=64")
    assert (long_life.tag, long_life.suite) == (7, "AES_CM_128_HMAC_SHA1_32")
    assert sdes.parse_crypto(f"2 AES_CM_128_HMAC_SHA1_80 inline:{KEY_B64}|1048576").tag == 2
    assert KEY_B64 not in repr(c) and KEY.hex() not in repr(c)


@pytest.mark.parametrize("value,needle", [
    (None, "needs a tag"),
    ("1 AES_CM_128_HMAC_SHA1_80", "needs a tag"),
    (f"x AES_CM_128_HMAC_SHA1_80 inline:{KEY_B64}", "ASCII digits"),
    (f"\u00b2 AES_CM_128_HMAC_SHA1_80 inline:{KEY_B64}", "ASCII digits"),
    (f"1234567890 AES_CM_128_HMAC_SHA1_80 inline:{KEY_B64}", "ASCII digits"),
    (f"1 AES_256_CM_HMAC_SHA1_80 inline:{KEY_B64}", "unsupported SRTP suite"),
    (f"1 F8_128_HMAC_SHA1_80 inline:{KEY_B64}", "unsupported SRTP suite"),
    (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_B64} UNENCRYPTED_SRTP", "session parameter"),
    (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_B64} KDR=1", "session parameter"),
    (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_B64};inline:{KEY_B64}", "several master keys"),
    (f"1 AES_CM_128_HMAC_SHA1_80 uri:{KEY_B64}", "method must be inline"),
    ("1 AES_CM_128_HMAC_SHA1_80 inline:not*base64*at*all*here*but*long*ok", "base64"),
    (f"1 AES_CM_128_HMAC_SHA1_80 inline:{base64.b64encode(KEY[:16]).decode()}", "30 bytes"),
    (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_B64}|2^20|1:4", "MKI"),
    (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_B64}|2^10", "shorter than 2^20"),
    (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_B64}|2^\u00b2", "malformed"),
    (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_B64}|" + "9" * 5000, "malformed"),
])
def test_unusable_crypto_lines_are_refused_without_echoing_the_key(value: str | None,
                                                                   needle: str) -> None:
    with pytest.raises(sdes.SdesError) as err:
        sdes.parse_crypto(value)
    assert needle in str(err.value)
    assert KEY_B64 not in str(err.value) and KEY_B64[:12] not in str(err.value)


# ------------------------------------------------------------------ offers
def test_offers_per_policy() -> None:
    plain = build_offer(LocalMedia("127.0.0.1", 4000)).to_bytes()
    assert b"m=audio 4000 RTP/AVP " in plain and b"crypto" not in plain
    required = build_offer(LocalMedia("127.0.0.1", 4000, srtp="required")).to_bytes()
    assert b"m=audio 4000 RTP/SAVP 0 8 101\r\n" in required
    lines = crypto_lines(required)
    assert [line.split()[:2] for line in lines] == [
        ["1", "AES_CM_128_HMAC_SHA1_80"], ["2", "AES_CM_128_HMAC_SHA1_32"]]
    keys = [sdes.parse_crypto(line).key for line in lines]
    assert len(set(keys)) == 2, "one fresh key per suite"
    optional = build_offer(LocalMedia("127.0.0.1", 4000, srtp="optional")).to_bytes()
    assert b"m=audio 4000 RTP/AVP 0 8 101\r\n" in optional and len(crypto_lines(optional)) == 2
    other_call = build_offer(LocalMedia("127.0.0.1", 4000, srtp="required")).to_bytes()
    assert not set(crypto_lines(other_call)) & set(lines), "fresh keys for every call"
    with pytest.raises(ValueError):
        LocalMedia("127.0.0.1", 4000, srtp="maybe")


# ------------------------------------------------------------------ answers to offers
def test_required_answers_a_savp_offer_with_one_crypto_line() -> None:
    local = LocalMedia("127.0.0.1", 4000, srtp="required")
    sd, params = answer_offer(parse_sdp(offer_sdp()), local)
    text = sd.to_bytes()
    assert b"m=audio 4000 RTP/SAVP 0 101\r\n" in text
    (line,) = crypto_lines(text)
    ours = sdes.parse_crypto(line)
    assert (ours.tag, ours.suite) == (1, "AES_CM_128_HMAC_SHA1_80")
    assert local.keys is not None and ours.key == local.keys.key_for(ours.suite) != KEY
    assert params.srtp == SrtpParams("AES_CM_128_HMAC_SHA1_80", ours.key, KEY)


def test_the_first_usable_line_is_chosen_and_its_tag_echoed() -> None:
    offer = offer_sdp(crypto=[
        f"1 AES_256_CM_HMAC_SHA1_80 inline:{base64.b64encode(bytes(46)).decode()}",
        f"2 AES_CM_128_HMAC_SHA1_80 inline:{KEY_B64}|2^20|1:4",  # MKI: skipped
        f"3 AES_CM_128_HMAC_SHA1_32 inline:{KEY_B64}",
        f"4 AES_CM_128_HMAC_SHA1_80 inline:{KEY_B64}"])
    sd, params = answer_offer(parse_sdp(offer), LocalMedia("127.0.0.1", 4000, srtp="optional"))
    (line,) = crypto_lines(sd.to_bytes())
    assert line.split()[:2] == ["3", "AES_CM_128_HMAC_SHA1_32"]
    assert params.srtp is not None and params.srtp.suite == "AES_CM_128_HMAC_SHA1_32"


@pytest.mark.parametrize("policy,proto,crypto,outcome", [
    ("required", "RTP/AVP", [], "488"),
    ("required", "RTP/AVP", [f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_B64}"], "srtp"),
    ("required", "RTP/SAVP", [f"1 AES_256_CM_HMAC_SHA1_80 inline:{KEY_B64}"], "488"),
    ("required", "RTP/SAVP", [], "488"),
    ("optional", "RTP/AVP", [], "plain"),
    ("optional", "RTP/AVP", ["1 AES_CM_128_HMAC_SHA1_80 inline:broken"], "plain"),
    ("optional", "RTP/AVP", [f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_B64}"], "srtp"),
    ("optional", "RTP/SAVP", [f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_B64}"], "srtp"),
    ("optional", "RTP/SAVP", [], "488"),
    ("off", "RTP/SAVP", [f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_B64}"], "488"),
    ("off", "RTP/AVP", [f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_B64}"], "plain"),
    ("off", "RTP/AVP", [], "plain"),
])
def test_offer_answer_matrix(policy: str, proto: str, crypto: list[str], outcome: str) -> None:
    local = LocalMedia("127.0.0.1", 4000, srtp=policy)
    offer = parse_sdp(offer_sdp(proto, crypto))
    if outcome == "488":
        with pytest.raises(RemoteProtocolError) as err:
            answer_offer(offer, local)
        assert err.value.status == 488
        assert "SRTP" in err.value.reason and KEY_B64 not in err.value.reason
        return
    sd, params = answer_offer(offer, local)
    text = sd.to_bytes()
    assert f"m=audio 4000 {proto} ".encode() in text, "the answer keeps the offer's profile"
    if outcome == "plain":
        assert params.srtp is None and not crypto_lines(text)
    else:
        assert params.srtp is not None and len(crypto_lines(text)) == 1


def test_srtp_off_names_the_setting_when_the_peer_demands_srtp() -> None:
    with pytest.raises(RemoteProtocolError) as err:
        answer_offer(parse_sdp(offer_sdp()), LocalMedia("127.0.0.1", 4000))
    assert err.value.reason == "the peer requires SRTP (RTP/SAVP) and media.srtp is off"


# ------------------------------------------------------------------ answers to our offers
def our_offer(policy: str) -> tuple[LocalMedia, list[sdes.Crypto]]:
    local = LocalMedia("127.0.0.1", 4000, srtp=policy)
    assert local.keys is not None
    return local, local.keys.offer()


def answer_sdp(proto: str, crypto: list[str]) -> bytes:
    return offer_sdp(proto, crypto)


def test_accept_answer_echoing_one_of_our_lines() -> None:
    local, offered = our_offer("required")
    params = accept_answer(parse_sdp(answer_sdp(
        "RTP/SAVP", [f"2 AES_CM_128_HMAC_SHA1_32 inline:{KEY_B64}"])), local)
    assert params.srtp == SrtpParams("AES_CM_128_HMAC_SHA1_32", offered[1].key, KEY)


@pytest.mark.parametrize("policy,proto,crypto,needle", [
    ("required", "RTP/AVP", [], "no a=crypto"),
    ("optional", "RTP/SAVP", [], "no a=crypto"),
    ("required", "RTP/SAVP", [f"1 AES_CM_128_HMAC_SHA1_32 inline:{KEY_B64}"], "does not match"),
    ("required", "RTP/SAVP", [f"9 AES_CM_128_HMAC_SHA1_80 inline:{KEY_B64}"], "does not match"),
    ("optional", "RTP/AVP", [f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_B64}"] * 2, "more than one"),
    ("optional", "RTP/AVP", ["1 AES_CM_128_HMAC_SHA1_80 inline:AAAA"], "unusable a=crypto"),
])
def test_unusable_answers_are_refused(policy: str, proto: str, crypto: list[str],
                                      needle: str) -> None:
    local, _ = our_offer(policy)
    with pytest.raises(RemoteProtocolError) as err:
        accept_answer(parse_sdp(answer_sdp(proto, crypto)), local)
    assert err.value.status == 488 and needle in err.value.reason
    assert KEY_B64 not in err.value.reason


def test_optional_falls_back_to_plain_rtp_when_the_answer_has_no_crypto() -> None:
    local, _ = our_offer("optional")
    assert accept_answer(parse_sdp(answer_sdp("RTP/AVP", [])), local).srtp is None


# ------------------------------------------------------------------ call flows in memory
def test_required_box_refuses_a_plain_call_with_488_before_ringing() -> None:
    p = Pair(b_cfg={"srtp": "required"})
    p.a.make_call(B_URI, LocalMedia("127.0.0.1", 4000), p.now)
    p.pump()
    end = p.events["a"][-1]
    assert isinstance(end, CallEnded) and end.status == 488
    assert p.events["b"] == [], "never rang"
    (reply,) = [d for d in p.sent("b>a", b"SIP/2.0 488")]
    assert b"SRTP is required (media.srtp)" in reply


def test_srtp_call_between_two_agents_crosses_the_keys() -> None:
    p = Pair(b_cfg={"srtp": "required"})
    p.a.make_call(B_URI, LocalMedia("127.0.0.1", 4000, srtp="required"), p.now)
    p.pump()
    p.b.answer(LocalMedia("127.0.0.1", 5000, srtp="required"), p.now)
    p.pump()
    a_ans, b_ans = p.events["a"][-1], p.events["b"][-1]
    assert isinstance(a_ans, CallAnswered) and isinstance(b_ans, CallAnswered)
    sa, sb = a_ans.media.srtp, b_ans.media.srtp
    assert sa is not None and sb is not None and sa.suite == sb.suite
    assert sa.local_key == sb.remote_key and sa.remote_key == sb.local_key
    assert sa.local_key != sa.remote_key


def test_outgoing_call_hangs_up_when_the_answer_drops_srtp() -> None:
    p = Pair(b_cfg={"srtp": "required"})
    held: list[bytes] = []

    def hold_200(direction: str, data: bytes) -> bool:
        if direction == "b>a" and data.startswith(b"SIP/2.0 200") and b"INVITE" in data:
            held.append(data)
            return True
        return False

    p.drop = hold_200
    p.a.make_call(B_URI, LocalMedia("127.0.0.1", 4000, srtp="required"), p.now)
    p.pump()
    p.b.answer(LocalMedia("127.0.0.1", 5000, srtp="required"), p.now)
    p.pump()
    head, body = held[0].split(b"\r\n\r\n", 1)
    body = re.sub(rb"a=crypto:[^\r]*\r\n", b"", body).replace(b"RTP/SAVP", b"RTP/AVP")
    head = re.sub(rb"Content-Length: *\d+", b"Content-Length: %d" % len(body), head)
    p.drop = lambda direction, data: False
    p.a.receive_datagram(head + b"\r\n\r\n" + body, B_ADDR, p.now)
    p.pump()
    end = p.events["a"][-1]
    assert isinstance(end, CallEnded)
    assert end.reason == ("unusable SDP answer: SRTP is required but the answer has no "
                          "a=crypto line")
    assert not any(isinstance(e, CallAnswered) for e in p.events["a"])
    assert p.sent("a>b", b"BYE "), "the established dialog is ended with BYE"


# ------------------------------------------------------------------ config and secrecy
def test_config_key_and_its_default() -> None:
    base = "sip:\n  server: pbx\n  username: 5002\n"
    assert parse_config(base).media.srtp == "off"
    assert parse_config(base + "media:\n  srtp: off\n").media.srtp == "off"  # YAML false
    assert parse_config(base + "media:\n  srtp: optional\n").media.srtp == "optional"
    assert parse_config(base + "media:\n  srtp: null\n").media.srtp == "off"
    assert default_srtp("tls") == "required" and default_srtp("udp") == "off"
    for bad in ("on", "yes", "sdes"):
        with pytest.raises(ConfigError, match="media.srtp .line 5. must be one of off"):
            parse_config(base + f"media:\n  srtp: {bad}\n")


def test_keys_never_reach_repr_status_fields_or_the_sip_log() -> None:
    local = LocalMedia("127.0.0.1", 4000, srtp="required")
    assert local.keys is not None
    params = MediaParams("127.0.0.1", 5004, 0, "PCMU", 101, 20, "sendrecv",
                         SrtpParams("AES_CM_128_HMAC_SHA1_80", os.urandom(30), KEY))
    text = repr(local) + str(local) + repr(params) + str(params) + repr(local.keys)
    secrets = [k for _, k in local.keys.keys] + [KEY, params.srtp.local_key]
    for key in secrets:
        assert key.hex() not in text and base64.b64encode(key).decode() not in text
        assert repr(key)[2:-1] not in text
    assert "AES_CM_128_HMAC_SHA1_80" in repr(params), "the suite is not a secret"
    invite = (b"INVITE sip:b@x SIP/2.0\r\nAuthorization: Digest response=\"abc\"\r\n\r\n"
              + build_offer(local).to_bytes())
    logged = redact(invite)
    assert logged.count("inline:<redacted>") == 2
    for key in secrets:
        assert base64.b64encode(key).decode() not in logged
