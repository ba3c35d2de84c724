// The reception console page: wires the login form, the call buttons, the level meters and the
// call log to the Phone (SIP) and ConsoleAudio (sound) modules. Everything shown from the
// network goes in through textContent, never as HTML.

import { ConsoleAudio } from "./audio.js";
import { Phone, microphoneError } from "./phone.js";
import { FIELDS, defaultServer, fromUrl, remember, remembered, validate } from "./settings.js";

const $ = (id) => document.getElementById(id);
const phone = new Phone();
const audio = new ConsoleAudio();
const ui = {
  status: "offline",
  ringing: false,
  established: false,
  direction: null,
  settings: null,
};
const events = []; // timestamps for automation: { type, t (ms since the epoch), ... }
let levelTimer = null;
let noticeTimer = null;
const baseTitle = document.title;

function now() {
  return performance.timeOrigin + performance.now();
}

function record(type, extra = {}) {
  events.push({ type, t: now(), ...extra });
  if (events.length > 500) events.shift();
}

// For people and for tests: what the console hears and shows, read from the page.
window.consoleAudio = {
  remotePeakHz: () => audio.remotePeakHz(),
  micPeakHz: () => audio.micPeakHz(),
  remoteLevel: () => audio.remoteLevel(),
  micLevel: () => audio.micLevel(),
  ringing: () => audio.ringing,
  blocked: () => audio.blocked,
};
window.consoleEvents = events;
window.consoleCall = {
  /** The call's media path from WebRTC statistics: ICE pair, DTLS/SRTP, codecs. */
  async media() {
    const pc = phone.peerConnection();
    if (!pc) return null;
    const stats = [...(await pc.getStats()).values()];
    const byId = Object.fromEntries(stats.map((s) => [s.id, s]));
    const transport = stats.find((s) => s.type === "transport") || {};
    const pair = byId[transport.selectedCandidatePairId] || {};
    const where = (c) => `${c.address || c.ip}:${c.port}`;
    const cand = (id) => (byId[id] ? where(byId[id]) : null);
    const codec = (type) => {
      const rtp = stats.find((s) => s.type === type && s.kind === "audio");
      return rtp && byId[rtp.codecId] ? byId[rtp.codecId].mimeType : null;
    };
    return {
      local: cand(pair.localCandidateId),
      remote: cand(pair.remoteCandidateId),
      remoteCandidates: stats.filter((s) => s.type === "remote-candidate").map(where),
      dtlsState: transport.dtlsState,
      srtpCipher: transport.srtpCipher,
      sendCodec: codec("outbound-rtp"),
      receiveCodec: codec("inbound-rtp"),
    };
  },
};

function setStatus(state, text) {
  ui.status = state;
  const el = $("status");
  el.dataset.state = state;
  el.textContent = text;
  record("status", { state, text });
  render();
}

function notice(text, kind = "info") {
  const el = $("notice");
  el.textContent = text;
  el.dataset.kind = kind;
  el.hidden = false;
  clearTimeout(noticeTimer);
  if (kind === "info") noticeTimer = setTimeout(() => { el.hidden = true; }, 6000);
}

function render() {
  const registered = ui.status === "registered";
  const inCall = Boolean(phone.session);
  const settings = ui.settings || {};
  $("answer").disabled = !ui.ringing;
  $("hangup").disabled = !inCall;
  $("open-door").disabled = !(ui.established && settings.code);
  $("call-door").disabled = !(registered && !inCall && settings.door);
  $("mute").disabled = !ui.established;
  $("mute").setAttribute("aria-pressed", String(phone.muted));
  $("mute").textContent = phone.muted ? "Unmute" : "Mute";
  $("incoming").hidden = !ui.ringing;
  document.body.classList.toggle("ringing", ui.ringing);
  document.body.classList.toggle("in-call", ui.established);
  const loggedIn = phone.wanted;
  $("login-form").hidden = loggedIn;
  $("session").hidden = !loggedIn;
  if (loggedIn) {
    $("session-text").textContent = `Extension ${settings.user} on ${settings.server}`;
  }
}

function addLog(entry) {
  const li = document.createElement("li");
  const time = new Date().toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  const arrow = entry.direction === "in" ? "from" : entry.direction === "out" ? "to" : "";
  const parts = entry.text ? [time, entry.text] : [time, arrow, entry.peer, "-", entry.outcome];
  if (entry.seconds) parts.push(`(${formatDuration(entry.seconds)})`);
  li.textContent = parts.filter(Boolean).join(" ");
  li.dataset.direction = entry.direction || "";
  $("log").prepend(li);
  while ($("log").children.length > 200) $("log").lastChild.remove();
}

