// The dashboard: live status, toggles without a reload, pictures that keep moving.
//
// Over HTTP/1.1 a browser opens at most six connections to a site and an MJPEG <img> holds
// one for as long as it plays, so only the camera in focus streams live; every other tile
// shows a fresh snapshot about once a second, fetched at most two at a time. At most four
// connections are busy (the stream, two snapshots, the status refresh) and the on/off
// buttons always find one free. Over HTTP/2 every request shares one connection, so every
// tile streams live. Every URL comes from data- attributes the server filled in with url_for.
"use strict";

const LABELS = { on: "live", error: "no signal" };
const STATUS_MS = 2000;
const SNAPSHOT_MS = 1000; // how old a tile's picture may get
const SNAPSHOTS_AT_ONCE = 2;
const PUMP_MS = 200;

const body = document.body;
const protocol = performance.getEntriesByType("navigation")[0]?.nextHopProtocol || "";
const ALL_LIVE = protocol === "h2" || protocol === "h3";
const NO_PICTURE = new URL(body.dataset.noPictureUrl, location.href).href;

const cams = [...document.querySelectorAll(".tile")].map((el) => ({
  el,
  img: el.querySelector(".view img"),
  state: el.dataset.state,
  live: el.classList.contains("live"), // its <img> plays the stream
  shotAt: performance.now(), // the server's page already asked for a snapshot
  loading: false,
  visible: true,
  message: "", // why the last toggle failed
}));
// The camera in focus: the server's choice until the address (#camera-ID) or a click names another.
let focused = cams.find((cam) => cam.el.classList.contains("focused")) || null;
let snapshotsInFlight = 0;
let offline = false;

// No session, or it expired: log in and come back.
function goLogin() {
  location.assign(body.dataset.loginUrl);
}

function setField(root, name, text) {
  root.querySelector(`[data-field="${name}"]`).textContent = text;
}

function setSource(cam, url) {
  const old = cam.img.src;
  cam.img.src = url; // also closes the stream the old source played
  if (old.startsWith("blob:")) URL.revokeObjectURL(old);
}

// The picture a tile's state calls for: the live stream, snapshots, or the no-picture icon.
function showPicture(cam) {
  if (cam.state === "off") {
    cam.live = false;
    if (cam.img.src !== NO_PICTURE) setSource(cam, NO_PICTURE);
  } else if (ALL_LIVE || cam === focused) {
    // A new query string opens a new stream instead of reusing one the browser remembers.
    if (!cam.live) setSource(cam, `${cam.el.dataset.streamUrl}?t=${Date.now()}`);
    cam.live = true;
  } else if (cam.live) {
    cam.live = false;
    cam.shotAt = 0; // first in line: its next snapshot replaces the stream and closes it
  }
  cam.el.classList.toggle("live", cam.live);
}

function setFocus(cam) {
  const previous = focused;
  focused = cam;
  if (previous) {
    previous.el.classList.remove("focused");
    showPicture(previous);
  }
  cam.el.classList.add("focused");
  showPicture(cam);
}

function update(cam, record) {
  cam.state = record.state;
  cam.el.dataset.state = record.state;
  setField(cam.el, "state", LABELS[record.state] || record.state);
  setField(cam.el, "fps", record.fps.toFixed(1));
  setField(cam.el, "viewers", record.viewers);
  setField(cam.el, "error", record.error || cam.message);
  cam.el.querySelector(".toggle").textContent = record.state === "off" ? "Turn on" : "Turn off";
  cam.el.querySelector(".snapshot").hidden = record.state !== "on"; // no picture to download
  if (!focused && record.state !== "off") setFocus(cam);
  else showPicture(cam);
}

