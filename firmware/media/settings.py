"""The settings of one call's media stream, as plain data.

Owns ``StreamSettings``: what the application hands the media part when a call's audio starts
(playout delay, scheduling, gains, echo canceller). Kept apart from ``media.stream`` so that the
application, the parts' Protocols and the tests can name these settings without importing the
compiled media core; knows nothing about sockets, SIP or the loop itself.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StreamSettings:
    jitter_target_ms: int = 40
    jitter_min_ms: int = 0
    jitter_max_ms: int = 200
    realtime_priority: int = 0  # SCHED_FIFO priority, 0 = normal scheduling
    latch: bool = False  # follow the source address of the first packet (NAT)
    prefill_ms: int = 80  # how much PCM the pump keeps queued ahead of the loop
    spin_us: int = 0  # wake this early and spin to the deadline (CPU for timing accuracy)
    kernel_pacing: bool = True  # the kernel sends packets at their times where its qdisc can
    capture_gain_db: float = 0.0
    playback_gain_db: float = 0.0
    echo_canceller: str = "off"  # off | speex | webrtc (firmware.core._aec)
    echo_tail_ms: int = 128
    noise_suppression: bool = False
    agc: bool = False
