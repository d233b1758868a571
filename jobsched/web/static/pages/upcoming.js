// Upcoming: every run due in the next hours (24 by default) across all jobs:
// due times of one-time and retrying jobs, and the occurrences of cron and
// interval jobs within the window, capped by the service (it says so).
import { api, query } from "../api.js";
import { timeline } from "../chart.js";
import { h, notice, replace, stateBadge, table } from "../dom.js";
import { localTime, relative, utcTime } from "../format.js";
import { throttled } from "../live.js";

export async function render(root, ctx) {
  const hours = Number(ctx.params.get("hours")) || 24;
  const chart = h("div", { class: "chart-box" });
  const list = h("div");
  const status = h("div");
  const choose = h("nav", { class: "pager", "aria-label": "Window" },
    [6, 24, 72, 168].map((n) => h("a", { href: `#/upcoming?hours=${n}`, "aria-current": n === hours ? "page" : null }, n < 48 ? `${n} h` : `${n / 24} days`)));
  replace(root, h("h1", {}, `Upcoming, next ${hours} hours`), choose, status, chart, list);

  async function load() {
    let data;
    try {
      data = await api(`/v1/dashboard/upcoming${query({ hours, limit: 500 })}`);
    } catch (err) {
      replace(status, notice(err.message));
      return;
    }
    if (!ctx.alive()) return;
    replace(status, data.capped
      ? notice(`Showing the first ${data.limit} runs only: more are due before ${localTime(data.until)}.`, "warn")
      : h("p", { class: "muted" }, `${data.runs.length} run(s) due by ${localTime(data.until)}.`));
    replace(chart, timeline(data.runs, data.from, data.until));
    replace(list, data.runs.length
      ? table(["When (your time)", "UTC", "In", "Job", "Task", "Kind", "State"], data.runs.map((r) => h("tr", {},
        h("td", {}, localTime(r.at)), h("td", {}, utcTime(r.at)), h("td", {}, relative(r.at)),
        h("td", { class: "id" }, h("a", { href: `#/jobs/${encodeURIComponent(r.job_id)}` }, r.job_id)),
        h("td", {}, r.task), h("td", {}, r.kind), h("td", {}, stateBadge(r.state)))))
      : h("p", { class: "muted" }, "Nothing is due in this window."));
  }

  await load();
  const refresh = throttled(load, 2000);
  const timer = setInterval(load, 30000);
  return { onEvent: refresh, dispose: () => clearInterval(timer) };
}
