/**
 * wsgate.js: connect a browser to a WebSocket endpoint behind wsgate, and read its close codes.
 *
 * Browsers cannot put an Authorization header on a WebSocket, so wsgate also reads the token
 * from Sec-WebSocket-Protocol: one entry "base64url.bearer." + base64url(token) without padding,
 * offered next to the endpoint's application subprotocol ("chat", "mcp", ...). The server
 * answers with the application subprotocol, never the token entry.
 *
 * A connection wsgate refuses after accept is closed with a code and a reason from its close-code
 * table (wsgate.CLOSE_CODES); CLOSE_CODES below mirrors it, and says for each row whether a client
 * should reconnect. A handshake refused with an HTTP status (an origin not on the allow-list, for
 * one) is only ever seen by JavaScript as close code 1006 with an empty reason. A server that drops
 * close reasons (daphne) gets the reason in a last error frame instead, just before a close with
 * a code from 4100-4199 (1008 as 4108): a socket from openSocket() keeps that frame, and
 * closeInfo() reads the reason from it, so the app sees the same reason on every server.
 *
 *     import { openSocket, closeInfo, backoffDelay } from "./wsgate.js";
 *
 *     let failures = 0;
 *     function connect() {
 *       const ws = openSocket("wss://api.example.com/ws", { token, protocols: ["chat"] });
 *       ws.onopen = () => { failures = 0; };
 *       ws.onclose = (event) => {
 *         const info = closeInfo(event);
 *         if (info.retry === "backoff") setTimeout(connect, backoffDelay(failures++));
 *         else showError(info.hint);  // do not reconnect: the person has to act
 *       };
 *     }
 *
 * An ES module with no dependencies, which runs as it is. The app can serve it (wsgate.js_route(),
 * at /wsgate.js by default), npm has it as @wsgate/client (built from this file by js/build.mjs,
 * with types in js/wsgate.d.ts), or copy it into your front end as it is.
 */

/** The prefix that marks a Sec-WebSocket-Protocol entry as a token (wsgate's default). */
export const TOKEN_PREFIX = "base64url.bearer.";

/**
 * The Sec-WebSocket-Protocol entry that carries `token`.
 *
 * @param {string} token A JWT or any token of printable ASCII characters.
 * @param {string} [prefix] The server's subprotocol prefix (WSGATE_SUBPROTOCOL_PREFIXES).
 * @returns {string} `prefix` + the token in base64url, without padding.
 */
export function tokenProtocol(token, prefix = TOKEN_PREFIX) {
  if (typeof token !== "string" || !/^[\x21-\x7e]+$/.test(token)) {
    throw new TypeError("wsgate: the token must be a non-empty string of printable ASCII, such as a JWT.");
  }
  const base64 = btoa(token);  // ASCII only, checked above
  return prefix + base64.replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
}

/**
 * The subprotocol list to give `new WebSocket(url, list)`: the application subprotocols, then
 * the token entry.
 *
 * @param {string|null} token The token, or null to connect without one.
 * @param {string[]} protocols The endpoint's application subprotocols, e.g. ["chat"].
 * @returns {string[]}
 */
export function socketProtocols(token, protocols) {
  if (typeof protocols === "string") protocols = [protocols];
  if (token == null) return [...protocols];
  if (protocols.length === 0) {
    // wsgate refuses a token entry offered alone (subprotocol_required): the server could only
    // echo the token, and a browser fails a handshake that echoes no offered subprotocol.
    throw new TypeError(
      'wsgate: offer the endpoint\'s application subprotocol next to the token, e.g. protocols: ["chat"].',
    );
  }
  return [...protocols, tokenProtocol(token)];
}

/** The last reason frame each socket from openSocket() received: see reasonFrame(). */
const reasonFrames = new WeakMap();

/**
 * Open a WebSocket with the token in Sec-WebSocket-Protocol.
 *
 * The socket keeps the reason frame a server that drops close reasons sends before its close,
 * for closeInfo(event).
 *
 * @param {string} url A ws:// or wss:// URL. Keep the token out of it: URLs end up in logs.
 * @param {{token?: string|null, protocols?: string[]}} [options]
 * @returns {WebSocket} Its `protocol` is the application subprotocol the server chose.
 */
