// The console's SIP phone: registration over WebSocket, one call at a time, the door code as
// RFC 4733 DTMF. All SIP is SIP.js's; this module owns the connection policy (reconnect with
// backoff, re-register) and turns SIP.js states into plain events for the page. It knows
// nothing about the DOM or about audio levels.

import {
  Inviter,
  Registerer,
  RegistererState,
  SessionState,
  UserAgent,
} from "./node_modules/sip.js/lib/index.js";

const RECONNECT_MIN_S = 1;
const RECONNECT_MAX_S = 30;
const REGISTER_EXPIRES_S = 120;
// A WebSocket over a network that silently died (Wi-Fi roaming, a laptop waking up, a pulled
// cable upstream) still looks open: an OPTIONS every PING_INTERVAL_S that gets no answer within
// PING_TIMEOUT_S means the connection is dead, and the console connects and registers anew.
const PING_INTERVAL_S = 20;
const PING_TIMEOUT_S = 5;

/** Plain-word reasons for SIP status codes the console can meet. */
function rejectReason(code, phrase) {
  if (code === 401 || code === 403 || code === 407) {
    return "wrong extension or password";
  }
  if (code === 404) return "unknown extension";
  if (code === 408) return "no answer from the server";
  if (code === 486 || code === 600) return "busy";
  if (code === 480) return "not available";
  if (code === 487) return "cancelled";
  if (code === 488 || code === 606) return "no common audio codec";
  if (code === 603) return "declined";
  return `${code} ${phrase || ""}`.trim();
}

/** Why the microphone (getUserMedia) failed, in plain words. */
export function microphoneError(error) {
  const name = error && error.name;
  if (name === "NotAllowedError" || name === "SecurityError") {
    return "microphone access was denied: allow it for this page in the browser's site settings";
  }
  if (name === "NotFoundError" || name === "OverconstrainedError") {
    return "no microphone found";
  }
  if (name === "NotReadableError") {
    return "the microphone is in use by another program";
  }
  return `the microphone failed (${name || error})`;
}

export class Phone extends EventTarget {
  constructor() {
    super();
    this.ua = null;
    this.registerer = null;
    this.session = null;
    this.settings = null;
    this.wanted = false; // the user wants to be logged in
    this.retryS = RECONNECT_MIN_S;
    this.retryTimer = null;
    this.everConnected = false;
    this.muted = false;
    this.pingTimer = null;
    this.onOnline = () => this.reconnectNow();
    window.addEventListener("online", this.onOnline);
  }

  emit(type, detail = {}) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  status(state, text) {
    this.emit("status", { state, text });
  }

  /** Log in: connect the WebSocket, then REGISTER. ``settings`` is already validated. */
  async login(settings) {
    await this.logout();
    this.settings = settings;
    this.wanted = true;
    this.everConnected = false;
    this.retryS = RECONNECT_MIN_S;
    const host = new URL(settings.server).hostname;
    const domain = host.includes(":") ? `[${host}]` : host;
    this.domain = domain;
    this.ua = new UserAgent({
      uri: UserAgent.makeURI(`sip:${settings.user}@${domain}`),
      authorizationUsername: settings.user,
      authorizationPassword: settings.password,
      displayName: "Reception console",
      transportOptions: { server: settings.server, connectionTimeout: 5, traceSip: false },
      logBuiltinEnabled: true,
      logConfiguration: false, // never print the settings (the password among them)
      logLevel: "warn",
      noAnswerTimeout: 60,
      sessionDescriptionHandlerFactoryOptions: {
        // no STUN/TURN: the browser and the PBX reach each other directly on the LAN
        peerConnectionConfiguration: { iceServers: [] },
        iceGatheringTimeout: 2000,
      },
      delegate: {
        onConnect: () => this.onConnect(),
        onDisconnect: () => this.onDisconnect(),
        onInvite: (invitation) => this.onInvite(invitation),
      },
    });
    this.registerer = new Registerer(this.ua, { expires: REGISTER_EXPIRES_S });
    this.registerer.stateChange.addListener((state) => this.onRegistererState(state));
    this.status("connecting", `connecting to ${settings.server}`);
    await this.connect();
  }

  async connect() {
    const ua = this.ua;
    if (!ua || !this.wanted) return;
    try {
      await (ua.state === "Started" ? ua.reconnect() : ua.start());
    } catch (error) {
      if (ua === this.ua) this.connectFailed(error);
    }
  }

  connectFailed(error) {
    if (!this.wanted) return;
    const server = this.settings.server;
    let text;
    if (this.everConnected) {
      text = `connection to ${server} lost`;
    } else if (server.startsWith("wss:") && !this.sameOrigin(server)) {
      const https = server.replace(/^wss:/, "https:").replace(/\/ws\/?$/, "/");
      text = `cannot reach ${server}: the server is down, or this browser does not trust ` +
        `its certificate (open ${https} once and accept or install the certificate)`;
    } else {
      text = `cannot reach ${server}: the server is down or the network is unreachable`;
    }
    this.status("error", `${text}; retrying in ${this.retryS} s`);
    this.emit("unreachable", { error: String((error && error.message) || error || "") });
    this.scheduleReconnect();
  }

