"""The health decision after a boot (firmware.update.health), row by row: ordinary boots, trial
boots, rollbacks and the verdict on a version that failed, plus the health record it keeps."""

from __future__ import annotations

from dataclasses import replace

import pytest

from firmware.update import health
from firmware.update.health import Act, Facts, Limits, Service, Trial

from .test_architecture import IO_MODULES, PKG, imports_of

LIM = Limits()  # 60 s settle, 180 s to register, 600 s of PBX silence, 3 restarts, 3 trials
UP = Service("active", active_for=600.0)
NEW = Trial(slot="B", version="1.2.0", from_slot="A", from_version="1.1.0")
BACK = replace(NEW, rolled_back=True)


def facts(booted: str | None = "A", trial: Trial | None = None, elapsed: float = 1000.0,
          service: Service = UP, registered: bool | None = False, **kw: object) -> Facts:
    return Facts(booted=booted, trial=trial, elapsed=elapsed, service=service,
                 registered=registered, **kw)  # type: ignore[arg-type]


def trial_boot(**kw: object) -> Facts:
    return facts(booted="B", trial=NEW, **kw)


def rollback_boot(trial: Trial = BACK, **kw: object) -> Facts:
    return facts(booted="A", trial=trial, **kw)


# (what, facts, act, reason) — every row of the table in the module docstring
ROWS = [
    ("no rauc.slot on the command line: not an A/B boot", facts(booted=None), Act.DONE, "not-ab"),
    # ordinary boots: good after 60 s active; registration is not asked for
    ("ordinary: active 59 s", facts(service=Service("active", active_for=59.0)), Act.WAIT, ""),
    ("ordinary: active 60 s with the PBX down",
     facts(service=Service("active", active_for=60.0), registered=False), Act.MARK_GOOD,
     "active"),
    ("ordinary: the intercom keeps restarting",
     facts(service=Service("activating", restarts=7)), Act.WAIT, ""),
    ("ordinary: the intercom failed", facts(service=Service("failed", restarts=5)), Act.WAIT, ""),
    ("ordinary: no intercom.yaml on the card, 60 s",
     facts(service=Service("inactive", skipped=True), elapsed=60.0), Act.MARK_GOOD,
     "not-configured"),
    ("ordinary: no intercom.yaml on the card, 30 s",
     facts(service=Service("inactive", skipped=True), elapsed=30.0), Act.WAIT, ""),
    ("ordinary: the configuration is refused (exit 2)",
     facts(service=Service("failed", config_refused=True), elapsed=61.0), Act.MARK_GOOD,
     "not-configured"),
    ("ordinary: marked good already", facts(marked_good=True), Act.DONE, ""),
    # trial boots: good only once registered
    ("trial: registered 5 s after start", trial_boot(elapsed=5.0, registered=True),
     Act.TRIAL_GOOD, "registered"),
    ("trial: registered late, after a PBX outage", trial_boot(elapsed=550.0, registered=True),
     Act.TRIAL_GOOD, "registered"),
    ("trial: registered beats earlier restarts",
     trial_boot(registered=True, service=Service("active", restarts=3)), Act.TRIAL_GOOD,
     "registered"),
    ("trial: intercom.service failed at 10 s",
     trial_boot(elapsed=10.0, service=Service("failed", restarts=1)), Act.MARK_BAD, "service"),
    ("trial: 3 restarts", trial_boot(elapsed=40.0, service=Service("activating", restarts=3)),
     Act.MARK_BAD, "service"),
    ("trial: 2 restarts", trial_boot(elapsed=40.0, service=Service("active", restarts=2)),
     Act.WAIT, ""),
    ("trial: the new release refuses the configuration",
     trial_boot(elapsed=3.0, service=Service("failed", config_refused=True)), Act.MARK_BAD,
     "service"),
    ("trial: the new release has no intercom.service",
     trial_boot(elapsed=3.0, service=Service("missing")), Act.MARK_BAD, "service"),
    ("trial: the PBX refuses, 179 s", trial_boot(elapsed=179.0, pbx_answered=True), Act.WAIT, ""),
    ("trial: the PBX refuses, 180 s", trial_boot(elapsed=180.0, pbx_answered=True),
     Act.MARK_BAD, "register"),
    ("trial: no network address at 180 s", trial_boot(elapsed=180.0, has_address=False),
     Act.MARK_BAD, "network"),
    ("trial: active but the control socket is silent at 180 s",
     trial_boot(elapsed=180.0, registered=None), Act.MARK_BAD, "control"),
    ("trial: the PBX is silent, 599 s", trial_boot(elapsed=599.0), Act.WAIT, ""),
    ("trial: the PBX is silent, 600 s", trial_boot(elapsed=600.0), Act.REBOOT, "pbx-silent"),
    # rollback boots: the old slot notices, is marked good, and judges the version
    ("rollback: first noticed", rollback_boot(NEW, elapsed=1.0), Act.ROLLED_BACK, "boots"),
    ("rollback: noticed with the new slot's reason",
     rollback_boot(replace(NEW, failure="register", failure_message="the PBX answered ..."),
                   elapsed=1.0), Act.ROLLED_BACK, "register"),
    ("rollback: the new intercom itself failed: refused without asking the PBX",
     rollback_boot(replace(BACK, failure="service"), elapsed=1.0,
                   service=Service("activating")), Act.REFUSE, "service"),
    ("rollback: the old release registers at 20 s: the version failed",
     rollback_boot(elapsed=25.0, registered=True, first_registered=20.0,
                   service=Service("active", active_for=20.0)), Act.REFUSE, "failed"),
    ("rollback: not registered, 179 s", rollback_boot(elapsed=179.0, marked_good=True), Act.WAIT,
     ""),
    ("rollback: not registered at 180 s either: inconclusive",
     rollback_boot(elapsed=180.0, marked_good=True), Act.INCONCLUSIVE, "inconclusive"),
    ("rollback: registered only at 200 s: inconclusive",
     rollback_boot(elapsed=200.0, registered=True, first_registered=200.0, marked_good=True),
     Act.INCONCLUSIVE, "inconclusive"),
    ("rollback: the third inconclusive trial: refused",
     rollback_boot(replace(BACK, inconclusive=2), elapsed=180.0, marked_good=True), Act.REFUSE,
     "inconclusive"),
    ("rollback: the old slot is marked good while the verdict waits",
     rollback_boot(elapsed=60.0, service=Service("active", active_for=60.0)), Act.MARK_GOOD,
     "active"),
    ("held: registered 599 s", rollback_boot(replace(BACK, verdict="inconclusive"),
                                             registered=True, registered_for=599.0,
                                             marked_good=True), Act.WAIT, ""),
    ("held: registered 600 s: may be installed again",
     rollback_boot(replace(BACK, verdict="inconclusive", inconclusive=1), registered=True,
                   registered_for=600.0, marked_good=True), Act.RETRY, "inconclusive"),
    ("held: still not registered", rollback_boot(replace(BACK, verdict="inconclusive"),
                                                 marked_good=True), Act.WAIT, ""),
    ("judged and marked good: done", rollback_boot(replace(BACK, verdict="retry"),
                                                   marked_good=True), Act.DONE, ""),
    ("judged, old slot not yet good", rollback_boot(replace(BACK, verdict="retry"),
                                                    service=Service("activating")), Act.WAIT,
     ""),
]


