# cython: language_level=3, boundscheck=False, wraparound=False
"""SDES-SRTP and SRTCP (RFC 3711) on libsrtp2, as a packet transform for the media core.

Owns two libsrtp sessions per stream: outbound (our master key: protects what we send) and
inbound (the peer's key: authenticates, replay-checks and decrypts what arrives), for the
suites AES_CM_128_HMAC_SHA1_80 and AES_CM_128_HMAC_SHA1_32 (SRTCP keeps its 80-bit tag with
both, RFC 4568 §6.2). Each session is replaced whole when a re-INVITE brings a new key. The
hooks run in the media loop without the GIL; a mutex per transform keeps a re-key from Python
apart from a packet in flight. Keys arrive as 30 bytes (16-byte master key || 14-byte master
salt) and never leave: no repr, no pickling, libsrtp's own logging muted, copies wiped.
Knows nothing about SDP, RTP fields, sockets or the loop.
"""

from libc.string cimport memcmp, memcpy, memset
from firmware.core._transform cimport PacketTransform, XF_AUTH, XF_ERROR, XF_REPLAY

cdef extern from "<pthread.h>" nogil:
    ctypedef struct pthread_mutex_t:
        pass
    int pthread_mutex_init(pthread_mutex_t *, void *)
    int pthread_mutex_destroy(pthread_mutex_t *)
    int pthread_mutex_lock(pthread_mutex_t *)
    int pthread_mutex_unlock(pthread_mutex_t *)

cdef extern from "srtp2/srtp.h" nogil:
    ctypedef struct srtp_ctx_t:
        pass
    ctypedef srtp_ctx_t *srtp_t
    ctypedef enum srtp_err_status_t:
        srtp_err_status_ok
        srtp_err_status_auth_fail
        srtp_err_status_replay_fail
        srtp_err_status_replay_old
    ctypedef enum srtp_ssrc_type_t:
        ssrc_any_inbound
        ssrc_any_outbound
    ctypedef struct srtp_ssrc_t:
        srtp_ssrc_type_t type
        unsigned int value
    ctypedef struct srtp_crypto_policy_t:
        int auth_tag_len
    ctypedef struct srtp_policy_t:
        srtp_ssrc_t ssrc
        srtp_crypto_policy_t rtp
        srtp_crypto_policy_t rtcp
        unsigned char *key
        unsigned long window_size
        int allow_repeat_tx
        srtp_policy_t *next
    srtp_err_status_t srtp_init()
    srtp_err_status_t srtp_install_log_handler(void *func, void *data)
    srtp_err_status_t srtp_create(srtp_t *session, const srtp_policy_t *policy)
    srtp_err_status_t srtp_dealloc(srtp_t session)
    srtp_err_status_t srtp_protect(srtp_t ctx, void *rtp_hdr, int *len_ptr)
    srtp_err_status_t srtp_unprotect(srtp_t ctx, void *srtp_hdr, int *len_ptr)
    srtp_err_status_t srtp_protect_rtcp(srtp_t ctx, void *rtcp_hdr, int *pkt_octet_len)
    srtp_err_status_t srtp_unprotect_rtcp(srtp_t ctx, void *srtcp_hdr, int *pkt_octet_len)
    void srtp_crypto_policy_set_aes_cm_128_hmac_sha1_80(srtp_crypto_policy_t *p)
    void srtp_crypto_policy_set_aes_cm_128_hmac_sha1_32(srtp_crypto_policy_t *p)
    void srtp_crypto_policy_set_rtcp_default(srtp_crypto_policy_t *p)

cdef enum:
    KEY_LEN = 30          # master key 16 + master salt 14
    SRTCP_TRAILER = 14    # E flag + index (4) + 80-bit tag (10)
    REPLAY_WINDOW = 128   # packets

# suite -> SRTP authentication tag length in bytes
SUITES = {"AES_CM_128_HMAC_SHA1_80": 10, "AES_CM_128_HMAC_SHA1_32": 4}
KEY_LENGTH = KEY_LEN

if srtp_install_log_handler(NULL, NULL) != srtp_err_status_ok or \
        srtp_init() != srtp_err_status_ok:
    raise ImportError("libsrtp2 failed to initialise")


cdef inline int _reason(srtp_err_status_t rc) noexcept nogil:
    if rc == srtp_err_status_auth_fail:
        return XF_AUTH
    if rc == srtp_err_status_replay_fail or rc == srtp_err_status_replay_old:
        return XF_REPLAY
    return XF_ERROR


cdef srtp_err_status_t _create(srtp_t *out, int tag_len, const unsigned char *key,
                               bint outbound) noexcept nogil:
    cdef srtp_policy_t p
    cdef unsigned char k[KEY_LEN]
    cdef srtp_err_status_t rc
    memset(&p, 0, sizeof(p))
    if tag_len == 10:
        srtp_crypto_policy_set_aes_cm_128_hmac_sha1_80(&p.rtp)
    else:
        srtp_crypto_policy_set_aes_cm_128_hmac_sha1_32(&p.rtp)
    srtp_crypto_policy_set_rtcp_default(&p.rtcp)  # AES-CM-128 with the 80-bit tag
    memcpy(k, key, KEY_LEN)
    p.key = k
    p.ssrc.type = ssrc_any_outbound if outbound else ssrc_any_inbound
    p.window_size = REPLAY_WINDOW
    p.allow_repeat_tx = 0  # a sequence number never goes out twice under one key
    p.next = NULL
    rc = srtp_create(out, &p)
    memset(k, 0, KEY_LEN)  # libsrtp keeps derived session keys, not this copy
    return rc


