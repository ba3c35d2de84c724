"""``python -m firmware.fleet`` runs ``intercom-fleet``."""

from .cli import main

raise SystemExit(main())
