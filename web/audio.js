// The console's sound: the ring (a WebAudio chime, no file to fetch) and live levels of the
// microphone and the far end (AnalyserNodes), which also tell automated tests which tone each
// side hears. It knows nothing about SIP or the DOM.

const FFT_SIZE = 8192;

export class ConsoleAudio {
  constructor() {
    this.ctx = null;
    this.remote = null; // { source, analyser }
    this.mic = null;
    this.ringTimer = null;
    this.ringGain = null;
  }

  context() {
    if (!this.ctx) {
      this.ctx = new AudioContext();
    }
    return this.ctx;
  }

  /** Browsers start audio only after a user gesture; call this from one (any click). */
  resume() {
    const ctx = this.context();
    return ctx.state === "suspended" ? ctx.resume() : Promise.resolve();
  }

  get blocked() {
    return !this.ctx || this.ctx.state !== "running";
  }

  tap(stream) {
    if (!stream || stream.getAudioTracks().length === 0) return null;
    const ctx = this.context();
    const source = ctx.createMediaStreamSource(stream);
    const analyser = ctx.createAnalyser();
    analyser.fftSize = FFT_SIZE;
    analyser.smoothingTimeConstant = 0.3;
    source.connect(analyser); // an analyser needs no destination: nothing is played twice
    return { source, analyser };
  }

  attach(remoteStream, micStream) {
    this.detach();
    this.remote = this.tap(remoteStream);
    this.mic = this.tap(micStream);
  }

  detach() {
    for (const t of [this.remote, this.mic]) {
      if (t) t.source.disconnect();
    }
    this.remote = null;
    this.mic = null;
  }

  /** RMS level 0..1 of the last analyser window. */
  static level(tap) {
    if (!tap) return 0;
    const buf = new Float32Array(tap.analyser.fftSize);
    tap.analyser.getFloatTimeDomainData(buf);
    let sum = 0;
    for (const v of buf) sum += v * v;
    return Math.sqrt(sum / buf.length);
  }

  /** Frequency (Hz) of the strongest bin above 60 Hz, or 0 without a signal. */
  static peakHz(tap) {
    if (!tap) return 0;
    const bins = new Float32Array(tap.analyser.frequencyBinCount);
    tap.analyser.getFloatFrequencyData(bins);
    const hzPerBin = tap.analyser.context.sampleRate / tap.analyser.fftSize;
    let best = -1;
    let bestDb = -Infinity;
    for (let i = Math.ceil(60 / hzPerBin); i < bins.length; i++) {
      if (bins[i] > bestDb) {
        bestDb = bins[i];
        best = i;
      }
    }
    return best < 0 || bestDb < -100 ? 0 : best * hzPerBin;
  }

  remoteLevel() { return ConsoleAudio.level(this.remote); }
  micLevel() { return ConsoleAudio.level(this.mic); }
  remotePeakHz() { return ConsoleAudio.peakHz(this.remote); }
  micPeakHz() { return ConsoleAudio.peakHz(this.mic); }

  /** A two-note chime every 2.5 s until stopRing(). */
  startRing() {
    if (this.ringTimer) return;
    const ctx = this.context();
    this.ringGain = ctx.createGain();
    this.ringGain.gain.value = 0.25;
    this.ringGain.connect(ctx.destination);
    const chime = () => {
      const t0 = ctx.currentTime + 0.02;
      [[659.25, 0], [523.25, 0.45]].forEach(([hz, at]) => {
        const osc = ctx.createOscillator();
        const env = ctx.createGain();
        osc.frequency.value = hz;
        env.gain.setValueAtTime(0, t0 + at);
        env.gain.linearRampToValueAtTime(1, t0 + at + 0.02);
        env.gain.exponentialRampToValueAtTime(0.001, t0 + at + 0.9);
        osc.connect(env).connect(this.ringGain);
        osc.start(t0 + at);
        osc.stop(t0 + at + 0.95);
      });
    };
    chime();
    this.ringTimer = setInterval(chime, 2500);
  }

  stopRing() {
    clearInterval(this.ringTimer);
    this.ringTimer = null;
    if (this.ringGain) {
      this.ringGain.disconnect();
      this.ringGain = null;
    }
  }

  get ringing() {
    return this.ringTimer !== null;
  }
}
