// The demo page's script: a chat client and an MCP call, built on wsgate.js.
//
// Query parameters fill the form: ?user=alice&room=lobby&kind=valid|expired|invalid|none
// &path=/ws&pong=0 (do not answer heartbeats) &connect=0 (do not connect on load)
// &server=http://host:port (the wsgate app to connect to; by default, the one serving the page).
// Everything the server sends is shown with textContent, never parsed as HTML.

import { backoffDelay, closeInfo, openSocket } from "/wsgate.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);

const CHAT = "chat";
const MCP = "mcp";
const FLOOD_SIZE = 40;
const LOG_LIMIT = 200;
// A connection that stayed open this long (ms) starts the backoff from scratch.
const STABLE_AFTER = 10000;

const server = new URL(params.get("server") || location.origin);
const wsBase = `${server.protocol === "https:" ? "wss:" : "ws:"}//${server.host}`;

let socket = null; // the chat connection, or null
let stopped = true; // true when the page must not reconnect on its own
let failures = 0; // connections in a row that did not last
let attempts = 0;
let pings = 0;
let retryTimer = null;
let refreshTimer = null;

// Helpers

function show(id, text) {
  $(id).textContent = text;
}

function log(text) {
  const item = document.createElement("li");
  item.textContent = `${new Date().toLocaleTimeString()} ${text}`;
  const list = $("log");
  list.prepend(item);
  while (list.children.length > LOG_LIMIT) list.lastElementChild.remove();
}

function setState(state) {
  $("state").dataset.state = state;
  show("state", state);
}

function send(ws, frame) {
  ws.send(JSON.stringify(frame));
}

function isOpen() {
  return socket !== null && socket.readyState === WebSocket.OPEN;
}

function selectValue(id, value) {
  const select = $(id);
  if ([...select.options].some((option) => option.value === value)) select.value = value;
}

// Tokens come from the example app's development-only endpoint; a real app has its own login.
async function fetchToken(kind, { status = true } = {}) {
  if (kind === "none") {
    if (status) show("token-status", "none (the development bypass lets /ws in)");
    return null;
  }
  const user = $("user").value;
  let response;
  try {
    response = await fetch("/demo/token", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ user, kind }),
    });
  } catch (error) {
    if (status) show("token-status", `no token: ${error}`);
    return null;
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const why = response.status === 404 ? "there is no demo token endpoint in production" : body.error;
    if (status) show("token-status", `no token (HTTP ${response.status}): ${why}; connecting without one`);
    return null;
  }
  if (status) show("token-status", `${body.kind} token for ${body.user}`);
  return body;
}

// The chat connection

async function attempt() {
  retryTimer = null;
  attempts += 1;
  show("attempts", String(attempts));
  show("reconnect", "");
  setState("connecting");
  const minted = await fetchToken($("token-kind").value);
  if (stopped) return; // disconnected while the token was on its way
  let ws;
  try {
    ws = openSocket(wsBase + $("path").value, { token: minted?.token ?? null, protocols: [CHAT] });
  } catch (error) {
    stopped = true;
    setState("stopped");
    log(String(error));
    return;
  }
  socket = ws;
  let openedAt = null;
  ws.onopen = () => {
    openedAt = Date.now();
    setState("open");
    show("subprotocol", ws.protocol);
    log(`open: subprotocol ${JSON.stringify(ws.protocol)}`);
    send(ws, { type: "whoami" });
    send(ws, { type: "join", room: $("room").value });
    if (minted?.expires_in) scheduleRefresh(ws, minted.expires_in);
  };
  ws.onmessage = (event) => onFrame(ws, event.data);
  ws.onerror = () => log("error event: browsers do not say why; the close event follows");
  ws.onclose = (event) => {
    if (ws !== socket) return; // a connection the person replaced
    socket = null;
    clearTimeout(refreshTimer);
    const info = closeInfo(event);
    addClose(info);
    if (openedAt !== null && Date.now() - openedAt > STABLE_AFTER) failures = 0;
    if (stopped) {
      setState("closed");
      show("reconnect", "disconnected");
    } else if (info.retry === "never") {
      stopped = true;
      setState("stopped");
      show("reconnect", `not reconnecting: ${info.hint}`);
    } else {
      const delay = backoffDelay(failures++);
      setState("waiting");
      show("reconnect", `reconnecting in ${(delay / 1000).toFixed(1)} s: ${info.hint}`);
      retryTimer = setTimeout(attempt, delay);
    }
  };
}

function onFrame(ws, data) {
  let frame;
  try {
    frame = JSON.parse(data);
  } catch {
    log(`not JSON: ${data.slice(0, 200)}`);
    return;
  }
  switch (frame.type) {
    case "ping": // the gate's heartbeat: any answer proves the page alive, a pong is the polite one
      if (!$("answer-pings").checked) {
        log("ping left unanswered");
        return;
      }
      send(ws, { type: "pong" });
      pings += 1;
      show("pings", String(pings));
      return;
    case "whoami":
      show("whoami", `${frame.payload?.user}${frame.payload?.dev ? " (development bypass)" : ""}`);
      return;
    case "joined":
      log(`joined ${frame.room}`);
      return;
    case "said":
      addMessage(frame.from, frame.text);
      return;
    case "echo":
      log(`echo ${JSON.stringify(frame.payload)}`);
      return;
    case "auth":
      log("token refreshed in band");
      return;
    case "error":
      addError(frame.error ?? {}, frame.id);
      return;
    default:
      log(`frame ${data.slice(0, 200)}`);
  }
}

