"""Audio sources and sinks that need no sound card, judged by content."""

from __future__ import annotations

import struct
import wave
from pathlib import Path

import pytest

from tests import compiled

pytest.importorskip("numpy", reason=compiled.EXTRAS_REASON)
import numpy as np

from firmware.media.audio import (
    AudioError,
    NullSink,
    SilenceSource,
    ToneSource,
    WavSink,
    WavSource,
    cycle_of,
    discards,
    open_sink,
    open_source,
    read_wav,
)

from ..audio import pcm_array, peak_hz


def write_wav(path: Path, rate: int, channels: int, samples: np.ndarray, width: int = 2) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        if width == 1:
            w.writeframes(((samples / 256) + 128).astype(np.uint8).tobytes())
        else:
            w.writeframes(samples.astype("<i2").tobytes())


def test_tone_is_continuous_across_reads() -> None:
    tone = ToneSource(1000, 0.5)
    pcm = b"".join(tone.read(n) for n in (7, 160, 33, 800))
    x = pcm_array(pcm)
    assert len(x) == 1000 and abs(peak_hz(x) - 1000) < 10
    assert 16000 < np.abs(x).max() <= 16384
    assert np.abs(np.diff(x)).max() < 0.5 * 32767 * 2 * np.pi * 1000 / 8000 * 1.1, "no jumps"
    with pytest.raises(AudioError):
        ToneSource(5000)


def test_tone_reads_in_pieces_equal_one_read() -> None:
    """Reads inside the cached second and across its end give the samples one long read does."""
    sizes = (3000, 4000, 2000, 7999, 5, 160, 8000, 1)
    pieces = ToneSource(700).read
    assert b"".join(pieces(n) for n in sizes) == ToneSource(700).read(sum(sizes))


def test_tone_cycle_is_what_reads_give_from_the_current_phase() -> None:
    """A whole-Hz tone is one second repeated: its cycle, from wherever the source stands, is
    the samples the next reads would give; a fractional tone has none (it stays on reads)."""
    tone, ref = ToneSource(700), ToneSource(700)
    tone.read(1234)
    ref.read(1234)
    cycle = tone.cycle()
    assert cycle is not None and len(cycle) == 2 * 8000
    assert cycle * 2 == ref.read(16000)
    assert tone.read(500) == cycle[:1000], "taking the cycle does not move the source"
    assert cycle_of(ToneSource(440.5)) is None
    assert cycle_of(WavSource.__new__(WavSource)) is None, "WAV files stay on the pump"
    silence = cycle_of(SilenceSource())
    assert silence and silence == bytes(len(silence))
    assert discards(NullSink()) and not discards(WavSink.__new__(WavSink))


def test_wav_source_converts_rate_and_channels(tmp_path: Path) -> None:
    t = np.arange(48000) / 48000
    stereo = np.stack([8000 * np.sin(2 * np.pi * 440 * t)] * 2, axis=1).reshape(-1)
    path = tmp_path / "hd.wav"
    write_wav(path, 48000, 2, stereo)
    src = WavSource(path, loop=False)
    pcm = src.read(10000)
    assert len(pcm) == 2 * 8000, "one second at 8 kHz, then the file ends"
    assert abs(peak_hz(pcm_array(pcm)) - 440) < 5
    assert src.read(160) == b""


def test_wav_source_loops_and_8bit(tmp_path: Path) -> None:
    path = tmp_path / "short.wav"
    write_wav(path, 8000, 1, np.full(100, 5120.0), width=1)
    src = WavSource(path)
    pcm = src.read(250)
    assert len(pcm) == 500 and set(struct.unpack("<250h", pcm)) == {5120}


def test_wav_sink_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "out.wav"
    sink = open_sink(f"wav:{path}")
    sink.write(ToneSource(300).read(4000))
    sink.close()
    assert abs(peak_hz(pcm_array(read_wav(path))) - 300) < 5


def test_specs_and_errors(tmp_path: Path) -> None:
    assert isinstance(open_source("silence"), SilenceSource)
    assert open_source("silence").read(3) == bytes(6)
    assert isinstance(open_source("tone:800:0.1"), ToneSource)
    assert isinstance(open_sink("null"), NullSink)
    for bad in ("tone:abc", "pulse:foo", "wav:/nonexistent/x.wav"):
        with pytest.raises(AudioError):
            open_source(bad)
    with pytest.raises(AudioError):
        open_sink("speaker")
    with pytest.raises(AudioError):
        WavSink(tmp_path / "no" / "such" / "dir.wav")
    (tmp_path / "junk.wav").write_bytes(b"RIFFjunk")
    with pytest.raises(AudioError, match="cannot read WAV"):
        read_wav(tmp_path / "junk.wav")