cdef int _tag_len(str suite) except -1:
    tag = SUITES.get(suite)
    if tag is None:
        raise ValueError(f"unsupported SRTP suite {suite!r} "
                         f"(supported: {', '.join(SUITES)})")
    return tag


cdef const unsigned char *_key(object key, str which) except NULL:
    if not isinstance(key, bytes) or len(<bytes>key) != KEY_LEN:
        raise ValueError(f"the {which} SRTP master key must be {KEY_LEN} bytes")
    return <const unsigned char *><char *>key


cdef class SrtpTransform(PacketTransform):
    """SRTP/SRTCP for one stream: ``local_key`` protects, ``remote_key`` unprotects.

    Drops (authentication failure, replay) come back as negative results in the loop, and as
    ``TransformError`` with ``reason`` ``auth`` / ``replay`` from the Python methods.
    """

    cdef srtp_t tx
    cdef srtp_t rx
    cdef pthread_mutex_t lock
    cdef int tx_tag
    cdef unsigned char tx_key[KEY_LEN]
    cdef readonly str suite
    cdef readonly str inbound_suite

    def __cinit__(self):
        self.tx = NULL
        self.rx = NULL
        pthread_mutex_init(&self.lock, NULL)

    def __init__(self, str suite, local_key, remote_key):
        self.set_outbound(suite, local_key)
        self.set_inbound(suite, remote_key)

    def __dealloc__(self):
        if self.tx != NULL:
            srtp_dealloc(self.tx)
        if self.rx != NULL:
            srtp_dealloc(self.rx)
        memset(self.tx_key, 0, KEY_LEN)
        pthread_mutex_destroy(&self.lock)

    def __repr__(self) -> str:
        return f"<SrtpTransform {self.suite}>"

    def __reduce__(self):
        raise TypeError("an SRTP transform holds keys and cannot be pickled")

    def set_outbound(self, str suite, local_key) -> None:
        """Protect from now on with ``local_key`` (a new key: a fresh keystream)."""
        cdef int tag = _tag_len(suite)
        cdef const unsigned char *k = _key(local_key, "local")
        cdef srtp_t fresh = NULL
        cdef srtp_t old
        if self.tx != NULL and memcmp(k, self.tx_key, KEY_LEN) == 0:
            raise ValueError("restarting SRTP with the same outbound key would repeat its "
                             "keystream")
        if _create(&fresh, tag, k, True) != srtp_err_status_ok:
            raise ValueError("libsrtp refused the outbound SRTP policy")
        with nogil:
            pthread_mutex_lock(&self.lock)
            old = self.tx
            self.tx = fresh
            self.tx_tag = tag
            memcpy(self.tx_key, k, KEY_LEN)
            pthread_mutex_unlock(&self.lock)
        if old != NULL:
            srtp_dealloc(old)
        self.suite = suite

    def set_inbound(self, str suite, remote_key) -> None:
        """Check and decrypt from now on with ``remote_key`` (a fresh replay window)."""
        cdef int tag = _tag_len(suite)
        cdef const unsigned char *k = _key(remote_key, "remote")
        cdef srtp_t fresh = NULL
        cdef srtp_t old
        if _create(&fresh, tag, k, False) != srtp_err_status_ok:
            raise ValueError("libsrtp refused the inbound SRTP policy")
        with nogil:
            pthread_mutex_lock(&self.lock)
            old = self.rx
            self.rx = fresh
            pthread_mutex_unlock(&self.lock)
        if old != NULL:
            srtp_dealloc(old)
        self.inbound_suite = suite

    cdef int protect_rtp_c(self, unsigned char *pkt, int n, int cap) noexcept nogil:
        cdef int length = n
        cdef srtp_err_status_t rc
        pthread_mutex_lock(&self.lock)
        if self.tx == NULL or n < 12 or n + self.tx_tag > cap:
            pthread_mutex_unlock(&self.lock)
            return XF_ERROR
        rc = srtp_protect(self.tx, pkt, &length)
        pthread_mutex_unlock(&self.lock)
        return length if rc == srtp_err_status_ok else _reason(rc)

    cdef int unprotect_rtp_c(self, unsigned char *pkt, int n) noexcept nogil:
        cdef int length = n
        cdef srtp_err_status_t rc
        if n < 12 + 4 or self.rx == NULL:
            return XF_ERROR
        pthread_mutex_lock(&self.lock)
        rc = srtp_unprotect(self.rx, pkt, &length)
        pthread_mutex_unlock(&self.lock)
        return length if rc == srtp_err_status_ok else _reason(rc)

    cdef int protect_rtcp_c(self, unsigned char *pkt, int n, int cap) noexcept nogil:
        cdef int length = n
        cdef srtp_err_status_t rc
        if n < 8 or n + SRTCP_TRAILER > cap or self.tx == NULL:
            return XF_ERROR
        pthread_mutex_lock(&self.lock)
        rc = srtp_protect_rtcp(self.tx, pkt, &length)
        pthread_mutex_unlock(&self.lock)
        return length if rc == srtp_err_status_ok else _reason(rc)

    cdef int unprotect_rtcp_c(self, unsigned char *pkt, int n) noexcept nogil:
        cdef int length = n
        cdef srtp_err_status_t rc
        if n < 8 + SRTCP_TRAILER or self.rx == NULL:
            return XF_ERROR
        pthread_mutex_lock(&self.lock)
        rc = srtp_unprotect_rtcp(self.rx, pkt, &length)
        pthread_mutex_unlock(&self.lock)
        return length if rc == srtp_err_status_ok else _reason(rc)
