"""The media core over real UDP sockets on loopback: tones both ways (judged by FFT), DTMF,
RTCP, the packet clock, hold, bad packets, and a lossy, jittery path."""

from __future__ import annotations

import socket
import struct
import time

import numpy as np
import pytest

from devtools.impair import ImpairedLink
from devtools.tones import tone_pcm
from firmware import _rtpcore as core
from firmware.events import MediaParams
from firmware.media.audio import NullSink, SilenceSource, ToneSource
from firmware.media.stream import RtpPorts, RtpSession, StreamSettings

from ..audio import Recorder, frame_rms, pcm_array, peak_hz, tone_snr_db

pytestmark = pytest.mark.integration


def params(port: int, pt: int = 0, direction: str = "sendrecv", ptime: int = 20) -> MediaParams:
    return MediaParams("127.0.0.1", port, pt, "PCMU" if pt == 0 else "PCMA", 101, ptime,
                       direction)


def pair(freq_a: float, freq_b: float, pt: int = 0):
    pa, pb = RtpPorts("127.0.0.1"), RtpPorts("127.0.0.1")
    ra, rb = Recorder(), Recorder()
    a = RtpSession(pa, ToneSource(freq_a), ra)
    b = RtpSession(pb, ToneSource(freq_b), rb)
    return (a, pa, ra), (b, pb, rb)


@pytest.mark.parametrize("pt", [0, 8])
def test_tones_both_ways_dtmf_and_rtcp(pt: int) -> None:
    (a, pa, ra), (b, pb, rb) = pair(700, 1300, pt)
    try:
        a.start(params(pb.port, pt))
        b.start(params(pa.port, pt))
        time.sleep(1.0)
        assert a.send_dtmf("159#") == 4
        assert b.send_dtmf("*0") == 2
        time.sleep(2.2)
        got_b, got_a = b.received_digits(), a.received_digits()
    finally:
        a.stop()
        b.stop()
    assert got_b == "159#" and got_a == "*0"
    for rec, hz in ((ra, 1300), (rb, 700)):
        x = pcm_array(bytes(rec.pcm))[4000:]  # after the first half second
        assert abs(peak_hz(x) - hz) < 10
        assert tone_snr_db(x, hz) > 15
    sa, sb = a.final_stats, b.final_stats
    assert sa["rtcp_sent"] >= 1 and sb["rtcp_received"] >= 1
    assert sa["dtmf_sent"] == 4 and sb["dtmf_received"] == 4
    assert sa["lost"] == 0 and sb["malformed"] == 0 and sb["wrong_source"] == 0


def test_packet_clock_seen_by_a_plain_receiver() -> None:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(1.0)
    ports = RtpPorts("127.0.0.1")
    session = RtpSession(ports, ToneSource(440), NullSink())
    packets = []
    try:
        session.start(params(rx.getsockname()[1]))
        end = time.monotonic() + 2.0
        while time.monotonic() < end:
            packets.append(rx.recv(2048))
    finally:
        session.stop()
        rx.close()
        ports.close()
    parsed = [core.rtp_parse(p) for p in packets]
    assert len(parsed) >= 90
    assert {p[0] for p in parsed} == {0}
    seqs = [p[2] for p in parsed]
    assert all((b - a) % 65536 == 1 for a, b in zip(seqs, seqs[1:], strict=False))
    stamps = [p[3] for p in parsed]
    assert all((b - a) % 2**32 == 160 for a, b in zip(stamps, stamps[1:], strict=False))
    assert parsed[0][1] is True and not any(p[1] for p in parsed[1:]), "marker only at start"
    assert len({p[4] for p in parsed}) == 1 and all(len(p[5]) == 160 for p in parsed)


def test_timestamp_runs_on_during_hold() -> None:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(0.5)
    ports = RtpPorts("127.0.0.1")
    session = RtpSession(ports, ToneSource(440), NullSink())
    try:
        session.start(params(rx.getsockname()[1]))
        time.sleep(0.5)
        session.update(params(rx.getsockname()[1], direction="recvonly"))  # on hold
        time.sleep(0.2)
        while True:
            try:
                before = rx.recv(2048)
            except TimeoutError:
                break
        time.sleep(0.5)
        session.update(params(rx.getsockname()[1], direction="sendrecv"))
        after = rx.recv(2048)
    finally:
        session.stop()
        rx.close()
        ports.close()
    b, a = core.rtp_parse(before), core.rtp_parse(after)
    assert a[1] is True, "marker at the talkspurt after hold"
    assert a[2] == (b[2] + 1) % 65536, "no sequence gap: nothing was sent on hold"
    assert (a[3] - b[3]) % 2**32 >= 160 * 25, "timestamp kept running during the pause"


