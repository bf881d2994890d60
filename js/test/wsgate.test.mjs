// wsgate.js under Node's own test runner: everything it does without a browser. The real-browser
// tests (tests/browser/test_page.py) run it against a live wsgate server in Chromium.
//
// Run with `npm test` in js/ (it builds wsgate.mjs first); pytest runs it too
// (tests/test_browser.py).

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, test } from "node:test";

import * as wsgate from "../wsgate.mjs";

const {
  CLOSE_CODES,
  OTHER_CODES,
  TOKEN_PREFIX,
  backoffDelay,
  closeInfo,
  openSocket,
  reasonFrame,
  socketProtocols,
  tokenProtocol,
} = wsgate;

describe("tokenProtocol", () => {
  test("encodes as wsgate.encode_subprotocol does", () => {
    // Computed by the Python side: wsgate.encode_subprotocol(token).
    const expected = {
      "eyJhbGciOiJIUzI1NiJ9.e30.sig": "base64url.bearer.ZXlKaGJHY2lPaUpJVXpJMU5pSjkuZTMwLnNpZw",
      ">>>???": "base64url.bearer.Pj4-Pz8_",
      a: "base64url.bearer.YQ",
    };
    for (const [token, entry] of Object.entries(expected)) {
      assert.equal(tokenProtocol(token), entry);
    }
  });

  test("is base64url without padding for every printable ASCII token", () => {
    for (let length = 1; length <= 64; length++) {
      const token = Array.from({ length }, (_, i) => String.fromCharCode(0x21 + ((i * 37 + length) % 94))).join("");
      const entry = tokenProtocol(token);
      assert.equal(entry, TOKEN_PREFIX + Buffer.from(token, "ascii").toString("base64url"));
      assert.match(entry.slice(TOKEN_PREFIX.length), /^[A-Za-z0-9_-]+$/);
    }
  });

  test("takes the server's prefix", () => {
    assert.equal(tokenProtocol("a", "token."), "token.YQ");
  });

  test("refuses what cannot be a token, with a sentence", () => {
    for (const token of ["", "has space", "caf\u00e9", "line\n", null, undefined, 42]) {
      assert.throws(() => tokenProtocol(token), {
        name: "TypeError",
        message: "wsgate: the token must be a non-empty string of printable ASCII, such as a JWT.",
      });
    }
  });
});

describe("socketProtocols", () => {
  test("offers the application subprotocols first, then the token", () => {
    assert.deepEqual(socketProtocols("a", ["chat", "chat.v2"]), ["chat", "chat.v2", "base64url.bearer.YQ"]);
    assert.deepEqual(socketProtocols("a", "chat"), ["chat", "base64url.bearer.YQ"]);
  });

  test("offers no token entry without a token", () => {
    assert.deepEqual(socketProtocols(null, ["chat"]), ["chat"]);
    assert.deepEqual(socketProtocols(undefined, []), []);
    const protocols = ["chat"];
    assert.notEqual(socketProtocols(null, protocols), protocols); // a copy, not the caller's list
  });

  test("refuses a token offered alone, which wsgate refuses (subprotocol_required)", () => {
    assert.throws(() => socketProtocols("a", []), {
      name: "TypeError",
      message: /offer the endpoint's application subprotocol next to the token/,
    });
  });
});

describe("openSocket", () => {
  test("hands the URL and the subprotocol list to WebSocket", () => {
    const opened = [];
    // Node 20 has no WebSocket client: stand in for the browser's, recording what it is given.
    globalThis.WebSocket = class {
      constructor(url, protocols) {
        opened.push({ url, protocols });
      }
      addEventListener() {}
    };
    try {
      openSocket("wss://api.example.com/ws", { token: "a", protocols: ["chat"] });
      openSocket("wss://api.example.com/ws/public");
    } finally {
      delete globalThis.WebSocket;
    }
    assert.deepEqual(opened, [
      { url: "wss://api.example.com/ws", protocols: ["chat", "base64url.bearer.YQ"] },
      { url: "wss://api.example.com/ws/public", protocols: [] },
    ]);
  });
});

