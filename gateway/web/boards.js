// Boards: every board the gateway knows, its liveness (retained status message),
// what it last measured and what the gateway made of its readings.
"use strict";

function onlineCell(b) {
  if (b.online === null) return T.el("span", { class: "muted" }, "no status yet");
  return T.el("span", { class: b.online ? "online" : "offline" }, b.online ? "online" : b.state);
}

function rejections(map) {
  const parts = Object.entries(map || {}).map(([k, n]) => k + " " + n);
  return parts.length ? T.el("span", { class: "bad" }, parts.join(", ")) : "–";
}

function row(b) {
  const href = "/boards/" + b.address;
  const flags = b.flags.concat(b.equivocations ? ["EQUIVOCATIONS " + b.equivocations] : []);
  return T.el("tr", { "data-board": b.address },
    T.el("td", {}, T.el("a", { href }, b.label || "(no label)")),
    T.el("td", {}, T.el("a", { href }, T.el("code", { title: b.address }, T.short(b.address)))),
    T.el("td", {}, b.owner ? T.el("code", { title: b.owner }, T.short(b.owner)) : "–"),
    T.el("td", {}, onlineCell(b), T.el("br"), T.when(b.last_seen)),
    T.el("td", {}, b.firmware || "–", T.el("br"), T.asOf(b)),
    T.el("td", { class: "num" }, T.kb(b.heap_free)),
    T.el("td", { class: "num" }, b.outbox ?? "–"),
    T.el("td", { class: "num" }, b.highest_seq ?? "–"),
    T.el("td", { class: "num" }, b.readings),
    T.el("td", {}, b.latest ? T.values(b.latest.records) : "–"),
    T.el("td", {}, rejections(b.rejections)),
    T.el("td", {}, flags.length ? T.el("span", { class: "bad" }, flags.join(", ")) : "–"));
}

async function load() {
  try {
    const data = await T.api("/api/boards");
    T.clear();
    const online = data.boards.filter((b) => b.online).length;
    const total = data.boards.reduce((n, b) => n + b.readings, 0);
    document.getElementById("summary").textContent =
      data.boards.length + " boards, " + online + " online, " + total + " readings stored";
    const head = ["Label", "Address", "Owner", "Online / last seen", "Firmware", "Free heap",
      "Outbox", "Highest seq", "Readings", "Latest values", "Rejections", "Flags"];
    document.getElementById("boards").replaceChildren(T.table(head, data.boards.map(row)));
    T.ready();
  } catch (err) {
    T.fail("boards", err);
  }
}

T.every(5, load);
