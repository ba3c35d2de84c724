// Login settings: defaults from where the page was served, kiosk values from the URL
// (?server=&user=&password=&door=&code=, or the same after #), validation with a plain-word
// message per field, and remembering the non-secret fields. Password and door code are never
// stored by the page.

export const FIELDS = ["server", "user", "password", "door", "code"];
const REMEMBERED = ["server", "user", "door"];
const STORE_KEY = "intercom-console";
const EXTENSION = /^[A-Za-z0-9._~+-]{1,32}$/;
const DTMF = /^[0-9*#A-Da-d]{1,16}$/;

/** The WebSocket of the server that served this page (Asterisk serves both at one origin). */
export function defaultServer(loc = window.location) {
  if (loc.protocol === "https:") return `wss://${loc.host}/ws`;
  if (loc.protocol === "http:") return `ws://${loc.host}/ws`;
  return "";
}

export function fromUrl(loc = window.location) {
  const found = {};
  for (const part of [loc.search, loc.hash]) {
    const params = new URLSearchParams(part.replace(/^[?#]/, ""));
    for (const name of FIELDS) {
      if (params.has(name)) found[name] = params.get(name);
    }
  }
  return found;
}

export function remembered() {
  try {
    const saved = JSON.parse(localStorage.getItem(STORE_KEY) || "{}");
    const out = {};
    for (const name of REMEMBERED) {
      if (typeof saved[name] === "string") out[name] = saved[name];
    }
    return out;
  } catch (_) {
    return {};
  }
}

export function remember(settings) {
  const out = {};
  for (const name of REMEMBERED) out[name] = settings[name] || "";
  try {
    localStorage.setItem(STORE_KEY, JSON.stringify(out));
  } catch (_) {
    // private mode: nothing remembered, nothing lost
  }
}

/** Returns { settings, errors }: errors maps a field to what is wrong with it. */
export function validate(raw) {
  const s = {};
  for (const name of FIELDS) s[name] = String(raw[name] || "").trim();
  s.password = String(raw.password || ""); // spaces may be part of a password
  const errors = {};
  let url = null;
  try {
    url = new URL(s.server);
  } catch (_) {
    errors.server = "enter the server as wss://host:8089/ws";
  }
  if (url) {
    if (url.protocol !== "wss:" && url.protocol !== "ws:") {
      errors.server = "the server address must start with wss:// (or ws:// on this machine)";
    } else if (url.username || url.password) {
      errors.server = "put the extension and password in their own fields, not in the address";
    }
  }
  if (!EXTENSION.test(s.user)) {
    errors.user = "the extension is 1-32 letters or digits (e.g. 5004)";
  }
  if (!s.password || s.password.length > 128 || /[\u0000-\u001f\u007f]/.test(s.password)) {
    errors.password = "enter the extension's password";
  }
  if (s.door && !EXTENSION.test(s.door)) {
    errors.door = "the door's extension is 1-32 letters or digits (e.g. 5002)";
  }
  if (s.code && !DTMF.test(s.code)) {
    errors.code = "the door code is 1-16 keys of 0-9 * # A-D";
  }
  return { settings: s, errors };
}
