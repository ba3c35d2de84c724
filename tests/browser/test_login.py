"""Logging the console in, and every way that can fail said in plain words: the form and its
checks, a wrong password, a server that is down, a certificate the browser does not trust (and
the generated one that it can), a denied microphone."""

from __future__ import annotations

import socket
import ssl
import time
from pathlib import Path

import pytest

from devtools.asterisk import PASSWORDS, Asterisk
from devtools.certificate import web_certificate
from devtools.chromium import Chromium
from devtools.console_page import ConsolePage
from devtools.loopback import free_port
from devtools.waiting import wait_for

from ..integration.alsa_env import write_mic_tone

pytestmark = pytest.mark.integration


def test_the_form_logs_in_and_out(asterisk, console) -> None:
    page = console(login=False).open()
    # served by Asterisk, the console proposes Asterisk's own WebSocket
    assert page.page.input_value("#server") == asterisk.ws_url
    assert page.page.input_value("#door") == "5002"
    assert page.wait_status("offline") == "not logged in"
    page.page.fill("#user", "5004")
    page.page.fill("#password", PASSWORDS["5004"])
    page.page.fill("#code", "*1")
    page.click("login")
    assert page.wait_status("registered") == "registered as 5004"
    assert asterisk.registered("5004")
    assert page.page.is_hidden("#login-form") and page.enabled("call-door")
    page.click("logout")
    page.wait_status("offline")
    wait_for(lambda: not asterisk.registered("5004"), 10, 0.2, "the console to unregister")
    # the password is not remembered; the server, extension and door are
    page.page.reload()
    assert page.page.input_value("#user") == "5004"
    assert page.page.input_value("#password") == ""
    assert page.page.input_value("#code") == ""
    assert not any(PASSWORDS["5004"] in line for line in page.log), "no password in the logs"


def test_bad_fields_are_named_before_anything_is_sent(asterisk, console) -> None:
    page = console(login=False).open()
    page.page.fill("#server", "http://127.0.0.1/ws")
    page.page.fill("#user", "50 04")
    page.page.fill("#code", "open!")
    page.click("login")
    assert page.wait_status("error") == "check the highlighted fields"
    assert "wss://" in page.page.text_content("#server-error")
    assert "extension" in page.page.text_content("#user-error")
    assert "password" in page.page.text_content("#password-error")
    assert "0-9 * # A-D" in page.page.text_content("#code-error")
    assert page.page.get_attribute("#user", "aria-invalid") == "true"
    page.page.fill("#server", f"ws://5004:{PASSWORDS['5004']}@127.0.0.1:1/ws")
    page.click("login")
    assert "own fields" in page.page.text_content("#server-error")
    assert not asterisk.registered("5004")


def test_a_wrong_password_is_said_plainly_and_not_retried(asterisk, console) -> None:
    page = console(password="not-the-password")
    text = page.wait_status("error")
    assert text == "login refused: wrong extension or password", text
    assert page.page.is_visible("#login-form"), "the form is back for another try"
    before = asterisk.log_text().count("Failed to authenticate")
    time.sleep(4)
    assert asterisk.log_text().count("Failed to authenticate") == before, "no retry loop"
    assert page.status() == text


def test_a_server_that_is_down_is_said_plainly(chromium, asterisk, console) -> None:
    dead = f"ws://127.0.0.1:{free_port(socket.SOCK_STREAM)}/ws"
    page = console(server=dead)
    text = page.wait_status("error")
    assert text.startswith(f"cannot reach {dead}: the server is down"), text
    assert "retrying in 1 s" in text
    page.page.wait_for_function(
        "() => document.querySelector('#status').textContent.includes('retrying in 2 s')",
        timeout=10000)  # backing off, not hammering


def test_wss_with_the_generated_certificate(tmp_path: Path, chromium: Chromium) -> None:
    cert = web_certificate(["localhost", "127.0.0.1"], folder=tmp_path / "cert")
    tls_port = free_port(socket.SOCK_STREAM)
    pbx = Asterisk(http_port=free_port(socket.SOCK_STREAM), tls=cert, tls_port=tls_port)
    pbx.start()
    try:
        # the certificate verifies against the local CA, for both names
        ctx = ssl.create_default_context(cafile=str(cert.ca))
        for name in ("127.0.0.1", "localhost"):
            with socket.create_connection(("127.0.0.1", tls_port), timeout=5) as raw, \
                    ctx.wrap_socket(raw, server_hostname=name) as tls:
                assert tls.version() in ("TLSv1.2", "TLSv1.3")
        assert (cert.key.stat().st_mode & 0o077) == 0, "the key is private"
        # a browser that does not trust it is told so
        wss = f"wss://127.0.0.1:{tls_port}/ws"
        page = ConsolePage(chromium, pbx).open(server=wss, user="5004",
                                               password=PASSWORDS["5004"])
        text = page.wait_status("error")
        assert "does not trust its certificate" in text, text
        assert f"https://127.0.0.1:{tls_port}/" in text
        page.close()
        # one that does (as after installing ca.crt) gets the page and the WebSocket over TLS:
        # https://HOST:PORT/ redirects to the console, which proposes wss:// on its own origin
        context = chromium.browser.new_context(ignore_https_errors=True)
        trusted = context.new_page()
        trusted.goto(f"https://127.0.0.1:{tls_port}/")
        assert trusted.url.endswith("/static/index.html")
        assert trusted.input_value("#server") == wss
        trusted.fill("#user", "5004")
        trusted.fill("#password", PASSWORDS["5004"])
        trusted.click("#login")
        trusted.wait_for_selector("#status[data-state='registered']", timeout=15000)
        assert "transport=ws" in pbx.contacts() and pbx.registered("5004")
        context.close()
    finally:
        pbx.cleanup()


def test_a_denied_microphone_is_said_plainly(tmp_path: Path, asterisk, box) -> None:
    write_mic_tone(700)
    browser = Chromium(tmp_path / "chromium", fake_ui=False).start()
    try:
        page = ConsolePage(browser, asterisk)
        cdp = page.page.context.new_cdp_session(page.page)
        cdp.send("Browser.setPermission", {  # as if the user had clicked "Block"
            "permission": {"name": "microphone"}, "setting": "denied",
            "origin": f"http://127.0.0.1:{asterisk.http_port}"})
        page.open(server=asterisk.ws_url, user="5004", password=PASSWORDS["5004"])
        page.wait_status("registered")  # calls still ring ...
        notice = page.page.text_content("#notice")
        assert "microphone access was denied" in notice and "cannot talk" in notice, notice
        b = box()
        b.wait_state("idle")
        b.press("call")
        page.wait_ringing()
        page.click("answer")  # ... but answering says why it cannot
        page.page.wait_for_function(
            "() => document.querySelector('#notice').textContent.includes('could not answer')")
        assert "microphone access was denied" in page.page.text_content("#notice")
        b.wait_state("idle", 20)
        page.close()
    finally:
        browser.stop()


def test_a_link_to_another_server_is_flagged(asterisk, console) -> None:
    page = console(login=False).open(server="wss://pbx.example.invalid:8089/ws", user="5004")
    notice = page.page.text_content("#notice")
    assert "pbx.example.invalid:8089" in notice and "trust" in notice, notice
    assert page.status() == "not logged in", "nothing is sent before the user logs in"
