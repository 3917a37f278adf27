// The walkthrough's views, in tab order. index.js makes each one's tab (before Learn) and section, routes to it,
// and runs load then draw; a view module's default export is
//   { id, title,            the URL #id and the tab's text
//     params,               "shared": its URL state is the page's (model, text, layer, head, query, key); "own": its
//                           readParams(params, ctx) reads it and it calls ctx.setHash(params); null: none
//     results,              ids of what it draws, cleared when its request fails (null: kept)
//     fromTour, routeOnly,  optional: first visit starts on the tour's preset; loads on routing only (not on Run);
//     needsModel, cleared,  needsModel: false loads without a chosen model; cleared(): more to forget on an error;
//     forget(state)         called when another view's URL changes the model or sentence
//     stripModel(ctx)       optional: the model the view shows when it is not the page's (the model strip draws it)
//     mount(section, ctx),  its markup and controls, once at start
//     load(ctx) -> answer,  draw(answer, ctx),  payload(answer) (optional: what its JSON button
//     exports; null: the view keeps state.payloads[id] itself) }
// with ctx = { state, arg, forced, reload(), need(model), track(promise, text), guarded(fn), select(changes), setHash(params), setArg(arg), pushState(),
//   stateParams(), viewDefaults() } (see index.js contextOf).
// Adding a view: a module here, listed below, and a Python module listed in web/registry.py.

import arch from "./arch.js";
import attention from "./attention.js";
import experiments from "./experiments.js";
import generate from "./generate.js";
import order from "./order.js";
import qkv from "./qkv.js";
import timeline from "./timeline.js";
import translate from "./translate.js";
import why from "./why.js";

export const VIEWS = [
  arch,
  attention,
  qkv,
  why,
  order,
  generate,
  timeline,
  translate,
  experiments,
];
