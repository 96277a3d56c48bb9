// mvr dashboard: plain JavaScript over the REST API of the same server (no framework, no build step).
"use strict";

const $ = (selector, root = document) => root.querySelector(selector);
// Names for the search targets the page knows; any other target of /api/info shows under its own name.
const MODALITY_NAMES = { audio: "Audio", musicnn: "MusiCNN", visual: "Visual", fused: "Multimodal" };
const modalityName = (modality) => MODALITY_NAMES[modality] || modality;
const POLL_MS = 400;
const PAGE_SIZE = 24;
const DEFAULT_K = 5;
const MIX_LENGTH = 20;  // the API's default (mvr mix -n); a shorter catalog gives a shorter queue, with a note
const FILTER_DELAY_MS = 250;

const state = {
  info: null,
  modality: "audio",
  file: null,
  fileUrl: null,  // object URL of the chosen file, to play the query video without sending it back
  // One query generation at a time: a new query aborts the previous one's upload and poll, and only the latest
  // generation may draw results, errors or progress.
  generation: 0,
  controller: null,
  polls: 0,        // poll loops running (body[data-polls]); never more than one
  queryKey: null,  // the link of the query running or shown (null for an upload), so that a link runs it once
  shown: null,     // the results on the page: {status, options}
  mix: null,       // the play queue: {items, index, seed}
  collectionOffset: 0,
  collectionLoad: 0,
};

// API -----------------------------------------------------------------------------------------------------------

async function api(path, { body, signal } = {}) {
  const init = { headers: { Accept: "application/json" }, signal };
  if (body !== undefined) {
    Object.assign(init, { method: "POST", body: JSON.stringify(body) });
    init.headers["Content-Type"] = "application/json";
  }
  const response = await fetch(path, init);
  const reply = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(reply.detail || `${path}: ${response.status} ${response.statusText}`);
  return reply;
}

const superseded = () => new DOMException("a newer query took over", "AbortError");

// XMLHttpRequest rather than fetch: it reports upload progress, which matters for large files. ``path`` and ``item``
// let indexing.js post a video to add the same way.
function postQuery(body, onUpload, signal, path = "/api/queries", item = "query") {
  return new Promise((resolve, reject) => {
    const request = new XMLHttpRequest();
    request.open("POST", path);
    request.responseType = "json";
    if (!(body instanceof FormData)) request.setRequestHeader("Content-Type", "application/json");
    request.upload.onprogress = (event) => event.lengthComputable && onUpload(event.loaded / event.total);
    request.onload = () => {
      const reply = request.response || {};
      if (request.status === 202) resolve(reply);
      else reject(new Error(reply.detail || `${item}: the server answered ${request.status}`));
    };
    request.onerror = () => reject(new Error(`${item}: the server cannot be reached`));
    request.onabort = () => reject(superseded());
    signal.addEventListener("abort", () => request.abort(), { once: true });
    request.send(body instanceof FormData ? body : JSON.stringify(body));
  });
}

// helpers -------------------------------------------------------------------------------------------------------

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

// A stable colour per label, so that the same label looks the same on every page (and on the map).
function labelHue(label) {
  let hash = 0;
  for (const char of label || "") hash = (hash * 31 + char.codePointAt(0)) % 360;
  return hash;
}

function labelChip(label) {
  const chip = element("span", label ? "chip label" : "chip label plain", label || "unlabelled");
  chip.style.setProperty("--hue", String(labelHue(label)));
  return chip;
}

function youTubeId(source) {
  let url;
  try { url = new URL(source); } catch { return null; }
  const host = url.hostname.replace(/^(www|m|music)\./, "");
  if (host === "youtu.be") return url.pathname.slice(1) || null;
  if (host !== "youtube.com" && host !== "youtube-nocookie.com") return null;
  if (url.searchParams.get("v")) return url.searchParams.get("v");
  const match = url.pathname.match(/^\/(?:embed|shorts|live)\/([\w-]+)/);
  return match ? match[1] : null;
}

function formatDuration(seconds) {
  const whole = Math.round(seconds);
  return `${Math.floor(whole / 60)}:${String(whole % 60).padStart(2, "0")}`;
}

function formatBytes(count) {
  if (count >= 1 << 20) return `${Math.round(count / (1 << 20))} MB`;
  return count >= 1024 ? `${Math.round(count / 1024)} KB` : `${count} bytes`;
}

