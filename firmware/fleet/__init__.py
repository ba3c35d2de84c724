"""``intercom-fleet``: a building's boxes from one inventory file.

Reads an inventory (CSV or YAML: one row per box), checks every row, and writes what a site
needs: one provisioning YAML per box (served by MAC), the Asterisk PJSIP endpoints and dial
plan for them, and the generated SIP passwords, kept across runs. Runs on the installer's
machine, never on the box; knows the box only through firmware.config, which validates every
file it writes.
"""