export function openSocket(url, { token = null, protocols = [] } = {}) {
  const ws = new WebSocket(url, socketProtocols(token, protocols));
  ws.addEventListener("message", (event) => {
    const frame = reasonFrame(event.data);
    if (frame !== null) reasonFrames.set(ws, frame);
  });
  return ws;
}

/**
 * The close reason in a message, when it is the error frame wsgate sends just before a close
 * on a server that drops close reasons (daphne):
 * `{"type": "error", "error": {"code": "invalid_token", "message": "...", "close_code": 4108}}`.
 *
 * @param {unknown} data A message's data, as `event.data` has it.
 * @returns {{reason: string, code: number}|null} The reason and the close code that follows;
 *   null for any other message.
 */
export function reasonFrame(data) {
  // Most messages are not one: skip the parse unless the key is there.
  if (typeof data !== "string" || !data.includes('"close_code"')) return null;
  let value;
  try {
    value = JSON.parse(data);
  } catch {
    return null;
  }
  const error = value !== null && typeof value === "object" && value.type === "error" ? value.error : null;
  if (error === null || typeof error !== "object") return null;
  if (typeof error.code !== "string" || !Number.isInteger(error.close_code)) return null;
  return { reason: error.code, code: error.close_code };
}

/** The code a server that cannot send `code` sends instead: 4100 + (code - 1000). */
function mappedCode(code) {
  return code === 1000 || (code >= 3000 && code <= 4999) ? code : 4100 + (code - 1000);
}

/**
 * wsgate's close-code table, by reason: the close code, whether to reconnect ("backoff": yes,
 * after a growing delay; "never": not on your own, the person or the app has to act first),
 * and what to do. tests/browser/test_web.py checks that every row of wsgate.CLOSE_CODES is
 * here with the same code; docs/browser.md includes the table from between the markers.
 */
// --8<-- [start:close-codes]
export const CLOSE_CODES = Object.freeze({
  origin_not_allowed: { code: 1008, retry: "never", hint: "This page's origin is not on the server's allow-list." },
  subprotocol_required: { code: 1002, retry: "never", hint: "Offer the endpoint's application subprotocol next to the token." },
  auth_required: { code: 1008, retry: "never", hint: "No token was offered: sign in, then connect with the token." },
  invalid_token: { code: 1008, retry: "never", hint: "The token was refused: sign in again for a new one." },
  token_expired: { code: 1008, retry: "never", hint: "The token expired: get a fresh one, then connect again." },
  user_mismatch: { code: 1008, retry: "never", hint: "The path names another user than the token's." },
  auth_unavailable: { code: 1013, retry: "backoff", hint: "The auth service is unavailable: retrying later." },
  backend_unavailable: { code: 1013, retry: "backoff", hint: "The server's shared state is unavailable: retrying later." },
  connection_limit: { code: 4008, retry: "never", hint: "Too many connections for this user: a newer tab or device took over." },
  message_too_large: { code: 1009, retry: "backoff", hint: "A message was too large: send smaller ones." },
  rate_limit_abuse: { code: 1008, retry: "never", hint: "Too many messages after rate_limited answers." },
  internal_error: { code: 1011, retry: "backoff", hint: "The server failed on several messages in a row: retrying later." },
  heartbeat_timeout: { code: 4000, retry: "backoff", hint: "A ping went unanswered: reconnecting." },
  idle_timeout: { code: 4001, retry: "never", hint: "Closed after a quiet spell: reconnect when there is something to send." },
  max_lifetime: { code: 4002, retry: "backoff", hint: "The connection reached its maximum age: reconnecting." },
  slow_consumer: { code: 1013, retry: "backoff", hint: "The page stopped reading messages: reconnecting later." },
  connect_rate_limited: { code: 1013, retry: "backoff", hint: "Too many connection attempts from this address: retrying later." },
  worker_connect_rate_limited: { code: 1013, retry: "backoff", hint: "The server takes too many connections at once: retrying later." },
  worker_busy: { code: 1013, retry: "backoff", hint: "The server holds all the connections it can: retrying later." },
  revoked: { code: 4003, retry: "never", hint: "Access was revoked: sign in again." },
});
// --8<-- [end:close-codes]