const thumbnailUrl = (videoId) => `/api/videos/${videoId}/thumbnail`;
const mediaUrl = (videoId) => `/api/videos/${videoId}/media`;

// A frame to show before playing, rather than the black of a first frame: the catalog's thumbnail as the poster,
// or for a file or link the catalog does not hold, the frame a second in (playing still starts from the start).
function showPosterFrame(video, poster) {
  if (poster) {
    video.poster = poster;
    return;
  }
  video.addEventListener("loadedmetadata", () => {
    if (!video.paused || video.currentTime > 0) return;
    const at = Math.min(1, (video.duration || 0) / 4);
    if (!(at > 0)) return;
    video.currentTime = at;
    video.dataset.posterFrame = String(at);
    video.addEventListener("play", () => {
      if (Math.abs(video.currentTime - at) < 0.05) video.currentTime = 0;
    }, { once: true });
  }, { once: true });
}

// The player of a video: the YouTube embed for YouTube sources, else the catalog's media (seekable through HTTP
// range requests), else the chosen file or the direct link itself.
function player({ videoId, source, fileUrl, autoplay }) {
  const youTube = source && youTubeId(source);
  if (youTube) {
    const frame = element("iframe");
    frame.src = `https://www.youtube-nocookie.com/embed/${encodeURIComponent(youTube)}${autoplay ? "?autoplay=1" : ""}`;
    frame.allow = "autoplay; encrypted-media; picture-in-picture";
    frame.allowFullscreen = true;
    frame.title = "YouTube player";
    return frame;
  }
  const direct = /^https?:/i.test(source || "") ? source : null;
  const src = videoId != null ? mediaUrl(videoId) : fileUrl || direct;
  if (!src) return element("div", "placeholder", "♪");
  const video = element("video");
  video.controls = true;
  video.preload = "metadata";
  if (!autoplay) showPosterFrame(video, videoId != null ? thumbnailUrl(videoId) : null);
  video.src = src;
  video.autoplay = Boolean(autoplay);
  return video;
}

// A thumbnail that turns into the player when clicked.
function fillCard(card, video) {
  const box = $(".player", card);
  const image = $("img.thumb", card);
  image.src = thumbnailUrl(video.id);
  image.alt = video.title;
  image.onerror = () => image.replaceWith(element("div", "placeholder", "♪"));
  $(".play", card).onclick = () => {
    box.replaceChildren(player({ videoId: video.id, source: video.source, autoplay: true }));
  };
  $(".title", card).textContent = video.title;
  $(".title", card).title = video.source;
  $(".label", card).replaceWith(labelChip(video.label));
}

function newCard() {
  return $("#card-template").content.firstElementChild.cloneNode(true);
}

// A URL box and a file drop that take turns: a file chosen or dropped is the source, until a URL is typed.
function takeTurns({ url, drop, input, choose, chosen }) {
  input.onchange = (event) => choose(event.target.files[0]);
  url.oninput = () => { if (url.value && chosen()) choose(null); };
  drop.ondragover = (event) => { event.preventDefault(); drop.classList.add("dragging"); };
  drop.ondragleave = () => drop.classList.remove("dragging");
  drop.ondrop = (event) => {
    event.preventDefault();
    drop.classList.remove("dragging");
    choose(event.dataTransfer.files[0]);
  };
}

function showError(node, message) {
  node.textContent = message;
  node.hidden = !message;
}

// routing -------------------------------------------------------------------------------------------------------

// The page and its parameters: "#/collection", "#/search?video=3&modality=fused&k=5", or the short form of a
// query link, "#video=3&modality=fused".
function parseHash() {
  const hash = location.hash.slice(1);
  const match = hash.match(/^\/(\w*)(?:\?(.*))?$/);
  if (match) return { page: match[1] || "search", params: new URLSearchParams(match[2] || "") };
  return { page: "search", params: new URLSearchParams(hash) };
}

function route() {
  const { page, params } = parseHash();
  const known = ["search", "collection", "evaluation", "map"].includes(page) ? page : "search";
  for (const section of document.querySelectorAll(".page")) section.hidden = section.id !== `page-${known}`;
  for (const link of document.querySelectorAll("nav a[data-page]")) {
    link.classList.toggle("active", link.dataset.page === known);
  }
  if (known === "search") openLinkedQuery(params);
  if (known === "collection") loadCollection();
  if (known === "evaluation") loadEvaluation();
  if (known === "map") loadMap(params);  // map.js
}