  /** The page came from the same https origin as the WebSocket: the certificate is trusted. */
  sameOrigin(server) {
    const ws = new URL(server);
    return location.protocol === "https:" && ws.host === location.host;
  }

  scheduleReconnect() {
    clearTimeout(this.retryTimer);
    if (!this.wanted) return;
    const delay = this.retryS;
    this.retryS = Math.min(this.retryS * 2, RECONNECT_MAX_S);
    this.retryTimer = setTimeout(() => this.connect(), delay * 1000);
  }

  /** The browser says the network is back: any old connection may be dead, start over now. */
  reconnectNow() {
    if (!this.wanted || !this.ua) return;
    clearTimeout(this.retryTimer);
    this.retryS = RECONNECT_MIN_S;
    if (this.ua.isConnected()) {
      this.dropConnection("the network changed; reconnecting");
    } else {
      this.connect();
    }
  }

  /** Close a connection believed dead; onDisconnect then reconnects and re-registers. */
  dropConnection(text) {
    this.status("error", text);
    this.ua.transport.disconnect().catch(() => {}); // a dead peer never completes the close
  }

  startHeartbeat() {
    if (this.pingTimer) return;
    this.pingTimer = setInterval(() => this.ping(), PING_INTERVAL_S * 1000);
  }

  stopHeartbeat() {
    clearInterval(this.pingTimer);
    this.pingTimer = null;
  }

  ping() {
    const ua = this.ua;
    if (!ua || !this.wanted || !ua.isConnected()) return;
    const core = ua.userAgentCore;
    const target = UserAgent.makeURI(`sip:${this.domain}`);
    const request = core.makeOutgoingRequestMessage("OPTIONS", target, ua.configuration.uri,
      target, {});
    let answered = false;
    const done = () => { answered = true; };
    core.request(request, { onAccept: done, onReject: done, onRedirect: done });
    setTimeout(() => {
      if (!answered && ua === this.ua && this.wanted && ua.isConnected()) {
        this.dropConnection(`no answer from ${this.settings.server}; reconnecting`);
      }
    }, PING_TIMEOUT_S * 1000);
  }

  onConnect() {
    this.everConnected = true;
    this.retryS = RECONNECT_MIN_S;
    clearTimeout(this.retryTimer);
    this.status("connecting", "connected, registering");
    this.register();
  }

  register() {
    if (!this.registerer || !this.wanted) return;
    this.registerer.register({
      requestDelegate: {
        // the registerer may still say Registered from before a reconnect: no state change
        onAccept: () => this.onRegistererState(this.registerer.state),
        onReject: (response) => {
          const code = response.message.statusCode;
          const reason = rejectReason(code, response.message.reasonPhrase);
          if (code === 401 || code === 403 || code === 407 || code === 404) {
            // credentials are wrong: retrying would only hammer the PBX (and its fail2ban)
            this.wanted = false;
            this.status("error", `login refused: ${reason}`);
            this.ua.stop().catch(() => {});
          } else {
            this.status("error", `registration failed: ${reason}; retrying`);
            this.scheduleReregister();
          }
        },
      },
    }).catch((error) => {
      this.status("error", `registration failed: ${error.message || error}; retrying`);
      this.scheduleReregister();
    });
  }

  scheduleReregister() {
    clearTimeout(this.retryTimer);
    const delay = this.retryS;
    this.retryS = Math.min(this.retryS * 2, RECONNECT_MAX_S);
    this.retryTimer = setTimeout(() => {
      if (this.ua && this.ua.isConnected()) this.register();
      else this.connect();
    }, delay * 1000);
  }

  onRegistererState(state) {
    if (state === RegistererState.Registered) {
      this.retryS = RECONNECT_MIN_S;
      this.startHeartbeat();
      this.status("registered", `registered as ${this.settings.user}`);
    } else if (state === RegistererState.Unregistered && this.wanted) {
      // a refresh failed (timeout, server restart): start over
      this.status("connecting", "registration lost, registering again");
      this.scheduleReregister();
    }
  }

  onDisconnect() {
    if (!this.wanted) return;
    this.status("error", `connection to ${this.settings.server} lost; reconnecting in ` +
      `${this.retryS} s`);
    this.scheduleReconnect();
  }

  async logout() {
    this.wanted = false;
    clearTimeout(this.retryTimer);
    this.stopHeartbeat();
    const ua = this.ua;
    this.ua = null;
    if (this.session) {
      await this.hangup().catch(() => {});
    }
    if (ua) {
      try {
        if (this.registerer && this.registerer.state === RegistererState.Registered) {
          await this.registerer.unregister().catch(() => {});
        }
        await ua.stop();
      } catch (_) {
        // stopping a dead connection is fine
      }
      this.status("offline", "logged out");
    }
    this.registerer = null;
  }

  // ---- calls ---------------------------------------------------------------------------------

