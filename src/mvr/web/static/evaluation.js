// mvr dashboard, the evaluation page: the latest `mvr evaluate` results of the catalog (GET /api/evaluation).
// Uses app.js's helpers ($, api, element, modalityName); app.js's route() calls loadEvaluation().
"use strict";

const FUSED = "fused";

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
  $("#evaluation-summary").textContent = evaluationSummary(evaluation);
  const modalities = [...new Set(evaluation.results.map((row) => row.modality))];
  const studyChoice = evaluation.defaults?.study || {};
  $("#charts").replaceChildren(
    ...[fusionPanel(evaluation), labelPanel(evaluation, modalities)].filter(Boolean),
    ...modalities.map((modality) => metricChart(
      modality, evaluation.results.filter((row) => row.modality === modality), evaluation.k, studyChoice[modality],
      evaluation.learned?.[modality])));
}

function evaluationSummary(evaluation) {
  const protocol = { loo: "leave-one-out", holdout: "holdout", queries: "queries from another catalog" };
  const queries = evaluation.results.find((row) => row.queries)?.queries;
  return [`precision@${evaluation.k} and mean average precision`, `${protocol[evaluation.protocol]
    || evaluation.protocol} protocol`, ...(queries ? [`${queries} queries`] : []),
  ...(evaluation.created ? [`measured ${evaluation.created.slice(0, 10)}`] : [])].join(" · ");
}

// The fused search's ways side by side: the tuned fusion (cross-validated), mvr's equal weights, the
// query-adaptive fusion and the study's concatenation, each with its own metric; absent rows are left out.
function fusionPanel(evaluation) {
  const own = (method) => evaluation.results.find((row) => row.method === method && row.modality === FUSED
    && row.metric === evaluation.defaults?.[method]?.[FUSED]);
  const folds = evaluation.tuned?.folds.length;
  const ways = [
    [`tuned fusion (${folds}-fold cross-validated)`, evaluation.tuned?.result, "tuned"],
    [`equal weights (late, ${own("mvr")?.metric})`, own("mvr"), "equal"],
    [`adaptive (late, ${evaluation.adaptive?.metric})`, evaluation.adaptive, "adaptive"],
    [`the study's concatenation (${own("study")?.metric})`, own("study"), "study"],
  ].filter(([, row]) => row);
  if (ways.length < 2) return null;
  const panel = element("section", "panel chart fusions");
  panel.append(element("h2", "", "Multimodal: which fusion"));
  const body = chartBody(ways[0][1].chance, evaluation.k);
  for (const [name, row, kind] of ways) body.append(chartRow(name, row, { kind }));
  panel.append(body, element("p", "chart-legend", [
    "the tuned fusion is scored only on queries it was not tuned on",
    ...(evaluation.catalog_tuned ? ["this catalog is tuned: its fused searches use the tuned fusion"]
      : ["this catalog is not tuned (mvr tune): its fused searches use equal weights"]),
  ].join("; ")));
  return panel;
}

// Precision@k of each label's queries, for the row of each modality that mvr searches by default.
function labelPanel(evaluation, modalities) {
  const columns = [...modalities.map((modality) => evaluation.results.find((row) => row.modality === modality
    && row.default)), ...(evaluation.tuned?.result.default ? [evaluation.tuned.result] : [])].filter(Boolean);
  const labels = [...new Set(columns.flatMap((row) => Object.keys(row.labels || {})))].sort();
  if (!columns.length || !labels.length) return null;
  const panel = element("section", "panel chart labels");
  panel.append(element("h2", "", "Per label: mvr's default searches"));
  const table = element("table", "label-table");
  const head = element("tr");
  head.append(element("th", "", "label"), ...columns.map((row) => element("th", "",
    `${modalityName(row.modality)} (${row.method === "tuned" ? "tuned" : row.metric})`)));
  table.append(head);
  for (const label of labels) {
    const line = element("tr");
    line.dataset.label = label;
    line.append(element("td", "", label), ...columns.map((row) => {
      const value = row.labels?.[label];
      return element("td", "num", value == null ? "n/a" : value.toFixed(2));
    }));
    table.append(line);
  }
  panel.append(table, element("p", "chart-legend", `precision@${evaluation.k} of each label's queries`));
  return panel;
}

