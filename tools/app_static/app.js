"use strict";
// The page of tools/app.py: asks /api/generate and draws its answer; all text goes in with textContent.
const $ = (id) => document.getElementById(id);
let info = null;
let answer = null;

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function figure(cls, png, caption) {
  const f = el("figure", cls);
  const img = el("img");
  img.src = png;
  img.alt = caption;
  f.append(img, el("figcaption", "", caption));
  return f;
}

function strip(label, cls, pictures) {
  // one labelled row of captioned pictures: [[png, caption], ...]
  const row = el("div", "strip");
  row.append(el("span", "label", label));
  for (const [png, caption] of pictures) row.append(figure(cls, png, caption));
  return row;
}

function showMessage(text) {
  $("message").textContent = text;
  $("message").hidden = !text;
}

function showNotes(data) {
  const notes = $("notes");
  notes.replaceChildren();
  for (const d of data.dropped || []) {
    const hint = d.suggestions.length ? `; did you mean ${d.suggestions.join(", ")}?` : "";
    notes.append(el("li", "dropped", `'${d.word}' is not in the vocabulary and was dropped${hint}`));
  }
  for (const w of data.warnings || []) notes.append(el("li", "warning", w));
}

function showModel() {
  const m = info.models[$("model").value];
  $("model-info").textContent = `${m.family} · ${m.text_encoder} text encoder · ${m.generator}`;
  const box = $("examples");
  box.replaceChildren();
  for (const s of m.examples) {
    const b = el("button", "", s);
    b.type = "button";
    b.onclick = () => { $("sentence").value = s; generate(); };
    box.append(b);
  }
  $("examples-box").hidden = m.examples.length === 0;
}

function render() {
  const results = $("results");
  results.replaceChildren();
  if (!answer) return;
  const variants = [...answer.variants];
  if ($("order").value === "score") variants.sort((a, b) => b.score - a.score);
  for (const v of variants) {
    const card = el("div", "variant");
    card.dataset.index = v.index;
    card.dataset.score = v.score;
    const title = el("h3", "", `#${v.index + 1} · DAMSM match `);
    title.append(el("span", "score", v.score.toFixed(3)));
    card.append(title);
    card.append(strip("stages", "stage", v.stages.map((s) => [s.png, s.label])));
    for (const group of v.attention) {
      card.append(strip(group.label, "attn", group.maps.map((m) => [m.png, m.word])));
    }
    if (v.masks.length) card.append(strip("predicted masks", "mask", v.masks.map((m) => [m.png, m.label])));
    results.append(card);
  }
}

async function generate() {
  const number = (id) => ($(id).value === "" ? null : Number($(id).value));
  const body = {model: Number($("model").value), sentence: $("sentence").value, variants: number("variants"),
                seed: number("seed"), truncation: number("truncation")};
  $("generate").disabled = true;
  $("status").textContent = "generating…";
  showMessage("");
  try {
    const r = await fetch("api/generate", {method: "POST", headers: {"Content-Type": "application/json"},
                                           body: JSON.stringify(body)});
    const data = await r.json();
    showNotes(data);
    if (!r.ok) {
      showMessage(data.error || `the server answered ${r.status}`);
      $("status").textContent = "";
      answer = null;
      render();
      $("download").hidden = true;
      return;
    }
    answer = data;
    render();
    const link = $("download");
    link.href = data.grid;
    link.download = `${data.model}_seed${data.seed}.png`;
    link.hidden = false;
    $("status").textContent = `${data.variants.length} variants of “${data.used}” in ${data.elapsed_ms} ms ` +
      `(words: ${data.words.join(" ")})`;
  } catch (e) {
    showMessage(`The server did not answer (${e}). Is tools.app still running?`);
    $("status").textContent = "";
  } finally {
    $("generate").disabled = false;
  }
}

async function start() {
  try {
    info = await (await fetch("api/info")).json();
  } catch (e) {
    showMessage(`Cannot reach the server (${e}).`);
    return;
  }
  const select = $("model");
  info.models.forEach((m, i) => select.append(new Option(`${m.name} (${m.family})`, i)));
  $("model-row").hidden = info.models.length < 2;
  $("variants").max = info.max_variants;
  $("sentence").maxLength = info.max_chars;
  select.onchange = showModel;
  showModel();
  $("generate").onclick = generate;
  $("sentence").addEventListener("keydown", (e) => { if (e.key === "Enter") generate(); });
  $("order").onchange = render;
  $("new-seed").onclick = () => { $("seed").value = Math.floor(Math.random() * 1e6); };
  document.body.dataset.ready = "1";
}

start();