// search --------------------------------------------------------------------------------------------------------

function setModality(modality) {
  state.modality = modality;
  for (const button of document.querySelectorAll("#modality button")) {
    button.setAttribute("aria-checked", String(button.dataset.modality === modality));
  }
  const select = $("#metric");
  const chosen = select.value;
  select.replaceChildren(element("option", "", `Default (${state.info.default_metrics[modality]})`));
  select.firstChild.value = "";
  for (const metric of state.info.metrics) {
    const option = element("option", "", metric);
    option.value = metric;
    select.append(option);
  }
  select.value = chosen;
}

function chooseFile(file) {
  if (state.fileUrl) URL.revokeObjectURL(state.fileUrl);
  state.file = file || null;
  state.fileUrl = file ? URL.createObjectURL(file) : null;
  const drop = $("#drop");
  drop.classList.toggle("chosen", Boolean(file));
  $("#drop-text").innerHTML = "";
  if (file) {
    $("#drop-text").textContent = `${file.name} (${formatBytes(file.size)})`;
    $("#url").value = "";
  } else {
    $("#drop-text").append("Drop a video file here, or ", element("u", "", "browse"));
  }
}

// The options every query sends: the modality and how many results, and the metric and fusion weights when chosen.
function searchOptions() {
  const options = { modality: state.modality, k: chosenK() };
  const metric = $("#metric").value;
  const weights = $("#weights").value.trim();
  if (metric) options.metric = metric;
  if (weights && state.modality === "fused") options.weights = weights;
  return options;
}

function chosenK() {
  const k = Number.parseInt($("#k").value, 10);
  return Number.isInteger(k) ? Math.min(Math.max(k, 1), state.info.max_k) : DEFAULT_K;
}

// links ---------------------------------------------------------------------------------------------------------

// The link of a query by catalog video or by URL with its options, e.g. "#/search?video=3&modality=fused&k=5".
function queryLink(source, options) {
  const params = new URLSearchParams();
  if (source.video != null) params.set("video", String(source.video));
  else params.set("url", source.url);
  for (const name of ["modality", "metric", "weights", "k"]) {
    if (options[name] != null && options[name] !== "") params.set(name, String(options[name]));
  }
  return `#/search?${params}`;
}

// A query link's source and options, or null when the parameters name no query (or an invalid one).
function linkedQuery(params) {
  const video = params.get("video");
  const url = params.get("url");
  if (!video && !url) return null;
  const modality = params.get("modality") || state.info.modalities[0];
  const options = { modality, k: DEFAULT_K };
  const k = Number.parseInt(params.get("k") || "", 10);
  if (Number.isInteger(k)) options.k = k;
  if (params.get("metric")) options.metric = params.get("metric");
  if (params.get("weights")) options.weights = params.get("weights");
  // The API checks the values (modality, metric, k, weights) and says what is wrong with them.
  const source = video ? { video: /^\d+$/.test(video) ? Number(video) : video } : { url };
  return { source, options };
}

// Run the query a link names, once: opening the link of the query already running or shown changes nothing.
function openLinkedQuery(params) {
  const asked = linkedQuery(params);
  if (!asked) return;
  const link = queryLink(asked.source, asked.options);
  if (link === state.queryKey) return;
  showOptions(asked);
  const body = asked.source.video != null
    ? { video_id: asked.source.video, ...asked.options }
    : { url: asked.source.url, ...asked.options };
  runQuery(body, { source: asked.source.url }, link, asked.options);
}

// The form shows what a link asked for, so that changing one option and searching again starts from it.
function showOptions({ source, options }) {
  chooseFile(null);
  $("#url").value = source.url || "";
  if (state.info.modalities.includes(options.modality)) setModality(options.modality);
  $("#metric").value = state.info.metrics.includes(options.metric) ? options.metric : "";
  $("#weights").value = options.weights || "";
  $("#k").value = String(options.k);
}

// Put the link in the address bar (and the history) without running it again.
function rememberLink(link) {
  if (location.hash !== link) history.pushState(null, "", link);
  $("nav a[data-page=search]").href = link;
}