describe("closeInfo", () => {
  test("reads every row of wsgate's table, when the code is the row's", () => {
    for (const [reason, row] of Object.entries(CLOSE_CODES)) {
      assert.deepEqual(closeInfo({ code: row.code, reason }), {
        code: row.code,
        reason,
        known: true,
        retry: row.retry,
        hint: row.hint,
      });
    }
  });

  test("refusals that need the person or the app to act are terminal", () => {
    const terminal = [
      [1008, "origin_not_allowed"],
      [1002, "subprotocol_required"],
      [1008, "auth_required"],
      [1008, "invalid_token"],
      [1008, "token_expired"],
      [1008, "user_mismatch"],
      [4008, "connection_limit"],
      [1008, "rate_limit_abuse"],
      [4001, "idle_timeout"],
      [1000, ""],
    ];
    for (const [code, reason] of terminal) {
      assert.equal(closeInfo({ code, reason }).retry, "never", `${code} ${reason}`);
    }
  });

  test("passing trouble on the server or the network is retried with backoff", () => {
    const retried = [
      [1013, "auth_unavailable"],
      [1013, "backend_unavailable"],
      [1013, "slow_consumer"],
      [1011, "internal_error"],
      [4000, "heartbeat_timeout"],
      [4002, "max_lifetime"],
      [1009, "message_too_large"],
      [1001, ""],
      [1006, ""], // a refused handshake or a dropped network: browsers show nothing more
      [1012, ""],
      [1013, ""],
      [1014, ""],
    ];
    for (const [code, reason] of retried) {
      assert.equal(closeInfo({ code, reason }).retry, "backoff", `${code} ${reason}`);
    }
  });

  test("a reason with another code than its row's is not trusted", () => {
    const info = closeInfo({ code: 1013, reason: "token_expired" });
    assert.equal(info.known, false);
    assert.equal(info.retry, "backoff"); // what 1013 means, whatever the reason says
    assert.equal(info.hint, OTHER_CODES[1013].hint);
  });

  test("unknown codes and reasons are terminal", () => {
    for (const event of [{ code: 4999, reason: "whatever" }, { code: 3000 }, { code: 1008, reason: "toString" }]) {
      const info = closeInfo(event);
      assert.equal(info.known, false);
      assert.equal(info.retry, "never");
      assert.equal(info.reason, event.reason ?? "");
    }
    assert.equal(closeInfo({ code: 4999 }).hint, "Closed with code 4999; not reconnecting.");
  });
});

/** A stand-in for the browser's WebSocket that can receive messages and a close. */
class FakeSocket extends EventTarget {
  receive(data) {
    this.dispatchEvent(new MessageEvent("message", { data }));
  }
  close(code, reason = "") {
    const event = new Event("close");
    Object.assign(event, { code, reason });
    this.dispatchEvent(event);
    return event;
  }
}

function openFake() {
  globalThis.WebSocket = FakeSocket;
  try {
    return openSocket("wss://api.example.com/ws", { token: "a", protocols: ["chat"] });
  } finally {
    delete globalThis.WebSocket;
  }
}

/** The error frame wsgate sends on daphne just before closing with `closeCode`. */
function daphneFrame(reason, closeCode) {
  return JSON.stringify({ type: "error", error: { code: reason, message: "Why.", close_code: closeCode } });
}

