// The dashboard: every visible tile live, status and toggles without a reload.
//
// Over HTTP/1.1 a browser opens about six connections to a site, and an MJPEG <img> holds
// one for as long as it plays: eight live <img> streams would leave tiles blank and buttons
// waiting. So the page reads all its video from one response, /streams.mjpg, which carries
// every wanted camera's frames as labelled parts (X-Camera, X-Profile): the preview profile
// for each tile in view, the full profile for the one in focus. It is read with fetch()
// streams and each frame is decoded with createImageBitmap and drawn on the tile's canvas,
// then released: a blob: URL per frame in an <img> instead grows Chromium's memory by about
// 12 MB a minute for good (bench/profiles.py). One connection carries the video, one more
// the status refresh and the toggles. Tiles out of view and hidden tabs receive nothing: the stream is asked again for
// the tiles now wanted whenever that set changes. Every URL comes from data- attributes the
// server filled in with url_for.
"use strict";

const LABELS = { on: "live", error: "no signal" };
const STATUS_MS = 2000;
const STALL_MS = 3000; // a live tile with no new frame for this long is stalled
const CHECK_MS = 500;
const RETRY_MS = 1000; // first wait before asking again for a stream that failed
const RETRY_MAX_MS = 15000;
const SETTLE_MS = 250; // scrolling settles before the stream is asked again

const body = document.body;
const STREAMS_URL = new URL(body.dataset.streamsUrl, location.href);
const CRLF2 = [13, 10, 13, 10];

const cams = [...document.querySelectorAll(".tile")].map((el) => {
  const view = el.querySelector(".view");
  view.querySelector("noscript")?.remove(); // its picture is for pages without JavaScript
  const canvas = document.createElement("canvas");
  canvas.width = canvas.height = 0; // no picture yet: the box keeps its aspect ratio (CSS)
  canvas.setAttribute("role", "img");
  canvas.setAttribute("aria-label", view.dataset.alt);
  view.append(canvas);
  return {
    el,
    canvas,
    context: canvas.getContext("2d"),
    id: el.dataset.id,
    state: el.dataset.state,
    visible: false, // the IntersectionObserver says so at once
    stamp: "", // X-Timestamp of the newest frame shown
    lastNew: performance.now(), // when a new frame last arrived
    next: null, // the newest frame waiting for the one being drawn
    loading: false,
    message: "", // why the last toggle failed
  };
});
const byId = new Map(cams.map((cam) => [cam.id, cam]));
// The camera in focus: the server's choice until the address (#camera-ID) or a click names another.
let focused = cams.find((cam) => cam.el.classList.contains("focused")) || null;
let offline = false;
let stream = null; // {key, controller, openedAt}: the multiplexed stream being read
let retryMs = RETRY_MS;
let retryTimer = 0;
let settleTimer = 0;

// No session, or it expired: log in and come back.
function goLogin() {
  location.assign(body.dataset.loginUrl);
}

function setField(root, name, text) {
  root.querySelector(`[data-field="${name}"]`).textContent = text;
}

// Keep the picture's box at the camera's aspect ratio before (and between) frames.
function setRatio(cam, width, height) {
  if (width > 0 && height > 0) cam.el.querySelector(".picture").style.aspectRatio = `${width} / ${height}`;
}

// -- what to stream ---------------------------------------------------------------------

function profileOf(cam) {
  return cam === focused ? "full" : "preview";
}

function wanted(cam) {
  return cam.state !== "off" && cam.visible;
}

// The cameras the stream should carry now, as its query: "0:preview,3:full"; "" for none.
function wantedKey() {
  if (document.hidden) return "";
  return cams
    .filter(wanted)
    .map((cam) => `${cam.id}:${profileOf(cam)}`)
    .join(",");
}

// Ask for the stream of the tiles wanted now, unless it is already playing (or `force`).
function sync(force = false) {
  clearTimeout(retryTimer);
  const key = wantedKey();
  if (stream && stream.key === key && !force) return;
  if (stream) stream.controller.abort();
  stream = null;
  for (const cam of cams) {
    const live = key.split(",").includes(`${cam.id}:${profileOf(cam)}`);
    if (live && !cam.el.classList.contains("live")) cam.lastNew = performance.now();
    cam.el.classList.toggle("live", live);
  }
  if (!key) return;
  const url = new URL(STREAMS_URL);
  url.searchParams.set("cameras", key);
  stream = { key, controller: new AbortController(), openedAt: performance.now() };
  play(url, stream);
}

