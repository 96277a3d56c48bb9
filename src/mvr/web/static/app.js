// mvr dashboard: plain JavaScript over the REST API of the same server (no framework, no build step).
"use strict";

const $ = (selector, root = document) => root.querySelector(selector);
// Names for the search targets the page knows; any other target of /api/info shows under its own name.
const MODALITY_NAMES = { audio: "Audio", visual: "Visual", fused: "Multimodal" };
const modalityName = (modality) => MODALITY_NAMES[modality] || modality;
const POLL_MS = 400;
const PAGE_SIZE = 24;

const state = {
  info: null,
  modality: "audio",
  file: null,
  fileUrl: null,  // object URL of the chosen file, to play the query video without sending it back
  poll: null,
  collectionOffset: 0,
};

// API -----------------------------------------------------------------------------------------------------------

async function api(path) {
  const response = await fetch(path, { headers: { Accept: "application/json" } });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.detail || `${path}: ${response.status} ${response.statusText}`);
  return body;
}

// XMLHttpRequest rather than fetch: it reports upload progress, which matters for large files.
function postQuery(body, onUpload) {
  return new Promise((resolve, reject) => {
    const request = new XMLHttpRequest();
    request.open("POST", "/api/queries");
    request.responseType = "json";
    if (!(body instanceof FormData)) request.setRequestHeader("Content-Type", "application/json");
    request.upload.onprogress = (event) => event.lengthComputable && onUpload(event.loaded / event.total);
    request.onload = () => {
      const reply = request.response || {};
      if (request.status === 202) resolve(reply);
      else reject(new Error(reply.detail || `query: the server answered ${request.status}`));
    };
    request.onerror = () => reject(new Error("query: the server cannot be reached"));
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

// A stable colour per label, so that the same label looks the same on every page.
function labelChip(label) {
  const chip = element("span", label ? "chip label" : "chip label plain", label || "unlabelled");
  let hash = 0;
  for (const char of label || "") hash = (hash * 31 + char.codePointAt(0)) % 360;
  chip.style.setProperty("--hue", String(hash));
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
  const src = videoId != null ? `/api/videos/${videoId}/media` : fileUrl || direct;
  if (!src) return element("div", "placeholder", "♪");
  const video = element("video");
  video.controls = true;
  video.preload = "metadata";
  video.src = src;
  video.autoplay = Boolean(autoplay);
  return video;
}

// A thumbnail that turns into the player when clicked.
function fillCard(card, video) {
  const box = $(".player", card);
  const image = $("img.thumb", card);
  image.src = `/api/videos/${video.id}/thumbnail`;
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

function showError(node, message) {
  node.textContent = message;
  node.hidden = !message;
}

// routing -------------------------------------------------------------------------------------------------------

function route() {
  const page = (location.hash.match(/^#\/(\w+)/) || [null, "search"])[1];
  const known = ["search", "collection", "evaluation"].includes(page) ? page : "search";
  for (const section of document.querySelectorAll(".page")) section.hidden = section.id !== `page-${known}`;
  for (const link of document.querySelectorAll("nav a[data-page]")) {
    link.classList.toggle("active", link.dataset.page === known);
  }
  if (known === "collection") loadCollection();
  if (known === "evaluation") loadEvaluation();
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

// The options every query sends: the modality, and the metric and fusion weights when chosen.
function searchOptions() {
  const options = { modality: state.modality };
  const metric = $("#metric").value;
  const weights = $("#weights").value.trim();
  if (metric) options.metric = metric;
  if (weights && state.modality === "fused") options.weights = weights;
  return options;
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

async function runQuery(body, query) {
  clearTimeout(state.poll);
  showError($("#error"), "");
  $("#results").hidden = true;
  $("#go").disabled = true;
  setProgress({ stage: body instanceof FormData ? "uploading" : "sending", progress: 0 });
  try {
    const accepted = await postQuery(body, (part) => setProgress({ stage: "uploading", progress: 0.05 * part }));
    const status = await follow(accepted.id);
    if (status.status === "failed") throw new Error(status.error);
    showResults(status, query);
  } catch (error) {
    showError($("#error"), error.message);
  } finally {
    $("#progress").hidden = true;
    $("#go").disabled = false;
  }
}

function follow(queryId) {
  return new Promise((resolve, reject) => {
    const tick = async () => {
      try {
        const status = await api(`/api/queries/${encodeURIComponent(queryId)}`);
        setProgress(status);
        if (status.status === "done" || status.status === "failed") resolve(status);
        else state.poll = setTimeout(tick, POLL_MS);
      } catch (error) {
        reject(error);
      }
    };
    tick();
  });
}

function setProgress({ stage, progress, elapsed_s: elapsed }) {
  $("#progress").hidden = false;
  $("#stage").textContent = stage.charAt(0).toUpperCase() + stage.slice(1) + "…";
  $("#elapsed").textContent = elapsed ? `${elapsed.toFixed(1)} s` : "";
  $("#bar-fill").style.width = `${Math.max(3, Math.round(progress * 100))}%`;
}

function showResults(status, query) {
  const found = status.result;
  $("#query-title").textContent = found.query.title;
  $("#query-source").textContent = found.query.source;
  $("#query-player").replaceChildren(player({ videoId: found.query.id, source: query.source, fileUrl: query.fileUrl }));
  const chips = [modalityName(found.modality), found.metric].map((text) => element("span", "chip plain", text));
  if (found.query.id != null) chips.push(labelChip(found.query.label));
  if (status.cached) chips.push(element("span", "chip plain", "cached"));
  $("#query-chips").replaceChildren(...chips);
  $("#query-notes").replaceChildren(...status.notes.map((note) => element("li", "", note)));

  const results = found.results;
  const measure = found.fusion
    ? `${found.fusion.method} fusion, ${found.fusion.weights_from} weights ${weightsText(found.fusion.weights)}`
    : `${found.metric} distance`;
  $("#results-heading").textContent =
    `${results.length} recommendations · ${modalityName(found.modality)} · ${measure}`;
  $("#tie-badge").hidden = !found.tied_at_cut;
  const distances = results.map((match) => match.distance);
  const nearest = Math.min(...distances);
  const spread = Math.max(...distances) - nearest || 1;
  $("#cards").replaceChildren(...results.map((match) => {
    const card = newCard();
    card.classList.add("result-card");
    card.dataset.videoId = match.id;
    fillCard(card, match);
    $(".rank", card).textContent = `#${match.rank}`;
    // A fused distance is a sum of z-scores, often negative: people read the similarity instead.
    $(".distance", card).textContent = match.similarity != null && found.fusion
      ? `${Math.round(100 * match.similarity)}% similar`
      : `distance ${match.distance.toPrecision(4)}`;
    $(".distance", card).title = "similarity: the share of the catalog's other candidates that are farther away";
    if (match.why) $(".card-body", card).append(spaceBars(match.why));
    // Relative closeness among these results: the nearest fills the bar, the farthest a fifth of it.
    const bar = $(".similar-bar div", card);
    bar.style.width = `${Math.round(100 - 80 * (match.distance - nearest) / spread)}%`;
    $(".similar-bar", card).title = "closeness relative to the other results";
    return card;
  }));
  $("#results").hidden = false;
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
      element("span", "space-value", `${Math.round(100 * reason.similarity)}%`)];
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
  $("#file").onchange = (event) => chooseFile(event.target.files[0]);
  $("#url").oninput = () => { if ($("#url").value && state.file) chooseFile(null); };
  const drop = $("#drop");
  drop.ondragover = (event) => { event.preventDefault(); drop.classList.add("dragging"); };
  drop.ondragleave = () => drop.classList.remove("dragging");
  drop.ondrop = (event) => {
    event.preventDefault();
    drop.classList.remove("dragging");
    chooseFile(event.dataTransfer.files[0]);
  };
  form.onsubmit = (event) => {
    event.preventDefault();
    let body;
    try {
      body = queryBody();
    } catch (error) {
      showError($("#error"), error.message);
      return;
    }
    const query = state.file ? { source: state.file.name, fileUrl: state.fileUrl } : { source: body.url };
    runQuery(body, query);
  };
}

// Query by a catalog video, from the collection page.
function findSimilar(video) {
  location.hash = "#/search";
  chooseFile(null);
  $("#url").value = "";
  runQuery({ video_id: video.id, ...searchOptions() }, { source: video.source });
}

// collection ----------------------------------------------------------------------------------------------------

async function loadCollection() {
  const label = $("#label-filter").value;
  const params = new URLSearchParams({ offset: state.collectionOffset, limit: PAGE_SIZE });
  if (label) params.set("label", label);
  try {
    const page = await api(`/api/videos?${params}`);
    showError($("#collection-error"), "");
    $("#collection-grid").replaceChildren(...page.items.map((video) => {
      const card = newCard();
      card.classList.add("collection-card");
      card.dataset.videoId = video.id;
      fillCard(card, video);
      $(".rank", card).textContent = formatDuration(video.duration);
      $(".distance", card).textContent = video.modalities.join(" + ");
      $(".similar-bar", card).remove();
      const similar = element("button", "link-button", "Find similar");
      similar.type = "button";
      similar.onclick = () => findSimilar(video);
      $(".card-body", card).append(similar);
      return card;
    }));
    const last = Math.min(page.offset + page.items.length, page.total);
    $("#collection-count").textContent = `${page.total} video${page.total === 1 ? "" : "s"}`;
    $("#page-info").textContent = page.total ? `${page.offset + 1}–${last} of ${page.total}` : "No videos";
    $("#prev-page").disabled = page.offset === 0;
    $("#next-page").disabled = last >= page.total;
  } catch (error) {
    showError($("#collection-error"), error.message);
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
  const turn = (step) => {
    state.collectionOffset = Math.max(0, state.collectionOffset + step);
    loadCollection();
  };
  $("#prev-page").onclick = () => turn(-PAGE_SIZE);
  $("#next-page").onclick = () => turn(PAGE_SIZE);
}

// evaluation ----------------------------------------------------------------------------------------------------

async function loadEvaluation() {
  let evaluation;
  try {
    evaluation = await api("/api/evaluation");
  } catch (error) {
    const empty = $("#evaluation-empty");
    empty.replaceChildren(element("p", "", error.message));
    empty.hidden = false;
    $("#charts").replaceChildren();
    $("#evaluation-summary").textContent = "";
    return;
  }
  $("#evaluation-empty").hidden = true;
  const protocol = evaluation.protocol === "loo" ? "leave-one-out" : evaluation.protocol;
  $("#evaluation-summary").textContent = `precision@${evaluation.k}, ${protocol} protocol`;
  const modalities = [...new Set(evaluation.results.map((row) => row.modality))];
  $("#charts").replaceChildren(...modalities.map((modality) => chart(
    modality, evaluation.results.filter((row) => row.modality === modality), evaluation.k)));
}

// One bar chart per modality, metrics sorted by mvr's precision, as in the study's figures; where the results also
// score the study's own method on the same data, its bar sits under mvr's, in grey.
function chart(modality, rows, k) {
  const panel = element("section", "panel chart");
  panel.append(element("h2", "", `${modalityName(modality)} retrieval`));
  const byMetric = new Map();
  for (const row of rows) {
    if (!byMetric.has(row.metric)) byMetric.set(row.metric, {});
    byMetric.get(row.metric)[row.method || "mvr"] = row;
  }
  const ours = [...byMetric.values()].map((pair) => score(pair.mvr));
  const best = Math.max(...ours);
  const metrics = [...byMetric.keys()].sort((a, b) => score(byMetric.get(b).mvr) - score(byMetric.get(a).mvr));
  for (const metric of metrics) {
    const { mvr, study } = byMetric.get(metric);
    const line = element("div", "chart-row");
    line.dataset.metric = metric;
    line.classList.toggle("best", best >= 0 && score(mvr) === best);
    line.classList.toggle("degenerate", score(mvr) < 0);
    line.append(element("span", "", metric), ...bar(mvr, ""));
    if (study) line.append(element("span"), ...bar(study, "study"));
    panel.append(line);
  }
  const hasStudy = rows.some((row) => row.method === "study");
  const queries = rows.find((row) => row.queries)?.queries;
  panel.append(element("p", "chart-legend", [
    `precision@${k}${queries ? ` over ${queries} queries` : ""}`,
    "green: best",
    ...(hasStudy ? ["grey: the study's method on the same data"] : []),
    "hatched: degenerate metric",
  ].join("; ")));
  return panel;
}

// Precision, or -1 for a metric that answered nothing (or was not measured).
function score(row) {
  return row && !row.degenerate && row.precision != null ? row.precision : -1;
}

// A bar and its value; the tooltip gives the mean average precision and the precision of each label.
function bar(row, kind) {
  const track = element("div", `track ${kind}`);
  const value = element("span", `value ${kind}`, score(row) < 0 ? "n/a" : row.precision.toFixed(2));
  if (score(row) < 0) {
    track.classList.add("hatched");
    track.title = "degenerate: this metric gives every candidate the same distance";
    return [track, value];
  }
  const fill = element("div", "fill");
  fill.style.width = `${(100 * row.precision).toFixed(1)}%`;
  track.append(fill);
  const details = Object.entries(row.labels || {}).map(([label, precision]) =>
    `${label} ${precision == null ? "n/a" : precision.toFixed(2)}`);
  if (row.map != null) details.unshift(`mean average precision ${row.map.toFixed(3)}`);
  track.title = details.join("\n");
  return [track, value];
}

// start ---------------------------------------------------------------------------------------------------------

async function start() {
  try {
    state.info = await api("/api/info");
  } catch (error) {
    showError($("#error"), error.message);
    return;
  }
  const labels = state.info.labels.length;
  $("#catalog-info").textContent =
    `${state.info.catalog} · ${state.info.videos} videos · ${labels} label${labels === 1 ? "" : "s"}`;
  setUpSearch();
  setModality(state.info.modalities[0]);
  setUpCollection();
  window.addEventListener("hashchange", route);
  route();
  document.body.dataset.ready = "true";
}

start();
