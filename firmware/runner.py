"""Running the intercom: one App until asked to stop, or — with ``provisioning.url`` in the boot
YAML — the provisioned configuration over the boot YAML, fetched on a schedule and swapped in at
an idle moment.

Owns when an App is made, started, kept, replaced and stopped, and the fetch loop around
``firmware.provisioning`` (the document's rules) and ``firmware.provisioning_io`` (its I/O).
Must not know what an App does inside: it sees ``start``/``stop``/``state``/``dispatch`` and
the board's buttons.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit

from . import provisioning_io
from . import supervisor as sv
from .app import App
from .config import BootConfig, Config, ProvisioningSettings
from .provisioning import (
    CACHE_NAME,
    Provisioner,
    cache_dir,
    dhcp_template,
    shown_url,
    signature_url,
    url_for,
)
from .startup import StartupError
from .systemd import Notifier

log = logging.getLogger("intercom")


async def run(cfg: Config | BootConfig, stop: asyncio.Event) -> None:
    """Run the intercom until ``stop``. A boot YAML with ``provisioning.url``: the provisioned
    configuration over it, swapped in at an idle moment (``run_provisioned``)."""
    if isinstance(cfg, BootConfig):
        if cfg.provisioning.url:
            await run_provisioned(cfg, stop)
            return
        assert cfg.config is not None  # parse_boot requires sip.* without provisioning.url
        cfg = cfg.config
    app = App(cfg)
    await app.start()
    try:
        await stop.wait()
    finally:
        await app.stop()


SWAP_STATES = (sv.State.IDLE.value, sv.State.OFFLINE.value)  # no call, nothing ringing


async def _provision(prov: Provisioner, wake: asyncio.Event,
                     fetch: Callable[[str], Awaitable[bytes]] | None = None) -> None:
    """Fetch at once and then every provisioning.interval (the retry delay after a failure);
    the door keeps working meanwhile: the blocking fetch runs in a thread. ``url: dhcp``: the
    URL of DHCP option 43, read again before every fetch. With ``signing_cert`` the document's
    ``.sig`` is fetched too and must verify before the document is even parsed."""
    p = prov.boot.provisioning
    assert p.url is not None and p.ca_file is not None
    ca_file = p.ca_file

    async def real_fetch(target: str) -> bytes:
        return await asyncio.to_thread(provisioning_io.fetch, target, ca_file, p.timeout,
                                       p.max_size)

    get = fetch or real_fetch
    while True:
        try:
            template = p.url
            if template == "dhcp":
                options = await asyncio.to_thread(provisioning_io.dhcp_options,
                                                  Path(p.dhcp_leases))
                try:
                    template = dhcp_template(options)
                except ValueError as exc:
                    raise provisioning_io.FetchError(str(exc)) from None
            if prov.mac is None:
                host, port = urlsplit(template).hostname or "", urlsplit(template).port or 443
                prov.mac = await asyncio.to_thread(provisioning_io.route_mac, host, port)
            prov.url = url_for(template, prov.mac)
            body = await asyncio.wait_for(get(prov.url), p.timeout + 5)
            sig = await _signature(p, prov.url, body, get) if p.signing_cert else None
        except provisioning_io.FetchError as exc:
            prov.fetch_failed(str(exc), time.time())
        except TimeoutError:
            prov.fetch_failed(f"the server took longer than provisioning.timeout "
                              f"({p.timeout:g} s)", time.time())
        except provisioning_io.SignatureError as exc:
            prov.refuse(f"{shown_url(prov.url or '')}: {exc}", time.time())
        else:
            if prov.offer(body, "server", time.time(), sig):
                wake.set()
        await asyncio.sleep(prov.next_delay())


async def _signature(p: ProvisioningSettings, url: str, body: bytes,
                     get: Callable[[str], Awaitable[bytes]]) -> bytes:
    """``<url>.sig``, checked against provisioning.signing_cert: a signature that cannot be
    fetched or does not verify refuses the document (SignatureError)."""
    assert p.signing_cert is not None
    where = shown_url(signature_url(url))
    try:
        sig = await asyncio.wait_for(get(signature_url(url)), p.timeout + 5)
    except provisioning_io.FetchError as exc:
        raise provisioning_io.SignatureError(f"no signature: {where}: {exc}") from None
    except TimeoutError:
        raise provisioning_io.SignatureError(f"no signature: {where}: the server took longer "
                                             f"than provisioning.timeout") from None
    await asyncio.to_thread(provisioning_io.verify, body, sig, p.signing_cert)
    return sig


async def run_provisioned(boot: BootConfig, stop: asyncio.Event,
                          fetch: Callable[[str], Awaitable[bytes]] | None = None,
                          make_app: Callable[[Config], App] = App) -> None:
    """The boot YAML as the floor, the last good provisioned document (cached, then fetched)
    over it. A changed configuration replaces the App only while it is idle or offline (no call,
    nothing ringing; checked again right before the swap): the old App un-REGISTERs and stops,
    a new one starts with the new settings and REGISTERs; no reboot. A press that arrives while
    the old App stops is replayed on the new one. Until any configuration is complete (a boot
    YAML that leaves sip.* to the server) the process waits and says so to systemd."""
    prov = Provisioner(boot)
    p = boot.provisioning
    data = provisioning_io.DATA if provisioning_io.data_usable() else None
    prov.cache_dir, prov.cache_where = cache_dir(boot, data)
    log.info("provisioning: the last good configuration is kept in %s (%s)", prov.cache_dir,
             prov.cache_where)
    try:
        cached = await asyncio.to_thread(provisioning_io.read_cache, prov.cache_dir, CACHE_NAME,
                                         p.max_size, p.signing_cert)
    except provisioning_io.CacheError as exc:
        log.warning("provisioning: the cached configuration %s is ignored: %s",
                    prov.cache_dir / CACHE_NAME, exc)
        cached = None
    if cached is not None:
        prov.offer(cached[0], "cache", time.time(), cached[1])
    wake = asyncio.Event()
    notifier = Notifier()
    waiting_said = False
    fetcher = asyncio.create_task(_provision(prov, wake, fetch))
    app: App | None = None
    try:
        while not stop.is_set():
            if app is None and (cfg := prov.config()) is not None:
                app = await _start(prov, cfg, make_app)
            elif app is not None and (new := prov.pending()) is not None \
                    and app.state in SWAP_STATES:
                app = await _swap(prov, app, new, make_app)
            if app is None and not waiting_said:
                notifier.ready("waiting for the provisioning server")
                log.warning("the boot YAML leaves sip.server/sip.username to the provisioning "
                            "server: waiting for %s", prov.label())
                waiting_said = True
            if app is None and notifier.watchdog_interval:
                notifier.watchdog()
            wake.clear()
            stopped = asyncio.ensure_future(stop.wait())
            woken = asyncio.ensure_future(wake.wait())
            # a pending swap looks at the state once a second; otherwise sleep until woken
            poll = 1.0 if (app is not None and prov.pending()) else None
            if app is None:
                poll = notifier.watchdog_interval or poll
            await asyncio.wait({stopped, woken}, timeout=poll,
                               return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            woken.cancel()
    finally:
        fetcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await fetcher
        if app is not None:
            await app.stop()


def _attach(prov: Provisioner, app: App) -> None:
    app.provisioning_status = prov.status
    prov.report = app.chronicle.provisioning


async def _start(prov: Provisioner, cfg: Config, make_app: Callable[[Config], App]) -> App:
    """Start with ``cfg``; a provisioned one that cannot start falls back to the previous good
    one (ultimately the boot YAML, whose failure stops the process as without provisioning)."""
    while True:
        app = make_app(cfg)
        _attach(prov, app)
        try:
            await app.start()
        except StartupError as exc:
            await app.stop()
            if prov.config() is not cfg or cfg is prov.boot.config:
                raise
            prov.start_failed(cfg, str(exc))
            nxt = prov.config()
            if nxt is None:
                raise
            cfg = nxt
            continue
        prov.applied(cfg)
        await _keep(prov)
        return app


async def _keep(prov: Provisioner) -> None:
    """The document the intercom started with, to the cache file (never one that could not
    start); the host firewall's .path unit re-reads the trust from it."""
    if (keep := prov.to_keep()) is None or prov.cache_dir is None:
        return
    try:
        await asyncio.to_thread(provisioning_io.save_cache, prov.cache_dir, CACHE_NAME, *keep)
    except OSError as exc:
        log.warning("cannot keep the provisioned configuration in %s: %s (a restart while "
                    "the server is down falls back to the boot YAML)", prov.cache_dir,
                    exc.strerror or exc)
        return
    prov.kept(keep[0])


async def _swap(prov: Provisioner, old: App, new: Config,
                make_app: Callable[[Config], App]) -> App:
    """Replace the idle App with one running ``new``: presses seen while the old one stops
    are replayed on the new one (a button is never lost for longer than the swap)."""
    if old.state not in SWAP_STATES:  # the state again, right before acting on it
        return old
    began = time.monotonic()
    pressed: list[str] = []

    def hold(event: sv.Event) -> list[sv.Command]:
        if isinstance(event, sv.Press):
            pressed.append(event.button)
        return []

    old.dispatch = hold  # type: ignore[method-assign]  # presses now wait for the new App
    log.info("applying the provisioned configuration %s (the intercom is %s)",
             prov.good_hash, old.state)
    await old.stop()
    app = await _start(prov, new, make_app)
    for name in pressed:
        if app.board is not None and name in app.board.buttons:
            app.dispatch(sv.Press(name))
    log.info("provisioned configuration %s applied in %.0f ms%s", prov.applied_hash,
             (time.monotonic() - began) * 1000,
             f" ({len(pressed)} press(es) replayed)" if pressed else "")
    return app
