// Rewards: each epoch's distribution and every owner's earned and claimed tokens.
"use strict";

function card(k, v) {
  return T.el("div", { class: "card" }, T.el("div", { class: "k" }, k), T.el("div", { class: "v" }, v));
}

async function load() {
  let data;
  try {
    // The epochs first: no epoch yet is a normal state, not an error (/api/rewards is a 404).
    const computed = await T.api("/api/rewards/epochs");
    if (!computed.epochs.length) {
      document.getElementById("summary").replaceChildren(card("rewards", "no epoch computed yet"));
      T.ready();
      return;
    }
    data = await T.api("/api/rewards");
  } catch (err) {
    T.fail("rewards", err);
    return;
  }
  T.clear();
  document.getElementById("summary").replaceChildren(
    card("latest epoch", data.epoch ?? "–"), card("published", data.published ? "yes" : "no"),
    card("distributed (cumulative)", data.total_tokens + " tokens"));
  const owners = Object.entries(data.owners).map(([owner, e]) => {
    const t = data.owner_tokens[owner] || {};
    return T.el("tr", { "data-owner": owner },
      T.el("td", {}, T.el("code", {}, owner)),
      T.el("td", {}, (e.boards || []).map(T.short).join(", ") || "–"),
      T.el("td", { class: "num" }, t.earned ?? "–"),
      T.el("td", { class: "num" }, t.claimed ?? "–"),
      T.el("td", { class: "num" }, t.claimable ?? "–"));
  });
  // Claims are on chain: only a gateway running the rewards stage can ask for them.
  const note = data.chain === false
    ? T.el("p", { class: "muted", id: "claims-note" },
      "Claimed and claimable need the chain: this gateway runs no rewards stage.")
    : "";
  document.getElementById("owners").replaceChildren(
    T.table(["Owner", "Boards", "Earned (tokens)", "Claimed (tokens)", "Claimable (tokens)"],
      owners), note);
  const epochs = data.epochs.map((e) => T.el("tr", {},
    T.el("td", { class: "num" }, e.epoch),
    T.el("td", { class: "num" }, e.total_tokens),
    T.el("td", {}, T.el("code", { title: e.root }, T.short(e.root))),
    T.el("td", {}, e.published ? T.txLink(e.publish_tx, null) : "not yet"),
    T.el("td", {}, T.when(e.computed_at))));
  document.getElementById("epochs").replaceChildren(
    T.table(["Epoch", "Total (tokens)", "Root", "Published", "Computed"], epochs));
  T.ready();
}

T.every(15, load);
