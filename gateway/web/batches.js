// Batches and anchoring health: is the gateway getting its readings on chain?
"use strict";

let before = null;

function card(k, v, bad) {
  return T.el("div", { class: "card" }, T.el("div", { class: "k" }, k),
    T.el("div", { class: "v" + (bad ? " bad" : "") }, v));
}

function row(b) {
  return T.el("tr", { "data-batch": b.id },
    T.el("td", { class: "num" }, b.id),
    T.el("td", { class: "num" }, b.size),
    T.el("td", {}, T.el("code", { title: b.root }, T.short(b.root))),
    T.el("td", {}, T.txLink(b.tx, b.explorer)),
    T.el("td", { class: "num" }, b.block ?? "–"),
    T.el("td", { class: "num" }, b.confirmations ?? "?"),
    T.el("td", {}, T.el("span", { class: "state state-" + b.state }, b.state)),
    T.el("td", {}, T.when(b.anchored_at || b.created_at)));
}

const HEAD = ["Batch", "Size", "Root", "Tx", "Block", "Confirmations", "State", "Anchored / closed"];

async function load() {
  try {
    const data = await T.api("/api/batches?limit=50");
    T.clear();
    const h = data.anchoring;
    document.getElementById("health").replaceChildren(
      card("pending readings", h.pending_readings, false),
      card("waiting for a batch", h.waiting_readings, false),
      card("oldest unanchored", T.age(h.oldest_unanchored_age_s), h.oldest_unanchored_age_s > 600),
      card("last error", h.last_error || "none", !!h.last_error));
    document.getElementById("batches").replaceChildren(T.table(HEAD, data.batches.map(row)));
    before = data.batches.length ? data.batches[data.batches.length - 1].id : null;
    document.getElementById("older").disabled = !(before > 0);
    T.ready();
  } catch (err) {
    T.fail("batches", err);
  }
}

async function older() {
  try {
    const data = await T.api("/api/batches?limit=50&before=" + before);
    document.querySelector("#batches tbody").append(...data.batches.map(row));
    before = data.batches.length ? data.batches[data.batches.length - 1].id : null;
    document.getElementById("older").disabled = !(before > 0);
  } catch (err) {
    T.fail("older batches", err);
  }
}

document.getElementById("older").addEventListener("click", older);
T.every(10, load);
