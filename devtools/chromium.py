"""Debian's Chromium as the reception console's browser, driven by Playwright for Python:
headless, a fresh profile, a fake microphone playing a tone, WebRTC kept on loopback.
Nothing is downloaded: Playwright only drives the installed browser."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .tones import tone_wav

CHROMIUM = os.environ.get("INTERCOM_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--use-fake-device-for-media-stream",  # a fake microphone ...
    "--use-fake-ui-for-media-stream",      # ... that the page may use without a prompt
    "--allow-loopback-in-peer-connection",  # ICE host candidates on 127.0.0.1
    "--disable-features=WebRtcHideLocalIpsWithMdns",  # real addresses, not mDNS names
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--no-first-run", "--no-sandbox",
]


# Test instrumentation, not part of the console: drops non-loopback a=candidate lines from the
# local description SIP.js reads after ICE gathering.
LOOPBACK_ONLY_ICE = """
(() => {
  const desc = Object.getOwnPropertyDescriptor(RTCPeerConnection.prototype, "localDescription");
  Object.defineProperty(RTCPeerConnection.prototype, "localDescription", {
    configurable: true,
    get() {
      const d = desc.get.call(this);
      if (!d || !d.sdp) return d;
      const sdp = d.sdp.split("\\r\\n").filter((line) => !line.startsWith("a=candidate:") ||
        / (127\\.[0-9.]+|::1) [0-9]+ typ /.test(line)).join("\\r\\n");
      return new RTCSessionDescription({ type: d.type, sdp });
    },
  });
})();
"""


class Chromium:
    """Debian's Chromium driven by Playwright for Python: headless, a fresh profile, a fake
    microphone playing a ``mic_hz`` tone, WebRTC allowed on loopback. Nothing is downloaded:
    Playwright only drives the installed browser."""

    def __init__(self, tmp: Path, mic_hz: float = 1000.0, fake_ui: bool = True) -> None:
        """``fake_ui=False``: no automatic "allow" for the microphone (the page's permission
        then follows the browser's site settings)."""
        if not Path(CHROMIUM).exists():
            raise RuntimeError(f"no Chromium at {CHROMIUM}: run ./build.sh setup "
                               "(it installs Debian's chromium)")
        self.dir = tmp
        tmp.mkdir(parents=True, exist_ok=True)
        self.mic = tone_wav(tmp / f"mic-{mic_hz:g}.wav", mic_hz)
        self.fake_ui = fake_ui
        self._pw: Any = None
        self.browser: Any = None

    # one Playwright driver per process (its sync API cannot be started twice in a thread),
    # shared by every Chromium that is running
    _driver: Any = None
    _users = 0

    def start(self) -> Chromium:
        from playwright.sync_api import sync_playwright

        if Chromium._driver is None:
            Chromium._driver = sync_playwright().start()
        Chromium._users += 1
        self._pw = Chromium._driver
        try:
            self.browser = self._pw.chromium.launch(
                executable_path=CHROMIUM, headless=True,
                args=[*(a for a in CHROMIUM_ARGS
                        if self.fake_ui or a != "--use-fake-ui-for-media-stream"),
                      f"--use-file-for-fake-audio-capture={self.mic}"])
        except Exception:
            self.stop()
            raise
        return self

    def new_page(self, log: list[str] | None = None, loopback_only: bool = True) -> Any:
        """A page in a fresh browser context (its own storage); console messages go to
        ``log``. ``loopback_only``: the page's SDP offers and answers carry only 127.0.0.1 and
        ::1 ICE candidates (Chromium gathers every interface's address; tests must not hand
        the PBX any address but loopback)."""
        context = self.browser.new_context(viewport={"width": 420, "height": 860})
        if loopback_only:
            context.add_init_script(LOOPBACK_ONLY_ICE)
        page = context.new_page()
        if log is not None:
            page.on("console", lambda m: log.append(f"{m.type}: {m.text}"))
            page.on("pageerror", lambda e: log.append(f"pageerror: {e}"))
        return page

    def stop(self) -> None:
        if self.browser is not None:
            self.browser.close()
            self.browser = None
        if self._pw is not None:
            self._pw = None
            Chromium._users -= 1
            if Chromium._users == 0:
                Chromium._driver.stop()
                Chromium._driver = None