async function refreshStatus() {
  if (document.hidden) return;
  try {
    const response = await fetch(body.dataset.camerasUrl, { headers: { Accept: "application/json" } });
    if (response.status === 401) return goLogin(); // the session expired
    if (!response.ok) throw new Error(response.statusText);
    const records = await response.json();
    // Back from an outage (a server restart ends every stream): open the streams again.
    if (offline) cams.forEach((cam) => (cam.live = false));
    for (const record of records) {
      const cam = cams.find((c) => c.el.dataset.id === String(record.id));
      if (cam) update(cam, record);
    }
    offline = false;
  } catch (err) {
    offline = true; // keep the page as it is and try again next tick
  }
  setField(document, "offline", offline ? "livecam is not answering: retrying…" : "");
}

async function loadSnapshot(cam) {
  cam.loading = true;
  cam.shotAt = performance.now();
  snapshotsInFlight += 1;
  try {
    const response = await fetch(cam.el.dataset.snapshotUrl, { cache: "no-store" });
    if (response.status === 401) return goLogin();
    // 503: the camera went off or lost its source; the status refresh will say so.
    if (!response.ok) return;
    const blob = await response.blob();
    if (cam.state === "on" && !cam.live) setSource(cam, URL.createObjectURL(blob));
  } catch (err) {
    // Unreachable: the status refresh shows it; the next round tries again.
  } finally {
    cam.loading = false;
    snapshotsInFlight -= 1;
    pump();
  }
}

// Ask for the snapshots that are due, the oldest first, never more than a few at once.
function pump() {
  if (document.hidden) return;
  const now = performance.now();
  while (snapshotsInFlight < SNAPSHOTS_AT_ONCE) {
    const due = cams.filter(
      (cam) => cam.state === "on" && !cam.live && !cam.loading && cam.visible && now - cam.shotAt >= SNAPSHOT_MS,
    );
    if (due.length === 0) return;
    loadSnapshot(due.reduce((oldest, cam) => (cam.shotAt < oldest.shotAt ? cam : oldest)));
  }
}

function enhance(cam) {
  const form = cam.el.querySelector("form");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = form.querySelector("button");
    button.disabled = true;
    try {
      const response = await fetch(form.action, { method: "POST", headers: { Accept: "application/json" } });
      if (response.status === 401) return goLogin();
      const answer = await response.json();
      cam.message = response.ok ? "" : answer.error;
      if (response.ok) update(cam, answer);
      else setField(cam.el, "error", cam.message);
    } catch (err) {
      cam.message = "livecam did not answer: try again";
      setField(cam.el, "error", cam.message);
    } finally {
      button.disabled = false;
    }
  });

  const view = cam.el.querySelector(".view");
  view.addEventListener("click", (event) => {
    event.preventDefault(); // focus here rather than open the stream on its own page
    setFocus(cam);
    history.replaceState(null, "", `#${cam.el.id}`); // a reload keeps the focus
  });

  const fullscreen = cam.el.querySelector(".fullscreen");
  fullscreen.hidden = !document.fullscreenEnabled;
  fullscreen.addEventListener("click", () => {
    setFocus(cam);
    view.parentElement.requestFullscreen().catch(() => {}); // refused: the focused tile will do
  });

  // A picture that fails (too many viewers, a restart) gives way to the icon until the next
  // status refresh opens the stream again or the next snapshot arrives.
  cam.img.addEventListener("error", () => {
    cam.live = false;
    if (cam.img.src !== NO_PICTURE) setSource(cam, NO_PICTURE);
  });
}

// Tiles scrolled out of sight (on a phone, most of them) need no snapshots.
const visibility = new IntersectionObserver((entries) => {
  for (const entry of entries) cams.find((cam) => cam.el === entry.target).visible = entry.isIntersecting;
});

for (const cam of cams) {
  enhance(cam);
  visibility.observe(cam.el);
}
const named = cams.find((cam) => `#${cam.el.id}` === location.hash);
if (named) setFocus(named);
cams.forEach(showPicture);
setInterval(refreshStatus, STATUS_MS);
setInterval(pump, PUMP_MS);
