// Runs a `cnnbench plots` page as a browser would, with no network, and renders each of its plots.
// Usage: node render_plots_page.js index.html
// Prints JSON: the libraries the page defined, every network request tried, and per plot its title,
// its data rows and the text of the rendered SVG.
"use strict";
const fs = require("fs");
const vm = require("vm");

const html = fs.readFileSync(process.argv[2], "utf8");
const scripts = [...html.matchAll(/<script[^>]*>([\s\S]*?)<\/script>/g)].map((m) => m[1]);
const requests = [];
const sandbox = {
  console, setTimeout, clearTimeout, setInterval, clearInterval, queueMicrotask, structuredClone,
  TextEncoder, TextDecoder, URL, performance,
  fetch: (url) => { requests.push(String(url)); return Promise.reject(new Error("no network")); },
  XMLHttpRequest: function () { requests.push("XMLHttpRequest"); throw new Error("no network"); },
};
sandbox.window = sandbox;
sandbox.self = sandbox;
const context = vm.createContext(sandbox);

// The libraries run first, as the page's <head> does; then each plot's own script calls vegaEmbed.
const isPlot = (source) => /vegaEmbed\(\s*'#/.test(source);
for (const source of scripts.filter((s) => !isPlot(s))) vm.runInContext(source, context);
const defined = ["vega", "vegaLite", "vegaEmbed"].filter(
  (name) => vm.runInContext(`typeof ${name}`, context) === "function" || vm.runInContext(`typeof ${name}`, context) === "object");
const specs = [];
context.vegaEmbed = (selector, spec) => { specs.push([selector, spec]); return Promise.resolve(); };
for (const source of scripts.filter(isPlot)) vm.runInContext(source, context);

(async () => {
  const vega = vm.runInContext("vega", context);
  const vegaLite = vm.runInContext("vegaLite", context);
  const plots = [];
  for (const [selector, spec] of specs) {
    const view = new vega.View(vega.parse(vegaLite.compile(spec).spec), {renderer: "none"});
    const svg = await view.toSVG();
    const text = [...svg.matchAll(/<text[^>]*>([^<]*)<\/text>/g)].map((m) => m[1]);
    plots.push({selector, title: spec.title, rows: spec.data.values.length, text});
  }
  console.log(JSON.stringify({defined, requests, plots}));
})().catch((err) => { console.error(String(err && err.message || err).slice(0, 500)); process.exit(1); });