def test_bad_packets_are_counted_not_fatal() -> None:
    (a, pa, ra), _ = pair(700, 1300)
    intruder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    intruder.bind(("127.0.0.1", 0))
    peer = RtpPorts("127.0.0.1")
    try:
        a.start(params(peer.port))
        for junk in (b"", b"\x00" * 5, b"\x40" + b"\x00" * 20, b"\xbf" + b"\x00" * 11):
            peer.rtp.sendto(junk, ("127.0.0.1", pa.port))
        peer.rtp.sendto(core.rtp_pack(99, False, 1, 1, 1, b"x" * 160), ("127.0.0.1", pa.port))
        peer.rtp.sendto(core.rtp_pack(101, False, 1, 1, 1, b"\x63\x00"), ("127.0.0.1", pa.port))
        intruder.sendto(core.rtp_pack(0, False, 1, 1, 1, b"x" * 160), ("127.0.0.1", pa.port))
        time.sleep(0.3)
        st = a.stats()
    finally:
        a.stop()
        intruder.close()
        peer.close()
    assert st["malformed"] == 5  # four broken headers + one short event payload
    assert st["wrong_payload_type"] == 1 and st["wrong_source"] == 1


def test_lossy_jittery_path_stays_continuous() -> None:
    """5 % loss, 20 +- 10 ms delay each way (a user-space relay: this kernel has no netem)."""
    (a, pa, ra), (b, pb, rb) = pair(700, 1300)
    link = ImpairedLink(("127.0.0.1", pa.port), ("127.0.0.1", pb.port), loss=0.05,
                        delay=0.020, jitter=0.010, seed=42).start()
    try:
        a.start(params(link.port_a))
        b.start(params(link.port_b))
        time.sleep(6.0)
    finally:
        a.stop()
        b.stop()
        link.stop()
    assert link.dropped > 0
    for rec, hz, stats, wire in ((rb, 700, b.final_stats, link.delivered["a>b"]),
                                 (ra, 1300, a.final_stats, link.delivered["b>a"])):
        x = pcm_array(bytes(rec.pcm))[8000:]  # after the first second
        assert abs(peak_hz(x) - hz) < 10
        rms = frame_rms(x)
        silent = float(np.mean(rms < 100))
        assert silent < 0.02, f"{silent:.1%} of frames silent: output not continuous"
        assert stats["lost"] > 0 and stats["concealed_ms"] > 0
        assert stats["jitter_ms"] > 1.0
        # what the relay actually did (uniform +-10 ms jitter at 20 ms spacing cannot reorder;
        # losses must not be mistaken for reordering)
        assert stats["reordered"] == out_of_order(wire), (stats["reordered"], wire)
        assert stats["duplicates"] == 0


def out_of_order(seqs: list[int]) -> int:
    """Packets that arrived after a higher sequence number (16-bit wrap), counted from the
    order on the wire."""
    count, highest = 0, None
    for seq in seqs:
        if highest is not None and (seq - highest) & 0xFFFF >= 0x8000:
            count += 1
        else:
            highest = seq
    return count


def test_reordered_late_and_duplicate_packets_counted_exactly() -> None:
    """A hand-made 1 kHz stream over real UDP, paced at 20 ms: two swapped pairs (reordered,
    each still in time), one duplicate, and two packets re-sent long after their playout
    (late). Each counter sees exactly its own cases, and the tone plays."""
    pa, peer = RtpPorts("127.0.0.1"), RtpPorts("127.0.0.1")
    rec = Recorder()
    # a deep buffer, so that a stalled sender thread on a busy machine makes nothing late
    deep = StreamSettings(jitter_target_ms=200, jitter_max_ms=300)
    a = RtpSession(pa, SilenceSource(), rec, deep)
    t = np.arange(160 * 40) / 8000
    pcm = (8000 * np.sin(2 * np.pi * 1000 * t)).astype("<i2").tobytes()
    seq0, ts0, ssrc = 65530, 2**32 - 800, 0x1234ABCD  # both wrap during the stream

    def packet(k: int) -> bytes:
        payload = core.encode_ulaw(pcm[k * 320:(k + 1) * 320])
        return core.rtp_pack(0, k == 0, (seq0 + k) & 0xFFFF, (ts0 + 160 * k) % 2**32, ssrc,
                             payload)

    # slot i (every 20 ms) -> packets sent back to back in that slot
    slots: list[list[int]] = [[k] for k in range(40)]
    for first in (10, 25):  # k+1 goes out just before k, both in k's slot
        slots[first], slots[first + 1] = [first + 1, first], []
    slots[30] = [30, 30]  # a duplicate while still buffered
    try:
        a.start(params(peer.port))
        start = time.monotonic()
        for i, ks in enumerate(slots):
            time.sleep(max(0.0, start + 0.02 * i - time.monotonic()))
            for k in ks:
                peer.rtp.sendto(packet(k), ("127.0.0.1", pa.port))
        time.sleep(0.3)
        for k in (3, 4):  # 0.8 s behind the playout point
            peer.rtp.sendto(packet(k), ("127.0.0.1", pa.port))
        time.sleep(0.1)
    finally:
        a.stop()
        pa.close()
        peer.close()
    st = a.final_stats
    assert (st["reordered"], st["late"], st["duplicates"]) == (2, 2, 1), st
    assert st["received"] == 40 + 1 + 2 and st["lost"] == 0, st
    x = pcm_array(bytes(rec.pcm))
    assert abs(peak_hz(x) - 1000) < 10 and tone_snr_db(x, 1000) > 15