@pytest.mark.parametrize(("what", "f", "act", "reason"), ROWS, ids=[r[0] for r in ROWS])
def test_decision_table(what: str, f: Facts, act: Act, reason: str) -> None:
    d = health.decide(f, LIM)
    assert (d.act, d.reason) == (act, reason), f"{what}: {d}"
    if act not in (Act.WAIT, Act.DONE):
        assert d.message and "\n" not in d.message


def test_messages_say_which_version_and_why() -> None:
    d = health.decide(rollback_boot(replace(NEW, failure="register",
                                            failure_message="1.2.0 (slot B) failed: the PBX "
                                                            "answered but it did not register"),
                                    elapsed=1.0))
    assert d.message == "rolled back from 1.2.0 to 1.1.0: 1.2.0 (slot B) failed: the PBX " \
                        "answered but it did not register"
    d = health.decide(rollback_boot(NEW, elapsed=1.0))
    assert d.message == "rolled back from 1.2.0 to 1.1.0: it did not come up in its boot attempts"
    silent = health.decide(trial_boot(elapsed=600.0))
    assert "uses one of the slot's boot attempts" in silent.message


def test_limits_come_from_the_configuration() -> None:
    quick = Limits(register_timeout=30.0, pbx_silence=60.0, settle=5.0)
    assert health.decide(trial_boot(elapsed=30.0, pbx_answered=True), quick).act is Act.MARK_BAD
    assert health.decide(trial_boot(elapsed=60.0), quick).act is Act.REBOOT
    assert health.decide(facts(service=Service("active", active_for=5.0)), quick).act \
        is Act.MARK_GOOD


