"""A short fuzz run inside every pytest run (hypothesis, seeded mutations of real messages and
plain random bytes). ``INTERCOM_FUZZ_EXAMPLES=100000`` makes it a long run; for a
coverage-guided run use ``python -m tests.fuzz.run_atheris TARGET`` (``./build.sh fuzz``)."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from . import corpus, targets
from .mutate import mutated

EXAMPLES = int(os.environ.get("INTERCOM_FUZZ_EXAMPLES", "150"))


def inputs(seeds: list[bytes]) -> st.SearchStrategy[bytes]:
    return mutated(seeds) | st.binary(max_size=1500)


FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=EXAMPLES <= 1000,
                suppress_health_check=list(HealthCheck), database=None)
SIP, SDP, URI, RTP = corpus.sip_seeds(), corpus.sdp_seeds(), corpus.uri_seeds(), corpus.rtp_seeds()


@FUZZ
@given(inputs(SIP))
def test_sip_message_parser(data: bytes) -> None:
    targets.sip_message(data)


@FUZZ
@given(inputs(URI + [s.split(b" ")[1] for s in SIP if s[:1].isalpha() and b" " in s]))
def test_sip_uri_parser(data: bytes) -> None:
    targets.sip_uri(data)


@FUZZ
@given(inputs(SDP))
def test_sdp_parser_and_offer_answer(data: bytes) -> None:
    targets.sdp(data)


@FUZZ
@given(inputs(SIP))
def test_stream_framing(data: bytes) -> None:
    targets.stream_framing(data)


@FUZZ
@given(inputs(SIP))
def test_user_agent_in_a_live_call(data: bytes) -> None:
    targets.ua_datagram(data)


@FUZZ
@given(inputs(SIP))
def test_user_agent_while_registering(data: bytes) -> None:
    targets.ua_fresh(data)


@FUZZ
@given(inputs(RTP))
def test_rtp_parser(data: bytes) -> None:
    targets.rtp(data)


@FUZZ
@given(st.binary(max_size=4000))
def test_jitter_buffer(data: bytes) -> None:
    targets.jitter(data)


@pytest.mark.parametrize("seed", SIP, ids=range(len(SIP)))
def test_every_seed_passes_the_ua_target(seed: bytes) -> None:
    targets.ua_datagram(seed)