  onInvite(invitation) {
    if (this.session) {
      invitation.reject({ statusCode: 486 }).catch(() => {});
      this.emit("log", { direction: "in", peer: describe(invitation.remoteIdentity),
        outcome: "busy (already in a call)" });
      return;
    }
    this.track(invitation, "in");
    this.emit("incoming", { caller: describe(invitation.remoteIdentity) });
  }

  track(session, direction) {
    this.session = session;
    this.muted = false;
    const info = { direction, peer: describe(session.remoteIdentity), started: null,
      endedBy: null, failure: null };
    this.current = info;
    session.stateChange.addListener((state) => {
      if (state === SessionState.Established) {
        info.started = Date.now();
        this.emit("established", { session, peer: info.peer });
      } else if (state === SessionState.Terminated) {
        if (this.session === session) {
          this.session = null;
          this.current = null;
        }
        this.emit("ended", { ...info, outcome: outcome(info), seconds: info.started
          ? Math.round((Date.now() - info.started) / 1000) : 0 });
      }
    });
    session.delegate = {
      onBye: () => { info.endedBy = info.endedBy || "remote"; },
    };
  }

  async answer() {
    const session = this.session;
    if (!session || session.state !== SessionState.Initial || !(session.accept)) return;
    try {
      await session.accept({
        sessionDescriptionHandlerOptions: { constraints: { audio: true, video: false } },
      });
    } catch (error) {
      this.current && (this.current.failure = microphoneOrSip(error));
      this.emit("error", { text: `could not answer: ${microphoneOrSip(error)}` });
      session.reject({ statusCode: 480 }).catch(() => {});
    }
  }

  async hangup() {
    const session = this.session;
    if (!session) return;
    if (this.current) this.current.endedBy = this.current.endedBy || "local";
    switch (session.state) {
      case SessionState.Initial:
      case SessionState.Establishing:
        if (session instanceof Inviter) await session.cancel();
        else await session.reject({ statusCode: 603 });
        break;
      case SessionState.Established:
        await session.bye();
        break;
      default:
        break;
    }
  }

  /** Dial ``target`` (the door box's extension). */
  async call(target) {
    if (this.session || !this.ua) return;
    const uri = UserAgent.makeURI(`sip:${target}@${this.domain}`);
    const inviter = new Inviter(this.ua, uri, {
      sessionDescriptionHandlerOptions: { constraints: { audio: true, video: false } },
    });
    this.track(inviter, "out");
    this.emit("calling", { peer: target });
    try {
      await inviter.invite({
        requestDelegate: {
          onProgress: (response) => {
            if (response.message.statusCode === 180 || response.message.statusCode === 183) {
              this.emit("progress", { peer: target });
            }
          },
          onReject: (response) => {
            if (this.current) {
              this.current.failure = rejectReason(response.message.statusCode,
                response.message.reasonPhrase);
            }
          },
        },
      });
    } catch (error) {
      if (this.current) this.current.failure = microphoneOrSip(error);
      this.emit("error", { text: `could not call ${target}: ${microphoneOrSip(error)}` });
    }
  }

  /** Send ``code`` as RFC 4733 telephone-events through the call's RTCDTMFSender. */
  sendDoorCode(code) {
    const session = this.session;
    if (!session || session.state !== SessionState.Established) return false;
    const sdh = session.sessionDescriptionHandler;
    return Boolean(sdh && sdh.sendDtmf(code, { duration: 120, interToneGap: 70 }));
  }

  setMuted(muted) {
    const pc = this.peerConnection();
    if (!pc) return false;
    for (const sender of pc.getSenders()) {
      if (sender.track && sender.track.kind === "audio") sender.track.enabled = !muted;
    }
    this.muted = muted;
    return true;
  }

  peerConnection() {
    const sdh = this.session && this.session.sessionDescriptionHandler;
    return sdh ? sdh.peerConnection : undefined;
  }

  remoteStream() {
    const sdh = this.session && this.session.sessionDescriptionHandler;
    return sdh ? sdh.remoteMediaStream : undefined;
  }

  localStream() {
    const sdh = this.session && this.session.sessionDescriptionHandler;
    return sdh ? sdh.localMediaStream : undefined;
  }
}

/** "Door (5002)" from a From/To header, never trusting it to be short or plain. */
function describe(identity) {
  const user = (identity && identity.uri && identity.uri.user) || "unknown";
  const name = (identity && identity.displayName) || "";
  const text = name && name !== user ? `${name} (${user})` : user;
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}

function outcome(info) {
  if (info.started) {
    return info.endedBy === "local" ? "answered, you hung up" : "answered, they hung up";
  }
  if (info.failure) return `failed: ${info.failure}`;
  if (info.direction === "in") {
    return info.endedBy === "local" ? "declined" : "missed";
  }
  return info.endedBy === "local" ? "cancelled" : "not answered";
}

function microphoneOrSip(error) {
  if (error && typeof error.name === "string" && /NotAllowed|NotFound|NotReadable|Security|Overconstrained/.test(error.name)) {
    return microphoneError(error);
  }
  return (error && error.message) || String(error);
}
