"""Digest authentication against the RFC 2617, RFC 7616 and RFC 8760 examples."""

from __future__ import annotations

import hashlib

import pytest

from firmware.sip.auth import (
    Challenge,
    DigestClient,
    best_challenge,
    digest_response,
    parse_challenge,
)
from firmware.sip.errors import RemoteProtocolError

RFC7616 = dict(username="Mufasa", realm="http-auth@example.org", password="Circle of Life",
               method="GET", uri="/dir/index.html",
               nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", nc="00000001",
               cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ", qop="auth")


def test_rfc7616_md5_example() -> None:
    assert digest_response(algorithm="MD5", **RFC7616) == "8ca523f5e9506fed4657c9700eebdbec"


def test_rfc7616_sha256_example() -> None:
    assert digest_response(algorithm="SHA-256", **RFC7616) == \
        "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"


def test_rfc2617_example() -> None:
    assert digest_response(
        algorithm="MD5", username="Mufasa", realm="testrealm@host.com",
        password="Circle Of Life", method="GET", uri="/dir/index.html",
        nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", nc="00000001", cnonce="0a4f113b",
        qop="auth") == "6629fae49393a05397450978507c4ef1"


def test_no_qop_rfc2069_example() -> None:
    """Without qop the response is H(HA1:nonce:HA2): RFC 2069 §2.4's worked example (its
    password is "CircleOfLife", without spaces), which RFC 2617 §3.2.2.1 keeps compatible."""
    assert digest_response(
        algorithm="MD5", username="Mufasa", realm="testrealm@host.com",
        password="CircleOfLife", method="GET", uri="/dir/index.html",
        nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093") == "1949323746fe6a43ef61f9606e7febea"


def _sess_by_hand(hash_name: str, qop: bool) -> str:
    """RFC 7616 §3.4.2 written out: A1 = H(user:realm:pass):nonce:cnonce for -sess, and
    response = H(H(A1):nonce[:nc:cnonce:qop]:H(method:uri))."""
    def h(text: str) -> str:
        return hashlib.new(hash_name, text.encode()).hexdigest()

    a1 = f"{h('5002:asterisk:s3cret')}:1b7fd46a:0a4f113b"
    a2 = "REGISTER:sip:127.0.0.1"
    middle = "1b7fd46a:00000001:0a4f113b:auth" if qop else "1b7fd46a"
    return h(f"{h(a1)}:{middle}:{h(a2)}")


@pytest.mark.parametrize("algorithm,hash_name", [("MD5-sess", "md5"),
                                                 ("SHA-256-sess", "sha256")])
@pytest.mark.parametrize("qop", [True, False])
def test_sess_variants_known_answer(algorithm: str, hash_name: str, qop: bool) -> None:
    got = digest_response(algorithm=algorithm, username="5002", realm="asterisk",
                          password="s3cret", method="REGISTER", uri="sip:127.0.0.1",
                          nonce="1b7fd46a", cnonce="0a4f113b",
                          nc="00000001" if qop else None, qop="auth" if qop else None)
    assert got == _sess_by_hand(hash_name, qop)


def test_unknown_algorithm_is_refused() -> None:
    with pytest.raises(RemoteProtocolError):
        digest_response(algorithm="SHA-512", username="u", realm="r", password="p",
                        method="X", uri="u", nonce="n")


def test_client_header_and_nonce_count() -> None:
    client = DigestClient(**{"username": "Mufasa", "password": "Circle of Life"},
                          cnonce=lambda: RFC7616["cnonce"])
    ch = parse_challenge(f'Digest realm="{RFC7616["realm"]}", qop="auth, auth-int", '
                         f'algorithm=MD5, nonce="{RFC7616["nonce"]}", '
                         f'opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"')
    name, value = client.authorization(ch, "GET", "/dir/index.html")
    assert name == "Authorization"
    assert 'response="8ca523f5e9506fed4657c9700eebdbec"' in value
    assert "nc=00000001" in value and "qop=auth" in value and 'opaque="FQhe' in value
    _, again = client.authorization(ch, "GET", "/dir/index.html")
    assert "nc=00000002" in again
    assert "Circle" not in repr(client) and "Circle" not in value


def test_challenge_parsing_and_choice() -> None:
    md5 = 'Digest realm="asterisk", nonce="1", algorithm=MD5, qop="auth"'
    sha = 'Digest realm="asterisk", nonce="2", algorithm=SHA-256, qop="auth"'
    assert best_challenge([md5, sha]).algorithm == "SHA-256"
    assert best_challenge(["Basic realm=x", md5]).nonce == "1"
    stale = parse_challenge('Digest realm="r", nonce="n", stale=TRUE', proxy=True)
    assert stale.stale and stale.proxy and stale.algorithm == "MD5" and stale.qop == ()
    assert not Challenge("r", "n", "SHA-512").supported
    assert not Challenge("r", "n", qop=("auth-int",)).supported
    with pytest.raises(RemoteProtocolError):
        best_challenge(["Basic realm=x"])
    with pytest.raises(RemoteProtocolError):
        parse_challenge('Digest realm="r"')
    with pytest.raises(RemoteProtocolError):
        parse_challenge("Basic realm=x")


def test_proxy_challenge_gives_proxy_authorization() -> None:
    client = DigestClient("u", "p", cnonce=lambda: "c")
    name, value = client.authorization(Challenge("r", "n", "SHA-256-sess".upper(),
                                                 proxy=True), "INVITE", "sip:x")
    assert name == "Proxy-Authorization" and 'cnonce="c"' in value
    assert "qop" not in value
