"""Developer and test tooling (not shipped in the firmware package): starting the real Asterisk
and baresip peers on loopback, and the ``./build.sh run`` dev environment."""
