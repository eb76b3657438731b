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
// the status refresh and the toggles. Tiles out of view and hidden tabs receive no video: the stream is asked again for
// the tiles now wanted whenever that set changes. Every URL comes from data- attributes the
// server filled in with url_for.
//
// What livecam notices arrives at once on one more connection, an EventSource on /events
// (Server-Sent Events): a tile whose camera sees motion is marked and shows where, a camera
// switched elsewhere shows its new state without waiting for the status refresh, and the
// header's list of events (the recent ones from /events/recent first) stays current. After
// a drop the browser reconnects by itself and livecam replays what it missed (Last-Event-ID).
//
// Cameras come and go while the page is open: the status refresh reads the list, and a
// camera added anywhere gets its tile (built from the page's <template>, played through the
// same stream), one removed loses it. A visitor who may control also gets the Add camera
// dialog (try a source, then save it) and each tile's Edit and Remove; the server renders
// those controls only for such a visitor, and checks every request anyway.
"use strict";

const LABELS = { on: "live", error: "no signal" };
const STATUS_MS = 2000;
const STALL_MS = 3000; // a live tile with no new frame for this long is stalled
const CHECK_MS = 500;
const RETRY_MS = 1000; // first wait before asking again for a stream that failed
const RETRY_MAX_MS = 15000;
const SETTLE_MS = 250; // scrolling settles before the stream is asked again
const EVENTS_SHOWN = 100; // events in the header's list, newest first
const SAME_CHANGE_S = 0.05; // a record's "since" and its state event's time differ by less

const body = document.body;
const STREAMS_URL = new URL(body.dataset.streamsUrl, location.href);
const CRLF2 = [13, 10, 13, 10];
const MANAGE = "addUrl" in body.dataset; // the server offers the controls that change cameras

// What the page knows of a tile's camera, and the canvas its frames are drawn on.
function adopt(el) {
  const view = el.querySelector(".view");
  view.querySelector("noscript")?.remove(); // its picture is for pages without JavaScript
  const canvas = document.createElement("canvas");
  canvas.width = canvas.height = 0; // no picture yet: the box keeps its aspect ratio (CSS)
  canvas.setAttribute("role", "img");
  canvas.setAttribute("aria-label", view.dataset.alt);
  view.append(canvas);
  const box = document.createElement("div"); // where the camera sees motion, over the picture
  box.className = "motion-box";
  box.hidden = true;
  view.after(box);
  return {
    el,
    canvas,
    box,
    motion: null, // the box [x0, y0, x1, y1] (0 to 1) of the motion under way, or null
    stateAt: 0, // the time of the last state event: an older record's state is stale
    context: canvas.getContext("2d"),
    id: el.dataset.id,
    name: el.querySelector("h2").textContent,
    state: el.dataset.state,
    visible: false, // the IntersectionObserver says so at once
    stamp: "", // X-Timestamp of the newest frame shown
    lastNew: performance.now(), // when a new frame last arrived
    next: null, // the newest frame waiting for the one being drawn
    loading: false,
    message: "", // why the last toggle failed
  };
}

const grid = document.querySelector(".grid");
const cams = [...grid.querySelectorAll(".tile")].map(adopt); // in id order, as the tiles
const byId = new Map(cams.map((cam) => [cam.id, cam]));
// A tile or its canvas: its camera (for the observers).
const owners = new WeakMap(cams.flatMap((cam) => [[cam.el, cam], [cam.canvas, cam]]));
let listChanges = 0; // cameras this page added or removed: a list read meanwhile may predate them
let listsAsked = 0; // reads of the camera list asked for, and the newest one applied
let listApplied = 0;
// The camera in focus: the server's choice until the address (#camera-ID) or a click names another.
let focused = cams.find((cam) => cam.el.classList.contains("focused")) || null;
let offline = false;
let stream = null; // {key, controller, openedAt, stale}: the multiplexed stream being read
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
  if (stream && stream.key === key && !stream.stale && !force) return;
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
        placeBox(cam);
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

