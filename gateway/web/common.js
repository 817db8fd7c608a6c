// Shared by the dashboard pages: fetch the JSON API, format values, build elements.
// No framework: the pages are small and must load fast on a Raspberry Pi.
"use strict";

const T = {
  async api(path) {
    const resp = await fetch(path, { headers: { Accept: "application/json" } });
    let body = null;
    try { body = await resp.json(); } catch (e) { body = { error: "bad_json", detail: String(e) }; }
    if (!resp.ok) {
      const err = new Error((body && body.detail) || resp.statusText);
      err.status = resp.status;
      err.code = body && body.error;
      throw err;
    }
    return body;
  },

  // el("td", {class: "x"}, "text", child, ...): text is never parsed as HTML.
  el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      node.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children) {
      if (c === null || c === undefined) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  },

  short(hex) {
    return hex ? hex.slice(0, 8) + "…" + hex.slice(-4) : "–";
  },

  age(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    const s = Math.max(0, Math.round(seconds));
    if (s < 60) return s + " s";
    if (s < 3600) return Math.floor(s / 60) + " min";
    if (s < 86400) return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
    return Math.floor(s / 86400) + " d";
  },

  // Local time and age: "14:02:11 (3 min ago)"; the full UTC time in the tooltip.
  when(ts) {
    if (!ts) return T.el("span", {}, "–");
    const d = new Date(ts * 1000);
    const ago = T.age(Date.now() / 1000 - ts);
    return T.el("span", { title: d.toISOString() }, d.toLocaleString() + " (" + ago + " ago)");
  },

  // Free heap in KB ("30.4 KB"), as the firmware's 100 KB budget is stated.
  kb(bytes) {
    return bytes === null || bytes === undefined ? "–" : (bytes / 1024).toFixed(1) + " KB";
  },

  // An offline board's firmware/heap/outbox are the last it reported: say when.
  asOf(b) {
    if (b.online !== false || !b.values_at) return "";
    return T.el("span", { class: "muted", "data-values-at": "" }, "last reported ", T.when(b.values_at));
  },

  value(rec) {
    const x = Number(rec.value);
    // 4 significant digits, but never an exponent for everyday magnitudes (101325 Pa)
    const v = Number.isInteger(x) || Math.abs(x) >= 1000 ? Math.round(x) : Number(x.toPrecision(4));
    return rec.name.split(".").pop() + " " + v + " " + rec.unit;
  },

  values(records) {
    return (records || []).map(T.value).join(", ") || "–";
  },

  state(r) {
    const cls = "state state-" + r.state + (r.flagged ? " flagged" : "");
    const label = r.flagged ? r.state + " ⚑ " + r.flags.join(", ") : r.state;
    return T.el("span", { class: cls, title: r.batch_status || "" }, label);
  },

  txLink(tx, explorer) {
    if (!tx) return "–";
    return explorer ? T.el("a", { href: explorer, target: "_blank", rel: "noopener" }, T.short(tx))
      : T.el("code", { title: tx }, T.short(tx));
  },

  fail(where, err) {
    const box = document.getElementById("error");
    box.hidden = false;
    box.textContent = where + ": " + err.message + (err.code ? " (" + err.code + ")" : "");
  },

  clear() {
    document.getElementById("error").hidden = true;
  },

  table(head, rows) {
    return T.el("table", {},
      T.el("thead", {}, T.el("tr", {}, ...head.map((h) => T.el("th", {}, h)))),
      T.el("tbody", {}, ...rows));
  },

  // Mark the page drawn (first time only): milliseconds since navigation started, for
  // the load figure of `terrapin bench dashboard` and the tests.
  ready() {
    const root = document.documentElement;
    if (!root.dataset.readyMs) root.dataset.readyMs = String(Math.round(performance.now()));
  },

  // Run `load` now and every `seconds` while the page is visible.
  every(seconds, load) {
    const tick = () => { if (!document.hidden) load(); };
    load();
    return setInterval(tick, seconds * 1000);
  },
};
