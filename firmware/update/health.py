"""The health check after a boot, as one pure decision (issue #18 item 4; docs/notes/updates.md §6).

Owns what a boot's facts mean: ``decide(facts, limits) -> Decision``, one action at a time —
wait, mark the booted slot good, end a trial well, give a new slot up (mark it bad and reboot),
use one of its boot attempts (reboot: the PBX is silent), notice that U-Boot went back to the
old slot (a rollback), and judge the version that failed (refused for good, or inconclusive and
tried again later). Also owns the health record (``trial-result.json`` beside U1's
``trial.json``: why the new slot gave up, the rollback's progress, and how many trials of a
version ended inconclusive) and the error-LED rule after a rollback (``alert``).

Three kinds of boot, told apart by the trial record (``firmware.update.state``) and the booted
slot:

- ordinary (no trial for this slot): good once ``intercom.service`` has been active for
  ``settle`` seconds; registering is not asked for, so a PBX outage cannot drain the counter
  of a release that was already good. A card whose configuration keeps the intercom from
  running (no intercom.yaml, or one it refuses) is not the release's fault: good too.
- trial (the slot a new version was just installed into): good only once registered. The
  intercom failing (failed, ``max_restarts`` restarts, refused configuration) gives the slot up
  at once; after ``register_timeout`` so does having no network address, an intercom that does
  not answer its control socket, or a PBX that answered but did not register it. A PBX that
  answered nothing at all (or only 408/5xx) is not the new version's fault yet: after
  ``pbx_silence`` the box reboots without marking the slot bad, which uses one of its boot
  attempts (three, U-Boot's counter), so a silent PBX costs at most 3 × ``pbx_silence``.
- rollback (the trial names the other slot as the one it came from): recorded once (status,
  console, error LED), then the old slot is marked good like an ordinary boot and the version
  judged. A new slot whose intercom itself failed is refused at once; otherwise the old release
  decides: registered within ``register_timeout`` — the PBX was fine, the new version failed:
  refused; not registered either — inconclusive (the PBX or the network was down during the
  trial): the version may be installed again once the old release has been registered for
  ``pbx_silence``, and after ``max_inconclusive`` such trials it is refused. A good release is
  not rolled back forever, a bad one is not kept.

No I/O, no clock of its own (times come in as seconds), no RAUC, systemd or sockets:
``firmware.update.health_runner`` gathers the facts and carries the decisions out.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

RECORD = "trial-result.json"  # the health record, in update.state_dir beside trial.json
SLOTS = ("A", "B")


class Act(StrEnum):
    WAIT = "wait"
    MARK_GOOD = "mark-good"  # ordinary boot: rauc status mark-good booted
    TRIAL_GOOD = "trial-good"  # mark-good, the trial is over: last = ok <version>
    MARK_BAD = "mark-bad"  # record why, rauc status mark-bad booted, reboot: the old slot boots
    REBOOT = "reboot"  # record why, reboot: one of the slot's boot attempts is used
    ROLLED_BACK = "rolled-back"  # record once: last = rolled_back, console, error LED
    REFUSE = "refuse"  # the version failed: never installed again; the trial is over
    INCONCLUSIVE = "inconclusive"  # the old release cannot register either: counted, held
    RETRY = "retry"  # registered long enough since: the held version may be installed again
    DONE = "done"  # nothing left to do this boot


# why a new slot gave up (the record's ``failure.reason``); "service" is the one that does not
# depend on the network: such a version is refused without asking the old release
SERVICE, CONTROL, NETWORK, REGISTER, PBX_SILENT = \
    "service", "control", "network", "register", "pbx-silent"
REASONS = (SERVICE, CONTROL, NETWORK, REGISTER, PBX_SILENT)


@dataclass(frozen=True)
class Limits:
    settle: float = 60.0  # s active before an ordinary boot's slot is marked good
    register_timeout: float = 180.0  # update.trial_register_timeout
    pbx_silence: float = 600.0  # update.trial_pbx_silence
    max_restarts: int = 3  # restarts of the intercom during a trial that give the slot up
    max_inconclusive: int = 3  # inconclusive trials of one version before it is refused


@dataclass(frozen=True)
class Service:
    """``intercom.service`` as systemd reports it (health_runner reads ``systemctl show``)."""

    state: str  # ActiveState: active, activating, deactivating, failed, inactive; "missing"
    restarts: int = 0  # NRestarts: automatic restarts since boot (crashes, the watchdog)
    active_for: float = 0.0  # s continuously active (no restart) until now
    skipped: bool = False  # never started: its condition failed (no intercom.yaml on the card)
    config_refused: bool = False  # exited with status 2: the intercom refused its configuration


@dataclass(frozen=True)
class Trial:
    """The trial being judged: U1's trial.json joined with this module's record."""

    slot: str  # the slot the new version was installed into
    version: str
    from_slot: str  # the slot that installed it (and that U-Boot goes back to)
    from_version: str
    failure: str | None = None  # why the new slot gave up (REASONS), None: nothing recorded
    failure_message: str = ""
    rolled_back: bool = False  # the old slot has recorded the rollback
    verdict: str | None = None  # None, "inconclusive" (held) or "retry" (judged: may return)
    inconclusive: int = 0  # earlier trials of this version that ended inconclusive


@dataclass(frozen=True)
class Facts:
    booted: str | None  # "A" | "B" from rauc.slot= on the kernel command line; None: not A/B
    trial: Trial | None
    elapsed: float  # s since the check began (it starts right after intercom.service)
    service: Service
    registered: bool | None  # from the control socket; None: the socket did not answer
    first_registered: float | None = None  # ``elapsed`` when first seen registered this boot
    registered_for: float = 0.0  # s continuously registered until now
    pbx_answered: bool = False  # the registrar answered this boot (not only 408/5xx)
    has_address: bool = True  # a global-scope address on an interface that is up
    marked_good: bool = False  # the booted slot was marked good this boot


@dataclass(frozen=True)
class Decision:
    act: Act
    reason: str = ""  # a short code (REASONS, "registered", "active", ...)
    message: str = ""  # one line for the log, the console and ``status``


WAIT = Decision(Act.WAIT)


def pbx_answered(status_code: object) -> bool:
    """Whether a REGISTER's final status shows a PBX that is there and serving: anything but
    none at all, 408 (it timed out itself) and 5xx (overloaded, misconfigured, shutting down)."""
    if not isinstance(status_code, int) or isinstance(status_code, bool):
        return False
    return 100 <= status_code < 700 and status_code != 408 and not 500 <= status_code < 600


def decide(f: Facts, lim: Limits = Limits()) -> Decision:
    """The one thing to do now. The runner acts on it, updates what it remembers and asks
    again; ``DONE`` ends the check for this boot."""
    if f.booted not in SLOTS:
        return Decision(Act.DONE, "not-ab", "not booted through the A/B boot script (no "
                                            "rauc.slot= on the kernel command line): nothing "
                                            "to mark")
    t = f.trial
    if t is not None and t.slot == f.booted:
        return _trial_boot(f, t, lim)
    if t is not None and t.from_slot == f.booted:
        return _rollback_boot(f, t, lim)
    return _settle(f, lim) or Decision(Act.DONE)


def _settle(f: Facts, lim: Limits) -> Decision | None:
    """An ordinary boot's (or the old slot's after a rollback) mark-good; None: already done."""
    if f.marked_good:
        return None
    s = f.service
    if s.state == "active" and s.active_for >= lim.settle:
        return Decision(Act.MARK_GOOD, "active",
                        f"slot {f.booted} is good: the intercom has run for {s.active_for:.0f} s")
    if (s.skipped or s.config_refused) and f.elapsed >= lim.settle:
        why = "refuses its configuration" if s.config_refused else \
            "has no configuration (no intercom.yaml on the card)"
        return Decision(Act.MARK_GOOD, "not-configured",
                        f"slot {f.booted} is good: the intercom {why}, which is the card's "
                        f"business, not the release's")
    return WAIT


def _service_failure(s: Service, lim: Limits) -> str | None:
    if s.state == "missing":
        return "intercom.service is missing from this release"
    if s.config_refused:
        return "the intercom refuses the configuration the previous release ran with"
    if s.skipped:
        return "intercom.service was not started (its condition failed)"
    if s.state == "failed":
        return f"intercom.service failed ({s.restarts} restarts)"
    if s.restarts >= lim.max_restarts:
        return f"the intercom restarted {s.restarts} times"
    return None


def _trial_boot(f: Facts, t: Trial, lim: Limits) -> Decision:
    name = f"{t.version} (slot {t.slot})"
    if f.registered:
        return Decision(Act.TRIAL_GOOD, "registered",
                        f"{name} is good: registered with the PBX {f.elapsed:.0f} s after start")
    if (why := _service_failure(f.service, lim)) is not None:
        return Decision(Act.MARK_BAD, SERVICE, f"{name} failed: {why}")
    if f.elapsed < lim.register_timeout:
        return WAIT
    limit = f"{lim.register_timeout:.0f} s"
    if not f.has_address:
        return Decision(Act.MARK_BAD, NETWORK, f"{name} failed: no network address after {limit}")
    if f.service.state != "active" or f.registered is None:
        return Decision(Act.MARK_BAD, CONTROL,
                        f"{name} failed: the intercom is {f.service.state} and does not answer "
                        f"its control socket after {limit}")
    if f.pbx_answered:
        return Decision(Act.MARK_BAD, REGISTER,
                        f"{name} failed: the PBX answered but it did not register within {limit}")
    if f.elapsed >= lim.pbx_silence:
        return Decision(Act.REBOOT, PBX_SILENT,
                        f"{name}: no answer from the PBX for {f.elapsed:.0f} s: rebooting, which "
                        f"uses one of the slot's boot attempts")
    return WAIT


def _rollback_boot(f: Facts, t: Trial, lim: Limits) -> Decision:
    if not t.rolled_back:
        why = t.failure_message or "it did not come up in its boot attempts"
        return Decision(Act.ROLLED_BACK, t.failure or "boots",
                        f"rolled back from {t.version} to {t.from_version}: {why}")
    pending = [d for d in (_settle(f, lim), _judge(f, t, lim)) if d is not None]
    for d in pending:
        if d.act is not Act.WAIT:
            return d
    return WAIT if pending else Decision(Act.DONE)


def _judge(f: Facts, t: Trial, lim: Limits) -> Decision | None:
    """What the failed version deserves; None: judged already."""
    if t.verdict == "inconclusive":
        if f.registered and f.registered_for >= lim.pbx_silence:
            return Decision(Act.RETRY, "inconclusive",
                            f"{t.from_version} has been registered for {f.registered_for:.0f} s: "
                            f"{t.version} may be installed again ({t.inconclusive} of "
                            f"{lim.max_inconclusive} inconclusive trials)")
        return WAIT
    if t.verdict is not None:
        return None
    if t.failure == SERVICE:
        return Decision(Act.REFUSE, SERVICE, f"{t.version} will not be installed again: "
                                             f"{t.failure_message or 'its intercom did not run'}")
    if f.first_registered is not None and f.first_registered <= lim.register_timeout:
        return Decision(Act.REFUSE, "failed",
                        f"{t.version} will not be installed again: {t.from_version} registered "
                        f"{f.first_registered:.0f} s after start, so the PBX was there")
    if f.elapsed < lim.register_timeout:
        return WAIT
    if t.inconclusive + 1 >= lim.max_inconclusive:
        return Decision(Act.REFUSE, "inconclusive",
                        f"{t.version} will not be installed again: {lim.max_inconclusive} trials "
                        f"ended with the PBX or the network unreachable")
    return Decision(Act.INCONCLUSIVE, "inconclusive",
                    f"{t.from_version} cannot register either (the PBX or the network is down): "
                    f"{t.version} will be tried again once registered for "
                    f"{lim.pbx_silence:.0f} s")


# ----------------------------------------------------------------------- the health record
def _text(value: object, limit: int = 300) -> str:
    if not isinstance(value, str):
        return ""
    flat = " ".join(value.split())
    flat = "".join(c if c.isprintable() else "?" for c in flat)
    return flat[:limit]


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def record_for(raw: object, trial: dict[str, Any] | None) -> dict[str, Any]:
    """The health record (``trial-result.json``, any JSON) as it applies to ``trial`` (U1's
    trial.json, read by ``state.Store.read_trial``): the inconclusive count follows the version,
    the rest (failure, rollback, verdict) only the very trial it was written for (its
    ``installed_at``). A field of the wrong type is dropped, never trusted."""
    rec = raw if isinstance(raw, dict) else {}
    out: dict[str, Any] = {"version": "", "inconclusive": 0, "trial": None, "failure": None,
                           "rolled_back_at": None, "verdict": None}
    if trial is None:
        return out
    out["version"], out["trial"] = trial["version"], trial.get("installed_at")
    same_version = _text(rec.get("version")) == trial["version"] != ""
    if same_version:
        out["inconclusive"] = _count(rec.get("inconclusive"))
    if not same_version or rec.get("trial") != trial.get("installed_at"):
        return out
    failure = rec.get("failure")
    if isinstance(failure, dict) and failure.get("reason") in REASONS:
        out["failure"] = {"reason": failure["reason"], "message": _text(failure.get("message")),
                          "at": failure.get("at") if isinstance(failure.get("at"), int | float)
                          else None}
    at = rec.get("rolled_back_at")
    out["rolled_back_at"] = at if isinstance(at, int | float) and not isinstance(at, bool) \
        else None
    out["verdict"] = rec.get("verdict") if rec.get("verdict") in ("inconclusive", "retry") \
        else None
    return out


def trial_view(trial: dict[str, Any] | None, record: dict[str, Any]) -> Trial | None:
    """U1's trial record and the health record (``record_for``) as ``decide`` takes them; None
    when there is no trial or it makes no sense (both slots the same)."""
    if trial is None or trial.get("slot") not in SLOTS or trial.get("from_slot") not in SLOTS \
            or trial["slot"] == trial["from_slot"]:
        return None
    failure = record.get("failure") or {}
    return Trial(slot=trial["slot"], version=trial.get("version") or "unknown",
                 from_slot=trial["from_slot"], from_version=trial.get("from_version") or "unknown",
                 failure=failure.get("reason"), failure_message=failure.get("message") or "",
                 rolled_back=record.get("rolled_back_at") is not None,
                 verdict=record.get("verdict"),
                 inconclusive=max(_count(trial.get("inconclusive")), record["inconclusive"]))


def install_hold(raw_record: object, version: str) -> str | None:
    """Why ``version`` must not be installed now (None: it may be): a trial of it ended
    inconclusive and the old release has not yet been registered for ``pbx_silence``. For the
    updater, beside ``refused_versions``."""
    rec = raw_record if isinstance(raw_record, dict) else {}
    if version and _text(rec.get("version")) == version and rec.get("verdict") == "inconclusive":
        return (f"{version} is held: its last trial was inconclusive (the PBX or the network "
                f"was down); it is tried again once the intercom has been registered for a while")
    return None


def alert(state: dict[str, Any]) -> str | None:
    """The error LED's "update rolled back" reason from the updater's state (``Store.read``),
    None when there is nothing to show: it lasts until the next successful update (``last``
    changes) or ``intercom update --ack`` (``last.acknowledged``)."""
    last = state.get("last") if isinstance(state, dict) else None
    if not isinstance(last, dict) or last.get("result") != "rolled_back" \
            or last.get("acknowledged") is True:
        return None
    return _text(last.get("message")) or f"rolled back from {_text(last.get('version'))}"
