// The collection's map (GET /api/map): one dot per video, placed by one search target's distances, coloured by
// label; hovering a dot shows its title and thumbnail, clicking it searches for the videos like it.
"use strict";

const MAP_WIDTH = 1000;  // the drawing's own units: the SVG scales to the page's width
const MAP_HEIGHT = 640;
const MAP_PAD = 24;
const MAP_DOT = 7;
const SVG_NS = "http://www.w3.org/2000/svg";
const mapState = { space: null, load: 0 };

const mapLink = (space) => `#/map?space=${encodeURIComponent(space)}`;

function svgNode(tag, attributes) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
  return node;
}

// Called by the router (app.js) for "#/map?space=...": the space asked for, else the last one shown, else the first.
async function loadMap(params) {
  const spaces = state.info.modalities;
  const asked = params.get("space");
  const space = spaces.includes(asked) ? asked : spaces.includes(mapState.space) ? mapState.space : spaces[0];
  mapState.space = space;
  $("#map-space").replaceChildren(...spaces.map((name) => {
    const button = element("button", "", modalityName(name));
    button.type = "button";
    button.dataset.modality = name;
    button.setAttribute("role", "radio");
    button.setAttribute("aria-checked", String(name === space));
    button.onclick = () => { location.hash = mapLink(name); };
    return button;
  }));
  const load = ++mapState.load;  // switching fast: only the latest space's map is drawn
  $("#map-status").textContent = "Laying out the collection…";
  hideMapTip();
  try {
    const found = await api(`/api/map?space=${encodeURIComponent(space)}`);
    if (load !== mapState.load) return;
    showError($("#map-error"), "");
    drawMap(found);
  } catch (error) {
    if (load !== mapState.load) return;
    showError($("#map-error"), error.message);
    $("#map-points").replaceChildren();
    $("#map-legend").replaceChildren();
    $("#map-status").textContent = "";
  }
}

function drawMap(found) {
  const points = found.points;
  const xs = points.map((point) => point.x);
  const ys = points.map((point) => point.y);
  const [left, bottom] = [Math.min(...xs), Math.min(...ys)];
  // One scale for both axes: distances on the map keep their proportions.
  const span = Math.max((Math.max(...xs) - left) / (MAP_WIDTH - 2 * MAP_PAD),
                        (Math.max(...ys) - bottom) / (MAP_HEIGHT - 2 * MAP_PAD)) || 1;
  const offsetX = (MAP_WIDTH - (Math.max(...xs) - left) / span) / 2;
  const offsetY = (MAP_HEIGHT - (Math.max(...ys) - bottom) / span) / 2;
  const svg = $("#map-points");
  svg.dataset.space = found.space;
  svg.replaceChildren(...points.map((point) => {
    const dot = svgNode("circle", {
      class: "map-point", r: MAP_DOT, tabindex: 0,
      cx: (offsetX + (point.x - left) / span).toFixed(1),
      cy: (MAP_HEIGHT - offsetY - (point.y - bottom) / span).toFixed(1),
    });
    dot.style.setProperty("--hue", String(labelHue(point.label)));
    dot.classList.toggle("unlabelled", !point.label);
    dot.dataset.videoId = String(point.id);
    dot.setAttribute("aria-label", point.title);
    dot.onmouseenter = dot.onfocus = () => showMapTip(dot, point);
    dot.onmouseleave = dot.onblur = hideMapTip;
    dot.onclick = () => openMapQuery(point, found.space);
    dot.onkeydown = (event) => event.key === "Enter" && openMapQuery(point, found.space);
    return dot;
  }));
  const counts = new Map();
  for (const point of points) counts.set(point.label, (counts.get(point.label) || 0) + 1);
  $("#map-legend").replaceChildren(...[...counts].sort(([a], [b]) => (a == null) - (b == null) || (a < b ? -1 : 1))
    .map(([label, count]) => {
      const item = element("li");
      const swatch = element("span", label ? "map-swatch" : "map-swatch unlabelled");
      swatch.style.setProperty("--hue", String(labelHue(label)));
      item.append(swatch, element("span", "", label || "unlabelled"), element("span", "muted", String(count)));
      return item;
    }));
  const method = found.method;
  $("#map-status").textContent = `${points.length} video${points.length === 1 ? "" : "s"} by ${found.metric}`
    + ` distance${found.fusion ? ` (${found.fusion.method} fusion)` : ""}; ${method.name}, ${method.library}`;
}

function showMapTip(dot, point) {
  const tip = $("#map-tip");
  const image = $("img", tip);
  image.hidden = false;
  image.onerror = () => { image.hidden = true; };
  image.src = thumbnailUrl(point.id);
  $(".map-tip-title", tip).textContent = point.title;
  $(".map-tip-label", tip).replaceChildren(labelChip(point.label));
  tip.hidden = false;
  const frame = $("#map-frame").getBoundingClientRect();
  const place = dot.getBoundingClientRect();
  const left = Math.min(Math.max(place.left - frame.left - tip.offsetWidth / 2, 0), frame.width - tip.offsetWidth);
  const below = place.top - frame.top < tip.offsetHeight + 12;
  tip.style.left = `${left}px`;
  tip.style.top = `${below ? place.bottom - frame.top + 8 : place.top - frame.top - tip.offsetHeight - 8}px`;
}

function hideMapTip() {
  $("#map-tip").hidden = true;
}

// A click searches for the videos like this one, in the map's own space, through the query's link (as
// findSimilar does from the collection).
function openMapQuery(point, space) {
  const link = queryLink({ video: point.id }, { modality: space, k: DEFAULT_K });
  $("nav a[data-page=search]").href = link;
  location.hash = link;
}
