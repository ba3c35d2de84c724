"""The sans-I/O media core under a virtual clock: no sockets, no threads, no real time.

Differential tests feed the Cython units (``_jitter``, ``_rtcp``, ``_mediacore``) and the
pure-Python twin (``firmware.media._reference``) the same packets at the same times and demand
the same answers, packet by packet; the core's audio is judged by its spectrum.
"""

from __future__ import annotations

import random
import struct

import pytest

from tests import compiled

pytest.importorskip("firmware.core._mediacore", reason=compiled.REASON)
pytest.importorskip("numpy", reason=compiled.EXTRAS_REASON)
pytest.importorskip("hypothesis", reason=compiled.EXTRAS_REASON)
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devtools.tones import tone_pcm
from firmware.core import _jitter, _mediacore, _rtcp
from firmware.media import _reference as ref
from tests.audio import pcm_array, peak_hz, tone_snr_db

pytestmark = pytest.mark.compiled

FS = 160
PERIOD_NS = 20_000_000
WALL0 = 1_790_000_000 * 10**9  # a wall clock in 2026, as CLOCK_REALTIME would give


def tone(hz: float, start: int, n: int, amp: float = 8000.0) -> bytes:
    return tone_pcm(hz, n, start, amp)


# ------------------------------------------------------------------------- jitter buffer
JB_OPS = st.lists(st.one_of(
    st.tuples(st.just("put"), st.integers(-80, 80), st.integers(-5, 5),
              st.sampled_from([1, 1, 1, 2]), st.integers(0, 330)),
    st.tuples(st.just("jump"), st.sampled_from([70 * FS, 200 * FS, 2**31]), st.just(0),
              st.just(1), st.just(160)),
    st.tuples(st.just("pop"), st.just(0), st.just(0), st.just(0), st.just(0)),
    # the sender's clock moves off the frame grid (a restart under the same SSRC)
    st.tuples(st.just("shift"), st.sampled_from([1, FS // 2, FS - 1]), st.just(0), st.just(0),
              st.just(0)),
), min_size=1, max_size=400)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=JB_OPS, base=st.integers(0, 2**32 - 1), target=st.integers(0, 6),
       min_frames=st.integers(0, 1), max_frames=st.integers(2, 70), law=st.integers(-1, 1))
def test_jitter_buffer_matches_its_twin(ops, base, target, min_frames, max_frames, law) -> None:
    target = max(target, min_frames)
    c = _jitter.JitterBuffer(FS, target, min_frames, max_frames)
    p = ref.JitterBuffer(FS, target, min_frames, max_frames)
    c.shed_at_pauses(law)
    p.shed_at_pauses(law)
    frame = 0
    for kind, dframe, dseq, ssrc, length in ops:
        if kind == "pop":
            assert c.pop() == p.pop()
            frame += 1
        elif kind == "shift":
            base += dframe
        else:
            at = frame + dframe if kind == "put" else frame + dframe // FS
            ts = (base + at * FS) & 0xFFFFFFFF if kind == "put" else (base + dframe) & 0xFFFFFFFF
            payload = bytes([at & 0xFF]) * length
            seq = (at + dseq) & 0xFFFF
            assert c.put(ts, seq, ssrc, payload) == p.put(ts, seq, ssrc, payload), (kind, ts)
        assert (c.depth, c.target, c.started, c.min_frames) == \
            (p.depth, p.target, p.started, p.min_frames)
        assert [c.peek(a) for a in range(4)] == [p.peek(a) for a in range(4)]
    for name in ("late", "duplicates", "reordered", "resyncs", "too_early", "shrinks", "grows"):
        assert getattr(c, name) == getattr(p, name), name


def test_jitter_buffer_twin_pinned_behaviour() -> None:
    """The twin states the behaviour the Cython unit tests pin (late grows, deep shrinks)."""
    jb = ref.JitterBuffer(FS, target=1, max_frames=4)
    jb.put(0, 0, 1, b"a" * FS)
    [jb.pop() for _ in range(3)]
    assert jb.put(FS, 1, 1, b"b" * FS) == 1 and jb.target == 2 and jb.grows == 1
    jb = ref.JitterBuffer(FS, target=4, min_frames=1)
    for i in range(120):
        jb.put(i * FS, i, 1, b"z" * FS)
        jb.put((i + 6) * FS, i + 6, 1, b"z" * FS)
        jb.pop()
    assert jb.shrinks >= 1 and jb.target < 4


# ------------------------------------------------------------------------- RTCP statistics
RTCP_OPS = st.lists(st.one_of(
    # an RTP packet: sequence step (gaps, reorder, duplicates, wrap), arrival jitter in us
    st.tuples(st.just("rtp"), st.sampled_from([1, 1, 1, 1, 2, 3, 0, -1, -2, 5000, -40000]),
              st.integers(-15_000, 15_000), st.sampled_from([7, 7, 7, 7, 7, 9])),
    st.tuples(st.just("sr"), st.integers(0, 2**32 - 1), st.just(0), st.just(0)),
    st.tuples(st.just("report"), st.just(0), st.just(0), st.just(0)),
), min_size=1, max_size=300)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=RTCP_OPS, seq0=st.integers(0, 65535), ts0=st.integers(0, 2**32 - 1))
def test_rtcp_statistics_and_reports_match_the_twin(ops, seq0, ts0) -> None:
    c, p = _rtcp.Rtcp("door@intercom"), ref.Rtcp("door@intercom")
    now, seq, n = 5 * 10**9, seq0, 0
    for kind, a, b, ssrc in ops:
        now += PERIOD_NS
        if kind == "rtp":
            seq = (seq + a) & 0xFFFF
            n += 1
            ts = (ts0 + n * FS) & 0xFFFFFFFF
            arrival = WALL0 + now + b * 1000
            c.count(ssrc, seq, ts, FS, arrival)
            p.count(ssrc, seq, ts, FS, arrival)
        elif kind == "sr":
            sr = struct.pack("!BBHIIIIII", 0x80, 200, 6, 0x51, a, a ^ 0x5A5A, 0, 0, 0)
            assert c.receive(sr, now) == p.receive(sr, now)
        else:
            args = (0xD00D, n * FS, n, n * FS, now, WALL0 + now)
            assert c.report(*args) == p.report(*args)
        assert (c.received, c.lost, c.extended_max, c.jitter) == \
            (p.received, p.lost, p.extended_max, p.jitter)
    args = (0xD00D, 0, n, n * FS, now, WALL0 + now, True)
    assert c.report(*args) == p.report(*args)