function formatDuration(s) {
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

function startLevels() {
  stopLevels();
  levelTimer = setInterval(() => {
    $("mic-level").value = Math.min(1, audio.micLevel() * 3);
    $("remote-level").value = Math.min(1, audio.remoteLevel() * 3);
  }, 100);
}

function stopLevels() {
  clearInterval(levelTimer);
  levelTimer = null;
  $("mic-level").value = 0;
  $("remote-level").value = 0;
}

function ring(on, caller = "") {
  ui.ringing = on;
  if (on) {
    $("caller").textContent = caller;
    audio.startRing();
    if (audio.blocked) notice("Click anywhere on the page to hear the ring.", "warn");
    if (navigator.vibrate) navigator.vibrate([400, 200, 400]);
    document.title = `Ringing: ${caller}`;
  } else {
    audio.stopRing();
    document.title = baseTitle;
  }
  render();
}

// ---- phone events -----------------------------------------------------------------------------

phone.addEventListener("status", (e) => setStatus(e.detail.state, e.detail.text));

phone.addEventListener("incoming", (e) => {
  record("incoming", { caller: e.detail.caller });
  $("call-state").textContent = `${e.detail.caller} is calling`;
  ui.direction = "in";
  ring(true, e.detail.caller);
});

phone.addEventListener("calling", (e) => {
  record("calling", { peer: e.detail.peer });
  ui.direction = "out";
  $("call-state").textContent = `Calling ${e.detail.peer}...`;
  render();
});

phone.addEventListener("progress", (e) => {
  record("progress");
  $("call-state").textContent = `Ringing at ${e.detail.peer}...`;
});

phone.addEventListener("established", (e) => {
  record("established", { peer: e.detail.peer });
  ring(false);
  ui.established = true;
  ui.peer = e.detail.peer;
  $("call-state").textContent = `In call with ${e.detail.peer}`;
  const remote = phone.remoteStream();
  $("remote-audio").srcObject = remote || null;
  $("remote-audio").play().catch(() => {
    notice("Click anywhere on the page to hear the door.", "warn");
  });
  audio.resume().finally(() => {
    audio.attach(remote, phone.localStream());
    startLevels();
  });
  render();
});

phone.addEventListener("ended", (e) => {
  record("ended", { outcome: e.detail.outcome });
  ring(false);
  ui.established = false;
  ui.direction = null;
  stopLevels();
  audio.detach();
  $("remote-audio").srcObject = null;
  $("call-state").textContent = `No call (last: ${e.detail.outcome})`;
  addLog(e.detail);
  render();
});

phone.addEventListener("log", (e) => addLog(e.detail));
phone.addEventListener("error", (e) => notice(e.detail.text, "error"));

// ---- user actions -----------------------------------------------------------------------------

function readForm() {
  const raw = {};
  for (const name of FIELDS) raw[name] = $(name).value;
  return raw;
}

function showFieldErrors(errors) {
  for (const name of FIELDS) {
    $(`${name}-error`).textContent = errors[name] || "";
    $(name).setAttribute("aria-invalid", errors[name] ? "true" : "false");
  }
}

async function checkMicrophone() {
  try {
    const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: false });
    stream.getTracks().forEach((t) => t.stop()); // asked once; each call opens its own
    return true;
  } catch (error) {
    notice(`${microphoneError(error)}. Calls will ring, but you cannot talk.`, "error");
    return false;
  }
}

async function login(raw) {
  const { settings, errors } = validate(raw);
  showFieldErrors(errors);
  if (Object.keys(errors).length) {
    setStatus("error", "check the highlighted fields");
    return;
  }
  ui.settings = settings;
  remember(settings);
  setStatus("connecting", "checking the microphone");
  await checkMicrophone();
  await phone.login(settings);
  render();
}

$("login-form").addEventListener("submit", (e) => {
  e.preventDefault();
  audio.resume();
  login(readForm());
});

$("logout").addEventListener("click", async () => {
  await phone.logout();
  ring(false);
  render();
});

$("answer").addEventListener("click", () => {
  record("answer-click");
  audio.resume();
  ring(false);
  $("call-state").textContent = "Answering...";
  phone.answer();
});

$("hangup").addEventListener("click", () => {
  record("hangup-click");
  phone.hangup().catch((error) => notice(`hang-up failed: ${error.message || error}`, "error"));
});

$("open-door").addEventListener("click", () => {
  record("open-door-click");
  const code = ui.settings && ui.settings.code;
  if (code && phone.sendDoorCode(code)) {
    notice("Door code sent.");
    addLog({ text: `door code sent to ${ui.peer || "the door"}` });
  } else {
    notice("Could not send the door code (no call, or the browser has no DTMF sender).", "error");
  }
});

$("call-door").addEventListener("click", () => {
  record("call-door-click");
  audio.resume();
  phone.call(ui.settings.door);
});

$("mute").addEventListener("click", () => {
  phone.setMuted(!phone.muted);
  render();
});

document.addEventListener("click", () => {
  if (audio.ringing || ui.established) audio.resume();
});

// ---- start ------------------------------------------------------------------------------------

function hostOf(url) {
  try {
    return new URL(url).host;
  } catch (_) {
    return url;
  }
}

function start() {
  if (window.top !== window.self) {
    document.body.textContent = "The door console does not run inside another page's frame.";
    return;
  }
  if (!navigator.mediaDevices || !window.RTCPeerConnection) {
    setStatus("error", "this page needs a secure connection (https://, or http://localhost) " +
      "and a browser with WebRTC to use the microphone");
  }
  const fromLink = fromUrl();
  const initial = { server: defaultServer(), door: "5002", ...remembered(), ...fromLink };
  for (const name of FIELDS) {
    if (initial[name] !== undefined) $(name).value = initial[name];
  }
  render();
  if (fromLink.password) {
    login(readForm()); // kiosk: log in by itself
  } else if (fromLink.server && location.host && hostOf(fromLink.server) !== location.host) {
    // a link that points the console at another server before you type your password
    notice(`This link sets the server to ${hostOf(fromLink.server)}, not ${location.host} ` +
      "where this page came from. Log in only if you trust that server.", "warn");
  }
}

start();