function queryBody() {
  const url = $("#url").value.trim();
  if (state.file) {
    if (state.file.size > state.info.max_upload_bytes) {
      const limit = formatBytes(state.info.max_upload_bytes);
      throw new Error(`${state.file.name}: larger than the upload limit of ${limit}`);
    }
    const form = new FormData();
    form.append("file", state.file);
    for (const [name, value] of Object.entries(searchOptions())) form.append(name, value);
    return form;
  }
  if (!url) throw new Error("Paste a video URL or drop a video file first.");
  return { url, ...searchOptions() };
}

// Run one query generation: the previous one's upload and poll stop, and whatever it still answers is dropped.
// ``link`` is the query's link (null for an upload), ``options`` what it was asked with (for a mix from it).
async function runQuery(body, query, link, options) {
  state.controller?.abort();
  const controller = new AbortController();
  const generation = ++state.generation;
  const current = () => generation === state.generation;
  Object.assign(state, { controller, queryKey: link });
  document.body.dataset.generation = String(generation);
  document.body.dataset.running = "true";
  showError($("#error"), "");
  $("#results").hidden = true;
  $("#go").disabled = true;
  setProgress({ stage: body instanceof FormData ? "uploading" : "sending", progress: 0 });
  try {
    const accepted = await postQuery(body, (part) => current() && setProgress({ stage: "uploading",
      progress: 0.05 * part }), controller.signal);
    if (!current()) return;
    document.body.dataset.queryId = accepted.id;
    const status = await follow(accepted.id, controller.signal);
    if (!current()) return;
    if (status.status === "failed") throw new Error(status.error);
    showResults(status, query, link, options);
  } catch (error) {
    if (current() && error.name !== "AbortError") showError($("#error"), error.message);
  } finally {
    if (current()) {
      $("#progress").hidden = true;
      $("#go").disabled = false;
      document.body.dataset.running = "false";
    }
  }
}

function setPolls(change) {
  state.polls += change;
  document.body.dataset.polls = String(state.polls);
}

// Poll a query until it is done or failed; ``signal`` ends the loop (a newer query took over).
function follow(queryId, signal) {
  return new Promise((resolve, reject) => {
    if (signal.aborted) {
      reject(superseded());
      return;
    }
    let timer = null;
    let running = true;
    const stop = () => {
      if (!running) return false;
      running = false;
      clearTimeout(timer);
      setPolls(-1);
      return true;
    };
    signal.addEventListener("abort", () => stop() && reject(superseded()), { once: true });
    const tick = async () => {
      try {
        const status = await api(`/api/queries/${encodeURIComponent(queryId)}`, { signal });
        if (!running) return;
        setProgress(status);
        if (status.status === "done" || status.status === "failed") {
          stop();
          resolve(status);
        } else {
          timer = setTimeout(tick, POLL_MS);
        }
      } catch (error) {
        if (stop()) reject(error);
      }
    };
    setPolls(1);
    tick();
  });
}

function setProgress({ stage, progress, elapsed_s: elapsed }) {
  $("#progress").hidden = false;
  $("#stage").textContent = stage.charAt(0).toUpperCase() + stage.slice(1) + "…";
  $("#elapsed").textContent = elapsed ? `${elapsed.toFixed(1)} s` : "";
  $("#bar-fill").style.width = `${Math.max(3, Math.round(progress * 100))}%`;
}

const percent = (share) => `${Math.round(100 * share)}%`;

function showResults(status, query, link, options) {
  const found = status.result;
  state.shown = { status, options };
  $("#query-title").textContent = found.query.title;
  $("#query-source").textContent = found.query.source;
  $("#query-player").replaceChildren(player({ videoId: found.query.id, source: query.source ?? found.query.source,
    fileUrl: query.fileUrl }));
  const chips = [modalityName(found.modality), found.metric].map((text) => element("span", "chip plain", text));
  if (found.query.id != null) chips.push(labelChip(found.query.label));
  if (status.cached) chips.push(element("span", "chip plain", "cached"));
  $("#query-chips").replaceChildren(...chips);
  $("#query-notes").replaceChildren(...status.notes.map((note) => element("li", "", note)));
  // A mix needs a catalog video to start from; a file or a link the catalog does not hold has none.
  $("#query-mix").hidden = found.query.id == null;
  $("#query-mix").onclick = () => startMix({ id: found.query.id, title: found.query.title }, options);
  $("#query-link").hidden = !link;
  if (link) $("#query-link").href = link;

  const results = found.results;
  // A space measured in the projection the catalog learned from its labels (mvr tune) says so.
  const projected = Object.entries(found.fusion?.projections || {})
    .map(([space, method]) => `, ${modalityName(space)} in its ${method.toUpperCase()} projection`).join("");
  const measure = found.fusion
    ? `${found.fusion.method} fusion, ${found.fusion.weights_from} weights ${weightsText(found.fusion.weights)}`
      + projected
    : `${found.metric} distance`;
  $("#results-heading").textContent =
    `${results.length} recommendations · ${modalityName(found.modality)} · ${measure}`;
  $("#tie-badge").hidden = !found.tied_at_cut;
  $("#cards").replaceChildren(...results.map((match) => resultCard(match, found, options)));
  $("#results").hidden = false;
}

