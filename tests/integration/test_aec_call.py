"""A call through the real Asterisk 22 with each echo canceller on: the tones still cross both
ways (judged by FFT) and the canceller really ran in the call's media loop."""

from __future__ import annotations

import time

import pytest

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("kind", ["speex", "webrtc"])
def test_call_with_echo_canceller_carries_a_tone_each_way(asterisk, intercom, baresip,
                                                          tmp_path, kind: str) -> None:
    """The box sends 700 Hz through its canceller while it plays baresip's 1000 Hz (the
    canceller's reference): the 700 Hz must not be taken for echo, the 1000 Hz must arrive."""
    from ..audio import baresip_heard, peak_hz, tone_snr_db, wav_array

    record = tmp_path / "baresip-rec"
    record.mkdir()
    phone = baresip("5001", answer="auto", tone_hz=1000, record_dir=record)
    heard = tmp_path / "box-heard.wav"
    box = intercom(audio={"capture": "tone:700", "playback": f"wav:{heard}",
                          "echo_canceller": kind, "noise_suppression": True})
    box.wait_state("idle")
    assert box.cmd("call", "5001")["ok"]
    phone.wait_event("CALL_ESTABLISHED", 15)
    box.wait_state("in_call")
    time.sleep(4)
    status = box.status()
    assert box.cmd("hangup")["ok"]
    phone.wait_event("CALL_CLOSED", 10)
    box.wait_state("idle")
    aec = status["audio"]["aec"]
    assert aec["kind"] == kind and aec["frames"] > 100 and aec["errors"] == 0, aec
    x, rate = wav_array(heard)
    assert abs(peak_hz(x[rate:], rate) - 1000) < 15, "the box heard baresip's 1000 Hz"
    y, yrate = baresip_heard(record)
    assert abs(peak_hz(y[yrate:], yrate) - 700) < 15, "baresip heard the box's 700 Hz"
    assert tone_snr_db(y[yrate:], 700, yrate) > 10, "the 700 Hz came through the canceller"


def test_alsa_card_buffers_reach_the_canceller(asterisk, box, baresip, tmp_path) -> None:
    """Real alsa-lib (the file plugin through ``plug``, as on a card; both sides ALSA, so the
    media loop drives the card itself): the canceller's reference delay is what the card's
    own queues say each period (``snd_pcm_delay`` on playback, what capture left waiting), no
    fixed estimate on top, and the door's microphone still reaches the phone through it. The
    file plugin is not paced and its queues are not a card's: this shows the wiring, not the
    alignment (tests/unit/test_aec.py's room tests do that)."""
    from ..audio import baresip_heard, pcm_array, peak_hz
    from .alsa_env import reset_speaker, speaker_pcm, write_mic_tone

    write_mic_tone(700)
    reset_speaker()
    rec = tmp_path / "rec"
    rec.mkdir()
    phone = baresip("5001", tone_hz=1000, record_dir=rec)
    b = box(audio={"echo_canceller": "speex"})
    b.wait_state("idle")
    b.answer_call_from(phone, asterisk.port)
    time.sleep(3)
    aec = b.status()["audio"]["aec"]
    b.press("hangup")
    phone.wait_event("CALL_CLOSED", 10)
    b.wait_state("idle")
    # no fixed card estimate: the queues the loop reads off the card every period (less a
    # quarter of the 128 ms tail); a reference not following them would stay at 0
    assert aec["kind"] == "speex" and aec["frames"] > 100, aec
    assert aec["card_ms"] == 0 and aec["delay_ms"] > 0, aec
    assert b.status()["rtp"]["card"] == "ok"
    heard = pcm_array(speaker_pcm())
    assert abs(peak_hz(heard[8000:]) - 1000) < 15, "the speaker played the phone's 1000 Hz"
    y, rate = baresip_heard(rec)
    assert abs(peak_hz(y[rate:], rate) - 700) < 15, "the phone heard the door's microphone"