def test_rtcp_report_fields_from_a_known_sequence() -> None:
    """Known answers: 10 of 12 packets (2 lost), constant 1 ms extra delay on every other."""
    r = ref.Rtcp("x")
    now = 10**9
    for i in [0, 1, 2, 3, 5, 6, 7, 8, 10, 11]:
        r.count(0xAB, 100 + i, 160 * i, 160, WALL0 + now + i * PERIOD_NS + (i % 2) * 10**6)
    r.receive(struct.pack("!BBHIIIIII", 0x80, 200, 6, 0xAB, 0x11112222, 0x33334444, 0, 0, 0),
              now)
    sr = ref.parse_sender_report(r.report(0xD00D, 4242, 50, 8000, now + 10**9, WALL0 + now))
    (block,) = sr.blocks
    assert (block.ssrc, block.cumulative_lost, block.extended_max) == (0xAB, 2, 111)
    assert block.fraction_lost == 2 * 256 // 12
    assert block.lsr == 0x22223333 and block.dlsr == 65536  # 1 s after the peer's SR
    # |D| = 8 units (1 ms) between neighbours of different parity, 0 across the two gaps:
    # J += (|D| - J) / 16 over 8,8,8,0,8,8,8,0,8 is 2.69 -> 2
    assert block.jitter == 2 and abs(r.jitter - 2.6937557) < 0.01
    assert (sr.ssrc, sr.rtp_ts, sr.packets, sr.octets, sr.cname) == (0xD00D, 4242, 50, 8000,
                                                                     b"x")
    assert sr.ntp >> 32 == (WALL0 + now) // 10**9 + 2208988800 and sr.ntp & 0xFFFFFFFF == 0
    sr2 = ref.parse_sender_report(r.report(0xD00D, 0, 0, 0, now, WALL0 + now, bye=True))
    assert sr2.blocks[0].fraction_lost == 0 and sr2.bye  # nothing new lost since the last one