// One bar chart per modality, metrics sorted by mvr's precision, as in the study's figures. Where the results
// also score the study's own method on the same data and it differs from mvr's (the fused search), its bar sits
// under mvr's, in grey: on one space both methods rank the same vectors with the same metric alike. An audio
// space's last row is that space tuned alone (its LDA projection where a fold keeps one), cross-validated.
function metricChart(modality, rows, k, studyMetric, learned) {
  const panel = element("section", "panel chart");
  panel.append(element("h2", "", `${modalityName(modality)} retrieval`));
  const byMetric = new Map();
  for (const row of rows) {
    if (!byMetric.has(row.metric)) byMetric.set(row.metric, {});
    byMetric.get(row.metric)[row.method || "mvr"] = row;
  }
  const best = Math.max(...[...byMetric.values()].map((pair) => score(pair.mvr)));
  const metrics = [...byMetric.keys()].sort((a, b) => score(byMetric.get(b).mvr) - score(byMetric.get(a).mvr));
  const body = chartBody(rows.find((row) => row.chance != null)?.chance, k);
  let greyBars = false;
  for (const metric of metrics) {
    const { mvr, study } = byMetric.get(metric);
    const differs = study && !sameScores(mvr, study);
    greyBars ||= differs;
    body.append(chartRow(metric, mvr, { best: best >= 0 && score(mvr) === best, study: differs ? study : null,
      studyChoice: metric === studyMetric }));
  }
  if (learned) {
    const kept = learned.folds.filter((fold) => fold.projections?.includes(modality)).length;
    body.append(chartRow(`learned projection (LDA in ${kept} of ${learned.folds.length} folds, cross-validated)`,
      learned.result, { kind: "learned" }));
  }
  panel.append(body);
  const queries = rows.find((row) => row.queries)?.queries;
  panel.append(element("p", "chart-legend", [
    `precision@${k} and mAP${queries ? ` over ${queries} queries` : ""}`,
    "green: best",
    ...(greyBars ? ["grey: the study's method on the same data"] : []),
    "dotted line: chance (a random ranking)",
    "hatched: degenerate metric",
    ...(learned ? ["learned: scored only on queries it was not fitted on"] : []),
  ].join("; ")));
  return panel;
}

// The rows' box: the column heads, and the chance line across every bar at the chance level.
function chartBody(chance, k) {
  const body = element("div", "chart-body");
  const head = element("div", "chart-row chart-head");
  head.append(element("span"), element("span"), element("span", "num", `p@${k}`), element("span", "num", "mAP"));
  body.append(head);
  if (chance != null) {
    const line = element("div", "chance-line");
    line.dataset.chance = String(chance);
    line.style.setProperty("--chance", String(chance));
    line.title = `chance ${chance.toFixed(2)}: the precision@${k} of a random ranking`;
    body.append(line);
  }
  return body;
}

// One row: its name and marks, its bar, precision and mAP; then the study's bar and values, when given.
function chartRow(name, row, { best = false, study = null, studyChoice = false, kind = "" } = {}) {
  const line = element("div", "chart-row");
  line.dataset.metric = row.metric;
  if (kind) line.dataset.kind = kind;
  line.classList.toggle("best", best);
  line.classList.toggle("degenerate", score(row) < 0);
  line.classList.toggle("default", Boolean(row.default));
  const label = element("span", "chart-name", name);
  if (row.default) label.append(element("span", "tag default", "mvr default"));
  if (studyChoice) label.append(element("span", "tag study", "study's choice"));
  line.append(label, ...barCells(row, ""));
  if (study) line.append(element("span", "chart-name study", "study"), ...barCells(study, "study"));
  return line;
}

// Precision, or -1 for a metric that answered nothing (or was not measured).
function score(row) {
  return row && !row.degenerate && row.precision != null ? row.precision : -1;
}

function sameScores(a, b) {
  return a && b && a.precision === b.precision && a.map === b.map && a.degenerate === b.degenerate;
}

// A bar, its precision and its mean average precision; the tooltip gives the precision of each label.
function barCells(row, kind) {
  const track = element("div", `track ${kind}`);
  const numbers = (value, digits) => (score(row) < 0 || value == null ? "n/a" : value.toFixed(digits));
  const cells = [track, element("span", `value num ${kind}`, numbers(row.precision, 2)),
    element("span", `map num ${kind}`, numbers(row.map, 2))];
  if (score(row) < 0) {
    track.classList.add("hatched");
    track.title = "degenerate: this metric gives every candidate the same distance";
    return cells;
  }
  const fill = element("div", "fill");
  fill.style.width = `${(100 * row.precision).toFixed(1)}%`;
  track.append(fill);
  track.title = Object.entries(row.labels || {}).map(([label, precision]) =>
    `${label} ${precision == null ? "n/a" : precision.toFixed(2)}`).join("\n");
  return cells;
}
