/* A C face for the WebRTC audio processing module (echo canceller, noise suppression, AGC).
 *
 * Owns hiding the C++ API, which differs between webrtc-audio-processing 0.3 (Debian bookworm,
 * WEBRTC_APM_03) and 1.x (Debian trixie, WEBRTC_APM_1), behind four calls on 10 ms frames of
 * 16-bit mono PCM. Knows nothing about RTP, FIFOs or Python. Not thread-safe per instance: the
 * media loop calls it from its one thread. */
#ifndef INTERCOM_WEBRTC_SHIM_H
#define INTERCOM_WEBRTC_SHIM_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct wap_state wap_state;

#ifdef HAVE_WEBRTC

/* A processor for `rate` Hz mono (8000); NULL on failure with the reason in err. */
wap_state *wap_new(int rate, int noise_suppression, int agc, char *err, int errlen);
/* One 10 ms frame the speaker is about to play (the echo reference). 0 or a library error. */
int wap_render(wap_state *st, const int16_t *pcm);
/* One 10 ms captured frame, cleaned in place; delay_ms: render-to-capture delay hint. */
int wap_capture(wap_state *st, int16_t *pcm, int delay_ms);
void wap_free(wap_state *st);
/* The library flavour compiled in: "0.3" or "1.x". */
const char *wap_version(void);
#endif

#ifdef __cplusplus
}
#endif

#ifndef HAVE_WEBRTC
/* Built without the library (setup.py found neither pkg-config name): every call says so. */
#include <stdio.h>
static inline wap_state *wap_new(int rate, int ns, int agc, char *err, int errlen) {
  (void)rate; (void)ns; (void)agc;
  snprintf(err, errlen, "the firmware was built without the WebRTC audio processing library "
           "(install libwebrtc-audio-processing-dev, on trixie libwebrtc-audio-processing-1-dev, "
           "and rebuild)");
  return NULL;
}
static inline int wap_render(wap_state *st, const int16_t *pcm) { (void)st; (void)pcm; return -1; }
static inline int wap_capture(wap_state *st, int16_t *pcm, int d) { (void)st; (void)pcm; (void)d; return -1; }
static inline void wap_free(wap_state *st) { (void)st; }
static inline const char *wap_version(void) { return ""; }
#endif
#endif