# ------------------------------------------------------------------------- the whole core
class Peer:
    """The far end: a 1013 Hz tone in PCMU packets, with loss, jitter and reordering."""

    def __init__(self, seed: int, loss: float = 0.0, jitter_ms: float = 0.0) -> None:
        self.rng = random.Random(seed)
        self.loss, self.jitter_ms = loss, jitter_ms
        self.seq, self.ts, self.n = 4000, 77_000, 0

    def packets_until(self, now_ns: int, queue: list) -> None:
        while self.n * PERIOD_NS <= now_ns:
            payload = ref.encode_ulaw(tone(1013, self.n * FS, FS))
            pkt = ref.rtp_pack(0, self.n == 0, self.seq, self.ts, 0xFACE, payload)
            delay = int(self.rng.uniform(0, self.jitter_ms) * 1e6)
            if self.rng.random() >= self.loss:
                queue.append((self.n * PERIOD_NS + delay, pkt))
            self.seq, self.ts, self.n = (self.seq + 1) & 0xFFFF, self.ts + FS, self.n + 1


def run_call(seconds: float, loss: float = 0.0, jitter_ms: float = 0.0, seed: int = 1):
    """Drive a MediaCore and the twin's RTCP side by side; return what came out."""
    core = _mediacore.MediaCore(0, 20, 101, ssrc=0xD00D, seq=10, ts=1000, cname="door")
    twin = ref.Rtcp("door")
    peer, queue = Peer(seed, loss, jitter_ms), []
    played, sent, reports = [], [], []
    sent_count = sent_octets = 0
    for k in range(int(seconds * 50)):
        now = 3 * 10**9 + k * PERIOD_NS
        peer.packets_until(k * PERIOD_NS, queue)
        queue.sort(key=lambda q: q[0])
        while queue and queue[0][0] <= k * PERIOD_NS:
            at, pkt = queue.pop(0)
            assert core.receive_rtp(pkt, WALL0 + at) == 0
            h = ref.rtp_parse(pkt)
            twin.count(h.ssrc, h.sequence, h.timestamp, len(h.payload), WALL0 + at)
        packets, pcm = core.tick(now, WALL0 + now, tone(700, k * FS, FS, 6000))
        played.append(pcm)
        for kind, pkt in packets:
            if kind == "rtp":
                sent.append(pkt)
                sent_count += 1
                sent_octets += len(pkt) - 12
            else:
                mine = ref.parse_sender_report(pkt)
                # the twin builds the report from the same state, time and sender counts
                assert pkt == twin.report(0xD00D, mine.rtp_ts, mine.packets, mine.octets, now,
                                          WALL0 + now), f"report at {k} differs from the twin"
                reports.append((k, mine))
    return core, b"".join(played), sent, reports


def test_core_plays_the_far_end_and_sends_the_capture() -> None:
    core, played, sent, reports = run_call(4.0)
    heard = pcm_array(played)[50 * FS:]  # after the jitter buffer filled
    assert abs(peak_hz(heard) - 1013) < 5 and tone_snr_db(heard, 1013) > 25
    assert len(sent) == 200 and ref.rtp_parse(sent[0]).marker
    h = [ref.rtp_parse(p) for p in sent]
    assert [x.timestamp - h[0].timestamp for x in h[:3]] == [0, 160, 320]
    out = pcm_array(b"".join(ref.decode_ulaw(x.payload) for x in h))
    assert abs(peak_hz(out) - 700) < 5 and tone_snr_db(out, 700) > 25
    st_ = core.stats()
    assert st_["received"] == 200 and st_["lost"] == 0 and st_["concealed_ms"] == 0
    # first report at 2.5 s, the next 3.75-6.25 s later; it carries a report block
    assert reports and reports[0][0] == 125 and reports[0][1].blocks[0].cumulative_lost == 0


