// Overview: jobs by state, runs and failures per minute, dispatch lateness,
// and the nodes of a PostgreSQL cluster.
import { api } from "../api.js";
import { runsChart } from "../chart.js";
import { h, notice, replace, table } from "../dom.js";
import { relative } from "../format.js";
import { throttled } from "../live.js";

const STATES = ["scheduled", "running", "retrying", "paused", "completed", "dead", "cancelled"];

export async function render(root, ctx) {
  const cards = h("div", { class: "cards" });
  const chart = h("div", { class: "chart-box" });
  const lateness = h("div", { class: "facts" });
  const nodes = h("div");
  const status = h("div");
  replace(root,
    h("h1", {}, "Overview"),
    status,
    h("section", {}, h("h2", {}, "Jobs by state"), cards),
    h("section", {}, h("h2", {}, "Runs per minute, last hour"), chart,
      h("p", { class: "legend" }, h("span", { class: "key runs" }), "runs ", h("span", { class: "key failures" }), "failures")),
    h("section", {}, h("h2", {}, "Dispatch lateness, last hour"), lateness),
    nodes);

  async function load() {
    let data;
    try {
      data = await api("/v1/dashboard/overview");
    } catch (err) {
      replace(status, notice(`Could not load the overview: ${err.message}`));
      return;
    }
    if (!ctx.alive()) return;
    replace(status);
    replace(cards, STATES.map((s) =>
      h("a", { class: `card s-${s}`, href: `#/jobs?state=${s}` },
        h("span", { class: "count" }, String(data.jobs[s] ?? 0)), h("span", { class: "label" }, s))),
    h("div", { class: "card total" }, h("span", { class: "count" }, String(data.total)), h("span", { class: "label" }, "total")));
    const runs = data.runs_per_minute.reduce((a, p) => a + p.runs, 0);
    const failures = data.runs_per_minute.reduce((a, p) => a + p.failures, 0);
    replace(chart, runsChart(data.runs_per_minute),
      h("p", { class: "muted" }, `${runs} run(s), ${failures} failure(s) in the last hour (from ${data.runs_from}).`));
    const l = data.lateness;
    replace(lateness, l.count
      ? [fact("runs started", l.count), fact("median", `${l.p50_ms} ms`), fact("95th percentile", `${l.p95_ms} ms`), fact("worst", `${l.max_ms} ms`)]
      : h("p", { class: "muted" }, "No run has started in this process in the last hour."));
    if (data.nodes) {
      replace(nodes, h("section", {}, h("h2", {}, "Cluster nodes"),
        table(["Node", "Last seen", "Jobs held"], data.nodes.map((n) =>
          h("tr", {}, h("td", {}, n.node_id), h("td", {}, relative(n.last_seen)), h("td", { class: "num" }, String(n.jobs_held)))))));
    } else {
      replace(nodes);
    }
  }

  await load();
  const refresh = throttled(load, 1000);
  const timer = setInterval(load, 10000);
  return {
    onEvent: refresh,
    dispose: () => clearInterval(timer),
  };
}

function fact(label, value) {
  return h("div", { class: "fact" }, h("span", { class: "value" }, String(value)), h("span", { class: "label" }, label));
}
