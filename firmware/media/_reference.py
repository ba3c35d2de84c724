"""Pure-Python twin of the Cython media core's codec, packet, jitter-buffer and RTCP logic.

Owns the readable statement of the algorithms: ITU-T G.711 (as in the G.191 STL), RFC 3550 RTP
header packing/validation, RFC 4733 telephone-event payloads, the adaptive jitter buffer
(``firmware.core._jitter``) and the RFC 3550 reception statistics and SR/SDES/BYE reports
(``firmware.core._rtcp``). Slow on purpose and never used on the hot path; tests feed the Cython
units and this twin the same packets on the same virtual clock and check identical output.
Knows nothing about sockets; time is always passed in.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass


def alaw_encode_sample(x: int) -> int:
    ix = (~x) >> 4 if x < 0 else x >> 4  # 12-bit magnitude, one's complement for negatives
    if ix > 15:
        exp = 1
        while ix > 31:
            ix >>= 1
            exp += 1
        ix = (ix - 16) + (exp << 4)
    if x >= 0:
        ix |= 0x80
    return ix ^ 0x55


def alaw_decode_sample(code: int) -> int:
    ix = (code ^ 0x55) & 0x7F
    exp, mant = ix >> 4, ix & 0x0F
    if exp > 0:
        mant += 16
    mant = (mant << 4) + 8
    if exp > 1:
        mant <<= exp - 1
    return mant if code > 127 else -mant


def ulaw_encode_sample(x: int) -> int:
    mag = ((~x) >> 2) if x < 0 else (x >> 2)  # 14-bit magnitude
    mag = min(mag + 33, 0x1FFF)  # bias, clip
    seg, i = 1, mag >> 6
    while i:
        seg += 1
        i >>= 1
    code = ((8 - seg) << 4) | (0x0F - ((mag >> seg) & 0x0F))
    return code | 0x80 if x >= 0 else code


def ulaw_decode_sample(code: int) -> int:
    sign = -1 if code < 0x80 else 1
    inv = (~code) & 0xFF
    exp, mant = (inv >> 4) & 7, inv & 0x0F
    step = 4 << (exp + 1)
    return sign * ((0x80 << exp) + step * mant + step // 2 - 4 * 33)


def _samples(pcm: bytes) -> tuple[int, ...]:
    if len(pcm) % 2:
        raise ValueError("PCM must be whole 16-bit samples")
    return struct.unpack(f"<{len(pcm) // 2}h", pcm)


def encode_ulaw(pcm: bytes) -> bytes:
    return bytes(ulaw_encode_sample(x) for x in _samples(pcm))


def encode_alaw(pcm: bytes) -> bytes:
    return bytes(alaw_encode_sample(x) for x in _samples(pcm))


def decode_ulaw(data: bytes) -> bytes:
    return struct.pack(f"<{len(data)}h", *(ulaw_decode_sample(c) for c in data))


def decode_alaw(data: bytes) -> bytes:
    return struct.pack(f"<{len(data)}h", *(alaw_decode_sample(c) for c in data))


@dataclass(frozen=True)
class RtpPacket:
    payload_type: int
    marker: bool
    sequence: int
    timestamp: int
    ssrc: int
    csrcs: tuple[int, ...]
    payload: bytes


def rtp_pack(payload_type: int, marker: bool, sequence: int, timestamp: int, ssrc: int,
             payload: bytes) -> bytes:
    return struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | (payload_type & 0x7F),
                       sequence & 0xFFFF, timestamp & 0xFFFFFFFF, ssrc & 0xFFFFFFFF) + payload


def rtp_parse(data: bytes) -> RtpPacket:
    """Validate and parse an RTP packet (RFC 3550 §5.1, A.1); ValueError says why not."""
    if len(data) < 12:
        raise ValueError("shorter than an RTP header")
    b0, b1, seq, ts, ssrc = struct.unpack_from("!BBHII", data)
    if b0 >> 6 != 2:
        raise ValueError("RTP version is not 2")
    end = len(data)
    if b0 & 0x20:
        pad = data[-1]
        if pad == 0 or pad > end - 12:
            raise ValueError("bad RTP padding")
        end -= pad
    offset = 12 + 4 * (b0 & 0x0F)
    if offset > end:
        raise ValueError("CSRC list longer than the packet")
    csrcs = struct.unpack_from(f"!{b0 & 0x0F}I", data, 12)
    if b0 & 0x10:
        if offset + 4 > end:
            raise ValueError("truncated header extension")
        words = struct.unpack_from("!H", data, offset + 2)[0]
        offset += 4 + 4 * words
        if offset > end:
            raise ValueError("header extension longer than the packet")
    return RtpPacket(b1 & 0x7F, bool(b1 & 0x80), seq, ts, ssrc, csrcs, data[offset:end])


def event_pack(event: int, end: bool, volume: int, duration: int) -> bytes:
    """RFC 4733 §2.3 telephone-event payload."""
    return struct.pack("!BBH", event, (0x80 if end else 0) | (volume & 0x3F), duration)


def event_parse(payload: bytes) -> tuple[int, bool, int, int]:
    if len(payload) < 4:
        raise ValueError("telephone-event payload shorter than 4 bytes")
    event, flags, duration = struct.unpack_from("!BBH", payload)
    return event, bool(flags & 0x80), flags & 0x3F, duration


DTMF_EVENTS = "0123456789*#ABCD"


M32 = 0xFFFFFFFF
# as _jitter.pxd: depth over target by more than 4 frames drains every 5 ticks, by less after
# 50, and in the first 50 ticks anything over target + 1 at once
JB_DRAIN_FAR, JB_DRAIN_FAST, JB_DRAIN_SLOW, JB_START_PERIODS = 3, 5, 50, 50
JB_SLACK_PERIODS = 100  # a clean path with a frame in hand this long sheds one ...
JB_QUIET_WAIT = 250  # ... at a pause if one comes within this many periods more
QUIET_PEAK = 1024  # as _g711.pxd: a frame whose samples all stay under this is a pause


def g711_quiet(data: bytes, law: int) -> bool:
    """Every sample of the G.711 frame (``law`` 0 mu-law, 1 A-law) under QUIET_PEAK."""
    decode = alaw_decode_sample if law else ulaw_decode_sample
    return all(abs(decode(b)) < QUIET_PEAK for b in data)


def _s32(v: int) -> int:
    v &= M32
    return v - (1 << 32) if v & 0x80000000 else v


def _s16(v: int) -> int:
    v &= 0xFFFF
    return v - (1 << 16) if v & 0x8000 else v


def _cdiv(a: int, b: int) -> int:
    """C integer division (truncates toward zero)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