// The stream being read carries this camera's frames.
function carries(cam) {
  return Boolean(stream) && stream.key.split(",").includes(`${cam.id}:${profileOf(cam)}`);
}

// The camera stopped (switched off, or reopened with new settings): a stream opened before
// carries none of its frames from now on, even if the same tiles are wanted again soon.
function stopped(cam) {
  if (carries(cam)) stream.stale = true;
}

function setState(cam, state, error) {
  const was = cam.state;
  if (state === "off" && was !== "off") stopped(cam);
  cam.state = state;
  cam.el.dataset.state = state;
  if (!cam.el.classList.contains("stalled")) setField(cam.el, "state", LABELS[state] || state);
  setField(cam.el, "error", error || cam.message);
  cam.el.querySelector(".toggle").textContent = state === "off" ? "Turn on" : "Turn off";
  cam.el.querySelector(".snapshot").hidden = state !== "on"; // no picture to download
  if (state === "off") {
    showNoPicture(cam);
    setMotion(cam, null);
    if (cam.el.classList.contains("stalled")) setStalled(cam, false);
  }
  if (!focused && state !== "off") focused = cam;
  if (was !== state) syncSoon();
}

function setName(cam, name) {
  cam.name = name;
  cam.el.querySelector("h2").textContent = name;
  cam.el.querySelector(".view").setAttribute("aria-label", `Watch ${name} live`);
  cam.canvas.setAttribute("aria-label", `Picture from ${name}`);
}

function update(cam, record) {
  if (record.name !== cam.name) setName(cam, record.name); // renamed (here or elsewhere)
  const label = cam.el.querySelector(".label"); // server-drawn tiles have one for a test pattern only
  if (label) label.hidden = !record.test_pattern;
  // A record read before a state event arrived must not undo what the event said.
  if (record.since >= cam.stateAt - SAME_CHANGE_S) setState(cam, record.state, record.error);
  setField(cam.el, "fps", record.fps.toFixed(1));
  setField(cam.el, "viewers", record.viewers);
  cam.width = record.width;
  cam.fps = record.fps;
  setRatio(cam, record.width, record.height);
}

