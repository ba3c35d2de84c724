"""Updates of the box's root file system: signed RAUC bundles into the other A/B slot.

``state`` (the record in /data/update), ``slots`` (which slot is booted, what each holds),
``bundle`` (checking a bundle before RAUC installs it), ``download`` (the HTTPS pull),
``installer`` (``intercom update`` and the ``intercom updater`` loop), and the health check
after a reboot. Runs as root beside the intercom, which it only asks through the control
socket; nothing in firmware.sip, firmware.media or the supervisor imports this package.
"""