def test_core_under_loss_and_jitter_agrees_with_the_twin_and_conceals() -> None:
    core, played, sent, reports = run_call(30.0, loss=0.05, jitter_ms=30, seed=7)
    st_ = core.stats()
    assert st_["lost"] > 0 and st_["concealed_ms"] > 0
    assert len(reports) >= 5
    last = reports[-1][1].blocks[0]
    assert 0 < last.cumulative_lost <= st_["lost"] and last.fraction_lost > 0
    # uniform 0-30 ms delay: mean |D| is 10 ms = 80 units
    assert 50 < last.jitter < 110
    heard = pcm_array(played)[100 * FS:]
    assert abs(peak_hz(heard) - 1013) < 5 and tone_snr_db(heard, 1013) > 10


def test_core_dtmf_both_ways_and_direction() -> None:
    core = _mediacore.MediaCore(8, 20, 101, ssrc=1, seq=65530, ts=2**32 - 320)
    assert core.send_dtmf("*1x") == 2
    events, now = [], 0
    for _k in range(40):
        now += PERIOD_NS
        packets, _ = core.tick(now, WALL0 + now, b"")
        events += [ref.rtp_parse(p) for kind, p in packets if kind == "rtp"]
    dtmf = [e for e in events if e.payload_type == 101]
    codes = {ref.event_parse(e.payload)[0] for e in dtmf}
    ends = [e for e in dtmf if ref.event_parse(e.payload)[1]]
    assert codes == {10, 1} and len(ends) == 6  # each end three times
    assert len({e.timestamp for e in dtmf}) == 2 and core.stats()["dtmf_sent"] == 2
    seqs = [e.sequence for e in events]
    assert all((b - a) & 0xFFFF == 1 for a, b in zip(seqs, seqs[1:], strict=False))
    for i, ev in enumerate([11, 11, 11, 5, 99]):
        pkt = ref.rtp_pack(101, False, i, 8000 * (1 + (i >= 3) + (i >= 4)), 3,
                           ref.event_pack(ev, i == 2, 10, 160))
        core.receive_rtp(pkt, WALL0 + now)
    assert core.received_digits() == "#5" and core.stats()["malformed"] == 1
    core.set_direction(False, True)
    packets, _ = core.tick(now + PERIOD_NS, WALL0, b"")
    assert [k for k, _ in packets] == [] and core.stats()["source_underruns"] == 40


def test_core_bye_and_silence_before_anything_arrives() -> None:
    core = _mediacore.MediaCore(0, 20)
    packets, pcm = core.tick(PERIOD_NS, WALL0, tone(700, 0, FS), peer=False)
    assert packets == [] and pcm == bytes(2 * FS)
    bye = ref.parse_sender_report(core.bye(2 * PERIOD_NS, WALL0))
    assert bye.bye and bye.blocks == () and bye.cname == b"intercom"
    assert core.receive_rtp(b"\x80", 0) == -2 and core.receive_rtcp(b"\x00" * 8, 0) == -1
    assert core.stats()["malformed"] == 2
    assert np.all(pcm_array(pcm) == 0)


def test_concealment_repeats_and_fades_then_silence() -> None:
    """The one concealment place: a lost frame after a good one is the last frame, fading."""
    from firmware.core._conceal import Concealer

    good = tone(1013, 0, FS)
    c = Concealer()
    assert c.conceal(FS) == bytes(2 * FS)  # nothing heard yet: silence
    assert c.good(good) == good
    levels = [np.abs(pcm_array(c.conceal(FS))).max() for _ in range(6)]
    peak = np.abs(pcm_array(good)).max()
    assert [round(v / peak, 2) for v in levels] == [0.8, 0.6, 0.4, 0.2, 0.0, 0.0]
    # inside the core: drop packet 60 of a clean call; frame 60 is played as frame 59 * 0.8
    core = _mediacore.MediaCore(0, 20, ssrc=1, concealer=Concealer())
    played = []
    for k in range(80):
        if k != 60:
            core.receive_rtp(ref.rtp_pack(0, False, k, k * FS, 5,
                                          ref.encode_ulaw(tone(1013, k * FS, FS))), WALL0)
        played.append(pcm_array(core.tick(k * PERIOD_NS, WALL0, b"")[1]))
    lost_at = next(i for i, p in enumerate(played) if i > 10 and
                   np.allclose(p, (played[i - 1] * 4 / 5).astype(int), atol=1))
    assert core.stats()["concealed_ms"] == 20 and np.abs(played[lost_at]).max() > 1000