async function refreshStatus() {
  if (document.hidden) return;
  try {
    const changes = listChanges;
    const asked = ++listsAsked;
    const response = await fetch(body.dataset.camerasUrl, { headers: { Accept: "application/json" } });
    if (response.status === 401) return goLogin(); // the session expired
    if (!response.ok) throw new Error(response.statusText);
    const records = await response.json();
    // A list asked for before this page added or removed a camera, or before a list already
    // applied, would undo what came since: its cameras come and go with the next one.
    const current = changes === listChanges && asked > listApplied;
    if (current) listApplied = asked;
    for (const record of records) {
      const cam = byId.get(String(record.id));
      if (cam) update(cam, record);
      else if (current) addTile(record); // added elsewhere
    }
    if (current) {
      const listed = new Set(records.map((record) => String(record.id)));
      for (const cam of cams.filter((cam) => !listed.has(cam.id))) dropTile(cam); // removed elsewhere
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

  const edit = cam.el.querySelector(".edit");
  const remove = cam.el.querySelector(".remove");
  if (MANAGE && edit && remove) {
    edit.hidden = remove.hidden = false;
    edit.addEventListener("click", () => openEditor(cam));
    remove.addEventListener("click", () => askRemove(cam));
  }

  setRatio(cam, Number(cam.el.dataset.width), Number(cam.el.dataset.height));
  if (cam.state === "off") showNoPicture(cam);
}

// -- events: motion, state changes, the list -----------------------------------------

// Mark a tile whose camera sees motion and show where (box: [x0, y0, x1, y1], 0 to 1), or
// clear it (null).
function setMotion(cam, box) {
  cam.motion = box;
  cam.el.classList.toggle("motion", Boolean(box));
  placeBox(cam);
}

// Put the motion box over the part of the canvas the picture fills (object-fit: contain).
function placeBox(cam) {
  const box = cam.motion;
  cam.box.hidden = !box;
  if (!box) return;
  const canvas = cam.canvas;
  const shown = canvas.width > 0;
  const width = shown ? canvas.width : Number(cam.el.dataset.width) || 4;
  const height = shown ? canvas.height : Number(cam.el.dataset.height) || 3;
  const scale = Math.min(canvas.clientWidth / width, canvas.clientHeight / height);
  const [w, h] = [width * scale, height * scale];
  const left = canvas.offsetLeft + (canvas.clientWidth - w) / 2;
  const top = canvas.offsetTop + (canvas.clientHeight - h) / 2;
  const style = cam.box.style;
  style.left = `${left + box[0] * w}px`;
  style.top = `${top + box[1] * h}px`;
  style.width = `${(box[2] - box[0]) * w}px`;
  style.height = `${(box[3] - box[1]) * h}px`;
}

const eventsButton = document.querySelector(".events-button");
const eventsPanel = document.getElementById("events");
const eventList = eventsPanel.querySelector(".event-list");
const listed = new Set(); // the ids of the events in the list
let lastEventId = null; // the newest event seen: where a new EventSource starts
let unseen = 0; // events that came while the list was closed

function describe(event) {
  if (event.type === "motion.start") return "motion";
  if (event.type === "motion.end") return `motion ended after ${Number(event.duration).toFixed(1)} s`;
  const state = LABELS[event.state] || event.state;
  return event.error ? `${state}: ${event.error}` : state;
}

// One event in the list: its picture (loaded only once the list shows it), what, where, when.
function eventItem(event) {
  const item = document.createElement("li");
  item.className = "event";
  item.dataset.id = event.id;
  item.dataset.type = event.type;
  item.dataset.camera = event.camera;
  if (event.snapshot) {
    const picture = document.createElement("img");
    picture.loading = "lazy";
    picture.alt = `${event.name}, ${describe(event)}`;
    picture.src = event.snapshot;
    item.append(picture);
  }
  const text = document.createElement("p");
  const name = document.createElement("strong");
  name.textContent = event.name;
  const what = document.createElement("span");
  what.textContent = describe(event);
  const when = document.createElement("time");
  const date = new Date(event.time * 1000);
  when.dateTime = date.toISOString();
  when.textContent = date.toLocaleTimeString();
  text.append(name, " ", what, " ", when);
  item.append(text);
  return item;
}

// Add events (oldest first) to the list, which shows the newest first, at most EVENTS_SHOWN;
// each once. Returns how many were new to it.
function addToList(events) {
  let added = 0;
  for (const event of events) {
    if (listed.has(event.id)) continue;
    listed.add(event.id);
    eventList.prepend(eventItem(event));
    added++;
  }
  while (eventList.children.length > EVENTS_SHOWN) {
    const oldest = eventList.lastElementChild;
    listed.delete(Number(oldest.dataset.id));
    oldest.remove();
  }
  eventsPanel.classList.toggle("has-events", eventList.children.length > 0);
  return added;
}

function setUnseen(count) {
  unseen = count;
  setField(document, "unseen", unseen ? String(unseen) : "");
}

// What an event changes on the page.
function apply(event) {
  const cam = byId.get(String(event.camera));
  if (!cam) {
    if (event.type === "camera.state") refreshStatus(); // a camera new to this page: its tile now
    return;
  }
  if (event.type === "motion.start") setMotion(cam, event.box);
  else if (event.type === "motion.end") setMotion(cam, null);
  else if (event.type === "camera.state") {
    cam.stateAt = event.time;
    setState(cam, event.state, event.error);
  }
}

function onEvent(message) {
  const event = JSON.parse(message.data);
  lastEventId = message.lastEventId;
  apply(event);
  if (addToList([event]) && eventsPanel.hidden) setUnseen(unseen + 1);
}

// Follow /events from lastEventId on. The browser reconnects by itself after a drop (with
// Last-Event-ID); an answer that is not a stream (401, 503) ends the EventSource for good,
// so a new one is made a little later.
function listen() {
  const url = new URL(body.dataset.eventsUrl, location.href);
  if (lastEventId !== null) url.searchParams.set("since", lastEventId);
  const source = new EventSource(url);
  for (const type of ["motion.start", "motion.end", "camera.state"]) source.addEventListener(type, onEvent);
  source.addEventListener("error", () => {
    if (source.readyState === EventSource.CLOSED) setTimeout(listen, RETRY_MAX_MS);
  });
}

// The motion under way when the page opened: each camera's last motion event, if a start.
function motionNow(events) {
  const last = new Map();
  for (const event of events) if (event.type.startsWith("motion.")) last.set(event.camera, event);
  for (const [camera, event] of last) {
    const cam = byId.get(String(camera));
    if (cam && event.type === "motion.start" && cam.state !== "off") setMotion(cam, event.box);
  }
}

function showList(shown) {
  eventsPanel.hidden = !shown;
  eventsButton.setAttribute("aria-expanded", String(shown));
  if (shown) setUnseen(0);
}

async function enhanceEvents() {
  eventsButton.hidden = false;
  eventsButton.addEventListener("click", () => showList(eventsPanel.hidden));
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && !eventsPanel.hidden) showList(false);
  });
  try {
    const url = new URL(body.dataset.recentUrl, location.href);
    url.searchParams.set("limit", EVENTS_SHOWN);
    const response = await fetch(url, { headers: { Accept: "application/json" } });
    if (response.status === 401) return goLogin();
    if (!response.ok) throw new Error(response.statusText);
    const recent = (await response.json()).reverse(); // oldest first
    addToList(recent);
    motionNow(recent);
    // From the newest listed on; none yet: every event kept from now on, from the start.
    lastEventId = recent.length ? String(recent[recent.length - 1].id) : "0";
  } catch (err) {
    // No list: the stream still brings what happens from now on.
  }
  listen();
}