function syncSoon() {
  clearTimeout(settleTimer);
  settleTimer = setTimeout(sync, SETTLE_MS);
}

function retryLater() {
  clearTimeout(retryTimer);
  retryTimer = setTimeout(() => sync(true), retryMs);
  retryMs = Math.min(retryMs * 2, RETRY_MAX_MS);
}

// -- reading the multiplexed stream ---------------------------------------------------

function indexOf(bytes, pattern, from, end) {
  outer: for (let i = from; i <= end - pattern.length; i++) {
    for (let j = 0; j < pattern.length; j++) if (bytes[i + j] !== pattern[j]) continue outer;
    return i;
  }
  return -1;
}

// Parts of a multipart body as they arrive: push() bytes, then take() whole parts.
class Parts {
  constructor(boundary) {
    this.buf = new Uint8Array(1 << 16);
    this.start = 0;
    this.end = 0;
    this.opening = new TextEncoder().encode(`--${boundary}\r\n`);
    this.closing = new TextEncoder().encode(`\r\n--${boundary}\r\n`);
    this.opened = false;
    this.text = new TextDecoder();
  }

  push(chunk) {
    if (this.end + chunk.length > this.buf.length) {
      // Out of room: move what is left to the front, in a larger buffer if it must be.
      const size = this.end - this.start;
      let capacity = this.buf.length;
      while (size + chunk.length > capacity) capacity *= 2;
      if (capacity === this.buf.length) {
        this.buf.copyWithin(0, this.start, this.end);
      } else {
        const grown = new Uint8Array(capacity);
        grown.set(this.buf.subarray(this.start, this.end));
        this.buf = grown;
      }
      this.start = 0;
      this.end = size;
    }
    this.buf.set(chunk, this.end);
    this.end += chunk.length;
  }

  // The next whole part as {headers, body}, or null until more bytes come.
  take() {
    const buf = this.buf;
    if (!this.opened) {
      if (this.end - this.start < this.opening.length) return null;
      this.start += this.opening.length; // the opening boundary
      this.opened = true;
    }
    const headEnd = indexOf(buf, CRLF2, this.start, this.end);
    if (headEnd < 0) return null;
    const headers = {};
    for (const line of this.text.decode(buf.subarray(this.start, headEnd)).split("\r\n")) {
      const colon = line.indexOf(":");
      if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
    }
    const length = Number(headers["content-length"]);
    if (!Number.isInteger(length) || length < 0) throw new Error("a part without a length");
    const bodyStart = headEnd + 4;
    const next = bodyStart + length + this.closing.length;
    if (next > this.end) return null;
    const part = { headers, body: buf.slice(bodyStart, bodyStart + length) };
    this.start = next;
    return part;
  }
}

async function play(url, mine) {
  try {
    const response = await fetch(url, { signal: mine.controller.signal, cache: "no-store" });
    if (response.status === 401) return goLogin();
    if (!response.ok) throw new Error(response.statusText);
    const boundary = /boundary=([^;]+)/.exec(response.headers.get("Content-Type") || "")?.[1] || "frame";
    const parts = new Parts(boundary);
    const reader = response.body.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      parts.push(value);
      for (let part = parts.take(); part; part = parts.take()) {
        retryMs = RETRY_MS; // frames flow: a later failure starts its retries afresh
        const cam = byId.get(part.headers["x-camera"]);
        if (cam && part.headers["x-profile"] === profileOf(cam)) show(cam, part.body, part.headers["x-timestamp"]);
      }
    }
  } catch (err) {
    if (mine.controller.signal.aborted) return; // asked for another set of tiles
  }
  // The stream ended (a camera in it stopped, livecam restarted) or failed: ask again.
  if (stream === mine) retryLater();
}

// -- showing frames -------------------------------------------------------------------

function show(cam, bytes, stamp) {
  if (stamp !== cam.stamp) {
    cam.stamp = stamp;
    cam.lastNew = performance.now();
    if (cam.el.classList.contains("stalled")) setStalled(cam, false);
  }
  const blob = new Blob([bytes], { type: "image/jpeg" });
  if (cam.loading) cam.next = blob; // only the newest waits: never a backlog
  else setPicture(cam, blob);
}

