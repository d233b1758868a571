// Queues: every queue with settings or jobs, its limits, pause, runs in
// flight and jobs by state; Pause and Resume (PUT /v1/queues/{name}).
import { api, query } from "../api.js";
import { h, notice, replace, table } from "../dom.js";
import { duration } from "../format.js";
import { throttled } from "../live.js";

const COUNTED = ["scheduled", "retrying", "paused", "dead", "completed", "cancelled"];

export const queuePath = (name) => `/v1/queues/${encodeURIComponent(name)}`;

export function rateText(rate) {
  return rate ? `${rate.max} per ${duration(rate.per_ms)}` : "none";
}

export async function render(root, ctx) {
  const status = h("div", { "aria-live": "polite" });
  const list = h("div");
  const counted = h("p", { class: "muted" });
  replace(root, h("h1", {}, "Queues"),
    h("p", { class: "muted" }, "Every queue with settings or jobs. Limits hold across all nodes; a paused queue starts nothing."),
    status, list, counted);

  async function setPaused(name, paused, button) {
    button.disabled = true;
    try {
      await api(queuePath(name), { method: "PUT", body: { paused } });
      replace(status, notice(`${paused ? "Paused" : "Resumed"} queue ${name}.`, "ok"));
    } catch (err) {
      replace(status, notice(`${name}: ${err.message}`));
    }
    await load();
  }

  function row(q) {
    const jobs = (state) => h("td", { class: "num" }, String(q.jobs[state] ?? 0));
    return h("tr", { "data-queue": q.queue },
      h("td", {}, h("a", { href: `#/jobs${query({ queue: q.queue })}` }, q.queue)),
      h("td", {}, q.paused ? h("span", { class: "badge s-paused" }, "paused") : h("span", { class: "badge s-scheduled" }, "active")),
      h("td", { class: "num" }, q.concurrency === null ? "none" : String(q.concurrency)),
      h("td", {}, rateText(q.rate_limit)),
      h("td", { class: "num" }, String(q.running)),
      COUNTED.map(jobs),
      h("td", { class: "action" }, ctx.session.read_only ? null : h("button", {
        type: "button", class: q.paused ? "" : "danger", "aria-label": `${q.paused ? "Resume" : "Pause"} queue ${q.queue}`,
        on: { click: (e) => setPaused(q.queue, !q.paused, e.target) },
      }, q.paused ? "Resume" : "Pause")));
  }

  async function load() {
    let data;
    try {
      data = await api("/v1/dashboard/queues");
    } catch (err) {
      replace(list, notice(err.message));
      return;
    }
    if (!ctx.alive()) return;
    replace(list, data.queues.length
      ? table(["Queue", "Status", "Concurrency", "Rate limit", "Running", ...COUNTED, ""], data.queues.map(row), { class: "queues" })
      : h("p", { class: "muted" }, "No queues yet: every job goes to \"default\" unless its spec names a queue."));
    counted.textContent = `Jobs counted ${data.counted_s_ago} s ago; settings as of now.`;
  }

  await load();
  const refresh = throttled(load, 2000);
  const timer = setInterval(refresh, 10000);
  return { onEvent: refresh, dispose: () => clearInterval(timer) };
}
