// Progressive enhancement of the dashboard: toggles without a reload, live status refresh.
// Every URL comes from data- attributes the server filled in with url_for.
"use strict";

const LABELS = { on: "live", error: "no signal" };
const REFRESH_MS = 2000;

function showView(tile, record) {
  const view = tile.querySelector(".view");
  const img = view.querySelector("img");
  if (record.state !== "off" && !img) {
    const live = document.createElement("img");
    live.alt = "Live view of " + record.name;
    // A new query string makes the browser open a fresh stream after a restart.
    live.src = tile.dataset.streamUrl + "?t=" + Date.now();
    view.replaceChildren(live);
  } else if (record.state === "off" && img) {
    img.removeAttribute("src");  // closes the stream connection
    const off = document.createElement("div");
    off.className = "off";
    off.textContent = "camera is off";
    view.replaceChildren(off);
  }
}

function update(tile, record) {
  tile.dataset.state = record.state;
  tile.querySelector('[data-field="state"]').textContent = LABELS[record.state] || record.state;
  tile.querySelector('[data-field="fps"]').textContent = record.fps.toFixed(1);
  tile.querySelector('[data-field="viewers"]').textContent = record.viewers;
  tile.querySelector('[data-field="error"]').textContent = record.error || "";
  tile.querySelector(".toggle").textContent = record.state === "off" ? "Turn on" : "Turn off";
  showView(tile, record);
}

async function refresh() {
  try {
    const response = await fetch(document.body.dataset.camerasUrl, { headers: { Accept: "application/json" } });
    if (!response.ok) return;
    for (const record of await response.json()) {
      const tile = document.getElementById("camera-" + record.id);
      if (tile) update(tile, record);
    }
  } catch (err) {
    // The server is restarting or unreachable: keep the page and try again next tick.
  }
}

function enhance(form) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = form.querySelector("button");
    button.disabled = true;
    try {
      const response = await fetch(form.action, { method: "POST", headers: { Accept: "application/json" } });
      if (response.ok) update(form.closest(".tile"), await response.json());
    } finally {
      button.disabled = false;
    }
  });
}

document.querySelectorAll(".tile form").forEach(enhance);
setInterval(refresh, REFRESH_MS);
