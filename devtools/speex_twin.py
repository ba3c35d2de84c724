"""Debian's libspeexdsp through ctypes, set up as the product's ``_aec.SpeexCanceller`` sets it up
(20 ms blocks of 8 kHz, the preprocessor on the echo state, denoise on at 0 dB, AGC off): the
reference the product's own ``-O3`` speexdsp is compared with, and what
devtools/callgrind_aec.py times. No numpy and nothing of the repository: it also runs inside the
image's root (devtools/aec_image_check.py copies it there) against trixie's arm64 libspeexdsp.
"""

from __future__ import annotations

import ctypes

RATE = 8000
FRAME = 160  # 20 ms, the media loop's frame and speex's block


class SpeexTwin:
    """One echo canceller + preprocessor pair of ``library``; ``close`` frees them."""

    def __init__(self, tail_ms: int, library: str = "libspeexdsp.so.1") -> None:
        lib = ctypes.CDLL(library)  # Debian's (or what LD_LIBRARY_PATH puts first)
        lib.speex_echo_state_init.restype = ctypes.c_void_p
        lib.speex_preprocess_state_init.restype = ctypes.c_void_p
        for name in ("speex_echo_cancellation", "speex_preprocess_run", "speex_echo_ctl",
                     "speex_preprocess_ctl", "speex_echo_state_destroy",
                     "speex_preprocess_state_destroy"):
            getattr(lib, name).argtypes = None
        self.lib = lib
        self.echo = ctypes.c_void_p(lib.speex_echo_state_init(FRAME, tail_ms * RATE // 1000))
        self.pre = ctypes.c_void_p(lib.speex_preprocess_state_init(FRAME, RATE))
        rate, on, off, zero = (ctypes.c_int(v) for v in (RATE, 1, 0, 0))
        lib.speex_echo_ctl(self.echo, 24, ctypes.byref(rate))  # SPEEX_ECHO_SET_SAMPLING_RATE
        lib.speex_preprocess_ctl(self.pre, 24, self.echo)  # SPEEX_PREPROCESS_SET_ECHO_STATE
        lib.speex_preprocess_ctl(self.pre, 0, ctypes.byref(on))  # SET_DENOISE
        lib.speex_preprocess_ctl(self.pre, 18, ctypes.byref(zero))  # SET_NOISE_SUPPRESS
        lib.speex_preprocess_ctl(self.pre, 2, ctypes.byref(off))  # SET_AGC
        self._out = ctypes.create_string_buffer(2 * FRAME)

    def close(self) -> None:
        self.lib.speex_preprocess_state_destroy(self.pre)
        self.lib.speex_echo_state_destroy(self.echo)

    def frame(self, played: bytes, mic: bytes) -> bytes:
        """One tick: the frame played and the frame captured in it (16-bit native PCM,
        ``FRAME`` samples each) -> the cleaned frame."""
        if len(played) != 2 * FRAME or len(mic) != 2 * FRAME:
            raise ValueError(f"speex_twin: frames are {2 * FRAME} bytes")
        self.lib.speex_echo_cancellation(self.echo, mic, played, self._out)
        self.lib.speex_preprocess_run(self.pre, self._out)
        return self._out.raw
