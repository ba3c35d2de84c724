"""The compiled media core: the sans-I/O ``MediaCore`` (``_mediacore``: (now, packets in,
captured PCM) → (packets out, PCM to play)) and its units — G.711 (``_g711``), RTP (``_rtp``),
the jitter buffer (``_jitter``), RTCP (``_rtcp``), RFC 4733 DTMF (``_dtmf``), concealment
(``_conceal`` and its G.711 Appendix I subclass ``_plc``), drift correction (``_drift``) — and
its two hooks: ``_transform`` between packets and sockets (SRTP in ``_srtp``) and
``_processor`` around the PCM played and captured (the echo cancellers in ``_aec``, with the
WebRTC module through ``_webrtc_shim``). Each unit has a ``.pxd`` for the others to cimport and a
``.pyi`` that stubtest holds to what was compiled.

Owns the per-packet work of a call. Must not know sockets, threads, ALSA, the SIP stack or the
supervisor: the I/O shell around it is ``firmware/_rtpcore.pyx``, the Python face
``firmware.media``. Nothing outside the media path imports this package (test_architecture).
"""
