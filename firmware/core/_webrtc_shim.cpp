// The C face of the WebRTC audio processing module: see _webrtc_shim.h.
#include "_webrtc_shim.h"

#include <cstdio>
#include <new>

#if defined(WEBRTC_APM_1)
#include <modules/audio_processing/include/audio_processing.h>
#elif defined(WEBRTC_APM_03)
#include <webrtc/modules/audio_processing/include/audio_processing.h>
#else
#error "define WEBRTC_APM_1 or WEBRTC_APM_03 (setup.py does, from pkg-config)"
#endif

namespace {
const int kMaxFrame = 480;  // 10 ms at 48 kHz: the most this shim accepts
}

struct wap_state {
#if defined(WEBRTC_APM_1)
  rtc::scoped_refptr<webrtc::AudioProcessing> apm;
#else
  webrtc::AudioProcessing *apm = nullptr;
#endif
  int rate = 8000;
  int frame = 80;
  float buf[kMaxFrame];
};

static void to_float(const int16_t *pcm, float *out, int n) {
  for (int i = 0; i < n; i++) out[i] = pcm[i] / 32768.0f;
}

static void to_int16(const float *in, int16_t *pcm, int n) {
  for (int i = 0; i < n; i++) {
    float v = in[i] * 32768.0f;
    pcm[i] = v >= 32767.0f ? 32767 : v <= -32768.0f ? -32768 : static_cast<int16_t>(v);
  }
}

extern "C" {

const char *wap_version(void) {
#if defined(WEBRTC_APM_1)
  return "1.x";
#else
  return "0.3";
#endif
}

wap_state *wap_new(int rate, int noise_suppression, int agc, char *err, int errlen) {
  if (rate != 8000 && rate != 16000 && rate != 32000 && rate != 48000) {
    std::snprintf(err, errlen, "unsupported sample rate %d", rate);
    return nullptr;
  }
  wap_state *st = new (std::nothrow) wap_state();
  if (st == nullptr) {
    std::snprintf(err, errlen, "out of memory");
    return nullptr;
  }
  st->rate = rate;
  st->frame = rate / 100;
#if defined(WEBRTC_APM_1)
  st->apm = webrtc::AudioProcessingBuilder().Create();
  if (!st->apm) {
    std::snprintf(err, errlen, "AudioProcessingBuilder().Create() failed");
    delete st;
    return nullptr;
  }
  webrtc::AudioProcessing::Config c;
  c.echo_canceller.enabled = true;
  c.echo_canceller.mobile_mode = false;
  c.high_pass_filter.enabled = true;
  c.noise_suppression.enabled = noise_suppression != 0;
  c.noise_suppression.level = webrtc::AudioProcessing::Config::NoiseSuppression::kHigh;
  c.gain_controller1.enabled = agc != 0;
  c.gain_controller1.mode = webrtc::AudioProcessing::Config::GainController1::kAdaptiveDigital;
  st->apm->ApplyConfig(c);
#else
  webrtc::Config config;
  config.Set<webrtc::ExtendedFilter>(new webrtc::ExtendedFilter(true));  // 128 ms filter
  config.Set<webrtc::DelayAgnostic>(new webrtc::DelayAgnostic(true));    // own delay estimate
  config.Set<webrtc::ExperimentalAgc>(new webrtc::ExperimentalAgc(false));  // no mixer volume
  st->apm = webrtc::AudioProcessing::Create(config);
  if (st->apm == nullptr) {
    std::snprintf(err, errlen, "AudioProcessing::Create() failed");
    delete st;
    return nullptr;
  }
  int rc = 0;
  rc |= st->apm->high_pass_filter()->Enable(true);
  rc |= st->apm->echo_cancellation()->enable_drift_compensation(false);
  // low: the same ERLE as high in the room test, but the visitor's voice keeps ~5 dB more
  // during double talk (NOTES-aec.md)
  rc |= st->apm->echo_cancellation()->set_suppression_level(
      webrtc::EchoCancellation::kLowSuppression);
  rc |= st->apm->echo_cancellation()->Enable(true);
  if (noise_suppression) {
    rc |= st->apm->noise_suppression()->set_level(webrtc::NoiseSuppression::kHigh);
    rc |= st->apm->noise_suppression()->Enable(true);
  }
  if (agc) {
    rc |= st->apm->gain_control()->set_mode(webrtc::GainControl::kAdaptiveDigital);
    rc |= st->apm->gain_control()->Enable(true);
  }
  if (rc != 0) {
    std::snprintf(err, errlen, "configuring the audio processing module failed (%d)", rc);
    delete st->apm;
    delete st;
    return nullptr;
  }
#endif
  return st;
}

int wap_render(wap_state *st, const int16_t *pcm) {
  webrtc::StreamConfig sc(st->rate, 1);
  to_float(pcm, st->buf, st->frame);
  float *ch[1] = {st->buf};
  return st->apm->ProcessReverseStream(ch, sc, sc, ch);
}

int wap_capture(wap_state *st, int16_t *pcm, int delay_ms) {
  webrtc::StreamConfig sc(st->rate, 1);
  st->apm->set_stream_delay_ms(delay_ms);
  to_float(pcm, st->buf, st->frame);
  float *ch[1] = {st->buf};
  int rc = st->apm->ProcessStream(ch, sc, sc, ch);
  if (rc == 0) to_int16(st->buf, pcm, st->frame);
  return rc;
}

void wap_free(wap_state *st) {
  if (st == nullptr) return;
#if !defined(WEBRTC_APM_1)
  delete st->apm;
#endif
  delete st;
}

}  // extern "C"
