"""The update flow: ``intercom update FILE|URL`` and the pull loop ``intercom updater``.

Owns the order of things and when they may happen: fetch (firmware.update.download) -> check
(firmware.update.bundle) -> wait until the intercom is idle -> ``rauc install`` (the one small
function below; the box's rauc.service runs it at nice 19, idle I/O) -> trial.json and the state
-> reboot into the new slot. The intercom is asked through its control socket (``status``):
idle = no call, not ringing, not calling; a socket that does not answer is an intercom that is
in no call either. The reboot waits for an idle moment while registered with the PBX (a PBX that
is down delays the reboot, so the trial boot's "registered within N s" judges the release, not
the PBX: docs/notes/updates.md §6), and only inside ``update.window`` when one is set; an
intercom that has not answered for DOWN_GRACE is no reason to wait. Every failure is one line
in the log and a ``last`` entry in the state file, never a traceback.

Runs as root. Knows nothing about SIP or media; the health check after the reboot is
firmware.update's health side, not this module.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import UpdateSettings, window_minutes
from ..control import request
from ..lockout_store import boot_id
from ..provisioning import shown_url
from . import bundle as bundles
from . import download
from .health_runner import install_hold
from .slots import SlotPaths, booted_slot, bootnames, installed_version, other, rauc_versions
from .state import Store, UpdateError

log = logging.getLogger("intercom.update")

IDLE_STATES = ("idle", "offline")
POLL = 5.0  # s between two questions to the intercom while waiting for an idle moment
DOWN_GRACE = 600.0  # s the intercom may be silent before a pending reboot stops waiting
INSTALL_TIMEOUT = 4 * 3600.0  # s for rauc install at idle I/O priority on a slow card
BUSY = ".busy"
BUSY_RETRIES = 5  # installs refused by RAUC's pre-install handler (a call began) before giving up
# refusals that stay true of the same file: it is not downloaded again while it is unchanged
# (a damaged download, or a certificate the clock may yet reach, is tried again)
FINAL = (bundles.UNSIGNED, bundles.OTHER_KEY, bundles.OTHER_DEVICE, bundles.OLDER,
         bundles.SAME, bundles.REFUSED_BEFORE, "too big")
HELD = "held"  # a version whose last trial was inconclusive, waiting (firmware.update.health)
RETRY = 300.0  # s before the first new try after a failed check (doubling up to the interval)


@dataclass(frozen=True)
class Activity:
    """What the intercom said (or that it did not answer)."""

    answered: bool
    state: str
    registered: bool

    @property
    def idle(self) -> bool:
        return not self.answered or self.state in IDLE_STATES


def ask_intercom(socket_path: str, timeout: float = 5.0) -> Activity:
    """The intercom's state from its control socket; not answering = no call in progress."""
    try:
        reply = request(socket_path, "status", timeout=timeout)
    except TimeoutError:  # there, but wedged: not known to be idle
        return Activity(True, "unknown", False)
    except (OSError, ValueError):
        return Activity(False, "down", False)
    if not isinstance(reply, dict) or not reply.get("ok"):
        return Activity(True, "unknown", False)
    return Activity(True, str(reply.get("state") or "unknown"), bool(reply.get("registered")))


def in_window(window: str | None, now: float) -> bool:
    """Whether local time ``now`` lies inside "HH:MM-HH:MM" (None: always)."""
    span = window_minutes(window) if window else None
    if span is None:
        return window is None
    t = time.localtime(now)
    minute = t.tm_hour * 60 + t.tm_min
    start, end = span
    return start <= minute < end if start < end else minute >= start or minute < end


def reboot_verdict(act: Activity, window: str | None, now: float,
                   silent_since: float | None) -> str | None:
    """None when the box may reboot into the new slot now, else why it waits (one line)."""
    if not in_window(window, now):
        return f"waiting for update.window {window}"
    if not act.answered:
        if silent_since is not None and now - silent_since >= DOWN_GRACE:
            return None
        return f"the intercom does not answer: waiting for it (at most {DOWN_GRACE:g} s)"
    if not act.idle:
        return f"the intercom is busy ({act.state})"
    if not act.registered:
        return "the intercom is not registered with the PBX: waiting for it"
    return None


# ----------------------------------------------------------------------------- the commands
def rauc_install(path: Path, force: bool, rauc: str = "rauc") -> subprocess.CompletedProcess[str]:
    """``rauc install`` of a checked bundle (``--force``: RAUC's min-bundle-version lifted)."""
    args = [rauc, "install", *(["--ignore-version-limit"] if force else []), str(path)]
    try:
        return subprocess.run(args, capture_output=True, text=True, errors="replace",
                              timeout=INSTALL_TIMEOUT, stdin=subprocess.DEVNULL,
                              env={**os.environ, "LC_ALL": "C"})
    except FileNotFoundError:
        return subprocess.CompletedProcess(args, 127, "", f"{rauc}: not installed")
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(args, 124, "", f"rauc install took longer than "
                                                          f"{INSTALL_TIMEOUT:g} s")