// -- tiles come and go -----------------------------------------------------------------

function countTiles() {
  setField(document, "count", `${cams.length} camera${cams.length === 1 ? "" : "s"}`);
}

// The tile of a camera added while the page is open, from its record, in id order, playing
// like the others (the IntersectionObserver asks for the stream with it).
function addTile(record) {
  const el = document.getElementById("tile").content.firstElementChild.cloneNode(true);
  const id = String(record.id);
  el.id = `camera-${id}`;
  el.dataset.id = id;
  el.dataset.url = record.urls.status;
  el.dataset.state = record.state;
  el.dataset.width = record.width || "";
  el.dataset.height = record.height || "";
  el.querySelector("h2").textContent = record.name;
  el.querySelector(".view").href = record.urls.stream;
  el.querySelector(".view").dataset.alt = `Picture from ${record.name}`;
  el.querySelector("form").action = record.urls.toggle;
  el.querySelector(".snapshot").href = record.urls.snapshot;
  const after = cams.find((cam) => Number(cam.id) > record.id) || null;
  grid.insertBefore(el, after && after.el);
  const cam = adopt(el);
  cams.splice(after ? cams.indexOf(after) : cams.length, 0, cam);
  byId.set(id, cam);
  owners.set(cam.el, cam).set(cam.canvas, cam);
  enhance(cam);
  update(cam, record);
  watch(cam);
  countTiles();
  return cam;
}

// A removed camera's tile goes; the stream is asked again without it.
function dropTile(cam) {
  visibility.unobserve(cam.el);
  resized.unobserve(cam.canvas);
  cams.splice(cams.indexOf(cam), 1);
  byId.delete(cam.id);
  cam.el.remove();
  countTiles();
  if (focused === cam) {
    focused = null;
    const next = cams.find((other) => other.state !== "off");
    if (next) return setFocus(next);
  }
  sync();
}

// -- adding, changing and removing cameras (for a visitor who may control) ---------------

const editor = document.getElementById("camera-dialog");
const editorForm = editor?.querySelector("form");
const remover = document.getElementById("remove-dialog");
let editing = null; // the camera the dialog changes, or null: it adds one
let removing = null; // the camera the confirmation is about
let probes = 0; // tries asked for: only the latest one's answer is shown

function field(name) {
  return editorForm.elements.namedItem(name);
}

