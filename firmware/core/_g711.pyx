# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""G.711 mu-law and A-law, bit-exact to ITU-T G.191: tables built once, frame and bytes faces.

Owns the codec only: ``encode_c``/``decode_c`` for the media core (no GIL) and the bytes
functions the rest of the firmware uses (re-exported by ``firmware._rtpcore``). Knows nothing
about RTP, timing or sockets; ``firmware.media._reference`` is its readable twin.
"""

from libc.stdint cimport int16_t, uint8_t, uint16_t
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE

cdef uint8_t _ulaw_enc[65536]
cdef uint8_t _alaw_enc[65536]
cdef int16_t _ulaw_dec[256]
cdef int16_t _alaw_dec[256]


cdef int _alaw_encode_calc(int x) noexcept nogil:
    cdef int ix = ((~x) >> 4) if x < 0 else (x >> 4)
    cdef int exp
    if ix > 15:
        exp = 1
        while ix > 31:
            ix >>= 1
            exp += 1
        ix = (ix - 16) + (exp << 4)
    if x >= 0:
        ix |= 0x80
    return ix ^ 0x55


cdef int _alaw_decode_calc(int code) noexcept nogil:
    cdef int ix = (code ^ 0x55) & 0x7F
    cdef int exp = ix >> 4
    cdef int mant = ix & 0x0F
    if exp > 0:
        mant += 16
    mant = (mant << 4) + 8
    if exp > 1:
        mant <<= exp - 1
    return mant if code > 127 else -mant


cdef int _ulaw_encode_calc(int x) noexcept nogil:
    cdef int mag = ((~x) >> 2) if x < 0 else (x >> 2)
    cdef int seg = 1
    cdef int i
    mag += 33
    if mag > 0x1FFF:
        mag = 0x1FFF
    i = mag >> 6
    while i:
        seg += 1
        i >>= 1
    cdef int code = ((8 - seg) << 4) | (0x0F - ((mag >> seg) & 0x0F))
    return (code | 0x80) if x >= 0 else code


cdef int _ulaw_decode_calc(int code) noexcept nogil:
    cdef int inv = (~code) & 0xFF
    cdef int exp = (inv >> 4) & 7
    cdef int mant = inv & 0x0F
    cdef int step = 4 << (exp + 1)
    cdef int mag = (0x80 << exp) + step * mant + step // 2 - 4 * 33
    return mag if code >= 0x80 else -mag


cdef void _build_tables() noexcept nogil:
    cdef int i
    for i in range(65536):
        _ulaw_enc[i] = <uint8_t>_ulaw_encode_calc(<int16_t>i)
        _alaw_enc[i] = <uint8_t>_alaw_encode_calc(<int16_t>i)
    for i in range(256):
        _ulaw_dec[i] = <int16_t>_ulaw_decode_calc(i)
        _alaw_dec[i] = <int16_t>_alaw_decode_calc(i)


_build_tables()
cdef uint16_t _probe = 1
cdef bint _LITTLE_ENDIAN = (<uint8_t *>&_probe)[0] == 1

ULAW = 0
ALAW = 1


cdef void encode_c(const int16_t *pcm, uint8_t *out, int n, int law) noexcept nogil:
    cdef int i
    cdef const uint8_t *table = &_alaw_enc[0] if law else &_ulaw_enc[0]
    for i in range(n):
        out[i] = table[<uint16_t>pcm[i]]


cdef void decode_c(const uint8_t *data, int16_t *out, int n, int law) noexcept nogil:
    cdef int i
    cdef const int16_t *table = &_alaw_dec[0] if law else &_ulaw_dec[0]
    for i in range(n):
        out[i] = table[data[i]]


cdef bint _quiet(const uint8_t *data, int n, const int16_t *table) noexcept nogil:
    cdef int i, v
    for i in range(n):
        v = table[data[i]]
        if v >= QUIET_PEAK or v <= -QUIET_PEAK:
            return False
    return True


cdef bint ulaw_quiet_c(const uint8_t *data, int n) noexcept nogil:
    """Every sample of the mu-law frame under QUIET_PEAK (a pause: where dropping or
    repeating 20 ms is not heard)."""
    return _quiet(data, n, _ulaw_dec)


cdef bint alaw_quiet_c(const uint8_t *data, int n) noexcept nogil:
    return _quiet(data, n, _alaw_dec)


cdef inline const uint8_t *_view(object data, Py_ssize_t *n, Py_buffer *view,
                                 bint *held) except NULL:
    """Borrow the bytes of ``data``: the bytes fast path, else the buffer protocol."""
    if type(data) is bytes:
        n[0] = PyBytes_GET_SIZE(data)
        held[0] = False
        return <const uint8_t *>PyBytes_AS_STRING(data)
    PyObject_GetBuffer(data, view, PyBUF_SIMPLE)
    held[0] = True
    n[0] = view.len
    return <const uint8_t *>view.buf


cdef bytes _encode_bytes(object pcm, int law):
    cdef Py_buffer view
    cdef Py_ssize_t n, i
    cdef bint held
    cdef const uint8_t *src = _view(pcm, &n, &view, &held)
    if n & 1:
        if held:
            PyBuffer_Release(&view)
        raise ValueError("PCM must be whole 16-bit samples")
    cdef bytes out = PyBytes_FromStringAndSize(NULL, n // 2)
    cdef uint8_t *dst = <uint8_t *>PyBytes_AS_STRING(out)
    cdef const uint8_t *table = &_alaw_enc[0] if law else &_ulaw_enc[0]
    for i in range(n // 2):  # little-endian on any host
        dst[i] = table[<uint16_t>(src[2 * i] | (src[2 * i + 1] << 8))]
    if held:
        PyBuffer_Release(&view)
    return out


cdef bytes _decode_bytes(object data, int law):
    cdef Py_buffer view
    cdef Py_ssize_t n, i
    cdef bint held
    cdef const uint8_t *src = _view(data, &n, &view, &held)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, n * 2)
    cdef uint8_t *dst = <uint8_t *>PyBytes_AS_STRING(out)
    cdef const int16_t *table = &_alaw_dec[0] if law else &_ulaw_dec[0]
    cdef uint16_t v
    cdef int16_t *dst16 = <int16_t *>dst
    if _LITTLE_ENDIAN:
        for i in range(n):
            dst16[i] = table[src[i]]
    else:
        for i in range(n):
            v = <uint16_t>table[src[i]]
            dst[2 * i] = v & 0xFF
            dst[2 * i + 1] = v >> 8
    if held:
        PyBuffer_Release(&view)
    return out


def encode_ulaw(pcm) -> bytes:
    """16-bit little-endian signed PCM -> G.711 mu-law (ITU-T G.191 bit-exact)."""
    return _encode_bytes(pcm, 0)


def encode_alaw(pcm) -> bytes:
    return _encode_bytes(pcm, 1)


def decode_ulaw(data) -> bytes:
    return _decode_bytes(data, 0)


def decode_alaw(data) -> bytes:
    return _decode_bytes(data, 1)


