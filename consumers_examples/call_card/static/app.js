// The call card page: one card per call leg, kept live from the producer's events.
// Untrusted text (client names, companies, numbers) is only ever set with textContent.
"use strict";

const ENDED_CARD_SECONDS = 120;
const DIRECTIONS = { incoming: "⬇ incoming", outgoing: "⬆ outgoing", internal: "⇄ internal",
                     unknown: "? call" };
const calls = new Map();   // key → call
let socket = null;
let nextRef = 1;

function key(headers) { return `${headers.uuid}|${headers.subscriber}`; }

function seconds(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  return s < 60 ? `${s}s` : `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, "0")}s`;
}

function onEvent(message) {
  const h = message.headers || {};
  const body = message.body || {};
  if (!h.uuid || h.direction === "pause" || h.direction === "unpause") return;
  const now = Date.now();
  let call = calls.get(key(h));
  if (!call) {
    call = { key: key(h), uuid: h.uuid, parentUuid: h.parent_uuid || null,
             subscriber: h.subscriber, direction: h.direction || "unknown",
             state: "ringing", seenAt: now, bridgedAt: null, endedAt: null };
    calls.set(call.key, call);
  }
  const client = Array.isArray(body.otherLegs) && body.otherLegs[0] ? body.otherLegs[0] : {};
  call.client = { num: client.num || call.client?.num || null,
                  name: client.name || call.client?.name || null,
                  company: client.companyName || call.client?.company || null,
                  url: client.url || call.client?.url || null };
  call.leg = body.leg || call.leg || {};
  call.leg2 = body.leg2 || call.leg2 || null;
  call.dialAt = h.dial_at_ms ?? call.dialAt ?? null;
  call.bridgeAt = h.bridge_at_ms ?? call.bridgeAt ?? null;
  if (h.event === "call.bridge" && call.state !== "ended") {
    call.state = "talking";
    call.bridgedAt = call.bridgedAt || now;
  } else if (h.event === "call.hangup") {
    call.state = "ended";
    call.endedAt = now;
    call.serverEnd = h.server_time_ms ?? null;
  }
  render(call);
}

function safeUrl(url) {
  try {
    const u = new URL(url);
    return u.protocol === "https:" || u.protocol === "http:" ? u.href : null;
  } catch { return null; }
}

function timerText(call, now) {
  if (call.state === "ringing") return `ringing ${seconds(now - call.seenAt)}`;
  if (call.state === "talking") return `talking ${seconds(now - call.bridgedAt)}`;
  // Ended: durations from the PBX's own times when it sent them.
  const rang = call.bridgeAt && call.dialAt ? call.bridgeAt - call.dialAt
             : (call.serverEnd && call.dialAt ? call.serverEnd - call.dialAt : null);
  const talked = call.bridgeAt && call.serverEnd ? call.serverEnd - call.bridgeAt : null;
  return call.bridgeAt ? `rang ${seconds(rang)} · talked ${seconds(talked ?? 0)}`
                       : `missed · rang ${rang === null ? "?" : seconds(rang)}`;
}

function render(call) {
  let card = document.querySelector(`[data-key="${CSS.escape(call.key)}"]`);
  if (!card) {
    card = document.getElementById("card-template").content.firstElementChild.cloneNode(true);
    card.dataset.key = call.key;
    card.dataset.uuid = call.uuid;
    card.dataset.subscriber = call.subscriber;
    card.querySelector(".callback").addEventListener("click", () => callBack(call, card));
    document.getElementById("cards").prepend(card);
  }
  document.getElementById("empty").hidden = true;
  card.dataset.state = call.state;
  card.dataset.direction = call.direction;
  card.querySelector(".direction").textContent = DIRECTIONS[call.direction] || call.direction;
  card.querySelector(".state").textContent = call.state;
  card.querySelector(".timer").textContent = timerText(call, Date.now());
  const c = call.client;
  card.querySelector(".name").textContent = call.direction === "internal" && call.leg2
    ? `${call.leg.displayName || "?"} → ${call.leg2.displayName || call.leg2.ext || "?"}`
    : (c.name || "Unknown client");
  card.querySelector(".company").textContent = c.company || "";
  card.querySelector(".number").textContent = c.num || "";
  const who = call.leg.displayName ? `${call.leg.displayName}${call.leg.ext ? ` (${call.leg.ext})` : ""}` : "";
  card.querySelector(".employee").textContent = `employee ${call.subscriber}${who ? " · " + who : ""}` +
    (call.parentUuid ? " · group call" : "");
  const crm = card.querySelector(".crm");
  const url = c.url ? safeUrl(c.url) : null;
  crm.hidden = !url;
  if (url) crm.href = url;
  card.querySelector(".callback").hidden = !c.num;
}

function callBack(call, card) {
  if (!socket || socket.readyState !== WebSocket.OPEN) return;
  const ref = String(nextRef++);
  const button = card.querySelector(".callback");
  const outcome = card.querySelector(".outcome");
  button.disabled = true;
  outcome.className = "outcome";
  outcome.textContent = "calling…";
  card.dataset.ref = ref;
  socket.send(JSON.stringify({ type: "callback", ref, subscriber: call.subscriber, to: call.client.num }));
}

function onResult(message) {
  const card = document.querySelector(`[data-ref="${CSS.escape(message.ref)}"]`);
  if (!card) return;
  const reply = message.reply || {};
  const outcome = card.querySelector(".outcome");
  card.querySelector(".callback").disabled = false;
  if (reply.event === "success") {
    outcome.className = "outcome success";
    outcome.textContent = `calling ${reply.to} now`;
  } else {
    outcome.className = "outcome error";
    outcome.textContent = `could not call: ${reply.message || "error"}`;
  }
}

function connect() {
  const status = document.getElementById("status");
  socket = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`);
  socket.addEventListener("open", () => { status.dataset.state = "online"; status.textContent = "live"; });
  socket.addEventListener("close", () => {
    status.dataset.state = "offline"; status.textContent = "reconnecting…";
    setTimeout(connect, 1000);
  });
  socket.addEventListener("message", (e) => {
    const message = JSON.parse(e.data);
    if (message.type === "event") onEvent(message);
    else if (message.type === "callback-result") onResult(message);
  });
}

setInterval(() => {
  const now = Date.now();
  for (const call of calls.values()) {
    if (call.state === "ended" && now - call.endedAt > ENDED_CARD_SECONDS * 1000) {
      calls.delete(call.key);
      document.querySelector(`[data-key="${CSS.escape(call.key)}"]`)?.remove();
    } else {
      const card = document.querySelector(`[data-key="${CSS.escape(call.key)}"]`);
      if (card) card.querySelector(".timer").textContent = timerText(call, now);
    }
  }
  document.getElementById("empty").hidden = calls.size > 0;
}, 1000);

connect();
