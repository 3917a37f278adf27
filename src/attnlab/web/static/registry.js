// The walkthrough's views, in tab order. A view module exports { id, title, params, results, mount, load, draw }
// (see why.js); index.js makes its tab and section, routes to it, and runs load then draw. Adding a view: a
// module here, listed below, and a Python module listed in web/registry.py.
// `wired(id, title)`: a view whose loader is still in index.js and whose section is in index.html.

import order from "./order.js";
import qkv from "./qkv.js";
import why from "./why.js";

const wired = (id, title) => ({ id, title, wired: true });

export const VIEWS = [
  wired("arch", "Architecture"),
  wired("attention", "Attention"),
  qkv,
  why,
  order,
  wired("generate", "Generate"),
  wired("timeline", "Training timeline"),
  wired("translate", "Translate"),
  wired("experiments", "Experiments"),
];