// A result: its similarity (the share of the catalog's other candidates that are farther away, 0-100 %) in words
// and as a bar on that absolute scale, its raw distance in the tooltip, and a mark when it is another excerpt of
// the query's own track.
function resultCard(match, found, options) {
  const card = newCard();
  card.classList.add("result-card");
  card.dataset.videoId = match.id;
  fillCard(card, match);
  $(".rank", card).textContent = `#${match.rank}`;
  const distance = `${found.metric} distance ${match.distance.toPrecision(4)}`;
  const shown = $(".distance", card);
  const bar = $(".similar-bar", card);
  if (match.similarity != null) {
    shown.textContent = `${percent(match.similarity)} similar`;
    shown.title = `${distance}; similarity: the share of the catalog's other candidates that are farther away`;
    $("div", bar).style.width = percent(match.similarity);
    bar.dataset.similarity = String(match.similarity);
    bar.title = `${percent(match.similarity)} of the catalog's other candidates are farther away`;
  } else {
    // A large catalog's approximate index ranks without every distance: there is no share to show.
    shown.textContent = distance;
    bar.remove();
  }
  if (match.group && match.group === found.query.group) {
    const mark = element("span", "chip same-track", "same track");
    mark.title = `another excerpt of the query's track (${match.group})`;
    $(".meta", card).prepend(mark);
    card.classList.add("same-track");
  }
  if (match.why) $(".card-body", card).insertBefore(spaceBars(match.why), $(".card-actions", card));
  const mix = element("button", "link-button mix-button", "Mix from here");
  mix.type = "button";
  mix.onclick = () => startMix(match, options);
  $(".card-actions", card).append(mix);
  // The keyframe pair that looks most alike: for a query the catalog holds, in a search that reads the pictures.
  if (found.query.id != null && (found.modality === "visual" || match.why?.visual)) {
    const frames = element("button", "link-button frames-button", "Matching frames");
    frames.type = "button";
    frames.onclick = () => showKeyframePair(card, found.query.id, match.id, frames);
    $(".card-actions", card).append(frames);
  }
  return card;
}

// Asks the service for the nearest keyframe pair of the query and this result (decoded and embedded on demand, a
// second or two) and shows both pictures under the card's body; a failure is one line in their place.
async function showKeyframePair(card, queryId, resultId, button) {
  button.disabled = true;
  const figure = $(".keyframe-pair", card) || element("figure", "keyframe-pair");
  figure.replaceChildren(element("figcaption", "", "finding the nearest keyframes..."));
  $(".card-body", card).insertBefore(figure, $(".card-actions", card));
  try {
    const pair = await api(`/api/videos/${queryId}/keyframe-match/${resultId}`);
    const picture = (src, alt) => Object.assign(element("img"), { src, alt, width: 112, height: 112 });
    figure.replaceChildren(
      picture(pair.query_image, `the query's keyframe ${pair.query_keyframe + 1}`),
      picture(pair.result_image, `this result's keyframe ${pair.result_keyframe + 1}`),
      element("figcaption", "", `query keyframe ${pair.query_keyframe + 1} of ${pair.query_keyframes} · this`
        + ` video's ${pair.result_keyframe + 1} of ${pair.result_keyframes} · cosine ${pair.similarity.toFixed(2)}`));
    figure.dataset.similarity = String(pair.similarity);
  } catch (error) {
    figure.replaceChildren(element("figcaption", "error", error.message));
  } finally {
    button.disabled = false;
  }
}

function weightsText(weights) {
  return Object.entries(weights).map(([space, weight]) => `${modalityName(space)} ${weight.toFixed(2)}`).join(", ");
}