def test_a_concealer_plugs_into_the_core() -> None:
    """The concealment place takes another Concealer; G.711 Appendix I style is the default."""
    from firmware.core._conceal import Concealer
    from firmware.core._plc import PitchConcealer

    mine = Concealer()
    core = _mediacore.MediaCore(0, 20, concealer=mine)
    assert core.plc is mine and _mediacore.MediaCore(0, 20).plc is not mine
    # the default is the pitch-repeating G.711 Appendix I style concealer
    assert isinstance(_mediacore.MediaCore(0, 20).plc, PitchConcealer)


def _jb_depth(jb: object) -> int:
    d = jb.depth  # type: ignore[attr-defined]
    return d() if callable(d) else d


def test_a_backlog_at_the_start_of_a_stream_is_skipped_within_its_first_second() -> None:
    """A call's first packets often arrive in a burst (a PBX bridging, Echo() starting): that
    backlog is stale and goes at once, instead of delaying the whole call."""
    from firmware.core._jitter import JitterBuffer

    for jb in (JitterBuffer(160, 2, 1, 10), ref.JitterBuffer(160, 2, 1, 10)):
        seq = 0
        for _ in range(19):  # 380 ms arrive at once
            jb.put(seq * 160, seq, 7, bytes(160))
            seq += 1
        depths = []
        for _ in range(200):  # then one packet per period, as the far end sends them
            jb.put(seq * 160, seq, 7, bytes(160))
            seq += 1
            jb.pop()
            depths.append(_jb_depth(jb))
        assert depths[0] >= 17
        assert max(depths[25:]) <= jb.target + 1, "the backlog is gone within half a second"
        assert jb.target == 1 and jb.shrinks >= 16


def test_a_burst_after_a_stall_is_drained_not_played_late_for_ever() -> None:
    """Mid-call, a stall and then its burst (Wi-Fi): the backlog must drain even when the
    target is already at its minimum, fast while it is large."""
    from firmware.core._jitter import JitterBuffer

    for jb in (JitterBuffer(160, 1, 1, 10), ref.JitterBuffer(160, 1, 1, 10)):
        seq = 0
        for _ in range(100):  # two seconds of a clean stream
            jb.put(seq * 160, seq, 7, bytes(160))
            seq += 1
            jb.pop()
        assert _jb_depth(jb) <= 2
        for _ in range(16):  # a stall of 320 ms, concealed ...
            jb.pop()
        for _ in range(32):  # ... then what was held back, and 320 ms more, at once
            jb.put(seq * 160, seq, 7, bytes(160))
            seq += 1
        depths = []
        for _ in range(600):
            jb.put(seq * 160, seq, 7, bytes(160))
            seq += 1
            jb.pop()
            depths.append(_jb_depth(jb))
        assert depths[0] >= 15
        assert max(depths[100:]) <= jb.target + 1 + 3, "the large backlog drains within 2 s"
        assert max(depths[250:]) <= jb.target + 1, "the rest within the slow window"
        assert jb.target == 1 and jb.shrinks >= 13


def _clean_stream(jb: object, frames: int, seq: int = 0, lose: frozenset[int] = frozenset(),
                  late: frozenset[int] = frozenset()) -> list[bytes | None]:
    """One packet per period, each arriving just after the tick (as from Echo() or a quiet
    LAN), popped at the next tick; ``lose``: never sent, ``late``: sent one period late."""
    out = []
    held: list[int] = []
    for i in range(seq, seq + frames):
        for j in held:
            jb.put(j * FS, j, 7, bytes([j & 0xFF]) * FS)  # type: ignore[attr-defined]
        held = []
        if i in late:
            held.append(i)
        elif i not in lose:
            jb.put(i * FS, i, 7, bytes([i & 0xFF]) * FS)  # type: ignore[attr-defined]
        out.append(jb.pop())  # type: ignore[attr-defined]
    return out