def rauc_primary(rauc: str = "rauc", paths: SlotPaths | None = None) -> str | None:
    """The slot RAUC will boot next ("A"/"B", from ``rauc status``), None when not known."""
    try:
        done = subprocess.run([rauc, "status", "--output-format=json"], capture_output=True,
                              text=True, errors="replace", timeout=60,
                              stdin=subprocess.DEVNULL)
        doc = json.loads(done.stdout) if done.returncode == 0 else {}
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return None
    name = doc.get("boot_primary") if isinstance(doc, dict) else None
    return bootnames(paths or SlotPaths()).get(name) if isinstance(name, str) else None


def system_reboot() -> None:
    """Restart the box (into the slot RAUC made primary)."""
    subprocess.run(["systemctl", "reboot"], check=False, timeout=60)


@dataclass
class Updater:
    """The flow with its I/O injectable: tests give it a temporary state folder, fake slot
    files and a stand-in for the two commands this host cannot run (rauc install, reboot)."""

    settings: UpdateSettings
    socket_path: str
    paths: SlotPaths = SlotPaths()
    rauc: str = "rauc"
    rauc_conf: str | None = None
    install: Callable[[Path, bool], subprocess.CompletedProcess[str]] | None = None
    reboot: Callable[[], None] = system_reboot
    poll: float = POLL
    now: Callable[[], float] = time.time
    stop: threading.Event | None = None
    wake: threading.Event = field(default_factory=threading.Event)  # set: the next round now
    say: Callable[[str], None] | None = None  # the CLI prints progress; the service logs it
    boot: Callable[[], str] = boot_id  # this boot's id: a pending reboot names the boot
    primary: Callable[[], str | None] | None = None  # the slot RAUC boots next (rauc status)

    def __post_init__(self) -> None:
        self.store = Store(self.settings.state_dir)
        self.stop = self.stop or threading.Event()
        self._silent_since: float | None = None
        self._next_check: float | None = None
        self._retry = RETRY
        self.waited = 0  # questions to a busy intercom so far (tests and logs)

    # ------------------------------------------------------------------ helpers
    def _tell(self, text: str) -> None:
        log.info("%s", text)
        if self.say is not None:
            self.say(text)

    def _run_install(self, path: Path, force: bool) -> subprocess.CompletedProcess[str]:
        if self.install is not None:
            return self.install(path, force)
        return rauc_install(path, force, self.rauc)

    @contextlib.contextmanager
    def _exclusive(self) -> Any:
        """One update at a time (the service's pull and an ``intercom update`` by hand)."""
        folder = Path(self.settings.state_dir)
        try:
            folder.mkdir(mode=0o755, parents=True, exist_ok=True)
            fd = os.open(folder / BUSY, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            raise UpdateError("storage", f"cannot use {folder}: {exc.strerror or exc}",
                              "failed") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise UpdateError("busy", "another update is in progress", "failed") from None
            yield
        finally:
            os.close(fd)

    def _record(self, exc: UpdateError) -> None:
        if getattr(exc, "recorded", False):
            return
        exc.recorded = True  # type: ignore[attr-defined]
        self.store.record(exc.result, exc.reason, exc.version, str(exc), now=self.now())
        log.warning("update %s%s: %s", exc.result, f" ({exc.version})" if exc.version else "",
                    exc)
        if self.say is not None:
            self.say(f"update {exc.result}: {exc}")

    def wait_idle(self, why: str) -> bool:
        """Block until the intercom has no call; False when asked to stop first."""
        told = False
        assert self.stop is not None
        while not self.stop.is_set():
            act = ask_intercom(self.socket_path)
            if act.idle:
                return True
            self.waited += 1
            if not told:
                self._tell(f"{why}: waiting for the intercom to be idle (now {act.state})")
                told = True
            self.stop.wait(self.poll)
        return False

    # ------------------------------------------------------------------ one bundle
    def install_file(self, path: Path, force: bool = False, reboot: bool = True,
                     source: dict[str, str] | None = None) -> dict[str, Any]:
        """Check ``path``, wait for idle, install it; returns the ``last`` entry written.
        UpdateError (already recorded in the state) when it is not installed."""
        try:
            return self._install(path, force, reboot, source)
        except UpdateError as exc:
            if source is not None and (exc.reason in FINAL or exc.reason == HELD):
                with self.store.modify() as st:  # judged: not fetched again while unchanged
                    st["source"] = {**source, "version": exc.version,
                                    "refused": exc.reason if exc.reason in FINAL else ""}
            self._record(exc)
            raise

    def _install(self, path: Path, force: bool, reboot: bool,
                 source: dict[str, str] | None) -> dict[str, Any]:
        booted = booted_slot(self.paths)
        if booted is None:
            raise UpdateError("not A/B", "this system was not started by the A/B boot script "
                              "(no rauc.slot= on the kernel command line): nothing to update",
                              "failed")
        installed = installed_version(self.paths)
        state = self.store.read()
        self._tell(f"checking {path.name} (running {installed} from slot {booted})")
        found = bundles.check(path, self.settings.keyring, installed,
                              state["refused_versions"], force, self.rauc_conf, self.rauc)
        pending = state["pending_reboot"]
        if pending and pending["version"] == found.version and not force:
            raise UpdateError(bundles.SAME, f"already installed: {found.version} is in slot "
                              f"{pending['slot']}, waiting for a reboot", version=found.version)
        if not force and (held := install_hold(self.store, found.version)) is not None:
            raise UpdateError(HELD, held, "refused", found.version)
        for attempt in range(BUSY_RETRIES + 1):
            if not self.wait_idle(f"{found.version} verified"):
                raise UpdateError("stopped", "stopped before the install", "failed",
                                  found.version)
            self._tell(f"installing {found.version} into slot {other(booted)}")
            done = self._run_install(path, force)
            if done.returncode == 0:
                break
            result, reason, message = bundles.classify(done.stderr, done.stdout)
            if reason != "busy" or attempt == BUSY_RETRIES:
                raise UpdateError(reason, f"rauc install failed: {message}", result,
                                  found.version)
            # a call began between the idle check and RAUC's pre-install handler, which
            # refused: the checked bundle is kept, and installed once the call is over
            self._tell(f"a call began as {found.version} was to be installed: waiting for it")
        target, now = other(booted), self.now()
        self.store.write_trial({"slot": target, "version": found.version, "from_slot": booted,
                                "from_version": installed, "installed_at": now,
                                "inconclusive": 0})
        message = f"{found.version} installed in slot {target}" + \
            ("" if reboot else "; active after the next reboot")
        entry: dict[str, Any] = {"result": "installed", "reason": "", "version": found.version,
                                 "at": now, "message": message, "acknowledged": False}
        with self.store.modify() as st:
            st["last"] = entry
            st["pending_reboot"] = {"slot": target, "version": found.version, "auto": reboot,
                                    "boot_id": self.boot()}
            if source is not None:
                st["source"] = {**source, "version": found.version}
        self._tell(message)
        return entry

    # ------------------------------------------------------------------ the reboot
    def reboot_if_due(self) -> bool:
        """Reboot now when an installed slot waits for it and the moment is right."""
        pending = self.store.read()["pending_reboot"]
        if not pending or not pending["auto"]:
            return False
        act = ask_intercom(self.socket_path)
        now = self.now()
        if act.answered:
            self._silent_since = None
        elif self._silent_since is None:
            self._silent_since = now
        why = reboot_verdict(act, self.settings.window, now, self._silent_since)
        if why is not None:
            log.debug("reboot into slot %s waits: %s", pending["slot"], why)
            return False
        self._tell(f"rebooting into slot {pending['slot']} ({pending['version']})")
        self.reboot()
        return True

    def reconcile(self) -> None:
        """RAUC finished an install whose end the updater did not see (it was stopped or
        crashed while ``rauc install`` ran): record the trial and the pending reboot now, or
        the new slot would start without being on trial."""
        booted = booted_slot(self.paths)
        if booted is None or self.store.read_trial() is not None \
                or self.store.read()["pending_reboot"]:
            return
        primary = self.primary() if self.primary else rauc_primary(self.rauc, self.paths)
        if primary is None or primary == booted:
            return
        version = rauc_versions(self.paths).get(primary, "unknown")
        now = self.now()
        self.store.write_trial({"slot": primary, "version": version, "from_slot": booted,
                                "from_version": installed_version(self.paths),
                                "installed_at": now, "inconclusive": 0})
        with self.store.modify() as st:
            st["last"] = {"result": "installed", "reason": "", "version": version, "at": now,
                          "message": f"{version} found installed in slot {primary} (the "
                          "updater had stopped before recording it)", "acknowledged": False}
            st["pending_reboot"] = {"slot": primary, "version": version, "auto": True,
                                    "boot_id": self.boot()}
        self._tell(f"{version} found installed in slot {primary}: on trial after the reboot")

    def forget_stale_reboot(self) -> None:
        """A pending reboot from an earlier boot has happened (into the new slot, or back)."""
        state = self.store.read()
        pending = state["pending_reboot"]
        if pending and pending["boot_id"] and pending["boot_id"] != self.boot():
            with self.store.modify() as st:
                st["pending_reboot"] = None

    # ------------------------------------------------------------------ pulling
    def check_url(self, url: str, ca_file: str, force: bool = False, reboot: bool = True,
                  conditional: bool = True) -> dict[str, Any] | None:
        """Fetch ``url`` (only when changed, with ``conditional``) and install what came.
        Returns the ``last`` entry, or None when there was nothing new."""
        if booted_slot(self.paths) is None:  # nothing to install into: do not download
            err = UpdateError("not A/B", "this system was not started by the A/B boot script "
                              "(no rauc.slot= on the kernel command line): nothing to update",
                              "failed")
            self._record(err)
            raise err
        digest = download.url_digest(url)
        state = self.store.read()
        source = state["source"] if state["source"] and state["source"].get("url") == digest \
            else None
        known = source if conditional and source and self._settled(source, state) else None
        if known is None and source and conditional and source["version"]:
            held = install_hold(self.store, source["version"])
            if held is not None:  # the same bundle again, and it has to wait: not even fetched
                log.info("%s", held)
                return None
        with self.store.modify() as st:
            st["checked_at"] = self.now()
        try:
            fetched = download.fetch(url, ca_file, self.settings.state_dir,
                                     self.settings.max_size, known)
        except UpdateError as exc:
            self._record(exc)
            raise
        if fetched is None:
            log.debug("%s has not changed", shown_url(url))
            return None
        self._tell(f"downloaded {fetched.size} bytes from {fetched.url}")
        source = {"url": digest, "etag": fetched.etag, "last_modified": fetched.last_modified}
        try:
            return self.install_file(fetched.path, force, reboot, source)
        finally:
            download.discard(Path(self.settings.state_dir))

    def _settled(self, source: dict[str, str], state: dict[str, Any]) -> bool:
        """Whether what the URL served last needs no second look while it is unchanged: it
        runs here, or it was refused for good. Otherwise (its trial was inconclusive, or its
        install failed) the same file is fetched again."""
        version = source.get("version") or ""
        return bool(source.get("refused")) or version in state["refused_versions"] or \
            (bool(version) and version == installed_version(self.paths))

    def run(self, settings_source: Callable[[], UpdateSettings] | None = None) -> None:
        """``intercom updater``: check ``update.url`` every ``update.interval`` and reboot into
        an installed slot at the right moment, until ``stop`` is set (set ``wake`` too, and
        ``wake`` alone for a round now: the settings read again)."""
        assert self.stop is not None
        self.forget_stale_reboot()
        self.reconcile()
        while not self.stop.is_set():
            if settings_source is not None:
                self.settings = settings_source()
                self.store = Store(self.settings.state_dir)
            if self.reboot_if_due():
                return
            s, now = self.settings, self.now()
            state = self.store.read()
            if self._next_check is None:
                last = state["checked_at"]
                self._next_check = now if last is None or last > now else last + s.interval
            if s.url and s.ca_file and now >= self._next_check and not state["pending_reboot"]:
                try:
                    with self._exclusive():
                        self.check_url(s.url, s.ca_file)
                except UpdateError as exc:
                    if exc.result == "failed":  # the box's or the network's fault: soon again
                        self._next_check = self.now() + min(self._retry, s.interval)
                        self._retry = min(self._retry * 2, s.interval)
                        continue
                self._next_check, self._retry = self.now() + s.interval, RETRY
                continue
            pause = self.poll * 3 if state["pending_reboot"] else 60.0
            self.wake.wait(max(0.05, min(pause, self._next_check - now) if s.url else pause))
            self.wake.clear()

    def update(self, source: str, force: bool = False, reboot: bool = True,
               ca_file: str | None = None) -> int:
        """``intercom update FILE|URL``: 0 installed (or nothing to do), 1 not installed."""
        try:
            with self._exclusive():
                if source.startswith(("https://", "http://")):
                    ca = ca_file or self.settings.ca_file
                    if source.startswith("http://"):
                        raise UpdateError("http", "refused: updates are fetched over HTTPS "
                                          "only", "failed")
                    if not ca:
                        raise UpdateError("ca_file", "a URL needs the CA of its server: "
                                          "update.ca_file or --ca-file", "failed")
                    self.check_url(source, ca, force, reboot, conditional=False)
                else:
                    self.install_file(Path(source), force, reboot)
        except UpdateError as exc:
            if exc.reason == "busy":  # the other update records its own result
                if self.say is not None:
                    self.say(f"update not started: {exc}")
            else:
                self._record(exc)
            return 1
        if reboot:
            if not self.reboot_if_due():
                self._tell("the updater (intercom-updater.service) reboots into it at the "
                           "next idle moment" + (f" inside {self.settings.window}"
                                                 if self.settings.window else ""))
        return 0
