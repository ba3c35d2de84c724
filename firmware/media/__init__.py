"""Media: the G.711 codec API, audio sources and sinks, and the RTP stream runner.

Must not import the SIP core, asyncio, gpiozero or yaml.
"""
