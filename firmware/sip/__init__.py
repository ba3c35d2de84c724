"""Sans-I/O SIP core: standard library only, time passed in as ``now``.

Must not import asyncio, socket, time, yaml, gpiozero, alsaaudio, or the media packages.
"""