def test_a_sender_clock_restarted_off_the_frame_grid_still_plays() -> None:
    """What linphonec does on resuming from hold (seen on the wire in test_linphone): the same
    SSRC, the sequence unbroken, but after a pause of a few periods its timestamps are half a
    frame (80 samples) off their old grid. Over real UDP, paced at 20 ms: the stream resyncs
    once and plays the 900 Hz that follows, rather than concealing it into silence."""
    pa, peer = RtpPorts("127.0.0.1"), RtpPorts("127.0.0.1")
    rec = Recorder()
    a = RtpSession(pa, SilenceSource(), rec)
    pcm = tone_pcm(900, 160 * 100)
    ts0, ssrc = 123_456, 0x5EED
    try:
        a.start(params(peer.port))
        start = time.monotonic()
        for k in range(100):
            time.sleep(max(0.0, start + 0.02 * k - time.monotonic()))
            if 30 <= k < 33:
                continue  # the pause: three periods without a packet
            payload = core.encode_ulaw(pcm[k * 320:(k + 1) * 320])
            ts = ts0 + 160 * k + (80 if k >= 33 else 0)
            peer.rtp.sendto(core.rtp_pack(0, k == 33, k, ts, ssrc, payload),
                            ("127.0.0.1", pa.port))
        time.sleep(0.1)
    finally:
        a.stop()
        pa.close()
        peer.close()
    st = a.final_stats
    assert st["resyncs"] == 1 and st["wrong_source"] == 0, st
    assert st["concealed_ms"] <= 200, f"concealed {st['concealed_ms']} ms: the frames were kept"
    x = pcm_array(bytes(rec.pcm))
    after = x[-8000:-800]  # the last second of the stream after its clock moved
    assert abs(peak_hz(after) - 900) < 10 and tone_snr_db(after, 900) > 15
    assert frame_rms(after).min() > 1000, "no silent frame after the resync"


def test_silence_source_and_direction_inactive() -> None:
    pa, pb = RtpPorts("127.0.0.1"), RtpPorts("127.0.0.1")
    a = RtpSession(pa, SilenceSource(), NullSink())
    try:
        a.start(params(pb.port, direction="inactive"))
        time.sleep(0.3)
        pb.rtp.setblocking(False)
        with pytest.raises(BlockingIOError):
            pb.rtp.recv(2048)
        assert a.stats()["sent"] == 0 and a.stats()["ticks"] >= 10
    finally:
        a.stop()
        pa.close()
        pb.close()


def test_latching_follows_the_first_sender() -> None:
    from firmware.media.stream import StreamSettings

    pa = RtpPorts("127.0.0.1")
    nat = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    nat.bind(("127.0.0.1", 0))
    nat.settimeout(1.0)
    a = RtpSession(pa, ToneSource(500), NullSink(), StreamSettings(latch=True))
    try:
        a.start(params(9))  # the SDP says port 9; the peer really sends from elsewhere
        nat.sendto(core.rtp_pack(0, True, 1, 160, 5, b"\xff" * 160), ("127.0.0.1", pa.port))
        data = nat.recv(2048)
        assert core.rtp_parse(data)[0] == 0
    finally:
        a.stop()
        nat.close()
        pa.close()