async function setPicture(cam, blob) {
  cam.loading = true;
  try {
    const bitmap = await createImageBitmap(blob);
    if (cam.state !== "off") {
      if (cam.canvas.width !== bitmap.width || cam.canvas.height !== bitmap.height) {
        cam.canvas.width = bitmap.width;
        cam.canvas.height = bitmap.height;
      }
      cam.context.drawImage(bitmap, 0, 0);
    }
    bitmap.close(); // its pixels are on the canvas: free them now, not at some later GC
  } catch (err) {
    // Not a picture after all: the next frame will do.
  }
  cam.loading = false;
  if (cam.next) {
    const next = cam.next;
    cam.next = null;
    setPicture(cam, next);
  }
}

function showNoPicture(cam) {
  cam.next = null;
  cam.canvas.width = cam.canvas.height = 0; // cleared: CSS shows the no-picture icon
}

function setStalled(cam, stalled) {
  cam.el.classList.toggle("stalled", stalled);
  setField(cam.el, "state", stalled ? "stalled" : LABELS[cam.state] || cam.state);
}

// A live tile without a new frame for STALL_MS says so; the stream is then asked again.
function checkStalls() {
  if (!stream) return;
  const now = performance.now();
  let stalled = false;
  for (const cam of cams) {
    const late = cam.el.classList.contains("live") && cam.state === "on" && now - cam.lastNew > STALL_MS;
    if (late !== cam.el.classList.contains("stalled")) setStalled(cam, late);
    stalled ||= late;
  }
  if (stalled && now - stream.openedAt > Math.max(STALL_MS, retryMs)) {
    retryMs = Math.min(retryMs * 2, RETRY_MAX_MS);
    sync(true);
  }
}

// -- status and controls --------------------------------------------------------------

function setFocus(cam) {
  const previous = focused;
  focused = cam;
  if (previous) previous.el.classList.remove("focused");
  cam.el.classList.add("focused");
  sync();
}

function update(cam, record) {
  const was = cam.state;
  cam.state = record.state;
  cam.el.dataset.state = record.state;
  if (!cam.el.classList.contains("stalled")) setField(cam.el, "state", LABELS[record.state] || record.state);
  setField(cam.el, "fps", record.fps.toFixed(1));
  setField(cam.el, "viewers", record.viewers);
  setField(cam.el, "error", record.error || cam.message);
  setRatio(cam, record.width, record.height);
  cam.el.querySelector(".toggle").textContent = record.state === "off" ? "Turn on" : "Turn off";
  cam.el.querySelector(".snapshot").hidden = record.state !== "on"; // no picture to download
  if (record.state === "off") {
    showNoPicture(cam);
    if (cam.el.classList.contains("stalled")) setStalled(cam, false);
  }
  if (!focused && record.state !== "off") focused = cam;
  if (was !== record.state) syncSoon();
}

async function refreshStatus() {
  if (document.hidden) return;
  try {
    const response = await fetch(body.dataset.camerasUrl, { headers: { Accept: "application/json" } });
    if (response.status === 401) return goLogin(); // the session expired
    if (!response.ok) throw new Error(response.statusText);
    for (const record of await response.json()) {
      const cam = byId.get(String(record.id));
      if (cam) update(cam, record);
    }
    if (offline) sync(true); // back from an outage: a restart ended the stream
    offline = false;
  } catch (err) {
    offline = true; // keep the page as it is and try again next tick
  }
  setField(document, "offline", offline ? "livecam is not answering: retrying…" : "");
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

  setRatio(cam, Number(cam.el.dataset.width), Number(cam.el.dataset.height));
  if (cam.state === "off") showNoPicture(cam);
}

// Tiles scrolled out of sight (on a phone, most of them) are left out of the stream.
const visibility = new IntersectionObserver((entries) => {
  for (const entry of entries) cams.find((cam) => cam.el === entry.target).visible = entry.isIntersecting;
  syncSoon();
});

for (const cam of cams) {
  enhance(cam);
  visibility.observe(cam.el);
}
const named = cams.find((cam) => `#${cam.el.id}` === location.hash);
if (named) setFocus(named);
document.addEventListener("visibilitychange", () => sync());
setInterval(refreshStatus, STATUS_MS);
setInterval(checkStalls, CHECK_MS);
