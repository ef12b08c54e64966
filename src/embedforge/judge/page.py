"""The judging page: one HTML document with its CSS and JavaScript inline (no CDN, works offline).

Keyboard first: ``1`` relevant, ``2`` partly, ``3`` not (then the next unjudged document), ``j``/``k``
next/previous document, ``n``/``p`` next/previous query, ``u`` undo, ``/`` type a query.
"""

PAGE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>embedforge judge</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:15px/1.45 system-ui,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{display:flex;gap:1em;align-items:baseline;padding:.6em 1em;background:#1d2330;color:#fff}
header h1{font-size:1.05em;margin:0}#status{margin-left:auto;color:#9fe0a8}
#add{display:flex;gap:.5em;padding:.6em 1em;flex-wrap:wrap;align-items:center}
#q{flex:1;min-width:18em;padding:.45em;font-size:1em}
button,label.btn{padding:.4em .8em;border:1px solid #99a;border-radius:4px;background:#fff;cursor:pointer}
#passage{margin:0 1em .6em;padding:.6em;background:#fff;border:1px dashed #99a}
#passage textarea{width:100%;min-height:3em;font:inherit}
main{display:grid;grid-template-columns:16em 1fr;gap:1em;padding:0 1em 1em}
#queries{list-style:none;margin:0;padding:0}
#queries li{padding:.35em .5em;border-radius:4px;cursor:pointer;font-size:.9em}
#queries li.current{background:#dfe7ff}#queries li .n{float:right;color:#667}
#qtext{margin:.2em 0 .6em;font-size:1.2em}
#docs{list-style:none;margin:0;padding:0}
#docs li{background:#fff;border:2px solid transparent;border-radius:6px;padding:.6em .8em;margin:0 0 .5em;box-shadow:0 1px 2px #0001}
#docs li.current{border-color:#3b6cff}
#docs li .g{float:right;font-size:.8em;padding:.1em .5em;border-radius:3px;background:#eee}
#docs li[data-grade="2"] .g{background:#b6ecc0}#docs li[data-grade="1"] .g{background:#fbe7a6}
#docs li[data-grade="0"] .g{background:#f3c3c3}
#results table{border-collapse:collapse;margin:.5em 0}#results td,#results th{padding:.2em .6em;border-bottom:1px solid #ccd;text-align:right}
#results{padding:0 1em}footer{padding:.6em 1em;color:#556;font-size:.85em}kbd{border:1px solid #aab;border-radius:3px;padding:0 .3em;background:#fff}
.empty{color:#667;padding:1em 0}
</style></head>
<body>
<header><h1>embedforge judge</h1><span id="counts"></span><span id="status"></span></header>
<section id="add">
  <input id="q" placeholder="Type a question your users ask, then Enter" autocomplete="off">
  <label class="btn">Load queries&hellip;<input id="file" type="file" accept=".txt,.jsonl" hidden></label>
  <button id="write">Write one from a passage</button>
  <button id="score">Score</button>
</section>
<section id="passage" hidden>
  <div><b>Passage</b> <small>(write the question a user would ask that it answers)</small></div>
  <p id="ptext"></p>
  <textarea id="pq" placeholder="The question this passage answers, then Enter"></textarea>
  <button id="padd">Add question</button> <button id="pskip">Another passage</button>
</section>
<main>
  <ul id="queries"></ul>
  <div><h2 id="qtext"></h2><ol id="docs"></ol></div>
</main>
<div id="results"></div>
<footer><kbd>1</kbd> relevant &middot; <kbd>2</kbd> partly &middot; <kbd>3</kbd> not &middot;
<kbd>j</kbd>/<kbd>k</kbd> next/previous document &middot; <kbd>n</kbd>/<kbd>p</kbd> next/previous query &middot;
<kbd>u</kbd> undo &middot; <kbd>/</kbd> type a query. Every judgement is saved as you make it.
Documents are pooled from several systems and shuffled; nothing says which system found which.</footer>
<script>
"use strict";
const GRADE = {"1": 2, "2": 1, "3": 0}, LABEL = {2: "relevant", 1: "partly", 0: "not"};
let view = {queries: [], n_judgements: 0}, qi = 0, di = 0, passage = null;
const $ = (id) => document.getElementById(id);

async function api(path, body) {
  const r = await fetch(path, body === undefined ? {} :
    {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
  const data = await r.json();
  if (!r.ok) { $("status").textContent = "error: " + (data.error || r.status); throw data; }
  return data;
}
function firstOpen(q) { return q.docs.findIndex((d) => d.grade === null); }
function resume() {
  const open = view.queries.findIndex((q) => firstOpen(q) >= 0);
  qi = open >= 0 ? open : Math.max(0, view.queries.length - 1);
  di = open >= 0 ? firstOpen(view.queries[qi]) : 0;
}
function render() {
  const judged = view.queries.filter((q) => q.docs.some((d) => d.grade !== null)).length;
  $("counts").textContent = `${view.queries.length} queries, ${judged} judged, ${view.n_judgements} judgements`;
  const ql = $("queries"); ql.innerHTML = "";
  view.queries.forEach((q, i) => {
    const li = document.createElement("li"), done = q.docs.filter((d) => d.grade !== null).length;
    li.dataset.qid = q.qid; li.className = i === qi ? "current" : "";
    li.innerHTML = `<span class="n">${done}/${q.docs.length}</span>`;
    li.append(document.createTextNode(q.text));
    li.onclick = () => { qi = i; di = Math.max(0, firstOpen(q)); render(); };
    ql.append(li);
  });
  const q = view.queries[qi], ol = $("docs"); ol.innerHTML = "";
  $("qtext").textContent = q ? q.text : "";
  if (!q) { ol.innerHTML = '<li class="empty">Type a query above (or load a file, or write one from a passage) to start.</li>'; return; }
  q.docs.forEach((d, i) => {
    const li = document.createElement("li");
    li.dataset.did = d.did; li.dataset.grade = d.grade === null ? "" : d.grade;
    li.className = i === di ? "current" : "";
    li.innerHTML = `<span class="g">${d.grade === null ? "?" : LABEL[d.grade]}</span>`;
    li.append(document.createTextNode(d.text));
    li.onclick = () => { di = i; render(); };
    ol.append(li);
  });
  const cur = ol.children[di]; if (cur && cur.scrollIntoView) cur.scrollIntoView({block: "nearest"});
}
function saved(text) { $("status").textContent = text || `saved (${view.n_judgements} judgements)`; }
// requests go one after another; grades show at once (a fast typist never grades the same
// document twice) and the server's view replaces the local one when no request is pending
let chain = Promise.resolve(), pending = 0;
function send(path, body, after) {
  pending += 1;
  chain = chain.then(() => api(path, body)).then((v) => {
    pending -= 1; if (pending === 0) { view = v; if (after) after(); render(); }
  }, () => { pending -= 1; });
  return chain;
}
function grade(g) {
  const q = view.queries[qi]; if (!q || !q.docs.length) return;
  const did = q.docs[di].did;
  if (q.docs[di].grade === null) view.n_judgements += 1;
  q.docs[di].grade = g;
  const next = q.docs.findIndex((d, i) => i > di && d.grade === null);
  if (next >= 0) di = next;
  else if (firstOpen(q) >= 0) di = firstOpen(q);
  else if (qi + 1 < view.queries.length) { qi += 1; di = Math.max(0, firstOpen(view.queries[qi])); }
  render(); $("status").textContent = "saving…";
  send("/api/judge", {qid: q.qid, did: did, grade: g}, () => saved());
}
function addQuery(text, passageId) {
  text = text.trim(); if (!text) return Promise.resolve();
  return send("/api/queries", {text: text, passage: passageId || null}, () => {
    const i = view.queries.findIndex((q) => q.text === text.split(/\s+/).join(" "));
    if (i >= 0) { qi = i; di = Math.max(0, firstOpen(view.queries[i])); }
    saved("query added");
  });
}
function goTo(qid, did) {
  const i = view.queries.findIndex((q) => q.qid === qid); if (i < 0) return resume();
  qi = i; di = Math.max(0, view.queries[i].docs.findIndex((d) => d.did === did));
}
async function showPassage() {
  passage = await api("/api/passage"); $("passage").hidden = false;
  $("ptext").textContent = passage.text; $("pq").value = ""; $("pq").focus();
}
async function score() {
  $("results").innerHTML = "<p>scoring&hellip;</p>";
  let s;
  await chain;  // every grade made before the click is saved before scoring
  try { s = await api("/api/score", {}); } catch (err) { $("results").innerHTML = ""; return; }
  const rows = Object.keys(s.finetuned).map((m) => {
    const g = s.significance[m] || {}, need = (s.queries_needed || {})[m];
    const ci = g.low === undefined ? "" : `[${g.low.toFixed(4)}, ${g.high.toFixed(4)}]`;
    return `<tr><th>${m}</th><td>${s.baseline[m].toFixed(4)}</td><td>${s.finetuned[m].toFixed(4)}</td>` +
      `<td>${s.delta[m] >= 0 ? "+" : ""}${s.delta[m].toFixed(4)}</td><td>${ci}</td>` +
      `<td>${g.p_value === undefined ? "" : g.p_value.toPrecision(3)}</td><td>${need || ""}</td></tr>`;
  }).join("");
  $("results").innerHTML = `<h3>On ${s.n_scored} of ${s.n_queries} judged queries (${s.n_judgements} judgements)</h3>` +
    `<table id="scores"><tr><th>metric</th><th>base</th><th>fine-tuned</th><th>delta</th><th>95% CI</th><th>p</th><th>queries for significance</th></tr>${rows}</table>`;
}
document.addEventListener("keydown", (e) => {
  const t = e.target;
  if (t.tagName === "INPUT" || t.tagName === "TEXTAREA") {
    if (e.key === "Escape") t.blur();
    if (e.key === "Enter" && t.id === "q") { e.preventDefault(); addQuery(t.value).then(() => { t.value = ""; t.blur(); }); }
    if (e.key === "Enter" && t.id === "pq" && !e.shiftKey) { e.preventDefault(); $("padd").click(); }
    return;
  }
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  const q = view.queries[qi];
  if (e.key in GRADE) { e.preventDefault(); grade(GRADE[e.key]); }
  else if (e.key === "j" && q) { di = Math.min(di + 1, q.docs.length - 1); render(); }
  else if (e.key === "k" && q) { di = Math.max(di - 1, 0); render(); }
  else if (e.key === "n" && qi + 1 < view.queries.length) { qi += 1; di = Math.max(0, firstOpen(view.queries[qi])); render(); }
  else if (e.key === "p" && qi > 0) { qi -= 1; di = Math.max(0, firstOpen(view.queries[qi])); render(); }
  else if (e.key === "u") { send("/api/undo", {}, () => { if (view.undone) goTo(...view.undone); else resume(); saved("undone"); }); }
  else if (e.key === "/") { e.preventDefault(); $("q").focus(); }
});
$("file").addEventListener("change", async (e) => {
  const f = e.target.files[0]; if (!f) return;
  const lines = (await f.text()).split(/\r?\n/).map((l) => l.trim()).filter(Boolean);
  for (const l of lines) {
    let text = l;
    if (l.startsWith("{")) { try { text = JSON.parse(l).text || ""; } catch (err) { text = l; } }
    if (text) view = await api("/api/queries", {text: text, passage: null});
  }
  resume(); saved(`${lines.length} queries loaded`); render(); e.target.value = "";
});
$("write").onclick = showPassage; $("pskip").onclick = showPassage;
$("padd").onclick = async () => {
  if (!passage) return; await addQuery($("pq").value, passage.did);
  $("passage").hidden = true; passage = null; $("pq").blur();
};
$("score").onclick = score;
api("/api/state").then((v) => { view = v; resume(); saved(view.n_judgements ? `resumed (${view.n_judgements} judgements)` : "ready"); render(); });
</script>
</body></html>
"""