// One bar per feature space: how close the result is in that space alone; the tooltip says what made it close.
function spaceBars(why) {
  const bars = element("div", "space-bars");
  for (const [space, reason] of Object.entries(why)) {
    const track = element("div", "track");
    const fill = element("div", "fill");
    fill.style.width = `${Math.round(100 * reason.similarity)}%`;
    track.append(fill);
    const groups = Object.entries(reason.groups || {}).sort((a, b) => b[1] - a[1])
      .map(([group, share]) => `${group} ${Math.round(100 * share)}%`);
    track.title = [`${reason.metric} distance ${reason.distance.toPrecision(4)}, weight ${reason.weight.toFixed(2)}`,
      ...(groups.length ? [`${reason.groups_measure}: ${groups.join(", ")}`] : [])].join("\n");
    const row = [element("span", "space-name", modalityName(space)), track,
      element("span", "space-value", percent(reason.similarity))];
    row[1].dataset.space = space;
    bars.append(...row);
  }
  return bars;
}

function setUpSearch() {
  const form = $("#query-form");
  $("#modality").replaceChildren(...state.info.modalities.map((modality) => {
    const button = element("button", "", modalityName(modality));
    Object.assign(button, { type: "button", onclick: () => setModality(modality) });
    button.setAttribute("role", "radio");
    button.dataset.modality = modality;
    return button;
  }));
  takeTurns({ url: $("#url"), drop: $("#drop"), input: $("#file"), choose: chooseFile, chosen: () => state.file });
  $("#k").max = String(state.info.max_k);
  form.onsubmit = (event) => {
    event.preventDefault();
    let body;
    try {
      body = queryBody();
    } catch (error) {
      showError($("#error"), error.message);
      return;
    }
    const options = searchOptions();
    // An upload cannot be linked to: the server keeps no copy of it.
    const link = state.file ? null : queryLink({ url: body.url }, options);
    rememberLink(link || "#/search");
    const query = state.file ? { source: state.file.name, fileUrl: state.fileUrl } : { source: body.url };
    runQuery(body, query, link, options);
  };
}

// Query by a catalog video, from the collection page: through its link, so that the address bar holds it.
function findSimilar(video) {
  const link = queryLink({ video: video.id }, searchOptions());
  $("nav a[data-page=search]").href = link;
  if (location.hash === link) route();
  else location.hash = link;
}

// mix -----------------------------------------------------------------------------------------------------------

// A play queue from one catalog video (POST /api/mix), searched as the results on the page were.
async function startMix(seed, options) {
  const body = { seeds: [seed.id], n: MIX_LENGTH, modality: options.modality };
  if (options.metric) body.metric = options.metric;
  if (options.weights && options.modality === "fused") body.weights = options.weights;
  const panel = $("#mix");
  panel.hidden = false;
  $("#mix-heading").textContent = `Mix from ${seed.title} · ${modalityName(options.modality)}`;
  showError($("#mix-error"), "");
  panel.dataset.loading = "true";
  try {
    const mix = await api("/api/mix", { body });
    state.mix = { items: mix.items, index: 0, seed: seed.id };
    $("#mix-queue").replaceChildren(...mix.items.map((item, index) => {
      const row = element("li", "mix-item");
      row.dataset.videoId = String(item.video.id);
      row.dataset.position = String(item.position);
      const thumb = element("img");
      Object.assign(thumb, { src: item.video.thumbnail_url, alt: "", loading: "lazy" });
      const text = element("span", "mix-item-title", item.video.title);
      row.append(thumb, text, labelChip(item.video.label));
      row.title = item.distance == null ? "the seed" : `distance ${item.distance.toPrecision(4)} from the previous`;
      row.onclick = () => playMix(index);
      return row;
    }));
    $("#mix-notes").replaceChildren(...mix.notes.map((note) => element("li", "", note)));
    playMix(0);
    panel.scrollIntoView({ block: "nearest" });
  } catch (error) {
    showError($("#mix-error"), error.message);
  } finally {
    panel.dataset.loading = "false";
  }
}

