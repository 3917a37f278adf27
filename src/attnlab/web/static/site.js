// The static edition's fetch layer (`attnlab site OUT`, src/attnlab/site/export.py). The exported index.html
// names its answers file (<html data-site="site.json">); then every request of model.js `call` is answered
// from the answers recorded by the real app, found by the request's canonical key (method, path and the body's
// JSON with sorted keys: export.request_key). A request that was not recorded goes to the in-browser models
// (static/live.js `liveAnswer(path, body)`, when that module exists and can answer), else it fails with one
// line saying that it needs the server, and the error line links to how to run it. Served by the app, the
// page has no data-site and this module does nothing.

export const SITE = document.documentElement.dataset.site || null;

export const NEEDS_SERVER = "This needs the attnlab server: this static copy holds answers computed in advance for its own models and sentences only.";

let answers = null; // the promise of site.json
let live; // undefined: not looked for yet; null: no live.js

// JSON.stringify of `value` with every object's keys sorted (Python's json.dumps(sort_keys=True, separators=(",", ":"))).
export function canonical(value) {
  if (Array.isArray(value)) return `[${value.map(canonical).join(",")}]`;
  if (value && typeof value === "object") {
    return `{${Object.keys(value).filter((k) => value[k] !== undefined).sort().map((k) => `${JSON.stringify(k)}:${canonical(value[k])}`).join(",")}}`;
  }
  return JSON.stringify(value);
}

export function requestKey(path, body) {
  return body === undefined ? `GET ${path}` : `POST ${path} ${canonical(body)}`;
}

async function liveModule(site) {
  if (!site.live) return null; // exported without static/live.js
  if (live === undefined) {
    try { live = await import("./live.js"); } catch { live = null; }
  }
  return live;
}

// The answer to one request of the page, as the server would give it; an error answer, or a request that
// needs the server, throws `makeError(detail)`.
export async function staticCall(path, body, makeError) {
  if (!answers) answers = fetch(SITE).then((r) => r.json());
  const site = await answers;
  const entry = site.answers[requestKey(path, body)];
  if (entry) {
    const data = await (await fetch(entry.file)).json();
    if (entry.status >= 400) throw makeError(typeof data.detail === "string" ? data.detail : `error ${entry.status}`);
    return data;
  }
  const mod = await liveModule(site);
  if (mod && typeof mod.liveAnswer === "function") {
    const answer = await mod.liveAnswer(path, body);
    if (answer) return answer;
  }
  throw makeError(NEEDS_SERVER);
}

// In the static edition: the error line links to the page on running the server whenever it says NEEDS_SERVER.
function linkServerHelp(errorLine) {
  if (!SITE || !errorLine) return;
  const decorate = () => {
    if (!errorLine.textContent.startsWith(NEEDS_SERVER) || errorLine.querySelector("a")) return;
    errorLine.append(" ");
    const a = document.createElement("a");
    a.href = "server.html"; // written by attnlab site from the README's Quick start
    a.textContent = "How to run it (make serve)";
    errorLine.append(a);
  };
  new MutationObserver(decorate).observe(errorLine, { childList: true, characterData: true, subtree: true });
}

linkServerHelp(document.getElementById("error")); // a module runs once the document is parsed
