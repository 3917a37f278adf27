// The page's status line: what is in flight ("loading model X" while a model loads, "computing…" for slow
// answers), shown after 400 ms or at once, with its seconds; it dims the views that wait for a model.

const $ = (id) => document.getElementById(id);

const activity = new Map(); // id -> { text, start, shown }
let activityId = 0;
let activityTimer = null;

function renderActivity() {
  const shown = [...activity.values()].filter((a) => a.shown);
  document.body.setAttribute("aria-busy", String(shown.length > 0));
  $("status").hidden = !shown.length;
  if (!shown.length) {
    clearInterval(activityTimer); activityTimer = null;
    delete $("status").dataset.loading; document.body.removeAttribute("data-loading-model");
    return;
  }
  const loadingModels = shown.filter((a) => a.model).map((a) => a.model);
  if (loadingModels.length) $("status").dataset.loading = loadingModels.join(" ");
  else delete $("status").dataset.loading;
  document.body.toggleAttribute("data-loading-model", loadingModels.length > 0); // dims the views that wait for it
  $("status-text").textContent = shown.map((a) => `${a.text} ${Math.floor((performance.now() - a.start) / 1000)} s`).join(" · ");
  if (!activityTimer) activityTimer = setInterval(renderActivity, 500);
}

// Show `text` while `promise` runs: at once when `immediate`, else only if it takes longer than 400 ms.
export async function track(text, promise, { immediate = false, model = null } = {}) {
  const id = (activityId += 1);
  const entry = { text, start: performance.now(), shown: immediate, model };
  activity.set(id, entry);
  const timer = immediate ? null : setTimeout(() => { entry.shown = true; renderActivity(); }, 400);
  if (immediate) renderActivity();
  try { return await promise; } finally { clearTimeout(timer); activity.delete(id); renderActivity(); }
}
