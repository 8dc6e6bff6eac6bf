// Switchboard web chat: plain JavaScript over the JSON API (POST /v1/messages, POST /v1/files,
// GET /v1/messages/<id>?wait=S&partial=<seq>). The browser's token (POST /v1/chat/token, renewed on every
// load), its user id and the conversation live in localStorage, so a reload shows the history and resumes
// waiting for an answer that is still pending. Another browser's token cannot read this one's messages. Messages are
// sent with "stream": true, so the answer is shown growing while the model writes it (each long poll
// returns when a newer partial exists), then replaced by the final reply.
"use strict";

(function () {
  const STORE = "switchboard.chat.v1";
  const WAIT = 25; // seconds per long poll (MAX_WAIT_SECONDS allows up to 30 by default)
  const DOWN = "Switchboard is unavailable right now, so your message was not sent. Please try again in a moment.";

  const $ = (id) => document.getElementById(id);
  const log = $("log"), form = $("composer"), input = $("message"), fileInput = $("file");
  const sendButton = $("send"), banner = $("banner"), thinking = $("thinking"), fileName = $("file-name");

  function randomId() {
    const bytes = new Uint8Array(12);
    crypto.getRandomValues(bytes);
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function load() {
    try {
      const state = JSON.parse(localStorage.getItem(STORE) || "null");
      if (state && state.user && state.token && Array.isArray(state.messages)) return state;
    } catch (e) { /* a damaged store starts a new conversation */ }
    return { user: "", token: "", session: randomId(), messages: [] };
  }
  const state = load();
  function save() {
    try { localStorage.setItem(STORE, JSON.stringify(state)); } catch (e) { /* private mode: history is lost */ }
  }

  // --- rendering -------------------------------------------------------------------------
  function render(message) {
    const item = document.createElement("li");
    item.className = "msg " + message.role + (message.state === "failed" ? " failed" : "")
      + (message.state === "unsent" ? " unsent" : "");
    item.dataset.id = message.id || "";
    const who = document.createElement("span");
    who.className = "who";
    who.textContent = message.role === "user" ? "You: " : "Switchboard: ";
    item.append(who, document.createTextNode(message.text));
    if (message.file) {
      const note = document.createElement("span");
      note.className = "note";
      note.textContent = "📎 " + message.file;
      item.append(note);
    }
    if (message.state === "unsent") {
      const note = document.createElement("span");
      note.className = "note";
      note.textContent = "Not sent.";
      item.append(note);
    }
    return item;
  }
  function redraw() {
    log.replaceChildren(...state.messages.map(render));
    scroll();
  }
  function append(message) {
    state.messages.push(message);
    save();
    log.append(render(message));
    scroll();
  }
  function scroll() {
    const main = log.parentElement;
    main.scrollTop = main.scrollHeight;
  }
  function pending() {
    return state.messages.some((m) => m.role === "user" && m.state === "pending");
  }
  function updateThinking() {
    thinking.hidden = !pending();
  }

  let downTimer = null;
  function showBanner(text) {
    banner.textContent = text;
    banner.hidden = false;
    if (!downTimer) downTimer = setInterval(checkReady, 5000);
  }
  function hideBanner() {
    banner.hidden = true;
    banner.textContent = "";
    if (downTimer) { clearInterval(downTimer); downTimer = null; }
  }
  async function checkReady() {
    try {
      const response = await fetch("/readyz", { cache: "no-store" });
      if (response.ok) hideBanner();
      else showBanner("Switchboard is unavailable right now. Messages cannot be sent until it is back.");
    } catch (e) {
      showBanner("Switchboard cannot be reached. Check your connection; messages cannot be sent until it is back.");
    }
  }

  // --- the browser's identity -------------------------------------------------------------
  // A valid token is renewed for the same user; an expired or missing one gets a new user, whose
  // conversation starts empty (the old one's answers are not readable with the new token).
  let identity = null;
  function ensureToken() {
    if (!identity) {
      identity = (async () => {
        const headers = state.token ? { Authorization: "Bearer " + state.token } : {};
        const response = await fetch("/v1/chat/token", { method: "POST", headers: headers, cache: "no-store" });
        if (!response.ok) { identity = null; throw new Error(await errorText(response)); }
        const body = await response.json();
        if (body.user !== state.user) {
          state.user = body.user;
          state.session = randomId();
          state.messages = [];
          redraw();
        }
        state.token = body.token;
        save();
      })();
    }
    return identity;
  }
  function authorized(headers) {
    return Object.assign({ Authorization: "Bearer " + state.token }, headers || {});
  }

  // --- sending and waiting ---------------------------------------------------------------
  async function errorText(response) {
    try {
      const body = await response.json();
      const fields = body.fields ? " (" + Object.entries(body.fields).map(([k, v]) => k + ": " + v).join("; ") + ")" : "";
      return (body.error || response.statusText) + fields;
    } catch (e) {
      return response.statusText || "HTTP " + response.status;
    }
  }

  async function submit(text, file) {
    const message = { role: "user", text: text || "", state: "sending", file: file ? file.name : undefined };
    let response;
    try {
      await ensureToken();
      if (file) {
        const data = new FormData();
        data.append("file", file);
        data.append("user", state.user);
        data.append("session", state.session);
        data.append("stream", "true");
        if (text) data.append("text", text);
        response = await fetch("/v1/files", { method: "POST", headers: authorized(), body: data });
      } else {
        response = await fetch("/v1/messages", {
          method: "POST",
          headers: authorized({ "Content-Type": "application/json", "Idempotency-Key": randomId() }),
          body: JSON.stringify({ user: state.user, session: state.session, text: text, stream: true,
                                 metadata: { via: "webchat" } }),
        });
      }
    } catch (e) {
      response = null;
    }
    if (!response || response.status >= 500) {
      message.state = "unsent";
      append(message);
      showBanner(DOWN);
      return false;
    }
    if (!response.ok) {
      message.state = "unsent";
      append(message);
      showBanner("Your message was not accepted: " + (await errorText(response)));
      return false;
    }
    hideBanner();
    const accepted = await response.json();
    message.id = accepted.message_id;
    message.state = "pending";
    append(message);
    updateThinking();
    waitFor(message);
    return true;
  }

  const waiting = new Set();
  async function waitFor(message) {
    if (waiting.has(message.id)) return;
    waiting.add(message.id);
    let delay = 1000;
    let seq = 0; // the last partial shown: the next poll returns as soon as a newer one exists
    try {
      for (;;) {
        if (!current(message)) return;
        let response;
        try {
          const url = "/v1/messages/" + encodeURIComponent(message.id) + "?wait=" + WAIT + "&partial=" + seq;
          response = await fetch(url, { cache: "no-store", headers: authorized() });
        } catch (e) {
          response = null;
        }
        if (response && response.status === 404) {
          finish(message, { role: "assistant", state: "failed", text: "This message's answer is no longer available." });
          return;
        }
        if (response && response.status === 429) {
          // The edge lends waiting only part of its threads (LONG_POLL_SLOTS): poll again when it says.
          const after = Number(response.headers.get("Retry-After")) || 1;
          await new Promise((resolve) => setTimeout(resolve, after * 1000));
          continue;
        }
        if (!response || !response.ok) {
          showBanner("Switchboard cannot be reached right now. Still waiting for the answer…");
          await new Promise((resolve) => setTimeout(resolve, delay));
          delay = Math.min(delay * 2, 15000);
          continue;
        }
        delay = 1000;
        if (!banner.hidden && banner.textContent.startsWith("Switchboard cannot be reached")) hideBanner();
        const record = await response.json();
        if (!current(message)) return; // "Start a new conversation" was clicked: this answer is not shown there
        if (record.partial && record.partial.seq > seq && record.status !== "answered" && record.status !== "failed") {
          seq = record.partial.seq;
          showPartial(message, record.partial.text);
        }
        if (record.status === "answered") {
          finish(message, { role: "assistant", state: "answered", text: (record.reply && record.reply.text) || "(no answer)" });
          return;
        }
        if (record.status === "failed") {
          const text = (record.reply && record.reply.text) || "Sorry, this message could not be answered.";
          finish(message, { role: "assistant", state: "failed", text: text });
          return;
        }
      }
    } finally {
      waiting.delete(message.id);
    }
  }
  // An answer belongs to the conversation its question was asked in: once the person starts a new one, the
  // old question is no longer in state.messages, and nothing of its answer is shown or stored.
  function current(message) { return state.messages.includes(message); }

  // The answer while it is written: one element after the question, replaced by the final answer.
  const partials = new Map();
  function showPartial(message, text) {
    const item = render({ role: "assistant", text: text + " …", id: message.id + ":partial" });
    item.classList.add("partial");
    item.setAttribute("aria-hidden", "true"); // screen readers hear the final answer once, not every growth step
    const old = partials.get(message.id);
    if (old) {
      old.replaceWith(item);
    } else {
      const asked = log.querySelector('li[data-id="' + CSS.escape(message.id) + '"]');
      log.insertBefore(item, asked ? asked.nextSibling : null);
    }
    partials.set(message.id, item);
    scroll();
  }
  function finish(message, answer) {
    const shown = partials.get(message.id);
    if (shown) { shown.remove(); partials.delete(message.id); }
    if (!current(message)) return;
    message.state = "done";
    answer.id = message.id + ":reply";
    // Keep the answer right after its question even when several are pending.
    const at = state.messages.indexOf(message);
    let index = at + 1;
    while (index < state.messages.length && state.messages[index].role === "assistant") index += 1;
    state.messages.splice(at >= 0 ? index : state.messages.length, 0, answer);
    save();
    const item = render(answer);
    const before = log.children[index] || null;
    log.insertBefore(item, at >= 0 ? before : null);
    const asked = log.querySelector('li[data-id="' + CSS.escape(message.id) + '"]');
    if (asked) asked.className = "msg user";
    scroll();
    updateThinking();
  }

  // --- wiring ----------------------------------------------------------------------------
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = input.value.trim();
    const file = fileInput.files && fileInput.files[0];
    if (!text && !file) { input.focus(); return; }
    sendButton.disabled = true;
    try {
      if (await submit(text, file)) {
        input.value = "";
        fileInput.value = "";
        fileName.textContent = "";
      }
    } finally {
      sendButton.disabled = false;
      input.focus();
    }
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  fileInput.addEventListener("change", () => {
    fileName.textContent = fileInput.files && fileInput.files[0] ? "Attached: " + fileInput.files[0].name : "";
  });
  $("new-chat").addEventListener("click", () => {
    state.session = randomId();
    state.messages = [];
    partials.forEach((item) => item.remove());
    partials.clear();
    save();
    redraw();
    updateThinking();
    input.focus();
  });

  redraw();
  updateThinking();
  checkReady();
  ensureToken().then(
    () => { state.messages.filter((m) => m.role === "user" && m.state === "pending").forEach(waitFor); },
    () => { showBanner("Switchboard cannot be reached right now. Messages cannot be sent until it is back."); },
  ).finally(() => {
    updateThinking();
    input.focus();
    document.documentElement.dataset.ready = "true";
  });
})();