def test_event_timestamps_deduplicate_digits() -> None:
    pa = RtpPorts("127.0.0.1")
    peer = RtpPorts("127.0.0.1")
    a = RtpSession(pa, SilenceSource(), NullSink())
    try:
        a.start(params(peer.port))
        dest = ("127.0.0.1", pa.port)
        seq = 100
        # digit 4: no marker, end packet lost; digit 7: three end packets; digit 4 again
        for ts, event, ends in ((1000, 4, (False, False)), (2000, 7, (False, True, True, True)),
                                (3000, 4, (True,))):
            for i, end in enumerate(ends):
                payload = struct.pack("!BBH", event, (0x80 if end else 0) | 10, 160 * (i + 1))
                peer.rtp.sendto(core.rtp_pack(101, False, seq, ts, 77, payload), dest)
                seq += 1
        time.sleep(0.2)
        assert a.received_digits() == "474"
    finally:
        a.stop()
        pa.close()
        peer.close()


def _plain_pair() -> tuple[socket.socket, socket.socket, int]:
    """An RTP and an RTCP receiving socket on an even/odd port pair."""
    for _ in range(50):
        rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            rtp.bind(("127.0.0.1", 0))
            port = rtp.getsockname()[1]
            if port % 2:
                raise OSError("odd")
            rtcp.bind(("127.0.0.1", port + 1))
            return rtp, rtcp, port
        except OSError:
            rtp.close()
            rtcp.close()
    raise RuntimeError("no port pair")


def test_rtcp_report_counts_loss_and_bye_on_stop() -> None:
    rtp, rtcp, port = _plain_pair()
    rtcp.settimeout(6.0)
    ports = RtpPorts("127.0.0.1")
    session = RtpSession(ports, SilenceSource(), NullSink())
    try:
        session.start(params(port))
        peer_ssrc, seq, ts = 0x1234ABCD, 1000, 5000
        for i in range(50):  # 50 packets sent, 5 of them "lost" (never sent)
            if i % 10 != 3:
                rtp.sendto(core.rtp_pack(0, i == 0, seq + i, ts + 160 * i, peer_ssrc,
                                         b"\xff" * 160), ("127.0.0.1", ports.port))
            time.sleep(0.02)
        sr = rtcp.recv(2048)
        session.stop()
        bye = rtcp.recv(2048)
    finally:
        session.stop()
        rtp.close()
        rtcp.close()
        ports.close()
    v_rc, pt, length, ssrc = struct.unpack_from("!BBHI", sr)
    assert v_rc >> 6 == 2 and pt == 200 and v_rc & 0x1F == 1
    assert ssrc == session.final_stats["ssrc"]
    packets, octets = struct.unpack_from("!II", sr, 20)
    assert packets > 0 and octets == 160 * packets
    block = sr[28:52]
    src, fraction_cum = struct.unpack_from("!II", block)
    assert src == peer_ssrc
    cumulative = fraction_cum & 0xFFFFFF
    assert cumulative == 5 and 20 <= fraction_cum >> 24 <= 30, "5 of 50 lost: 10 %"
    assert struct.unpack_from("!I", block, 8)[0] == seq + 49, "extended highest sequence"
    sdes_at = 4 * (length + 1)
    assert sr[sdes_at + 1] == 202 and b"intercom" in sr[sdes_at:]
    types = []
    off = 0
    while off < len(bye):
        types.append(bye[off + 1])
        off += 4 * (struct.unpack_from("!H", bye, off + 2)[0] + 1)
    assert types[-1] == 203, f"compound RTCP ends with BYE: {types}"


@pytest.mark.parametrize("ptime", [10, 40])
def test_other_packet_times(ptime: int) -> None:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(1.0)
    ports = RtpPorts("127.0.0.1")
    session = RtpSession(ports, ToneSource(440), NullSink())
    try:
        session.start(params(rx.getsockname()[1], ptime=ptime))
        packets = [core.rtp_parse(rx.recv(2048)) for _ in range(10)]
    finally:
        session.stop()
        rx.close()
        ports.close()
    assert {len(p[5]) for p in packets} == {8 * ptime}
    assert {(b[3] - a[3]) % 2**32 for a, b in zip(packets, packets[1:], strict=False)} == \
        {8 * ptime}


def test_dtmf_on_the_wire() -> None:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(1.0)
    ports = RtpPorts("127.0.0.1")
    session = RtpSession(ports, ToneSource(440), NullSink())
    events = []
    try:
        session.start(params(rx.getsockname()[1]))
        time.sleep(0.2)
        session.send_dtmf("5")
        end = time.monotonic() + 0.6
        while time.monotonic() < end:
            p = core.rtp_parse(rx.recv(2048))
            if p[0] == 101:
                events.append(p)
    finally:
        session.stop()
        rx.close()
        ports.close()
    assert len(events) == 5 + 2, "4 updates + 3 end packets for a 100 ms digit"
    assert len({p[3] for p in events}) == 1, "all share the event's timestamp"
    assert events[0][1] is True and not any(p[1] for p in events[1:])
    parsed = [struct.unpack("!BBH", p[5]) for p in events]
    assert {e for e, _, _ in parsed} == {5}
    ends = [p for p in parsed if p[1] & 0x80]
    assert len(ends) == 3 and len({d for _, _, d in ends}) == 1 and ends[0][2] == 800
    seqs = [p[2] for p in events]
    assert all((b - a) % 65536 == 1 for a, b in zip(seqs, seqs[1:], strict=False))


