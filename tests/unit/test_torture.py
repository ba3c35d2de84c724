"""RFC 4475 torture messages (tests/data/rfc4475, with its README) fed to the parser and the UA.

Valid messages parse; invalid ones are answered 400 (or dropped when no answer is possible);
the application-level ones get the response RFC 4475 names. Nothing crashes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from firmware.sip.message import MalformedMessageError, Request, Response, parse_message
from firmware.sip.ua import UAConfig, UserAgent

DATA = Path(__file__).resolve().parents[1] / "data" / "rfc4475"
VALID = ["wsinv", "intmeth", "esc01", "escnull", "esc02", "lwsdisp", "longreq", "dblreq",
         "semiuri", "transports", "mpart01", "unreason", "noreason"]
INVALID = ["badinv01", "clerr", "ncl", "scalar02", "scalarlg", "quotbal", "ltgtruri", "lwsruri",
           "lwsstart", "trws", "escruri", "baddate", "regbadct", "badaspec", "baddn", "badvers",
           "mismatch01", "mismatch02", "bigcode"]
# file -> status a UAS answers with (RFC 4475 §3.3); None = silently discarded
APPLICATION = {"insuf": 400, "unkscm": 416, "novelsc": 416, "unksm2": 405, "bext01": 420,
               "invut": 415, "regaut01": 405, "multi01": 400, "mcl01": 400, "bcast": None,
               "zeromf": 200, "cparam01": 405, "cparam02": 405, "regescrt": 405, "sdp01": 406,
               "inv2543": 180, "badbranch": 200}
SRC = ("192.0.2.200", 5060)


def load(name: str) -> bytes:
    return (DATA / f"{name}.dat").read_bytes()


def fresh_ua() -> UserAgent:
    # the torture messages come from a listed trusted source (strangers get nothing at all)
    return UserAgent(UAConfig(server="127.0.0.1", username="user", register=False,
                              keepalive="off", trusted_sources=("192.0.2.0/24",)),
                     ("127.0.0.1", 5070))


def feed(name: str) -> tuple[UserAgent, list[Response]]:
    ua = fresh_ua()
    ua.receive_datagram(load(name), SRC, 0.0)
    out = []
    for data, addr in ua.datagrams_to_send():
        assert addr == SRC, "answers go back where the request came from"
        msg = parse_message(data)
        assert isinstance(msg, Response)
        out.append(msg)
    return ua, out


def test_all_49_files_are_classified() -> None:
    names = {p.stem for p in DATA.glob("*.dat")}
    assert len(names) == 49
    assert names == set(VALID) | set(INVALID) | set(APPLICATION)


@pytest.mark.parametrize("name", VALID)
def test_valid_messages_parse(name: str) -> None:
    msg = parse_message(load(name))
    assert isinstance(msg, Request | Response)
    assert msg.call_id
    if isinstance(msg, Request):
        assert msg.cseq.method == msg.method


def test_wsinv_details() -> None:
    msg = parse_message(load("wsinv"))
    assert isinstance(msg, Request)
    assert msg.method == "INVITE"
    assert msg.headers.get("subject") is not None
    assert msg.to.tag == "1918181833n"
    assert msg.from_.display == 'J Rosenberg \\"'
    assert msg.headers.get("newfangledheader") == "newfangled value continued newfangled value"
    assert msg.cseq.number == 9
    assert len(msg.vias) == 3
    assert msg.headers.get("Max-Forwards") == "0068"
    assert msg.body.startswith(b"v=0")


def test_dblreq_ignores_the_second_request() -> None:
    msg = parse_message(load("dblreq"))
    assert isinstance(msg, Request) and msg.method == "REGISTER"
    assert msg.body == b""


def test_unusual_reason_phrases() -> None:
    unreason = parse_message(load("unreason"))
    noreason = parse_message(load("noreason"))
    assert isinstance(unreason, Response) and unreason.status == 200
    # RFC 4475 §3.1.1.12: the phrase is UTF-8 and holds what would be separators elsewhere.
    assert unreason.reason == "= 2**3 * 5**2 но сто девяносто девять - простое"
    assert isinstance(noreason, Response) and noreason.reason == ""


@pytest.mark.parametrize("name", INVALID)
def test_invalid_messages_rejected_or_dropped(name: str) -> None:
    ua, out = feed(name)
    if out:
        assert len(out) == 1
        assert out[0].status in (400, 505), out[0]
        assert ua.counters["rejected_malformed"] + ua.counters["rejected_invalid"] == 1
    else:
        assert ua.counters["dropped_malformed"] == 1
    assert ua.call is None, "an invalid INVITE must never ring the box"
    assert ua.next_event() is None


def test_invalid_requests_get_400_where_possible() -> None:
    for name in ("badinv01", "quotbal", "ltgtruri", "lwsruri", "lwsstart", "trws", "escruri",
                 "baddate", "badaspec", "baddn", "mismatch01", "ncl", "clerr"):
        _, out = feed(name)
        assert [r.status for r in out] == [400], name


def test_bad_version_gets_505() -> None:
    _, out = feed("badvers")
    assert [r.status for r in out] == [505]


def test_invalid_responses_are_dropped_silently() -> None:
    for name in ("scalarlg", "bigcode"):
        ua, out = feed(name)
        assert out == [] and ua.counters["dropped_malformed"] == 1


@pytest.mark.parametrize(("name", "status"), sorted(APPLICATION.items()))
def test_application_level_answers(name: str, status: int | None) -> None:
    ua, out = feed(name)
    codes = [r.status for r in out if r.status != 100]
    if status is None:
        assert out == []
    else:
        assert codes[:1] == [status], f"{name}: {codes}"


def test_answers_carry_the_right_extra_headers() -> None:
    _, out = feed("bext01")
    assert "nothingSupportsThis" in (out[0].headers.get("Unsupported") or "")
    _, out = feed("invut")
    assert out[0].headers.get("Accept") == "application/sdp"
    _, out = feed("regaut01")
    assert "INVITE" in (out[0].headers.get("Allow") or "")


def test_every_file_survives_every_truncation() -> None:
    """Cut each message at many points: always a clean answer or drop, never an exception."""
    ua = fresh_ua()
    for path in sorted(DATA.glob("*.dat")):
        data = path.read_bytes()
        for cut in range(0, len(data), max(1, len(data) // 40)):
            ua.receive_datagram(data[:cut], SRC, 0.0)
            ua.datagrams_to_send()
    assert ua.counters["dropped_malformed"] + ua.counters["rejected_malformed"] > 0


def test_malformed_error_keeps_headers_for_a_400() -> None:
    with pytest.raises(MalformedMessageError) as info:
        parse_message(load("ltgtruri"))
    assert info.value.is_request and info.value.headers is not None
    assert info.value.headers.get("Call-ID")
