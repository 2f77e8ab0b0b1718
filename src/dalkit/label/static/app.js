// dalkit labeling page: one small script, no build step.  Every action is a POST to the project's
// server; a card shows a label only after the server answered that it is in the journal.
"use strict";
const token = new URLSearchParams(location.search).get("token") || "";
const state = { classes: [], batch: null, focus: 0, history: [], polling: null };

function api(path, body) {
  const init = { headers: { "X-Dalkit-Token": token } };
  if (body !== undefined) {
    init.method = "POST";
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  return fetch(path, init).then(async (r) => {
    const data = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(data.error || r.statusText);
    return data;
  });
}

function say(text) { document.getElementById("message").textContent = text || ""; }

// keys: the class names themselves when every name is one distinct character (digits 0-9), else
// 1..9, 0 by position
function ownKeys() {
  const c = state.classes;
  return c.every((n) => n.length === 1 && n !== "u" && n !== "x") && new Set(c).size === c.length;
}
function keyOf(i) {
  if (ownKeys()) return state.classes[i];
  return i < 9 ? String(i + 1) : (i === 9 ? "0" : "");
}
function classOfKey(key) {
  for (let k = 0; k < state.classes.length; k++) if (keyOf(k) === key) return k;
  return -1;
}

function render() {
  const grid = document.getElementById("grid");
  grid.innerHTML = "";
  const items = state.batch ? state.batch.items : [];
  items.forEach((it, i) => {
    const card = document.createElement("div");
    card.className = "card";
    card.tabIndex = 0;
    card.dataset.item = it.item;
    card.dataset.index = i;
    const img = document.createElement("img");
    img.src = "api/image/" + it.item + "?token=" + encodeURIComponent(token);
    img.alt = it.path || it.item;
    const meta = document.createElement("div");
    meta.className = "meta";
    meta.innerHTML = "<span class='guess'></span><span class='conf'></span>";
    if (it.guess !== null) {
      meta.querySelector(".guess").textContent = "guess " + it.guess;
      meta.querySelector(".conf").textContent = Math.round(100 * it.confidence) + "%";
    }
    const answer = document.createElement("div");
    answer.className = "answer";
    const choices = document.createElement("div");
    choices.className = "choices";
    state.classes.forEach((c, k) => {
      const b = document.createElement("button");
      b.textContent = c;
      b.title = keyOf(k) ? "key " + keyOf(k) : "";
      b.dataset.label = c;
      b.addEventListener("click", (e) => { e.stopPropagation(); setFocus(i); labelItem(i, c); });
      choices.appendChild(b);
    });
    const none = document.createElement("button");
    none.textContent = "none of these";
    none.className = "ood-btn";
    none.title = "key x";
    none.addEventListener("click", (e) => { e.stopPropagation(); setFocus(i); markOod(i); });
    choices.appendChild(none);
    card.append(img, meta, answer, choices);
    card.addEventListener("click", () => setFocus(i));
    grid.appendChild(card);
    paint(i);
  });
  setFocus(Math.min(state.focus, Math.max(items.length - 1, 0)));
  progress();
}

function paint(i) {
  const it = state.batch.items[i];
  const card = document.querySelector(`.card[data-index="${i}"]`);
  card.classList.toggle("done", !!it.label);
  card.classList.toggle("ood", !!it.ood);
  card.querySelector(".answer").textContent = it.ood ? "none of these" : (it.label ? "label: " + it.label : "");
}

function progress() {
  const items = state.batch ? state.batch.items : [];
  const done = items.filter((it) => it.label || it.ood).length;
  document.getElementById("progress-bar").style.width = items.length ? (100 * done / items.length) + "%" : "0";
  document.getElementById("progress-text").textContent = state.batch
    ? `batch ${state.batch.batch}: ${done} / ${items.length}` : "no batch yet";
}

function setFocus(i) {
  state.focus = i;
  document.querySelectorAll(".card").forEach((c) => c.classList.toggle("focus", Number(c.dataset.index) === i));
  const card = document.querySelector(`.card[data-index="${i}"]`);
  if (card && document.activeElement !== card) card.focus({ preventScroll: false });
}

function advance(from) {
  const items = state.batch.items;
  for (let k = 1; k <= items.length; k++) {
    const j = (from + k) % items.length;
    if (!items[j].label && !items[j].ood) { setFocus(j); return; }
  }
}

function counts(st) {
  document.getElementById("counts").textContent =
    `${st.labeled} labeled · ${st.unlabeled} unlabeled · ${st.ood} none-of-these · ${st.rounds} rounds` +
    (st.val_acc !== null && st.val_acc !== undefined ? ` · held-out acc ${(100 * st.val_acc).toFixed(1)}%` : "");
}

function labelItem(i, label) {
  const it = state.batch.items[i];
  return api("api/label", { item: it.item, label }).then((r) => {
    it.label = r.label; it.ood = false;
    state.history.push(it.item);
    paint(i); progress(); say(""); advance(i);
  }).catch((e) => say(e.message));
}

function markOod(i) {
  const it = state.batch.items[i];
  return api("api/ood", { item: it.item }).then(() => {
    it.ood = true; it.label = null;
    state.history.push(it.item);
    paint(i); progress(); say(""); advance(i);
  }).catch((e) => say(e.message));
}

function undo() {
  const item = state.history.pop();
  if (!item) { say("nothing to undo"); return; }
  api("api/undo", { item }).then((r) => {
    const i = state.batch.items.findIndex((it) => it.item === item);
    if (i >= 0) {
      state.batch.items[i].label = r.label; state.batch.items[i].ood = r.ood;
      paint(i); progress(); setFocus(i);
    }
    say("");
  }).catch((e) => { state.history.push(item); say(e.message); });
}

// the round's progress: epoch k / E while training, then the query; the bar's fraction comes from the
// server and never goes back
function roundText(r) {
  const p = r.progress || {};
  const secs = ` (${r.elapsed_s || 0} s)`;
  if (p.phase === "train") return `round: training, epoch ${p.epoch} / ${p.epochs}` + secs;
  if (p.phase === "query") return "round: querying the next batch" + secs;
  return `round: ${r.stage}` + secs;
}

function showRound(r) {
  const el = document.getElementById("round");
  const box = document.getElementById("round-progress");
  const bar = document.getElementById("round-bar");
  const p = r.progress;
  document.getElementById("next").disabled = !!r.running;
  box.hidden = !p;
  if (p) {
    const pct = Math.round(1000 * p.fraction) / 10;
    bar.style.width = pct + "%";
    box.setAttribute("aria-valuenow", String(pct));
    box.dataset.phase = p.phase;
    box.dataset.epoch = p.epoch;
    box.classList.toggle("query", r.running && p.phase === "query");
  }
  if (r.running) el.textContent = roundText(r);
  else if (r.error) el.textContent = "round failed: " + r.error;
  else if (r.finished) {
    el.textContent = `round done in ${r.elapsed_s} s` + (p && p.epochs ? ` (${p.epochs} epochs)` : "");
  } else el.textContent = "";
}

function poll() {
  api("api/round").then((r) => {
    showRound(r);
    if (r.running) { state.polling = setTimeout(poll, 250); return; }
    state.polling = null;
    if (!r.error) load();
  }).catch((e) => say(e.message));
}

function load() {
  return api("api/state").then((s) => {
    state.classes = s.classes; state.batch = s.batch; state.history = [];
    counts(s.status); showRound(s.round); render();
    document.body.dataset.batch = s.batch ? s.batch.batch : "";
    if (s.round.running && !state.polling) poll();
  }).catch((e) => say(e.message));
}

document.getElementById("next").addEventListener("click", () => {
  api("api/next", {}).then((r) => { showRound(r.round); poll(); }).catch((e) => say(e.message));
});

document.getElementById("show-map").addEventListener("click", () => {
  const box = document.getElementById("map");
  box.hidden = false;
  document.getElementById("map-img").src = "api/map.png?token=" + encodeURIComponent(token) + "&t=" + Date.now();
});

document.addEventListener("keydown", (e) => {
  if (!state.batch || e.ctrlKey || e.metaKey || e.altKey) return;
  const i = state.focus;
  if (e.key === "u") { undo(); e.preventDefault(); return; }
  if (e.key === "x") { markOod(i); e.preventDefault(); return; }
  const last = state.batch.items.length - 1;
  if (e.key === "ArrowRight" || e.key === "ArrowDown") { setFocus(Math.min(i + 1, last)); e.preventDefault(); return; }
  if (e.key === "ArrowLeft" || e.key === "ArrowUp") { setFocus(Math.max(i - 1, 0)); e.preventDefault(); return; }
  const k = classOfKey(e.key);
  if (k >= 0) { labelItem(i, state.classes[k]); e.preventDefault(); }
});

load();