// Play the queue's item ``index`` in the mix's player: the catalog's copy, whatever the source, so that the end
// of each video can start the next.
function playMix(index) {
  const mix = state.mix;
  if (!mix || index < 0 || index >= mix.items.length) return;
  mix.index = index;
  const { video } = mix.items[index];
  const player = $("#mix-video");
  player.poster = video.thumbnail_url;
  player.src = video.media_url;
  player.play().catch(() => {});  // a browser that refuses to autoplay leaves the controls to the listener
  $("#mix-title").textContent = video.title;
  $("#mix-position").textContent = `${index + 1} of ${mix.items.length}`;
  $("#mix").dataset.index = String(index);
  for (const [position, row] of [...$("#mix-queue").children].entries()) {
    row.classList.toggle("current", position === index);
    row.classList.toggle("played", position < index);
  }
  $("#mix-next").disabled = index + 1 >= mix.items.length;
}

function setUpMix() {
  const player = $("#mix-video");
  player.addEventListener("ended", () => state.mix && playMix(state.mix.index + 1));
  $("#mix-next").onclick = () => state.mix && playMix(state.mix.index + 1);
  $("#mix-close").onclick = () => {
    player.pause();
    player.removeAttribute("src");
    player.load();
    state.mix = null;
    $("#mix").hidden = true;
  };
}

// collection ----------------------------------------------------------------------------------------------------

async function loadCollection() {
  const label = $("#label-filter").value;
  const title = $("#title-filter").value.trim();
  const params = new URLSearchParams({ offset: state.collectionOffset, limit: PAGE_SIZE });
  if (label) params.set("label", label);
  if (title) params.set("title", title);
  const load = ++state.collectionLoad;  // typing fast: only the latest filter's page is drawn
  try {
    const page = await api(`/api/videos?${params}`);
    if (load !== state.collectionLoad) return;
    showError($("#collection-error"), "");
    $("#collection-grid").replaceChildren(...page.items.map((video) => {
      const card = newCard();
      card.classList.add("collection-card");
      card.dataset.videoId = video.id;
      fillCard(card, video);
      $(".rank", card).textContent = formatDuration(video.duration);
      $(".distance", card).textContent = video.modalities.join(" + ");
      $(".similar-bar", card).remove();
      const similar = element("button", "link-button find-similar", "Find similar");
      similar.type = "button";
      similar.onclick = () => findSimilar(video);
      $(".card-actions", card).append(similar);
      return card;
    }));
    const last = Math.min(page.offset + page.items.length, page.total);
    $("#collection-count").textContent = `${page.total} video${page.total === 1 ? "" : "s"}`;
    $("#page-info").textContent = page.total ? `${page.offset + 1}–${last} of ${page.total}` : "No videos";
    $("#prev-page").disabled = page.offset === 0;
    $("#next-page").disabled = last >= page.total;
    $("#collection-grid").dataset.title = title;
  } catch (error) {
    if (load === state.collectionLoad) showError($("#collection-error"), error.message);
  }
}

function setUpCollection() {
  const select = $("#label-filter");
  for (const label of state.info.labels) {
    const option = element("option", "", label);
    option.value = label;
    select.append(option);
  }
  select.onchange = () => { state.collectionOffset = 0; loadCollection(); };
  let typing = null;
  $("#title-filter").oninput = () => {
    clearTimeout(typing);
    typing = setTimeout(() => { state.collectionOffset = 0; loadCollection(); }, FILTER_DELAY_MS);
  };
  const turn = (step) => {
    state.collectionOffset = Math.max(0, state.collectionOffset + step);
    loadCollection();
  };
  $("#prev-page").onclick = () => turn(-PAGE_SIZE);
  $("#next-page").onclick = () => turn(PAGE_SIZE);
}

// evaluation: evaluation.js (loadEvaluation) ---------------------------------------------------------------

// start ---------------------------------------------------------------------------------------------------------

// The catalog's name and size in the top bar (again after indexing.js adds a video).
function showCatalogInfo(info) {
  const labels = info.labels.length;
  $("#catalog-info").textContent = `${info.catalog} · ${info.videos} videos · ${labels} label${labels === 1 ? "" : "s"}`;
}

async function start() {
  try {
    state.info = await api("/api/info");
  } catch (error) {
    showError($("#error"), error.message);
    return;
  }
  showCatalogInfo(state.info);
  setUpSearch();
  setModality(state.info.modalities[0]);
  setUpCollection();
  setUpMix();
  document.body.dataset.polls = "0";
  window.addEventListener("hashchange", route);
  route();
  document.body.dataset.ready = "true";
}

start();