class JitterBuffer:
    """Adaptive playout buffer: frames placed by timestamp, one popped per period.

    The delay starts at ``target`` frames, grows by one on each late packet (up to
    ``max_frames``) and shrinks by one after 50 periods deeper than ``target`` (down to
    ``min_frames``; 5 periods when over 4 frames deeper, 1 in the stream's first 50 periods
    when over 1 deeper); an SSRC change or a jump of more than 2 s resyncs. While no packet
    has been late or missing (``clean``), 100 periods with a frame in hand at every pop shed one
    frame of delay, down to ``min_frames``, at a pause when ``shed_at_pauses`` named a law (or
    250 periods later without one); the first late or missing one raises ``min_frames`` to at
    least 1 for good (a missing frame at no delay holds the playout point one period).
    """

    SLOTS = 64
    MAX_FRAME = 320
    EARLY_RESYNC = 3  # far-future packets in a row: the sender's clock jumped, follow it

    def __init__(self, frame_samples: int = 160, target: int = 2, min_frames: int = 1,
                 max_frames: int = 10) -> None:
        self.frame_samples = frame_samples
        self.min_frames = min_frames
        self.max_frames = min(max_frames, self.SLOTS - 2)
        self.target = target
        self.clean = True
        self.quiet_law = -1
        self.late = self.duplicates = self.reordered = self.resyncs = 0
        self.too_early = self.shrinks = self.grows = 0
        self.ssrc = self.play_ts = self.highest_seq = self.first_ts = 0
        self.reset()

    def reset(self) -> None:
        self.slots: list[tuple[int, bytes] | None] = [None] * self.SLOTS
        self.started = False
        self.deep_ticks = 0
        self.slack_ticks = 0
        self.pops = 0
        self.early_run = 0

    def _slot(self, ts: int) -> int:
        return (ts // self.frame_samples) % self.SLOTS

    def put(self, ts: int, seq: int, ssrc: int, payload: bytes) -> int:
        ts &= M32
        seq &= 0xFFFF
        fs = self.frame_samples
        payload = bytes(payload[:self.MAX_FRAME])
        rc = 0
        if self.started and ssrc != self.ssrc:
            self.resyncs += 1
            self.reset()
            rc = 3
        if not self.started:
            self.started = True
            self.first_ts = ts
            self.ssrc = ssrc
            self.play_ts = (ts - self.target * fs) & M32
            self.highest_seq = seq
        ahead = _s32(ts - self.play_ts)
        if ahead % fs != 0:  # off the playout grid: a few in a row follow the sender
            self.early_run += 1
            if self.early_run >= self.EARLY_RESYNC:
                self.resyncs += 1
                self.reset()
                return self.put(ts, seq, ssrc, payload) or 3
            self.too_early += 1
            return 4
        if ahead < 0:
            self.late += 1
            self._unclean()
            if self.target < self.max_frames:
                self.target += 1
                self.grows += 1
                self.play_ts = (self.play_ts - fs) & M32
            return 1
        if ahead >= (self.SLOTS - 1) * fs:
            self.early_run += 1
            if ahead > 8000 * 2 or self.early_run >= self.EARLY_RESYNC:
                self.resyncs += 1
                self.reset()
                return self.put(ts, seq, ssrc, payload) or 3
            self.too_early += 1
            return 4
        self.early_run = 0
        if _s16(seq - self.highest_seq) < 0:
            self.reordered += 1
        else:
            self.highest_seq = seq
        i = self._slot(ts)
        held = self.slots[i]
        if held is not None and held[0] == ts:
            self.duplicates += 1
            return 2
        self.slots[i] = (ts, payload)
        return rc

    def pop(self) -> bytes | None:
        if not self.started:
            return None
        fs = self.frame_samples
        i = self._slot(self.play_ts)
        held = self.slots[i]
        out = None
        if held is not None and held[0] == self.play_ts:
            out = held[1] or None
            self.slots[i] = None
        elif _s32(self.play_ts - self.first_ts) >= 0:  # a gap, not the start's delay
            self._unclean()
            if self.target < 1:
                self.target = 1
                self.grows += 1
                return None
        self.play_ts = (self.play_ts + fs) & M32
        if self.pops < JB_START_PERIODS:
            self.pops += 1
        depth = self.depth
        excess = depth - self.target
        if excess > 0:
            self.deep_ticks += 1
            if self.pops < JB_START_PERIODS:
                threshold = 1 if excess > 1 else JB_DRAIN_SLOW
            else:
                threshold = JB_DRAIN_FAST if excess > JB_DRAIN_FAR + 1 else JB_DRAIN_SLOW
            if self.deep_ticks >= threshold and (
                    threshold != JB_DRAIN_SLOW or self._may_shed(self.deep_ticks - JB_DRAIN_SLOW)):
                self._skip()
                self.deep_ticks = 0
            self.slack_ticks = 0
        else:
            self.deep_ticks = 0
            if self.clean and self.target > self.min_frames and depth >= 1:
                self.slack_ticks += 1
                if self.slack_ticks >= JB_SLACK_PERIODS and \
                        self._may_shed(self.slack_ticks - JB_SLACK_PERIODS):
                    self._skip()
                    self.slack_ticks = 0
            else:
                self.slack_ticks = 0
        return out

    def _skip(self) -> None:
        self.slots[self._slot(self.play_ts)] = None
        self.play_ts = (self.play_ts + self.frame_samples) & M32
        if self.target > self.min_frames:
            self.target -= 1
        self.shrinks += 1

    def shed_at_pauses(self, law: int) -> None:
        self.quiet_law = law

    def _may_shed(self, waited: int) -> bool:
        if self.quiet_law < 0 or waited >= JB_QUIET_WAIT:
            return True
        held = self.slots[self._slot(self.play_ts)]
        return held is not None and held[0] == self.play_ts and \
            g711_quiet(held[1], self.quiet_law)

    def _unclean(self) -> None:
        self.clean = False
        self.slack_ticks = 0
        self.min_frames = max(self.min_frames, 1)

    def peek(self, ahead: int = 0) -> bytes | None:
        """The frame ``ahead`` periods after the next one due, left in place, or None."""
        if not self.started or not 0 <= ahead < self.SLOTS - 1:
            return None
        ts = (self.play_ts + ahead * self.frame_samples) & M32
        held = self.slots[self._slot(ts)]
        return (held[1] or None) if held is not None and held[0] == ts else None

    @property
    def depth(self) -> int:
        return sum(1 for s in self.slots if s is not None and _s32(s[0] - self.play_ts) >= 0)


@dataclass(frozen=True)
class ReportBlock:
    ssrc: int
    fraction_lost: int  # 1/256 units, since the previous report
    cumulative_lost: int
    extended_max: int
    jitter: int  # timestamp units
    lsr: int
    dlsr: int  # 1/65536 s


@dataclass(frozen=True)
class SenderReport:
    ssrc: int
    ntp: int
    rtp_ts: int
    packets: int
    octets: int
    blocks: tuple[ReportBlock, ...]
    cname: bytes
    bye: bool


class Rtcp:
    """RFC 3550 reception statistics (A.1 sequence, A.3 loss, A.8 jitter) and SR/SDES/BYE."""

    def __init__(self, cname: str = "intercom") -> None:
        self.cname = cname.encode()[:64]
        self.seq_init = False
        self.remote_ssrc = self.max_seq = self.cycles = self.base_seq = 0
        self.received = self.received_octets = self.rtcp_received = 0
        self.expected_prior = self.received_prior = 0
        self.jitter = 0.0
        self.last_transit = 0.0
        self.have_transit = False
        self.lsr = self.lsr_arrival_ns = 0

    def count(self, ssrc: int, seq: int, ts: int, length: int, arrival_ns: int) -> None:
        """One RTP packet from the peer, arrival on the wall clock in ns."""
        seq &= 0xFFFF
        self.received += 1
        self.received_octets += length
        if not self.seq_init or ssrc != self.remote_ssrc:
            self.seq_init = True
            self.remote_ssrc = ssrc
            self.base_seq = self.max_seq = seq
            self.cycles = 0
            self.have_transit = False
            self.received = 1
        elif (seq - self.max_seq) & 0xFFFF < 3000:  # in order, possibly with a gap
            if seq < self.max_seq:
                self.cycles = (self.cycles + 65536) & M32
            self.max_seq = seq
        transit = arrival_ns * 8e-6 - ts  # in 8 kHz timestamp units
        if self.have_transit:
            d = abs(transit - self.last_transit)
            self.jitter += (d - self.jitter) / 16.0
        self.last_transit = transit
        self.have_transit = True

    def receive(self, packet: bytes, now_ns: int) -> bool:
        """An RTCP packet from the peer: counted, an SR's middle NTP bits kept for LSR."""
        if len(packet) >= 8 and packet[0] >> 6 == 2 and 200 <= packet[1] <= 204:
            self.rtcp_received += 1
            if packet[1] == 200 and len(packet) >= 20:
                self.lsr = struct.unpack_from("!I", packet, 10)[0]
                self.lsr_arrival_ns = now_ns
            return True
        return False

    @property
    def extended_max(self) -> int:
        return (self.cycles + self.max_seq) & M32

    @property
    def lost(self) -> int:
        if not self.seq_init:
            return 0
        return self.extended_max - self.base_seq + 1 - self.received

    def report(self, ssrc: int, rtp_ts: int, sent: int, sent_octets: int, now_ns: int,
               wall_ns: int, bye: bool = False) -> bytes:
        """SR (+ one report block once the peer was heard), SDES CNAME, optional BYE."""
        wall_s, frac = divmod(wall_ns, 1_000_000_000)
        ntp = (((wall_s + 2208988800) << 32) | ((frac << 32) // 1_000_000_000)) & (2**64 - 1)
        rb = 1 if self.seq_init else 0
        out = struct.pack("!BBHIIIIII", 0x80 | rb, 200, 6 + 6 * rb, ssrc, ntp >> 32, ntp & M32,
                          rtp_ts & M32, sent & M32, sent_octets & M32)
        if rb:
            ext_max = self.extended_max
            expected = (ext_max - self.base_seq + 1) & M32
            lost = _s32(expected - self.received)
            exp_int = (expected - self.expected_prior) & M32
            rec_int = ((self.received & M32) - self.received_prior) & M32
            self.expected_prior, self.received_prior = expected, self.received & M32
            fraction = 0
            if exp_int > rec_int and exp_int:
                fraction = (((exp_int - rec_int) << 8) // exp_int) & 0xFF
            dlsr = 0
            if self.lsr_arrival_ns:
                dlsr = _cdiv((now_ns - self.lsr_arrival_ns) * 65536, 1_000_000_000) & M32
            lost = max(-0x800000, min(0x7FFFFF, lost))
            out += struct.pack("!IB", self.remote_ssrc, fraction) + (lost & 0xFFFFFF).to_bytes(
                3, "big") + struct.pack("!IIII", ext_max, int(self.jitter) & M32, self.lsr, dlsr)
        words = (4 + 2 + len(self.cname) + 1 + 3) // 4
        sdes = struct.pack("!BBHIBB", 0x81, 202, words, ssrc, 1, len(self.cname)) + self.cname
        out += sdes + bytes(4 + 4 * words - len(sdes))
        if bye:
            out += struct.pack("!BBHI", 0x81, 203, 1, ssrc)
        return out


def parse_sender_report(packet: bytes) -> SenderReport:
    """The fields of a compound SR [+ SDES] [+ BYE] as built by ``Rtcp.report``."""
    b0, pt, _length, ssrc, hi, lo, rtp_ts, packets, octets = struct.unpack_from("!BBHIIIIII",
                                                                                packet)
    if b0 >> 6 != 2 or pt != 200:
        raise ValueError("not an RTCP sender report")
    off, blocks = 28, []
    for _ in range(b0 & 0x1F):
        rssrc, fraction = struct.unpack_from("!IB", packet, off)
        lost = int.from_bytes(packet[off + 5:off + 8], "big", signed=True)
        ext_max, jitter, lsr, dlsr = struct.unpack_from("!IIII", packet, off + 8)
        blocks.append(ReportBlock(rssrc, fraction, lost, ext_max, jitter, lsr, dlsr))
        off += 24
    cname, bye = b"", False
    while off + 4 <= len(packet):
        pt2, words = packet[off + 1], struct.unpack_from("!H", packet, off + 2)[0]
        if pt2 == 202 and packet[off + 8] == 1:
            cname = packet[off + 10:off + 10 + packet[off + 9]]
        elif pt2 == 203:
            bye = True
        off += 4 + 4 * words
    return SenderReport(ssrc, (hi << 32) | lo, rtp_ts, packets, octets, tuple(blocks), cname,
                        bye)