// --8<-- [start:other-codes]
/** Close codes a browser can see without a wsgate reason, by code. */
export const OTHER_CODES = Object.freeze({
  1000: { retry: "never", hint: "Closed normally." },
  1001: { retry: "backoff", hint: "The server is going away: reconnecting." },
  1006: {
    retry: "backoff",
    hint: "The connection failed without a close frame: the handshake was refused (an origin not " +
      "allowed, say; browsers hide the HTTP status) or the network dropped.",
  },
  1009: { retry: "backoff", hint: "A message was too large for the server: send smaller ones." },
  1011: { retry: "backoff", hint: "The server hit an unexpected error: retrying later." },
  1012: { retry: "backoff", hint: "The server is restarting: reconnecting." },
  1013: { retry: "backoff", hint: "The server asks to try again later." },
  1014: { retry: "backoff", hint: "A gateway failed: retrying later." },
  // On daphne, which cannot send these codes, wsgate closes with 4100 + (code - 1000), after an
  // error frame with the reason (see the close-codes page, "Server differences").
  4108: { retry: "never", hint: "Refused (daphne's 1008): the error frame before the close says why." },
  4109: { retry: "backoff", hint: "A message was too large (daphne's 1009): send smaller ones." },
  4111: { retry: "backoff", hint: "The server failed (daphne's 1011): retrying later." },
  4113: { retry: "backoff", hint: "Try again later (daphne's 1013): reconnecting." },
});
// --8<-- [end:other-codes]

/**
 * What a close means and whether to reconnect.
 *
 * A close without a reason takes it from the reason frame that came just before it, with the
 * same close code (a server that drops close reasons, such as daphne): from `frame`, or else
 * the one a socket from openSocket() kept. Its row then matches the code the server sent in
 * place of the row's (4108 for 1008), and the refusal is as terminal as on any other server.
 *
 * @param {CloseEvent|{code: number, reason?: string, target?: unknown}} event
 * @param {{reason: string, code: number}|null} [frame] What reasonFrame() returned for the
 *   last message, when the socket is not from openSocket().
 * @returns {{code: number, reason: string, known: boolean, retry: "backoff"|"never", hint: string}}
 *   `known` is true when the reason is a row of wsgate's table. Unknown codes are "never": a
 *   client that cannot tell why it was closed should not hammer the server.
 */
export function closeInfo(event, frame = reasonFrames.get(event.target) ?? null) {
  const code = event.code;
  let reason = event.reason || "";
  if (reason === "" && frame != null && frame.code === code) reason = frame.reason;
  const row = Object.hasOwn(CLOSE_CODES, reason) ? CLOSE_CODES[reason] : null;
  if (row !== null && (row.code === code || mappedCode(row.code) === code)) {
    return { code, reason, known: true, retry: row.retry, hint: row.hint };
  }
  const other = OTHER_CODES[code];
  if (other !== undefined) return { code, reason, known: false, retry: other.retry, hint: other.hint };
  return { code, reason, known: false, retry: "never", hint: `Closed with code ${code}; not reconnecting.` };
}

/**
 * How long to wait before reconnect attempt number `failures` (0 for the first), in ms:
 * exponential backoff with jitter, so that clients dropped together do not return together.
 *
 * @param {number} failures Attempts that failed in a row.
 * @param {{base?: number, cap?: number}} [options] The first delay and the largest, in ms.
 * @returns {number} A delay between half and all of min(cap, base * 2 ** failures).
 */
export function backoffDelay(failures, { base = 500, cap = 30000 } = {}) {
  const ceiling = Math.min(cap, base * 2 ** Math.min(failures, 30));
  return ceiling / 2 + Math.random() * (ceiling / 2);
}
