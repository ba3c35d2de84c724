"""The peers' old address, kept for the image tests (tests/image) and scripts written against
it: each peer now has its own module (``asterisk``, ``baresip``, ``certificate``,
``chromium``, ``console_page``, the box in ``box/``) with ``loopback``, ``paths``, ``tones``
and ``waiting`` beside them. New code imports from those."""

from __future__ import annotations

from .asterisk import ASTERISK_ROOT, PASSWORDS, WEB, Asterisk
from .baresip import Baresip
from .box.process import Intercom
from .certificate import PRIVATE_NETS, WebCertificate, web_certificate
from .chromium import CHROMIUM, CHROMIUM_ARGS, LOOPBACK_ONLY_ICE, Chromium
from .console_page import ConsolePage, console_link
from .loopback import free_port, host_ipv4_addresses
from .paths import CACHE, REPO
from .tones import tone_wav
from .waiting import wait_for

__all__ = ["ASTERISK_ROOT", "CACHE", "CHROMIUM", "CHROMIUM_ARGS", "LOOPBACK_ONLY_ICE",
           "PASSWORDS", "PRIVATE_NETS", "REPO", "WEB", "Asterisk", "Baresip", "Chromium",
           "ConsolePage", "Intercom", "WebCertificate", "console_link", "free_port",
           "host_ipv4_addresses", "tone_wav", "wait_for", "web_certificate"]
