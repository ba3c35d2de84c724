"""The ALSA playback thread on real alsa-lib (the file plugin through ``plug``): what reaches
the device is every decoded sample, in order, behind a fixed prefill of silence, in whole
periods at the pace of real time, with silence (not a stall) where the loop fell short.

The file plugin is unpaced, so these tests also show the thread paces itself instead of
spinning; a real card's blocking write is what paces it on a Pi (not shown here).
"""

from __future__ import annotations

import time

import numpy as np

from devtools.tones import tone_pcm
from firmware._rtpcore import PcmFifo
from firmware.media.alsa import PLAY_PERIOD, PLAYBACK_PERIODS, AlsaSink

from ..audio import pcm_array, peak_hz
from .alsa_env import reset_speaker, speaker_pcm

RATE = 8000


def _play(bursts: list[list[bytes]], gap_s: float = 0.0) -> tuple[np.ndarray, float]:
    """Queue each burst of 20 ms frames at once, wait until the device has taken all of it,
    then ``gap_s`` more with nothing to play (the loop falling short), then the next burst.
    Nothing here depends on this thread's timing, only on the sink's."""
    reset_speaker()
    fifo = PcmFifo(RATE * 4)
    sink = AlsaSink("box_speaker")
    fifo.write(b"".join(bursts[0]))
    began = time.monotonic()
    sink.attach(fifo)
    for k, burst in enumerate(bursts):
        if k:
            time.sleep(gap_s)
            fifo.write(b"".join(burst))
        while len(fifo):
            time.sleep(0.002)
    time.sleep(0.1)
    sink.close()
    elapsed = time.monotonic() - began
    return pcm_array(speaker_pcm()), elapsed


def test_playback_is_every_sample_in_order_behind_a_fixed_prefill() -> None:
    frames = [tone_pcm(1013, 160, 160 * k) for k in range(50)]  # one second of 1013 Hz
    heard, elapsed = _play([frames])
    prefill = PLAY_PERIOD * PLAYBACK_PERIODS
    assert np.all(heard[:prefill] == 0), "the device starts full of silence"
    sent = pcm_array(b"".join(frames))
    # every sample, in order, right behind the prefill: nothing inserted or dropped
    assert np.array_equal(heard[prefill:prefill + len(sent)], sent)
    assert abs(peak_hz(heard[prefill:prefill + len(sent)]) - 1013) < 10
    # whole periods, and no faster than real time (an unpaced plugin must not be flooded)
    assert len(heard) % PLAY_PERIOD == 0
    assert len(heard) <= (elapsed + 0.05) * RATE + prefill, (len(heard), elapsed)


def test_a_short_fifo_is_played_as_silence_and_the_pace_holds() -> None:
    first = [tone_pcm(700, 160, 160 * k) for k in range(20)]
    then = [tone_pcm(700, 160, 160 * k) for k in range(30, 50)]
    heard, elapsed = _play([first, then], gap_s=0.2)  # nothing to play for 200 ms
    blocks = np.abs(heard[: len(heard) // 80 * 80].reshape(-1, 80)).max(axis=1) > 1000
    first, last = int(np.argmax(blocks)), len(blocks) - 1 - int(np.argmax(blocks[::-1]))
    inside = blocks[first:last + 1]
    # all of the tone (80 blocks of 10 ms: nothing dropped), one hole where the FIFO was empty
    # (200 ms: 20 blocks, and up to two more while this thread noticed it was empty)
    assert int(np.sum(inside)) == 80, inside.astype(int)
    assert not np.any(inside[:40] == 0) and not np.any(inside[-40:] == 0), inside.astype(int)
    assert 19 <= int(np.sum(~inside)) <= 24, inside.astype(int)
    assert len(heard) >= (elapsed - 0.2) * RATE, "the device kept its pace through the gap"
    assert len(heard) <= (elapsed + 0.05) * RATE + PLAY_PERIOD * PLAYBACK_PERIODS
