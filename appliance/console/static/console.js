// sealfuse console: live job state through server-sent events (no polling); pages work without it.
"use strict";
const WORDS = {submitted: "Submitted", queued: "Queued", running: "Running", done: "Done", failed: "Failed", removed: "Removed"};
const FINAL = ["done", "failed", "removed"];

function detail(j) {
  switch (j.state) {
    case "submitted": return "Waiting for the watch service to pick it up";
    case "queued":
      if (j.queue_position === 0) return "Next in line";
      return j.queue_position ? `${j.queue_position} job${j.queue_position > 1 ? "s" : ""} ahead in the queue` : "In the queue";
    case "running": return j.progress && j.progress.total ? `Frame ${j.progress.done} of ${j.progress.total}` : "Swapping faces…";
    case "done": return j.media_deleted ? "Finished · media deleted" : "Finished · result ready";
    case "failed": return j.reason_text || "Failed";
    case "removed": return "Removed on request";
    default: return WORDS[j.state] || j.state;
  }
}

function paint(el, j) {
  for (const c of [...el.classList]) if (c.startsWith("s-")) el.classList.remove(c);
  el.classList.add("s-" + j.state);
  const badge = el.querySelector("[data-role=badge]");
  if (badge) { badge.className = "badge s-" + j.state; badge.lastChild.textContent = WORDS[j.state] || j.state; }
  const word = el.querySelector("[data-role=state-word]");
  if (word) word.textContent = WORDS[j.state] || j.state;
  const d = el.querySelector("[data-role=detail]");
  if (d) d.textContent = detail(j);
  const bar = el.querySelector("[data-role=bar]");
  if (bar) {
    const f = j.progress && j.progress.fraction != null ? j.progress.fraction : (j.state === "done" ? 1 : 0);
    bar.value = Math.round(f * 1000) / 10;
    bar.className = "bar s-" + j.state;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const page = document.querySelector(".status[data-events]");
  if (page) {
    const es = new EventSource(page.dataset.events);
    es.addEventListener("job", (ev) => {
      const j = JSON.parse(ev.data);
      paint(page, j);
      if (FINAL.includes(j.state)) { es.close(); location.reload(); }
    });
    es.addEventListener("end", () => es.close());
  }
  const table = document.querySelector("table.jobs[data-events]");
  if (table) {
    const es = new EventSource(table.dataset.events);
    es.addEventListener("jobs", (ev) => {
      for (const j of JSON.parse(ev.data).jobs) {
        const row = table.querySelector(`tr[data-ref="${CSS.escape(j.ref)}"]`);
        if (row) paint(row, j); else { es.close(); location.reload(); return; }
      }
    });
  }
});