// The gate closes a connection when its token expires, unless the client sends a fresh one.
function scheduleRefresh(ws, expiresIn) {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(async () => {
    const minted = await fetchToken("valid", { status: false });
    if (minted !== null && ws === socket && ws.readyState === WebSocket.OPEN) {
      send(ws, { type: "auth", token: minted.token });
      scheduleRefresh(ws, minted.expires_in);
    }
  }, Math.max(5, expiresIn - 60) * 1000);
}

function addMessage(from, text) {
  const item = document.createElement("li");
  const who = document.createElement("b");
  who.textContent = `${from}: `;
  item.append(who, String(text));
  $("messages").append(item);
}

function addError(error, id) {
  const item = document.createElement("li");
  item.dataset.code = error.code ?? "";
  const retry = error.retry_after !== undefined ? ` (retry after ${error.retry_after} s)` : "";
  const about = id !== undefined ? ` [message ${JSON.stringify(id)}]` : "";
  item.textContent = `${error.code}: ${error.message}${retry}${about}`;
  $("errors").prepend(item);
}

function addClose(info) {
  const item = document.createElement("li");
  item.dataset.code = String(info.code);
  item.dataset.reason = info.reason;
  item.textContent = `${info.code} ${info.reason || "(no reason)"}: ${info.hint}`;
  $("closes").append(item);
  log(`closed ${info.code} ${JSON.stringify(info.reason)}`);
}

function connect() {
  disconnectQuietly();
  stopped = false;
  failures = 0;
  attempt();
}

function disconnectQuietly() {
  clearTimeout(retryTimer);
  clearTimeout(refreshTimer);
  if (socket !== null) {
    const old = socket;
    socket = null; // its close event is ignored
    old.close(1000, "reconnecting");
  }
}

function disconnect() {
  stopped = true;
  clearTimeout(retryTimer);
  if (socket !== null) {
    socket.close(1000, "bye");
  } else {
    setState("closed");
  }
}

// The MCP endpoint: one JSON-RPC exchange per click on a connection of its own.

async function callMcp() {
  for (const id of ["mcp-protocol", "mcp-result", "mcp-error", "mcp-response"]) show(id, "");
  show("mcp-state", "connecting");
  const minted = await fetchToken($("token-kind").value, { status: false });
  let ws;
  try {
    ws = openSocket(`${wsBase}/ws/mcp`, { token: minted?.token ?? null, protocols: [MCP] });
  } catch (error) {
    show("mcp-state", "failed");
    show("mcp-error", String(error));
    return;
  }
  const request = (id, method, params) => send(ws, { jsonrpc: "2.0", id, method, params });
  ws.onopen = () => {
    show("mcp-state", "open");
    show("mcp-protocol", ws.protocol);
    request(1, "initialize", {
      protocolVersion: "2025-06-18",
      capabilities: {},
      clientInfo: { name: "wsgate-demo", version: "1.0" },
    });
  };
  ws.onmessage = (event) => {
    const message = JSON.parse(event.data);
    if (message.method === "ping") { // the gate's heartbeat, as a JSON-RPC request
      send(ws, { jsonrpc: "2.0", id: message.id, result: {} });
      return;
    }
    if (message.error) {
      const { code, message: text, data } = message.error;
      show("mcp-error", `${code} ${data?.reason ?? ""}: ${text}`);
      ws.close(1000, "done");
    } else if (message.id === 1) {
      send(ws, { jsonrpc: "2.0", method: "notifications/initialized" });
      request(2, "tools/call", { name: "echo", arguments: { text: $("mcp-text").value } });
    } else if (message.id === 2) {
      show("mcp-result", message.result.content.map((part) => part.text).join(""));
      show("mcp-response", JSON.stringify(message, null, 2));
      ws.close(1000, "done");
    }
  };
  ws.onclose = (event) => {
    const info = closeInfo(event);
    show("mcp-state", `closed ${info.code} ${info.reason}`.trim());
    if (info.code !== 1000) show("mcp-error", `${info.code} ${info.reason || "(no reason)"}: ${info.hint}`);
  };
}

// Wiring

for (const name of ["user", "room", "message"]) {
  if (params.has(name)) $(name).value = params.get(name);
}
if (params.has("kind")) selectValue("token-kind", params.get("kind"));
if (params.has("path")) selectValue("path", params.get("path"));
if (params.get("pong") === "0") $("answer-pings").checked = false;
show("server", wsBase);

$("connect").addEventListener("click", connect);
$("disconnect").addEventListener("click", disconnect);
$("join").addEventListener("click", () => {
  if (isOpen()) send(socket, { type: "join", room: $("room").value });
});
$("send-form").addEventListener("submit", (event) => {
  event.preventDefault();
  if (!isOpen()) {
    log("not connected");
    return;
  }
  send(socket, { type: "say", room: $("room").value, text: $("message").value });
  $("message").value = "";
});
$("flood").addEventListener("click", () => {
  if (!isOpen()) return;
  for (let i = 0; i < FLOOD_SIZE; i++) send(socket, { type: "echo", payload: i });
  log(`sent ${FLOOD_SIZE} messages at once`);
});
$("mcp-call").addEventListener("click", callMcp);

document.body.dataset.ready = "true";
if (params.get("connect") !== "0") connect();
