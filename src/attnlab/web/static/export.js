// Each view's export buttons (a span with data-export="VIEW"): its primary SVG as SVG or PNG, and the JSON it
// drew (state.payloads[VIEW]).

import { state } from "./model.js";
import * as V from "./views.js";

export function addExportButtons(span, guarded) {
  const name = span.dataset.export;
  for (const kind of ["SVG", "PNG", "JSON"]) {
    const b = V.el("button", { type: "button", "data-kind": kind.toLowerCase() }, span, kind);
    b.addEventListener("click", () => guarded(() => exportView(name, kind.toLowerCase())));
  }
}

function download(blob, filename) {
  const a = V.el("a", { href: URL.createObjectURL(blob), download: filename }, document.body);
  a.click();
  setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
}

async function exportView(name, kind) {
  if (kind === "json") {
    const data = state.payloads[name];
    if (!data) throw new Error("nothing to export yet: run this view first");
    return download(new Blob([JSON.stringify(data, null, 1)], { type: "application/json" }), `attnlab-${name}.json`);
  }
  const svg = document.querySelector(`#view-${name} svg.primary`);
  if (!svg || !svg.firstChild) throw new Error("nothing drawn yet in this view");
  const text = new XMLSerializer().serializeToString(svg);
  if (kind === "svg") return download(new Blob([text], { type: "image/svg+xml" }), `attnlab-${name}.svg`);
  const image = new Image();
  const url = URL.createObjectURL(new Blob([text], { type: "image/svg+xml" }));
  await new Promise((resolve, reject) => { image.onload = resolve; image.onerror = () => reject(new Error("could not draw the SVG")); image.src = url; });
  const canvas = V.el("canvas", { width: svg.viewBox.baseVal.width * 2, height: svg.viewBox.baseVal.height * 2 });
  const ctx = canvas.getContext("2d");
  ctx.scale(2, 2);
  ctx.drawImage(image, 0, 0);
  URL.revokeObjectURL(url);
  canvas.toBlob((blob) => download(blob, `attnlab-${name}.png`), "image/png");
}
