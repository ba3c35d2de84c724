"""The SRTP transform (libsrtp2) against an independent RFC 3711 implementation.

The reference below is written from RFC 3711 with the ``cryptography`` package (AES in counter
mode, HMAC-SHA1) and is itself pinned to the RFC's Appendix B.2 (AES-CM keystream) and B.3
(key derivation) test vectors. libsrtp's output must then match it byte for byte, both ways,
for SRTP (both suites, across a sequence-number wrap) and SRTCP; tampered, replayed, truncated
and wrongly keyed packets are refused with the right reason. No sockets.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import pickle
import struct

import pytest

from tests import compiled

pytest.importorskip("firmware.core._srtp", reason=compiled.REASON)
pytest.importorskip("cryptography", reason=compiled.EXTRAS_REASON)
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from firmware import _rtpcore as core
from firmware.core._srtp import SUITES, SrtpTransform
from firmware.core._transform import PacketTransform, TransformError

pytestmark = pytest.mark.compiled

TAG = {"AES_CM_128_HMAC_SHA1_80": 10, "AES_CM_128_HMAC_SHA1_32": 4}


# ------------------------------------------------------------------ the reference (RFC 3711)
def aes_cm(key: bytes, iv: bytes, data: bytes) -> bytes:
    """AES in counter mode from a 128-bit IV (RFC 3711 §4.1.1): the keystream XOR data."""
    return Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor().update(data)


def kdf(master: bytes, label: int, length: int, index: int = 0, kdr: int = 0) -> bytes:
    """RFC 3711 §4.3.1: x = (label || index DIV kdr) XOR master_salt; AES-CM(x * 2^16)."""
    key, salt = master[:16], master[16:]
    r = index // kdr if kdr else 0
    x = int.from_bytes(salt, "big") ^ ((label << 48) | r)
    return aes_cm(key, (x << 16).to_bytes(16, "big"), bytes(length))


def session_keys(master: bytes, rtcp: bool) -> tuple[bytes, bytes, bytes]:
    """(cipher key, auth key, salt): labels 0/1/2 for SRTP, 3/4/5 for SRTCP."""
    base = 3 if rtcp else 0
    return kdf(master, base, 16), kdf(master, base + 1, 20), kdf(master, base + 2, 14)


def packet_iv(salt: bytes, ssrc: int, index: int) -> bytes:
    """RFC 3711 §4.1.1: IV = (k_s * 2^16) XOR (SSRC * 2^64) XOR (i * 2^16)."""
    iv = (int.from_bytes(salt, "big") << 16) ^ (ssrc << 64) ^ (index << 16)
    return iv.to_bytes(16, "big")


def header_length(pkt: bytes) -> int:
    n = 12 + 4 * (pkt[0] & 0x0F)
    if pkt[0] & 0x10:
        n += 4 + 4 * struct.unpack_from("!H", pkt, n + 2)[0]
    return n


def ref_protect_rtp(master: bytes, pkt: bytes, roc: int, tag_len: int) -> bytes:
    enc, auth, salt = session_keys(master, rtcp=False)
    seq, ssrc = struct.unpack_from("!H", pkt, 2)[0], struct.unpack_from("!I", pkt, 8)[0]
    h = header_length(pkt)
    body = pkt[:h] + aes_cm(enc, packet_iv(salt, ssrc, (roc << 16) | seq), pkt[h:])
    tag = hmac.new(auth, body + roc.to_bytes(4, "big"), hashlib.sha1).digest()[:tag_len]
    return body + tag


def ref_unprotect_rtp(master: bytes, srtp: bytes, roc: int, tag_len: int) -> bytes:
    enc, auth, salt = session_keys(master, rtcp=False)
    body, tag = srtp[:-tag_len], srtp[-tag_len:]
    want = hmac.new(auth, body + roc.to_bytes(4, "big"), hashlib.sha1).digest()[:tag_len]
    assert hmac.compare_digest(tag, want), "reference: authentication failed"
    seq, ssrc = struct.unpack_from("!H", body, 2)[0], struct.unpack_from("!I", body, 8)[0]
    h = header_length(body)
    return body[:h] + aes_cm(enc, packet_iv(salt, ssrc, (roc << 16) | seq), body[h:])


def ref_protect_rtcp(master: bytes, pkt: bytes, index: int) -> bytes:
    """SRTCP (RFC 3711 §3.4): all but the first 8 bytes encrypted, E=1, 80-bit tag."""
    enc, auth, salt = session_keys(master, rtcp=True)
    ssrc = struct.unpack_from("!I", pkt, 4)[0]
    body = pkt[:8] + aes_cm(enc, packet_iv(salt, ssrc, index), pkt[8:])
    body += (0x80000000 | index).to_bytes(4, "big")
    return body + hmac.new(auth, body, hashlib.sha1).digest()[:10]


def ref_unprotect_rtcp(master: bytes, srtcp: bytes) -> tuple[bytes, int]:
    enc, auth, salt = session_keys(master, rtcp=True)
    body, tag = srtcp[:-10], srtcp[-10:]
    assert hmac.compare_digest(tag, hmac.new(auth, body, hashlib.sha1).digest()[:10])
    word = int.from_bytes(body[-4:], "big")
    assert word & 0x80000000, "E flag: the packet is encrypted"
    index = word & 0x7FFFFFFF
    ssrc = struct.unpack_from("!I", body, 4)[0]
    return body[:8] + aes_cm(enc, packet_iv(salt, ssrc, index), body[8:-4]), index


# ------------------------------------------------------------------ the reference vs RFC 3711
def test_reference_aes_cm_keystream_matches_rfc3711_b2() -> None:
    key = bytes.fromhex("2B7E151628AED2A6ABF7158809CF4F3C")
    salt = bytes.fromhex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD")
    iv = packet_iv(salt, 0, 0)
    assert iv.hex().upper() == "F0F1F2F3F4F5F6F7F8F9FAFBFCFD0000"
    stream = aes_cm(key, iv, bytes(16 * 0xFF02))
    expected = {
        0x0000: "E03EAD0935C95E80E166B16DD92B4EB4",
        0x0001: "D23513162B02D0F72A43A2FE4A5F97AB",
        0x0002: "41E95B3BB0A2E8DD477901E4FCA894C0",
        0xFEFF: "EC8CDF7398607CB0F2D21675EA9EA1E4",
        0xFF00: "362B7C3C6773516318A077D7FC5073AE",
        0xFF01: "6A2CC3787889374FBEB4C81B17BA6C44",
    }
    for block, hexa in expected.items():
        assert stream[16 * block:16 * block + 16].hex().upper() == hexa, hex(block)


def test_reference_key_derivation_matches_rfc3711_b3() -> None:
    master = bytes.fromhex("E1F97A0D3E018BE0D64FA32C06DE4139" "0EC675AD498AFEEBB6960B3AABE6")
    assert kdf(master, 0, 16).hex().upper() == "C61E7A93744F39EE10734AFE3FF7A087"
    assert kdf(master, 2, 14).hex().upper() == "30CBBC08863D8C85D49DB34A9AE1"
    assert kdf(master, 1, 94).hex().upper() == (
        "CEBE321F6FF7716B6FD4AB49AF256A156D38BAA48F0A0ACF3C34E2359E6CDBCE"
        "E049646C43D9327AD175578EF72270986371C10C9A369AC2F94A8C5FBCDDDC25"
        "6D6E919A48B610EF17C2041E474035766B68642C59BBFC2F34DB60DBDFB2")


# ------------------------------------------------------------------ libsrtp vs the reference
def rtp(seq: int, ssrc: int = 0x1234ABCD, payload: bytes | None = None, pt: int = 0) -> bytes:
    body = payload if payload is not None else bytes((seq + i) & 0xFF for i in range(160))
    return core.rtp_pack(pt, seq == 0, seq & 0xFFFF, seq * 160 & 0xFFFFFFFF, ssrc, body)


def pair(suite: str) -> tuple[bytes, bytes, SrtpTransform, SrtpTransform]:
    ka, kb = os.urandom(30), os.urandom(30)
    return ka, kb, SrtpTransform(suite, ka, kb), SrtpTransform(suite, kb, ka)


@pytest.mark.parametrize("suite", list(SUITES))
def test_protect_is_byte_exact_with_the_reference_across_a_sequence_wrap(suite: str) -> None:
    ka, _kb, a, _b = pair(suite)
    start = 65530  # the rollover counter must step to 1 after 65535
    for n in range(start, start + 20):
        seq, roc = n & 0xFFFF, n >> 16
        plain = rtp(seq)
        wire = a.protect_rtp(plain)
        assert len(wire) == len(plain) + TAG[suite]
        assert wire == ref_protect_rtp(ka, plain, roc, TAG[suite]), f"seq {seq} roc {roc}"
        assert wire[12:-TAG[suite]] != plain[12:], "the payload is encrypted"
        assert wire[:12] == plain[:12], "the header stays readable"


@pytest.mark.parametrize("suite", list(SUITES))
def test_reference_packets_unprotect_including_csrc_and_extension(suite: str) -> None:
    ka, kb, _a, b = pair(suite)
    plain = rtp(7)
    assert b.unprotect_rtp(ref_protect_rtp(ka, plain, 0, TAG[suite])) == plain
    # one CSRC and a one-word header extension: the header grows, only the payload is secret
    fancy = bytes([0x91, 0x08]) + rtp(8)[2:12] + b"\x00\x00\x00\x05" + \
        b"\xbe\xde\x00\x01" + b"\x10\xaa\x00\x00" + b"payload!"
    wire = ref_protect_rtp(ka, fancy, 0, TAG[suite])
    assert wire[:24] == fancy[:24]
    assert b.unprotect_rtp(wire) == fancy
    # and what libsrtp protects, the reference reads
    assert ref_unprotect_rtp(kb, SrtpTransform(suite, kb, ka).protect_rtp(plain), 0,
                             TAG[suite]) == plain


@pytest.mark.parametrize("suite", list(SUITES))
def test_srtcp_is_byte_exact_with_the_reference_and_keeps_an_80_bit_tag(suite: str) -> None:
    ka, kb, a, b = pair(suite)
    sr = bytes([0x80, 200, 0, 6]) + struct.pack("!I", 0x1234ABCD) + bytes(range(20))
    for _ in range(3):
        wire = a.protect_rtcp(sr)
        assert len(wire) == len(sr) + 4 + 10, "E||index and an 80-bit tag with either suite"
        plain, index = ref_unprotect_rtcp(ka, wire)
        assert plain == sr
        assert wire == ref_protect_rtcp(ka, sr, index)
        assert b.unprotect_rtcp(wire) == sr
    assert b.unprotect_rtcp(ref_protect_rtcp(ka, sr, 1000)) == sr


@pytest.mark.parametrize("suite", list(SUITES))
def test_tampered_replayed_truncated_and_wrongly_keyed_packets_are_refused(suite: str) -> None:
    ka, _kb, a, b = pair(suite)
    tag = TAG[suite]
    good = [a.protect_rtp(rtp(seq)) for seq in range(300)]
    assert b.unprotect_rtp(good[0]) == rtp(0)
    for where in (2, 12, 100, len(good[1]) - 1):  # sequence number, payload, payload, tag
        bad = bytearray(good[1])
        bad[where] ^= 0x01
        with pytest.raises(TransformError) as err:
            b.unprotect_rtp(bytes(bad))
        assert err.value.reason == "auth", where
    assert b.unprotect_rtp(good[1]) == rtp(1), "a forgery does not burn the genuine packet"
    with pytest.raises(TransformError) as err:
        b.unprotect_rtp(good[1])
    assert err.value.reason == "replay"
    for seq in range(2, 200):
        if seq != 150:  # 150 is held back: it arrives late
            b.unprotect_rtp(good[seq])
    with pytest.raises(TransformError) as err:  # 198 packets back: outside the 128 window
        b.unprotect_rtp(good[2])
    assert err.value.reason == "replay"
    assert b.unprotect_rtp(good[150]) == rtp(150), "late but inside the window: accepted"
    with pytest.raises(TransformError) as err:
        b.unprotect_rtp(good[200][:12 + 2])
    assert err.value.reason == "error"
    stranger = SrtpTransform(suite, os.urandom(30), os.urandom(30))
    with pytest.raises(TransformError) as err:
        b.unprotect_rtp(stranger.protect_rtp(rtp(201)))
    assert err.value.reason == "auth"
    forged = ref_protect_rtp(ka, rtp(202), 0, tag)[:-tag] + bytes(tag)
    with pytest.raises(TransformError) as err:
        b.unprotect_rtp(forged)
    assert err.value.reason == "auth"
    # SRTCP: tampered, replayed
    sr = bytes([0x80, 200, 0, 6]) + bytes(24)
    wire = a.protect_rtcp(sr)
    bad = bytearray(wire)
    bad[10] ^= 0x80
    with pytest.raises(TransformError) as err:
        b.unprotect_rtcp(bytes(bad))
    assert err.value.reason == "auth"
    assert b.unprotect_rtcp(wire) == sr
    with pytest.raises(TransformError) as err:
        b.unprotect_rtcp(wire)
    assert err.value.reason == "replay"


def test_rekey_keys_stay_secret_and_the_identity_hook() -> None:
    suite = "AES_CM_128_HMAC_SHA1_80"
    ka, kb, a, b = pair(suite)
    first = a.protect_rtp(rtp(1))
    kc = os.urandom(30)
    a.set_outbound(suite, kc)  # a new outbound key (re-INVITE)
    b.set_inbound(suite, kc)
    with pytest.raises(TransformError):
        b.unprotect_rtp(first)
    assert b.unprotect_rtp(a.protect_rtp(rtp(2))) == rtp(2)
    with pytest.raises(ValueError, match="keystream"):
        a.set_outbound(suite, kc)  # same key again would restart its keystream
    with pytest.raises(ValueError, match="30 bytes"):
        SrtpTransform(suite, ka[:16], kb)
    with pytest.raises(ValueError, match="unsupported SRTP suite"):
        SrtpTransform("AES_256_CM_HMAC_SHA1_80", ka, kb)
    text = repr(a) + str(a)
    for key in (ka, kb, kc):
        assert key.hex() not in text and repr(key) not in text
    with pytest.raises(TypeError):
        pickle.dumps(a)
    blank = SrtpTransform.__new__(SrtpTransform)  # never initialised: refuses, no crash
    with pytest.raises(TransformError):
        blank.protect_rtp(rtp(4))
    with pytest.raises(TransformError):
        blank.unprotect_rtcp(bytes(40))
    identity = PacketTransform()
    assert identity.protect_rtp(rtp(3)) == rtp(3) == identity.unprotect_rtp(rtp(3))