@pytest.mark.parametrize(("code", "answered"), [
    (None, False), (200, True), (401, True), (403, True), (404, True), (408, False),
    (500, False), (503, False), (599, False), (603, True), (True, False), ("403", False)])
def test_what_counts_as_an_answer_from_the_pbx(code: object, answered: bool) -> None:
    assert health.pbx_answered(code) is answered


# ----------------------------------------------------------------------- the health record
TRIAL = {"slot": "B", "version": "1.2.0", "from_slot": "A", "from_version": "1.1.0",
         "installed_at": 1000.0, "inconclusive": 0}


def test_the_record_applies_to_its_own_trial_only() -> None:
    raw = {"version": "1.2.0", "trial": 1000.0, "inconclusive": 1,
           "failure": {"reason": "pbx-silent", "message": "no answer", "at": 5.0},
           "rolled_back_at": 7.0, "verdict": "inconclusive"}
    rec = health.record_for(raw, TRIAL)
    assert rec["failure"]["reason"] == "pbx-silent" and rec["rolled_back_at"] == 7.0
    view = health.trial_view(TRIAL, rec)
    assert view == Trial("B", "1.2.0", "A", "1.1.0", failure="pbx-silent",
                         failure_message="no answer", rolled_back=True, verdict="inconclusive",
                         inconclusive=1)
    # the same version installed again: only the inconclusive count carries over
    again = health.record_for(raw, {**TRIAL, "installed_at": 2000.0})
    assert again == {"version": "1.2.0", "inconclusive": 1, "trial": 2000.0, "failure": None,
                     "rolled_back_at": None, "verdict": None}
    # another version: nothing carries over
    assert health.record_for(raw, {**TRIAL, "version": "1.3.0"})["inconclusive"] == 0


@pytest.mark.parametrize("raw", [None, [], "x", {"version": 3, "failure": "service"},
                                 {"version": "1.2.0", "trial": 1000.0, "inconclusive": -4,
                                  "failure": {"reason": "reboot now"}, "verdict": "ok",
                                  "rolled_back_at": True}])
def test_a_damaged_record_is_read_field_by_field(raw: object) -> None:
    rec = health.record_for(raw, TRIAL)
    assert rec["failure"] is None and rec["verdict"] is None and rec["rolled_back_at"] is None
    assert rec["inconclusive"] == 0
    assert health.trial_view(TRIAL, rec) == Trial("B", "1.2.0", "A", "1.1.0")


def test_a_trial_that_makes_no_sense_is_no_trial() -> None:
    rec = health.record_for(None, TRIAL)
    assert health.trial_view(None, rec) is None
    assert health.trial_view({**TRIAL, "from_slot": "B"}, rec) is None
    assert health.trial_view({**TRIAL, "slot": "C"}, rec) is None


def test_a_version_is_held_only_while_its_inconclusive_verdict_waits() -> None:
    held = {"version": "1.2.0", "verdict": "inconclusive"}
    assert "1.2.0 is held" in (health.install_hold(held, "1.2.0") or "")
    assert health.install_hold(held, "1.3.0") is None
    assert health.install_hold({**held, "verdict": "retry"}, "1.2.0") is None
    assert health.install_hold(None, "1.2.0") is None


def test_the_led_alert_lasts_until_acknowledged_or_replaced() -> None:
    last = {"result": "rolled_back", "reason": "register", "version": "1.2.0", "at": 1.0,
            "message": "rolled back from 1.2.0 to 1.1.0: the PBX answered"}
    assert health.alert({"last": last}) == last["message"]
    assert health.alert({"last": {**last, "acknowledged": True}}) is None
    assert health.alert({"last": {**last, "result": "ok"}}) is None
    assert health.alert({"last": {**last, "message": ""}}) == "rolled back from 1.2.0"
    assert health.alert({}) is None and health.alert({"last": "x"}) is None


def test_the_decision_is_pure() -> None:
    imported = imports_of(PKG / "update" / "health.py")
    assert not {m for m in imported if m.split(".")[0] in IO_MODULES | {"os", "json"}}
    assert not {m for m in imported if m.startswith("firmware")}, imported
