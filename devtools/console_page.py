"""The reception console (web/) in a Chromium page, driven by its stable element ids: login
by kiosk parameters, status, ringing, the console's event log and audio probes."""

from __future__ import annotations

from .asterisk import Asterisk
from .chromium import Chromium


def console_link(base: str, **params: str) -> str:
    """The console URL with kiosk parameters (server, user, password, door, code)."""
    from urllib.parse import urlencode

    return f"{base}?{urlencode(params)}" if params else base


class ConsolePage:
    """The reception console (web/) in a Chromium page, driven by its stable element ids."""

    def __init__(self, chromium: Chromium, asterisk: Asterisk) -> None:
        self.log: list[str] = []
        self.page = chromium.new_page(self.log)
        self.asterisk = asterisk

    def open(self, **params: str) -> ConsolePage:
        """Load the console from Asterisk's HTTP server; with ``password`` among the kiosk
        parameters it logs in by itself."""
        self.page.goto(console_link(self.asterisk.console_url, **params))
        return self

    def status(self) -> str:
        return self.page.text_content("#status") or ""

    def wait_status(self, state: str, timeout: float = 15) -> str:
        """Wait for ``#status[data-state=state]`` (offline, connecting, registered, error)."""
        self.page.wait_for_selector(f"#status[data-state='{state}']", timeout=timeout * 1000)
        return self.status()

    def wait_ringing(self, timeout: float = 15) -> str:
        self.page.wait_for_selector("#incoming:not([hidden])", timeout=timeout * 1000)
        return self.page.text_content("#caller") or ""

    def wait_event(self, kind: str, since: int = 0, timeout: float = 15) -> dict:
        """The first ``window.consoleEvents`` entry of ``kind`` at index >= ``since``."""
        handle = self.page.wait_for_function(
            "([kind, since]) => window.consoleEvents.slice(since).find(e => e.type === kind)",
            arg=[kind, since], timeout=timeout * 1000)
        return handle.json_value()

    def event_count(self) -> int:
        return self.page.evaluate("window.consoleEvents.length")

    def click(self, element_id: str) -> None:
        self.page.click(f"#{element_id}")

    def enabled(self, element_id: str) -> bool:
        return self.page.is_enabled(f"#{element_id}")

    def audio(self, name: str) -> float:
        """``window.consoleAudio.<name>()``: remotePeakHz, micPeakHz, remoteLevel, micLevel."""
        return float(self.page.evaluate(f"window.consoleAudio.{name}()"))

    def media(self) -> dict:
        """``window.consoleCall.media()``: the ICE pair, DTLS state, SRTP cipher, codecs."""
        return self.page.evaluate("window.consoleCall.media()")

    def log_entries(self) -> list[str]:
        return self.page.locator("#log li").all_text_contents()

    def close(self) -> None:
        try:
            self.page.context.close()
        except Exception:  # noqa: BLE001 - the browser may already be gone
            pass
