// Types for wsgate.mjs (built from wsgate/static/wsgate.js). test/wsgate.test.mjs checks that
// every export, close reason and other close code of the module is declared here.

/** The prefix that marks a Sec-WebSocket-Protocol entry as a token (wsgate's default). */
export declare const TOKEN_PREFIX: "base64url.bearer.";

/**
 * The Sec-WebSocket-Protocol entry that carries `token`: `prefix` + the token in base64url,
 * without padding.
 *
 * @param token A JWT or any token of printable ASCII characters.
 * @param prefix The server's subprotocol prefix (WSGATE_SUBPROTOCOL_PREFIXES).
 * @throws {TypeError} When the token is empty or not printable ASCII.
 */
export declare function tokenProtocol(token: string, prefix?: string): string;

/**
 * The subprotocol list to give `new WebSocket(url, list)`: the application subprotocols, then
 * the token entry.
 *
 * @param token The token, or null to connect without one.
 * @param protocols The endpoint's application subprotocols, e.g. ["chat"].
 * @throws {TypeError} When a token is given with no application subprotocol.
 */
export declare function socketProtocols(
  token: string | null | undefined,
  protocols: string | readonly string[],
): string[];

export interface SocketOptions {
  /** The token, or null (the default) to connect without one. */
  token?: string | null;
  /** The endpoint's application subprotocols, e.g. ["chat"]. */
  protocols?: string | readonly string[];
}

/**
 * Open a WebSocket with the token in Sec-WebSocket-Protocol. Its `protocol` is the application
 * subprotocol the server chose.
 *
 * @param url A ws:// or wss:// URL. Keep the token out of it: URLs end up in logs.
 */
export declare function openSocket(url: string | URL, options?: SocketOptions): WebSocket;

/** The reason, and the close code that follows, of wsgate's last error frame on a server that
 * drops close reasons (daphne). */
export interface ReasonFrame {
  reason: string;
  code: number;
}

/** The close reason in a message (`event.data`), when it is the error frame wsgate sends just
 * before a close on a server that drops close reasons; null for any other message. */
export declare function reasonFrame(data: unknown): ReasonFrame | null;

/** "backoff": reconnect after a growing delay; "never": not on your own, someone has to act. */
export type Retry = "backoff" | "never";

/** The reasons of wsgate's close-code table (wsgate.CLOSE_CODES). */
export type CloseReason =
  | "origin_not_allowed"
  | "subprotocol_required"
  | "auth_required"
  | "invalid_token"
  | "token_expired"
  | "user_mismatch"
  | "auth_unavailable"
  | "backend_unavailable"
  | "connection_limit"
  | "message_too_large"
  | "rate_limit_abuse"
  | "internal_error"
  | "heartbeat_timeout"
  | "idle_timeout"
  | "max_lifetime"
  | "slow_consumer"
  | "connect_rate_limited"
  | "worker_connect_rate_limited"
  | "worker_busy"
  | "revoked";

export interface CloseCodeRow {
  readonly code: number;
  readonly retry: Retry;
  /** What to do, in a sentence to show a person. */
  readonly hint: string;
}

/** wsgate's close-code table, by reason. */
export declare const CLOSE_CODES: Readonly<Record<CloseReason, CloseCodeRow>>;

/** Close codes a browser can see without a wsgate reason. */
export type OtherCode = 1000 | 1001 | 1006 | 1009 | 1011 | 1012 | 1013 | 1014 | 4108 | 4109 | 4111 | 4113;

/** Close codes a browser can see without a wsgate reason, by code. */
export declare const OTHER_CODES: Readonly<
  Record<OtherCode, { readonly retry: Retry; readonly hint: string }>
>;

export interface CloseInfo {
  code: number;
  reason: string;
  /** True when the reason is a row of wsgate's table, with that row's code. */
  known: boolean;
  /** Unknown codes are "never": a client that cannot tell why should not hammer the server. */
  retry: Retry;
  hint: string;
}

/**
 * What a close means and whether to reconnect. A close without a reason takes it from the
 * reason frame before it with the same code: `frame`, or the one a socket from openSocket()
 * kept (daphne: 4108 and an `invalid_token` frame read as `invalid_token`, terminal).
 */
export declare function closeInfo(
  event: CloseEvent | { code: number; reason?: string; target?: unknown },
  frame?: ReasonFrame | null,
): CloseInfo;

export interface BackoffOptions {
  /** The first delay, in ms (500). */
  base?: number;
  /** The largest delay, in ms (30000). */
  cap?: number;
}

/**
 * How long to wait before reconnect attempt number `failures` (0 for the first), in ms: a
 * delay between half and all of min(cap, base * 2 ** failures).
 */
export declare function backoffDelay(failures: number, options?: BackoffOptions): number;
