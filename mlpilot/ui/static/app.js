// mlpilot ui: the chat box and the live view of a run (server-sent events).
"use strict";

const STEPS = {
  plan: "planned",
  features: "engineering features",
  family: "tuning",
  trial: "tuning",
  ensemble: "ensembling",
  rerun: "verifying",
  refit: "refitting the final model",
  review: "the LLM's leakage review",
  report: "report written",
};

// The pruning step's progress in words: the phase and how far it is (as the CLI says).
function nasLine(p) {
  const names = {finetune: "fine-tuning", supernet: "super-network", polish: "polishing"};
  if (names[p.phase]) {
    const acc = p.val_accuracy === undefined || p.val_accuracy === null
      ? "" : `, validation accuracy ${p.val_accuracy.toFixed(3)}`;
    return `pruning: ${names[p.phase]} epoch ${p.epoch}/${p.epochs}${acc}`;
  }
  if (p.phase === "search") return `pruning: search ${p.evaluations}/${p.of} sub-networks`;
  if (p.phase === "device" && p.fallback === "cpu") {
    return "pruning: the sandbox has no GPU to give: training on the CPU";
  }
  if (p.phase === "polished") return `pruning: polished ${(p.tried || []).length} sub-network(s)`;
  return `pruning: ${p.phase}`;
}

function field(panel, name) {
  return panel.querySelector(`[data-field="${name}"]`);
}

function fmt(x) {
  return x === null || x === undefined ? "–" : Number(x).toFixed(4);
}

// Draws each finished trial's CV score (dots) and the best so far (line).
function draw(canvas, scores, greater) {
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, pad = 36;
  ctx.clearRect(0, 0, w, h);
  ctx.strokeStyle = "#999";
  ctx.strokeRect(pad, 8, w - pad - 8, h - pad - 8);
  ctx.fillStyle = "#444";
  ctx.font = "11px sans-serif";
  ctx.fillText("trial", w / 2, h - 8);
  if (scores.length === 0) {
    ctx.fillText("no finished trial yet", w / 2 - 50, h / 2);
    return;
  }
  let lo = Math.min(...scores), hi = Math.max(...scores);
  if (hi - lo < 1e-9) { lo -= 0.5; hi += 0.5; }
  const x = (i) => pad + ((i + 0.5) / scores.length) * (w - pad - 8);
  const y = (v) => 8 + (1 - (v - lo) / (hi - lo)) * (h - pad - 16);
  ctx.fillText(hi.toPrecision(4), 2, 16);
  ctx.fillText(lo.toPrecision(4), 2, h - pad);
  ctx.fillStyle = "#9aa";
  scores.forEach((v, i) => { ctx.beginPath(); ctx.arc(x(i), y(v), 3, 0, 7); ctx.fill(); });
  ctx.strokeStyle = "#1565c0";
  ctx.lineWidth = 2;
  ctx.beginPath();
  let best = null;
  scores.forEach((v, i) => {
    best = best === null ? v : (greater ? Math.max(best, v) : Math.min(best, v));
    if (i === 0) ctx.moveTo(x(i), y(best)); else ctx.lineTo(x(i), y(best));
  });
  ctx.stroke();
  ctx.lineWidth = 1;
}

// Follows a run's progress stream into a live panel; calls onDone with the outcome.
function watchRun(name, panel, onDone) {
  panel.hidden = false;
  field(panel, "name").textContent = name;
  const canvas = panel.querySelector("canvas");
  const scores = [];
  let greater = true, trials = 0, best = null;
  const source = new EventSource(`/api/runs/${encodeURIComponent(name)}/events`);
  source.addEventListener("meta", (e) => {
    const m = JSON.parse(e.data);
    greater = m.greater_is_better;
    field(panel, "metric").textContent = `(${m.metric})`;
    draw(canvas, scores, greater);
  });
  source.addEventListener("progress", (e) => {
    const p = JSON.parse(e.data);
    field(panel, "step").textContent = p.event === "nas" ? nasLine(p) : (STEPS[p.event] || p.event);
    field(panel, "seconds").textContent = Math.round(p.t);
    if (p.llm_calls !== undefined) field(panel, "llm").textContent = p.llm_calls;
    if (p.event === "trial") {
      trials += 1;
      field(panel, "trials").textContent = trials;
      if (p.ok && p.score !== null && p.score !== undefined) {
        scores.push(p.score);
        best = best === null ? p.score : (greater ? Math.max(best, p.score) : Math.min(best, p.score));
        field(panel, "best").textContent = fmt(best);
      }
      draw(canvas, scores, greater);
    }
  });
  source.addEventListener("done", (e) => {
    source.close();
    const o = JSON.parse(e.data);
    field(panel, "step").textContent = o.status;
    field(panel, "seconds").textContent = Math.round(o.spent_s);
    const out = field(panel, "outcome");
    out.innerHTML = "";
    const text = document.createElement("span");
    text.textContent = o.holdout_score === null
      ? `The run ended ${o.status} without a verified model. `
      : `Verified holdout score ${fmt(o.holdout_score)} (best family ${o.best_family}). `;
    out.appendChild(text);
    const link = document.createElement("a");
    link.href = `/runs/${encodeURIComponent(name)}`;
    link.textContent = "Open the run and its report";
    link.className = "run-link";
    out.appendChild(link);
    panel.classList.add("finished");
    if (onDone) onDone(o);
  });
  return source;
}

function addMessage(cls, text) {
  const box = document.getElementById("transcript");
  const div = document.createElement("div");
  div.className = `msg ${cls}`;
  div.textContent = text;
  box.appendChild(div);
  div.scrollIntoView({block: "end"});
  return div;
}

function setupChat() {
  const form = document.getElementById("chat-form");
  if (!form) return;
  const input = document.getElementById("chat-input");
  const send = document.getElementById("chat-send");
  const panel = document.getElementById("chat-live");
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const text = input.value.trim();
    if (!text) return;
    addMessage("you", text);
    input.value = "";
    send.disabled = true;
    const pending = addMessage("bot pending", "working…");
    let watching = null;
    const poll = setInterval(async () => {
      if (watching) return;
      const live = await (await fetch("/api/live")).json();
      if (live.run) watching = watchRun(live.run, panel);
    }, 1000);
    try {
      const r = await fetch("/api/chat", {
        method: "POST",
        headers: {"Content-Type": "application/json"},
        body: JSON.stringify({text}),
      });
      const answer = await r.json();
      pending.classList.remove("pending");
      pending.textContent = answer.reply !== undefined ? answer.reply : (answer.error || answer.detail);
      if (answer.run && !watching) watching = watchRun(answer.run, panel);
    } catch (err) {
      pending.textContent = `The server did not answer: ${err}`;
    } finally {
      clearInterval(poll);
      send.disabled = false;
      input.focus();
    }
  });
}

window.addEventListener("DOMContentLoaded", setupChat);
