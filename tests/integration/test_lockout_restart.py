"""The door-code lockout survives a crash: a real ``intercom run`` process is locked out by
wrong codes keyed on a real phone through Asterisk, killed (SIGKILL, as the watchdog would),
started again in the same runtime directory, and still refuses the right code until the
lockout ends; then the right code opens the door."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from devtools.box.process import Intercom
from devtools.waiting import wait_for

pytestmark = pytest.mark.integration
LOCKOUT = 20  # seconds: short, so the test also sees it end


def call_and_key(box: Intercom, phone, asterisk, code: str, keys_before: int) -> dict:  # noqa: ANN001
    phone.command("dial", f"sip:5002@127.0.0.1:{asterisk.port}")
    phone.wait_event("CALL_ESTABLISHED", 15)
    box.wait_state("in_call")
    time.sleep(0.5)
    phone.command("sndcode", code)
    return wait_for(lambda: (s := box.status())["dtmf_keys_received"] >= keys_before + len(code)
                    and s, 15, 0.1, f"{len(code)} keys")


def hang_up(box: Intercom, phone) -> None:  # noqa: ANN001
    phone.command("hangup")
    phone.wait_event("CALL_CLOSED", 10)
    box.wait_state("idle")


def test_lockout_survives_a_killed_process(asterisk, baresip, tmp_path: Path) -> None:
    phone = baresip("5001")
    box = Intercom(tmp_path / "box", asterisk.port, log_level="info",
                   calls={"door_code": "4321", "auto_answer": True,
                          "door_code_max_failures": 2, "door_code_lockout": LOCKOUT})
    box.start()
    try:
        box.wait_state("idle")
        st = call_and_key(box, phone, asterisk, "9999", 0)
        assert st["door_lockout_until"] is None
        phone.command("sndcode", "8888")  # the second wrong code: locked
        st = wait_for(lambda: (s := box.status())["door_lockout_until"] and s, 15, 0.1,
                      "the lockout")
        locked_until = st["door_lockout_until"]
        hang_up(box, phone)

        box.proc.kill()  # a crash: no clean shutdown, nothing saved at exit
        box.proc.wait(10)
        box.sock.unlink()  # the dead process's socket; the runtime directory stays
        box.start()
        st = box.wait_state("idle")
        assert st["door_lockout_until"] is not None, "the restarted box forgot the lockout"
        assert abs(st["door_lockout_until"] - locked_until) < 2
        assert st["leds"]["error"] == "blinking"
        assert "kept over a restart" in box.log()

        st = call_and_key(box, phone, asterisk, "4321", 0)  # the right code, still locked
        time.sleep(0.5)
        assert box.status()["door_openings"] == 0, "the right code opened a locked door"
        assert "door code entered during the lockout: ignored" in box.log()
        hang_up(box, phone)

        wait_for(lambda: box.status()["door_lockout_until"] is None, LOCKOUT + 10, 0.5,
                 "the lockout to end")
        call_and_key(box, phone, asterisk, "4321", 4)
        wait_for(lambda: box.status()["door_openings"] == 1, 10, 0.1, "the door to open")
        hang_up(box, phone)
    finally:
        box.stop()