@pytest.mark.parametrize("make", [_jitter.JitterBuffer, ref.JitterBuffer])
def test_a_clean_path_sheds_the_start_delay_and_plays_each_frame_at_its_tick(make) -> None:
    """With no minimum, a clean stream sheds the starting 40 ms a frame per 2 s and then holds
    nothing back: each packet is played at the first tick after it arrives (20 ms less than a
    buffer that keeps one frame, which is where a minimum of 1 stops)."""
    jb = make(FS, 2, 0, 10)
    out = _clean_stream(jb, 400)
    assert out[2] == bytes([0]) * FS, "40 ms at the start"
    assert jb.target == 0 and jb.min_frames == 0 and jb.grows == 0 and jb.shrinks == 2
    assert out[250:] == [bytes([i & 0xFF]) * FS for i in range(250, 400)], "frame i at tick i"
    keeps_one = make(FS, 2, 1, 10)
    out = _clean_stream(keeps_one, 400)
    assert keeps_one.target == 1 and keeps_one.shrinks == 1
    assert out[250:] == [bytes([(i - 1) & 0xFF]) * FS for i in range(250, 400)]


@pytest.mark.parametrize("make", [_jitter.JitterBuffer, ref.JitterBuffer])
@pytest.mark.parametrize("law", [0, 1])
def test_a_clean_path_sheds_its_delay_at_a_pause(make, law) -> None:
    """Told the law, the buffer drops a frame of delay only where the far end paused (a frame
    under -30 dBFS): speech with a pause every 3 s loses no spoken frame; a tone with no pause
    at all still sheds, 5 s later."""
    encode = ref.encode_alaw if law else ref.encode_ulaw
    loud = encode(tone(1013, 0, FS))
    soft = encode(tone(1013, 0, FS, amp=800))
    is_pause = [i % 150 >= 140 for i in range(800)]  # 2.8 s of talk, 0.2 s of pause
    jb = make(FS, 2, 0, 10)
    jb.shed_at_pauses(law)
    played = []
    for i in range(800):
        jb.put(i * FS, i, 7, soft if is_pause[i] else loud)
        before = jb.shrinks
        played.append(jb.pop())
        if jb.shrinks > before:  # the frame due next was dropped: it was a pause
            assert is_pause[i + 1], f"a spoken frame ({i + 1}) was dropped"
    assert jb.shrinks == 2 and jb.target == 0
    steady = make(FS, 2, 0, 10)
    steady.shed_at_pauses(law)
    for i in range(360):
        steady.put(i * FS, i, 7, loud)
        steady.pop()
        if i == 340:
            assert steady.shrinks == 0, "no pause yet: nothing shed"
    assert steady.shrinks == 1, "after 2 s + 5 s without a pause: shed anyway"


@pytest.mark.parametrize("make", [_jitter.JitterBuffer, ref.JitterBuffer])
def test_a_fast_far_end_clock_is_drained_at_pauses(make) -> None:
    """The far end's clock 0.5 % fast (an extra frame every 200 periods; 500 times a real
    crystal's error, to see many): the buffer stays bounded and every frame it drops is a pause
    (drop at silence, no word clipped); a fast drain after a burst does not wait."""
    loud = ref.encode_ulaw(tone(1013, 0, FS))
    soft = ref.encode_ulaw(tone(1013, 0, FS, amp=800))
    jb = make(FS, 1, 1, 10)
    jb.shed_at_pauses(0)
    sent, depths = 0, []
    for tick in range(6000):
        for _ in range(2 if tick % 200 == 199 else 1):
            jb.put(sent * FS, sent, 7, soft if sent % 150 >= 140 else loud)
            sent += 1
        before = jb.shrinks
        jb.pop()
        depths.append(jb.depth)
        if jb.shrinks > before:
            dropped = sent - 1 - jb.depth  # the frame just skipped: behind what is held
            assert dropped % 150 >= 140, f"a spoken frame ({dropped}) was dropped"
    assert jb.shrinks >= 25 and max(depths[1000:]) <= 3, "bounded: the excess went"