describe("servers that drop close reasons (daphne)", () => {
  test("the reason comes from the last error frame, and a refusal stays terminal", () => {
    for (const [reason, code] of [
      ["invalid_token", 4108],
      ["auth_required", 4108],
      ["token_expired", 4108],
      ["user_mismatch", 4108],
      ["rate_limit_abuse", 4108],
      ["subprotocol_required", 4102],
      ["connection_limit", 4008],
      ["idle_timeout", 4001],
    ]) {
      const ws = openFake();
      ws.receive(JSON.stringify({ type: "echo", payload: 1 }));
      ws.receive(daphneFrame(reason, code));
      const info = closeInfo(ws.close(code));
      assert.deepEqual(info, { code, reason, known: true, retry: "never", hint: CLOSE_CODES[reason].hint });
    }
  });

  test("passing trouble read from the frame is still retried", () => {
    for (const [reason, code] of [
      ["auth_unavailable", 4113],
      ["backend_unavailable", 4113],
      ["slow_consumer", 4113],
      ["internal_error", 4111],
      ["message_too_large", 4109],
      ["heartbeat_timeout", 4000],
    ]) {
      const ws = openFake();
      ws.receive(daphneFrame(reason, code));
      const info = closeInfo(ws.close(code));
      assert.equal(info.reason, reason);
      assert.equal(info.known, true);
      assert.equal(info.retry, "backoff", reason);
    }
  });

  test("a frame for another code, or a reason in the close, wins over nothing", () => {
    const ws = openFake();
    ws.receive(daphneFrame("invalid_token", 4108));
    const other = closeInfo(ws.close(4113));
    assert.equal(other.reason, ""); // the frame announced another close: not this one's reason
    assert.equal(other.retry, "backoff");
    const own = closeInfo(ws.close(1008, "token_expired"));
    assert.equal(own.reason, "token_expired"); // a server that sends reasons is believed
  });

  test("without the frame, 4108 alone is still terminal", () => {
    const ws = openFake();
    const info = closeInfo(ws.close(4108));
    assert.equal(info.known, false);
    assert.equal(info.retry, "never");
  });

  test("a socket not from openSocket() passes the frame itself", () => {
    const frame = reasonFrame(daphneFrame("invalid_token", 4108));
    assert.deepEqual(frame, { reason: "invalid_token", code: 4108 });
    assert.equal(closeInfo({ code: 4108 }, frame).reason, "invalid_token");
    assert.equal(closeInfo({ code: 4108 }, frame).retry, "never");
  });

  test("other messages are not reason frames", () => {
    const others = [
      JSON.stringify({ type: "error", error: { code: "rate_limited", message: "Slow down." } }),
      JSON.stringify({ type: "said", text: '"close_code"' }),
      JSON.stringify({ type: "error", error: { code: 7, close_code: 4108 } }),
      JSON.stringify({ type: "error", error: { code: "x", close_code: "4108" } }),
      '{"close_code": ',
      "null",
      new ArrayBuffer(4),
    ];
    for (const data of others) assert.equal(reasonFrame(data), null, String(data));
  });
});

describe("backoffDelay", () => {
  test("doubles from 500 ms, between half and all of the ceiling", (t) => {
    const delays = (random) => {
      t.mock.method(Math, "random", () => random);
      const result = [0, 1, 2, 3, 6].map((failures) => backoffDelay(failures));
      t.mock.restoreAll();
      return result;
    };
    assert.deepEqual(delays(0), [250, 500, 1000, 2000, 15000]);
    assert.deepEqual(delays(1), [500, 1000, 2000, 4000, 30000]); // Math.random() < 1: a bound
  });

  test("stops growing at the cap, however many failures", () => {
    for (const failures of [6, 7, 100, 1e9, Infinity]) {
      const delay = backoffDelay(failures);
      assert.ok(delay >= 15000 && delay <= 30000, `${failures}: ${delay}`);
    }
  });

  test("takes its own first delay and cap", (t) => {
    t.mock.method(Math, "random", () => 0);
    assert.equal(backoffDelay(0, { base: 100, cap: 1000 }), 50);
    assert.equal(backoffDelay(3, { base: 100, cap: 1000 }), 400);
    assert.equal(backoffDelay(10, { base: 100, cap: 1000 }), 500);
  });

  test("spreads clients dropped together", () => {
    const delays = new Set(Array.from({ length: 50 }, () => backoffDelay(4)));
    assert.ok(delays.size > 40);
  });
});

describe("wsgate.d.ts", () => {
  const types = readFileSync(new URL("../wsgate.d.ts", import.meta.url), "utf8");

  test("declares every export of the module, and nothing else", () => {
    const declared = [...types.matchAll(/^export declare (?:const|function) (\w+)/gm)].map((m) => m[1]);
    assert.deepEqual(declared.sort(), Object.keys(wsgate).sort());
  });

  test("lists every close reason and every other code", () => {
    const union = (name) => {
      const body = types.match(new RegExp(`^export type ${name} =([^;]+);`, "m"))[1];
      return [...body.matchAll(/(?:"(\w+)"|(\d+))/g)].map((m) => m[1] ?? m[2]);
    };
    assert.deepEqual(union("CloseReason").sort(), Object.keys(CLOSE_CODES).sort());
    assert.deepEqual(union("OtherCode").sort(), Object.keys(OTHER_CODES).sort());
  });
});
