"""A stand-alone RTP peer for network tests: runs one media session (tone out, WAV in) for a
while and prints its statistics as JSON. Meant to run inside a test's network namespace:

    ip netns exec NS python -m devtools.rtp_peer BIND PORT REMOTE REMOTE_PORT HZ SECONDS OUT.wav
"""

from __future__ import annotations

import json
import sys
import time

from firmware.events import MediaParams
from firmware.media.audio import ToneSource, WavSink
from firmware.media.stream import RtpPorts, RtpSession


def main() -> None:
    bind, port, remote, remote_port, hz, seconds, out = sys.argv[1:8]
    ports = RtpPorts(bind, int(port))
    sink = WavSink(out)
    session = RtpSession(ports, ToneSource(float(hz)), sink)
    session.start(MediaParams(remote, int(remote_port), 0, "PCMU", 101, 20, "sendrecv"))
    time.sleep(float(seconds))
    session.stop()
    sink.close()
    ports.close()
    print(json.dumps(session.final_stats))


if __name__ == "__main__":
    main()