@pytest.mark.parametrize("make", [_jitter.JitterBuffer, ref.JitterBuffer])
def test_the_first_lost_packet_keeps_one_frame_in_hand_for_good(make) -> None:
    """A loss on a path running with nothing in hand: that period is concealed and the
    playout point holds one period, so later gaps have the frame after them to bridge towards;
    the minimum stays 1 (no flapping between 0 and 1, which would cost a frame each way)."""
    jb = make(FS, 2, 0, 10)
    out = _clean_stream(jb, 300, lose=frozenset({280}))
    assert out[279] == bytes([279 & 0xFF]) * FS and jb.target == 1 and jb.min_frames == 1
    assert out[280] is None and out[281] is None, "the gap, then the held period: concealed"
    assert jb.grows == 1 and not jb.clean
    assert out[282:] == [bytes([(i - 1) & 0xFF]) * FS for i in range(282, 300)]
    out = _clean_stream(jb, 1000, seq=300, lose=frozenset({700}))
    assert jb.peek(0) is not None, "one frame in hand, for the concealer to bridge towards"
    assert out[401] is None and out[-1] == bytes([(1299 - 1) & 0xFF]) * FS
    assert jb.target == 1 and jb.shrinks == 2 and jb.grows == 1, "no more skips, no flapping"


@pytest.mark.parametrize("make", [_jitter.JitterBuffer, ref.JitterBuffer])
def test_a_late_packet_at_no_delay_is_saved_by_the_hold_and_raises_the_minimum(make) -> None:
    jb = make(FS, 2, 0, 10)
    out = _clean_stream(jb, 400, late=frozenset({300}))
    assert out[300] is None and out[301] == bytes([300 & 0xFF]) * FS, "played a period late"
    assert jb.min_frames == 1 and jb.target == 1 and not jb.clean
    assert out[-1] == bytes([(399 - 1) & 0xFF]) * FS, "one frame in hand from then on"
    jb = make(FS, 1, 1, 10)
    _clean_stream(jb, 200)
    assert jb.put(150 * FS, 150, 7, bytes(FS)) == 1, "later than the delay"
    assert jb.late == 1 and jb.target == 2 and not jb.clean, "later than the delay: grows"


