// mvr dashboard: adding a video to the collection (POST /api/videos), shown only when the server was started with
// --allow-indexing. Loaded after app.js, whose helpers it uses (api, element, formatBytes, showError, postQuery,
// loadCollection, showCatalogInfo, takeTurns, POLL_MS).
"use strict";

const indexing = { file: null, maxUpload: 0 };

function chooseIndexFile(file) {
  indexing.file = file || null;
  $("#index-drop").classList.toggle("chosen", Boolean(file));
  const text = $("#index-drop-text");
  if (file) {
    text.textContent = `${file.name} (${formatBytes(file.size)})`;
    $("#index-url").value = "";
  } else {
    $("#index-file").value = "";  // choosing the same file again is a change
    text.replaceChildren("Drop a video file here, or ", element("u", "", "browse"));
  }
}

// What to send: the file as a multipart upload, or the URL as JSON; the label and title when given.
function indexBody() {
  const fields = Object.entries({ label: $("#index-label").value.trim(), title: $("#index-title").value.trim() })
    .filter(([, value]) => value);
  if (indexing.file) {
    if (indexing.file.size > indexing.maxUpload) {
      throw new Error(`${indexing.file.name}: larger than the upload limit of ${formatBytes(indexing.maxUpload)}`);
    }
    const form = new FormData();
    form.append("file", indexing.file);
    for (const [name, value] of fields) form.append(name, value);
    return form;
  }
  const url = $("#index-url").value.trim();
  if (!url) throw new Error("Paste a video URL or drop a video file to add.");
  return { url, ...Object.fromEntries(fields) };
}

function showIndexProgress(text) {
  $("#index-progress").textContent = text;
  $("#index-progress").hidden = !text;
}

// Poll the index job until it is done or failed, showing its stage as it goes.
async function followIndexJob(poll) {
  for (;;) {
    const status = await api(poll);
    const stage = status.stage.charAt(0).toUpperCase() + status.stage.slice(1);
    showIndexProgress(status.status === "done" ? "" : `${stage}… ${status.elapsed_s.toFixed(1)} s`);
    if (status.status === "done" || status.status === "failed") return status;
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

// A label becomes a suggestion of the form (and, once a video has it, a choice of the collection's label filter).
function offerLabel(label, lists = [$("#label-filter"), $("#index-labels")]) {
  if (!label) return;
  for (const list of lists) {
    if ([...list.options].some((option) => option.value === label)) continue;
    const option = element("option", "", label);
    option.value = label;
    list.append(option);
  }
}

async function addVideo() {
  const form = $("#index-form");
  let body;
  try {
    body = indexBody();
  } catch (error) {
    showError($("#index-error"), error.message);
    return;
  }
  showError($("#index-error"), "");
  $("#index-go").disabled = true;
  form.dataset.state = "running";
  showIndexProgress(body instanceof FormData ? "Uploading…" : "Sending…");
  try {
    const accepted = await postQuery(body, (part) => showIndexProgress(`Uploading… ${Math.round(100 * part)}%`),
      new AbortController().signal, "/api/videos", "video");
    const status = await followIndexJob(accepted.poll);
    if (status.status === "failed") throw new Error(status.error);
    const { video } = status;
    showIndexProgress(status.existing
      ? `Already in the collection as #${video.id} ${video.title}: nothing added`
      : `Added #${video.id} ${video.title}`);
    form.dataset.videoId = String(video.id);
    chooseIndexFile(null);
    for (const field of ["#index-url", "#index-label", "#index-title"]) $(field).value = "";
    offerLabel(video.label);
    await loadCollection();
    showCatalogInfo(await api("/api/info"));
  } catch (error) {
    showIndexProgress("");
    showError($("#index-error"), error.message);
  } finally {
    $("#index-go").disabled = false;
    form.dataset.state = "idle";
  }
}

async function setUpIndexing() {
  let info;
  try {
    info = await api("/api/info");
  } catch {
    return;  // app.js says why the page cannot start
  }
  document.body.dataset.indexing = info.allow_indexing ? "allowed" : "off";
  if (!info.allow_indexing) return;
  indexing.maxUpload = info.max_upload_bytes;
  for (const label of info.labels) offerLabel(label, [$("#index-labels")]);  // app.js fills the filter
  const form = $("#index-form");
  form.hidden = false;
  takeTurns({ url: $("#index-url"), drop: $("#index-drop"), input: $("#index-file"), choose: chooseIndexFile,
    chosen: () => indexing.file });
  form.onsubmit = (event) => {
    event.preventDefault();
    addVideo();
  };
}

setUpIndexing();
