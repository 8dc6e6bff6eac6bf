// The status page: reads GET /v1/status every few seconds and renders it with textContent only.
"use strict";

(function () {
  const root = document.documentElement;
  const refreshMs = Math.max(1, Number(root.dataset.refreshSeconds) || 5) * 1000;

  function el(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  }

  function fill(tableId, rows) {
    const body = document.querySelector("#" + tableId + " tbody");
    body.replaceChildren(...rows);
    if (!rows.length) {
      const cols = document.querySelectorAll("#" + tableId + " thead th").length;
      const td = el("td", "none");
      td.colSpan = cols;
      body.append(el("tr"));
      body.lastChild.append(td);
    }
  }

  function row(cells) {
    const tr = el("tr");
    for (const cell of cells) tr.append(cell instanceof Node ? cell : el("td", cell));
    return tr;
  }

  function num(value) { return el("td", value, "num"); }

  function ago(seconds) { return seconds === undefined ? "" : seconds.toFixed(1) + " s ago"; }

  function modelText(model) {
    if (!model) return "";
    return (model.backend || "") + (model.model ? " · " + model.model : "") + (model.loaded ? " (loaded)" : " (not loaded)");
  }

  function tokensText(model) {
    const last = model && model.last_generation;
    return last && last.tokens_per_second !== undefined ? last.tokens_per_second : "";
  }

  function renderWorkers(workers) {
    const rows = [];
    for (const w of workers) {
      const state = w.alive ? "alive" : "stale";
      rows.push(row([
        w.hostname + " (pid " + w.pid + ")", el("td", state, "state-" + state), (w.queues || []).join(", "),
        (w.pool || "") + (w.concurrency ? " ×" + w.concurrency : ""), modelText(w.model), num(tokensText(w.model)),
        ago(w.seconds_since_heartbeat),
      ]));
      for (const p of w.processes || []) {
        const pstate = p.alive ? "alive" : "stale";
        rows.push(row(["  └ pool process " + p.pid, el("td", pstate, "state-" + pstate), "", "", modelText(p.model),
          num(tokensText(p.model)), ago(p.seconds_since_heartbeat)]));
      }
    }
    fill("workers", rows);
  }

  function renderQueues(status) {
    const rows = Object.keys(status.queues).sort().map(function (q) {
      const alive = status.workers_alive[q] || 0;
      return row([q, num(status.queues[q]), el("td", alive, alive ? "num" : "num none-alive")]);
    });
    fill("queues", rows);
  }

  function renderHelpers(helpers) {
    fill("helpers", helpers.map(function (h) {
      const circuit = h.health.circuit;
      return row([h.name + " " + h.version, el("td", circuit, "circuit-" + circuit), num(h.queue_depth),
        num(h.health.calls), h.health.last_error || ""]);
    }));
  }

  function renderDead(status) {
    document.getElementById("dead-count").textContent = "(" + status.dead_letters + ")";
    fill("dead-letters", status.recent_dead_letters.map(function (d) {
      return row([d.at, d.kind, d.message_id, d.reason]);
    }));
  }

  function renderNumbers(status) {
    const m = status.metrics;
    const alive = status.workers.filter(function (w) { return w.alive; }).length;
    const items = [
      ["live workers", alive], ["tasks in flight", status.in_flight], ["messages accepted", m.messages_accepted],
      ["replies delivered", m.replies_delivered], ["replies dead", m.replies_dead],
      ["mean reply latency", m.mean_reply_latency_seconds === null ? "–" : m.mean_reply_latency_seconds + " s"],
      ["mean tokens/s", m.mean_tokens_per_second === null ? "–" : m.mean_tokens_per_second],
      ["helper errors", m.helper_errors], ["dead letters", status.dead_letters],
    ];
    const list = document.getElementById("numbers");
    list.replaceChildren(...items.map(function (item) {
      const box = el("div");
      box.dataset.name = item[0];
      box.append(el("dt", item[0]), el("dd", item[1]));
      return box;
    }));
  }

  async function refresh() {
    const banner = document.getElementById("banner");
    try {
      // The origin, not the page's URL: a page opened as http://user:token@host/status would make a relative
      // URL carry the credentials, which fetch() refuses; the browser sends its cached login for the realm.
      const response = await fetch(new URL("/v1/status", window.location.origin),
                                   { headers: { Accept: "application/json" }, cache: "no-store" });
      const status = await response.json();
      if (!response.ok) throw new Error(status.error || "HTTP " + response.status);
      renderNumbers(status);
      renderQueues(status);
      renderWorkers(status.workers);
      renderHelpers(status.helpers);
      renderDead(status);
      banner.hidden = true;
      document.getElementById("updated").textContent = "Updated " + new Date().toLocaleTimeString();
      root.dataset.refreshes = String(Number(root.dataset.refreshes || 0) + 1);
    } catch (error) {
      banner.textContent = "Status unavailable: " + error.message;
      banner.hidden = false;
    } finally {
      root.dataset.ready = "1";
      setTimeout(refresh, refreshMs);
    }
  }

  refresh();
}());
