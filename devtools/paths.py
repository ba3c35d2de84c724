"""Where things are for the peers and harnesses: the repository and the cache folder outside it
(``INTERCOM_CACHE``: the Asterisk root, the image's base root, the console's certificate)."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("INTERCOM_CACHE", "/var/cache/intercom"))