// A JSON request that may change cameras; its answer, or {error} when it is not JSON.
async function send(method, url, table) {
  const options = { method, headers: { Accept: "application/json" } };
  if (table !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(table);
  }
  const response = await fetch(url, options);
  if (response.status === 401) goLogin(); // the session expired
  const answer = response.status === 204 ? {} : await response.json().catch(() => null);
  return { response, answer: answer || { error: `livecam answered ${response.status} ${response.statusText}` } };
}

// The server's one-line message beside the form, its field marked (the message names the key).
function showFormError(message) {
  setField(editor, "form-error", message);
  for (const input of editorForm.querySelectorAll("[aria-invalid]")) input.removeAttribute("aria-invalid");
  const key = /^([a-z_]+)[:.]/.exec(message || "")?.[1];
  const input = key && field(key);
  if (input && input.closest("[hidden]") === null) {
    input.setAttribute("aria-invalid", "true");
    input.focus();
  }
}

function showProbe(answer) {
  const picture = editor.querySelector(".probe-picture");
  const facts = editor.querySelector(".probe-facts");
  const failed = !answer.ok;
  setField(editor, "probe-error", failed ? answer.error : "");
  facts.hidden = picture.hidden = failed;
  if (failed) return;
  if (String(answer.snapshot).startsWith("data:image/")) picture.src = answer.snapshot;
  setField(editor, "probe-kind", answer.kind === "jpeg" ? "JPEG frames (MJPEG)" : "video");
  setField(editor, "probe-size", `${answer.width} × ${answer.height}`);
  setField(editor, "probe-fps", answer.fps == null ? "unknown" : `${answer.fps} fps`);
  setField(
    editor,
    "probe-passthrough",
    answer.passthrough ? "yes: its JPEGs are sent on as they come" : "no: livecam encodes each frame",
  );
}

function clearProbe() {
  probes++; // an answer still on its way is not shown
  const button = editor.querySelector(".try");
  button.disabled = false;
  button.textContent = "Try";
  editor.querySelector(".probe-picture").hidden = editor.querySelector(".probe-facts").hidden = true;
  editor.querySelector(".probe-picture").removeAttribute("src");
  setField(editor, "probe-error", "");
}

// Try the source: what it is and a picture of it, or why it cannot be read (up to 10 s).
async function tryOut() {
  clearProbe();
  const mine = probes;
  const button = editor.querySelector(".try");
  button.disabled = true;
  button.textContent = "Trying…";
  let shown;
  try {
    const { response, answer } = await send("POST", body.dataset.probeUrl, { source: field("source").value });
    shown = response.ok ? answer : { ok: false, error: answer.error };
  } catch (err) {
    shown = { ok: false, error: "livecam did not answer: try again" };
  }
  if (mine !== probes) return; // tried again, or the dialog was closed
  showProbe(shown);
  button.disabled = false;
  button.textContent = "Try";
}

// The dialog, to add a camera (cam null) or change one: name and settings.
function openEditor(cam) {
  editing = cam;
  editorForm.reset();
  clearProbe();
  showFormError("");
  setField(editor, "dialog-title", cam ? `Edit ${cam.name}` : "Add camera");
  editor.querySelector(".source-part").hidden = Boolean(cam); // its source stays: it may hold a password
  for (const el of editor.querySelectorAll(".edit-only")) el.hidden = !cam; // "as now"
  field("rotate").value = cam ? "" : "0";
  field("autostart").value = cam ? "" : "true";
  field("name").value = cam ? cam.name : "";
  // Editing, an empty field keeps what the camera does now: show that as the field's hint.
  field("width").placeholder = cam ? cam.width || "" : "";
  field("fps").placeholder = cam && cam.fps ? cam.fps.toFixed(1) : "";
  editor.showModal();
  field(cam ? "name" : "source").focus();
}