def test_gains_scale_what_is_sent_and_played() -> None:
    from firmware.media.stream import StreamSettings

    pa, pb = RtpPorts("127.0.0.1"), RtpPorts("127.0.0.1")
    ra, rb = Recorder(), Recorder()
    a = RtpSession(pa, ToneSource(800, 0.4), ra,
                   StreamSettings(capture_gain_db=-6.02, playback_gain_db=-12.04))
    b = RtpSession(pb, ToneSource(800, 0.4), rb)
    try:
        a.start(params(pb.port))
        b.start(params(pa.port))
        time.sleep(1.5)
    finally:
        a.stop()
        b.stop()
    unity = 0.4 * 32767 / np.sqrt(2)
    at_b = float(np.sqrt(np.mean(pcm_array(bytes(rb.pcm))[4000:] ** 2)))
    at_a = float(np.sqrt(np.mean(pcm_array(bytes(ra.pcm))[4000:] ** 2)))
    assert abs(at_b / unity - 0.5) < 0.05, "A's microphone at -6 dB"
    assert abs(at_a / unity - 0.25) < 0.03, "A's speaker at -12 dB"


class PacedCard:
    """A sound card stand-in with its own clock: a thread moving 20 ms periods of PCM to or
    from the stream's FIFO (as the ALSA workers do), its crystal ``ppm`` off the loop's."""

    def __init__(self, capture_hz: float = 0.0, ppm: float = 0.0) -> None:
        self.capture_hz, self.period = capture_hz, 0.02 / (1 + ppm * 1e-6)
        self.heard = bytearray()
        self._stop = False
        self._thread = None

    def attach(self, fifo) -> None:
        import threading

        self._thread = threading.Thread(target=self._run, args=(fifo,), daemon=True)
        self._thread.start()

    def _run(self, fifo) -> None:
        n, t = 0, time.monotonic()
        while not self._stop:
            t += self.period
            time.sleep(max(0.0, t - time.monotonic()))
            if self.capture_hz:
                k = np.arange(n, n + 160)
                fifo.write((8000 * np.sin(2 * np.pi * self.capture_hz * k / 8000))
                           .astype("<i2").tobytes())
                n += 160
            else:
                self.heard += fifo.read(160)

    def read(self, samples: int) -> bytes:
        return b""

    def write(self, pcm: bytes) -> None:
        pass

    def close(self) -> None:
        self._stop = True
        if self._thread is not None:
            self._thread.join(1.0)


def test_sound_card_sides_go_through_the_drift_control() -> None:
    """A card-paced source and sink (attach()) switch drift control on; a 1013 Hz tone (not a
    multiple of 50 Hz) still arrives clean both ways through the resamplers."""
    pa, pb = RtpPorts("127.0.0.1"), RtpPorts("127.0.0.1")
    mic, speaker = PacedCard(capture_hz=1013, ppm=300), PacedCard(ppm=300)
    rb = Recorder()
    a = RtpSession(pa, mic, speaker)
    b = RtpSession(pb, ToneSource(1013), rb)
    try:
        a.start(params(pb.port))
        b.start(params(pa.port))
        assert a.stream.drift.play_on and a.stream.drift.cap_on
        assert not b.stream.drift.play_on and not b.stream.drift.cap_on
        time.sleep(4.0)
        mid = a.stats()
    finally:
        a.stop()
        b.stop()
        mic.close()
        speaker.close()
    for pcm in (bytes(rb.pcm), bytes(speaker.heard)):
        x = pcm_array(pcm)[8000:]
        assert abs(peak_hz(x) - 1013) < 5 and tone_snr_db(x, 1013) > 25
    assert {"drift_ppm", "playback_fifo_max_ms", "capture_fifo_max_ms"} <= set(mid)
    # bounded well inside the FIFOs' 1 s: the drift control holds the levels, whatever the
    # stand-in card threads' lateness on a loaded machine adds to a maximum (120 ms seen)
    assert 0 < mid["capture_fifo_max_ms"] < 250 and 0 < mid["playback_fifo_max_ms"] < 250
