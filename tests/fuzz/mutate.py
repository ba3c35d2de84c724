"""Byte-level mutations shared by the hypothesis fuzz tests: the tokens that break parsers
(non-ASCII digits, huge numbers, separators, bad UTF-8, empty values) spliced into a message."""

from __future__ import annotations

from hypothesis import strategies as st

TOKENS = [b"\xc2\xb2", "\u0668".encode(), b"9" * 5000, b"", b"\r\n", b";", b",", b"<", b">",
          b":", b"\"", b"\xff\xfe", b"=", b"@", b"0", b"65536", b"-1", b" ", b"\t", b"sip:",
          b"\r\n\r\n", b"Via: \r\n", b"Record-Route: <sip:x\r\n", b"%", b"[", b"]", b"#"]

NUMBERS = [b"\xc2\xb2", "\u0668".encode(), "\uff11".encode(), b"9" * 5000, b"", b"-", b" "]

OPS = ["insert", "delete", "replace", "byte", "truncate", "number"]


def mutate(draw: st.DrawFn, data: bytes, rounds: int) -> bytes:
    """``rounds`` random edits of ``data`` (insert/delete/replace a token, flip a byte,
    truncate, turn one digit into a number ``int()`` or ``isdigit()`` trips on)."""
    out = bytearray(data)
    for _ in range(rounds):
        op = draw(st.sampled_from(OPS))
        pos = draw(st.integers(0, len(out)))
        token = draw(st.sampled_from(TOKENS) | st.binary(max_size=8))
        if op == "insert":
            out[pos:pos] = token
        elif op == "delete":
            del out[pos:pos + draw(st.integers(1, 40))]
        elif op == "replace":
            out[pos:pos + len(token)] = token
        elif op == "number":
            digits = [i for i, c in enumerate(out) if 48 <= c <= 57]
            if digits:
                at = digits[pos % len(digits)]
                out[at:at + 1] = draw(st.sampled_from(NUMBERS))
        elif op == "byte" and out:
            out[min(pos, len(out) - 1)] = draw(st.integers(0, 255))
        else:
            del out[pos:]
    return bytes(out)


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """One of ``seeds`` with one to six edits."""
    return mutate(draw, draw(st.sampled_from(seeds)), draw(st.integers(1, 6)))