// The settings as a camera table: only those given (adding: only those not the default).
function settingsTable() {
  const table = {};
  for (const key of ["width", "fps", "quality"]) {
    const input = field(key);
    if (input.validity.badInput) throw new Error(`${key}: must be a number`);
    if (input.value !== "") table[key] = Number(input.value);
  }
  const rotate = field("rotate").value;
  if (rotate !== "" && (editing || rotate !== "0")) table.rotate = Number(rotate);
  const autostart = field("autostart").value;
  if (autostart !== "" && (editing || autostart !== "true")) table.autostart = autostart === "true";
  return table;
}

async function save(event) {
  event.preventDefault();
  let table;
  try {
    table = settingsTable();
  } catch (err) {
    return showFormError(err.message);
  }
  const cam = editing;
  const name = field("name").value;
  if (cam) {
    if (name.trim() !== cam.name) table.name = name;
    if (Object.keys(table).length === 0) return editor.close(); // nothing changed
  } else {
    table = { source: field("source").value, ...(name.trim() ? { name } : {}), ...table };
  }
  const button = editor.querySelector(".save");
  button.disabled = true;
  showFormError("");
  try {
    const { response, answer } = cam
      ? await send("PATCH", cam.el.dataset.url, table)
      : await send("POST", body.dataset.addUrl, table);
    if (response.status === 401) return;
    if (!response.ok) return showFormError(answer.error);
    editor.close();
    if (cam) {
      // Anything but a name reopens the camera: the stream is asked again for its new frames.
      if (Object.keys(table).some((key) => key !== "name")) stopped(cam);
      if (byId.get(cam.id) === cam) update(cam, answer);
      syncSoon();
    } else {
      listChanges++;
      const known = byId.get(String(answer.id));
      if (known) update(known, answer);
      else addTile(answer);
    }
  } catch (err) {
    showFormError("livecam did not answer: try again");
  } finally {
    button.disabled = false;
  }
}

function askRemove(cam) {
  removing = cam;
  setField(remover, "remove-name", cam.name);
  remover.returnValue = "";
  remover.showModal();
}

async function removeCamera(cam) {
  try {
    const { response, answer } = await send("DELETE", cam.el.dataset.url);
    if (response.status === 401) return;
    if (response.ok || response.status === 404) {
      // Removed, here or already elsewhere.
      listChanges++;
      if (byId.get(cam.id) === cam) dropTile(cam);
      return;
    }
    cam.message = answer.error;
  } catch (err) {
    cam.message = "livecam did not answer: try again";
  }
  setField(cam.el, "error", cam.message);
}

function enhanceManage() {
  if (!MANAGE || !editor || !remover) return;
  const add = document.querySelector(".add-button");
  add.hidden = false;
  add.addEventListener("click", () => openEditor(null));
  editorForm.addEventListener("submit", save);
  editorForm.addEventListener("input", () => showFormError("")); // it was about other values
  editor.querySelector(".try").addEventListener("click", tryOut);
  editor.querySelector(".cancel").addEventListener("click", () => editor.close());
  editor.addEventListener("close", () => clearProbe());
  remover.addEventListener("close", () => {
    if (remover.returnValue === "remove" && removing) removeCamera(removing);
    removing = null;
  });
}

// Tiles scrolled out of sight (on a phone, most of them) are left out of the stream.
const visibility = new IntersectionObserver((entries) => {
  for (const entry of entries) {
    const cam = owners.get(entry.target);
    if (cam) cam.visible = entry.isIntersecting;
  }
  syncSoon();
});

// A motion box follows its picture when the tile changes size (focus, fullscreen, the window).
const resized = new ResizeObserver((entries) => {
  for (const entry of entries) {
    const cam = owners.get(entry.target);
    if (cam) placeBox(cam);
  }
});

function watch(cam) {
  visibility.observe(cam.el);
  resized.observe(cam.canvas);
}

for (const cam of cams) {
  enhance(cam);
  watch(cam);
}
const named = cams.find((cam) => `#${cam.el.id}` === location.hash);
if (named) setFocus(named);
document.addEventListener("visibilitychange", () => sync());
setInterval(refreshStatus, STATUS_MS);
setInterval(checkStalls, CHECK_MS);
enhanceManage();
enhanceEvents();