@pytest.mark.parametrize("make", [_jitter.JitterBuffer, ref.JitterBuffer])
@pytest.mark.parametrize("shift", [FS // 2, 1, FS - 1, -FS // 2])
def test_a_sender_clock_moved_off_the_frame_grid_plays_again(make, shift) -> None:
    """linphonec resuming from hold keeps its SSRC and its sequence but moves its timestamps
    by half a frame: each frame after that falls between two playout points of the old grid.
    Two such packets are dropped (one alone is a stray); the third starts the buffer again
    (one resync) and every frame from it on is played after the target delay, instead of
    being concealed for the rest of the call."""
    jb = make(FS, 2, 1, 10)
    ts0, played = 2**32 - 30 * FS, []  # the timestamp wraps on the way
    for k in range(100):
        if not 40 <= k < 43:  # three periods of pause
            ts = (ts0 + k * FS + (shift if k >= 43 else 0)) & 0xFFFFFFFF
            jb.put(ts, k, 7, bytes([k]) * FS)
        played.append(jb.pop())
    assert jb.resyncs == 1 and jb.late == 0 and jb.too_early == 2
    assert played[42:47] == [None] * 5, "the pause, two strays, then the target delay again"
    assert played[47:] == [bytes([k]) * FS for k in range(45, 98)], "every frame after them"


@pytest.mark.parametrize("make", [_jitter.JitterBuffer, ref.JitterBuffer])
@pytest.mark.parametrize("jump", [-50 * FS, -250 * FS, -12 * FS, 75 * FS, 99 * FS])
def test_a_sender_clock_moved_on_the_grid_plays_again_within_half_a_second(make, jump) -> None:
    """The same SSRC, its timestamps moved back (any distance beyond the maximum delay), or
    forward by more than the buffer holds but less than the 2 s that resync at once: every
    packet after that is late or too early. Half a second of nothing but those is a moved
    clock, not jitter: the buffer starts again and plays every later frame."""
    jb = make(FS, 2, 1, 10)
    played = []
    for k in range(200):
        jb.put((10_000 + k * FS + (jump if k >= 100 else 0)) & 0xFFFFFFFF, k, 7,
               bytes([k]) * FS)
        played.append(jb.pop())
    assert jb.resyncs == 1
    tail = played[140:]  # from 0.8 s after the jump: every frame, in order
    assert None not in tail and [f[0] for f in tail] == list(range(tail[0][0], tail[0][0] + 60))


@pytest.mark.parametrize("make", [_jitter.JitterBuffer, ref.JitterBuffer])
def test_stale_packets_after_a_stall_do_not_resync(make) -> None:
    """A 1.2 s stall, then its 60 packets at once (all late, the oldest far beyond the maximum
    delay) and the stream goes on in time: each in-time packet ends the count of refused ones,
    so the playout point stays where it was (no resync)."""
    jb = make(FS, 2, 1, 10)
    played = []
    for k in range(200):
        if k == 160:
            for old in range(100, 160):  # the stall's packets, in one go
                jb.put(10_000 + old * FS, old, 7, bytes([old]) * FS)
        if not 100 <= k < 160:
            jb.put(10_000 + k * FS, k, 7, bytes([k]) * FS)
        played.append(jb.pop())
    assert jb.resyncs == 0 and jb.late >= 50
    tail = played[170:]  # the stream in time again: every frame, in order, none replayed
    assert None not in tail and [f[0] for f in tail] == list(range(tail[0][0], tail[0][0] + 30))
    assert tail[0][0] >= 160


def test_core_bridges_a_lost_frame_towards_the_buffered_next_one() -> None:
    """A lost packet while the next one already waits in the jitter buffer: the core hands it to
    the concealer, which bridges the gap; the next frame is then played exactly as decoded."""
    def glide(start: int, n: int) -> bytes:  # 437 -> 1013 Hz over 2 s: no frame repeats
        t = (start + np.arange(n)) / 8000
        return np.round(7000 * np.sin(2 * np.pi * (437 * t + 144 * t * t))).astype("<i2").tobytes()

    core = _mediacore.MediaCore(0, 20, ssrc=1, jitter_target_ms=40)
    played, lost = [], {60, 75}
    for k in range(100):
        if k not in lost:
            payload = ref.encode_ulaw(glide(k * FS, FS))
            core.receive_rtp(ref.rtp_pack(0, False, k, k * FS, 5, payload), WALL0)
        played.append(pcm_array(core.tick(k * PERIOD_NS, WALL0, b"")[1]))
    out = np.concatenate(played)
    wire = np.concatenate([pcm_array(ref.decode_ulaw(ref.encode_ulaw(glide(k * FS, FS))))
                           for k in range(100)]).astype(float)
    lag = next(d for d in range(6) if np.array_equal(out[(10 + d) * FS:(11 + d) * FS],
                                                     wire[10 * FS:11 * FS]))
    assert core.plc.bridged_frames == 2 and core.stats()["concealed_ms"] == 40
    assert core.stats()["bridged_ms"] == 40
    for k in lost:
        gap = out[(k + lag) * FS:(k + lag + 1) * FS]
        assert tone_snr_db_vs(wire[k * FS:(k + 1) * FS], gap) > 6
        # the frame after the gap: untouched
        assert np.array_equal(out[(k + 1 + lag) * FS:(k + 2 + lag) * FS],
                              wire[(k + 1) * FS:(k + 2) * FS])


def tone_snr_db_vs(clean: np.ndarray, played: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(clean ** 2) / max(np.sum((clean - played) ** 2), 1e-9)))
