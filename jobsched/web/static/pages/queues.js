// Queues: every queue with settings or jobs, its limits, pause, runs in
// flight and jobs by state; Pause and Resume, and a form that sets a queue's
// limits (all through PUT /v1/queues/{name}).
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

  const limitsForm = ctx.session.read_only ? null : limitsEditor(status, () => load());
  if (limitsForm) root.append(limitsForm.form);

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
      h("td", { class: "action" }, ctx.session.read_only ? null : [
        h("button", {
          type: "button", class: q.paused ? "" : "danger", "aria-label": `${q.paused ? "Resume" : "Pause"} queue ${q.queue}`,
          on: { click: (e) => setPaused(q.queue, !q.paused, e.target) },
        }, q.paused ? "Resume" : "Pause"),
        h("button", {
          type: "button", "aria-label": `Edit limits of queue ${q.queue}`,
          on: { click: () => limitsForm.fill(q) },
        }, "Limits"),
      ]));
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

// The form that sets a queue's limits: an empty field means "no limit" (the
// setting is removed); a queue that has no settings yet gets them.
function limitsEditor(status, reload) {
  const input = (name, label, attrs) => {
    const el = h("input", { name, id: `q-${name}`, autocomplete: "off", ...attrs });
    return [el, h("div", { class: "field" }, h("label", { for: `q-${name}` }, label), el)];
  };
  const [queue, queueField] = input("queue", "Queue name", { required: true });
  const [conc, concField] = input("concurrency", "Concurrency (runs at once, all nodes)", { type: "number", min: 1, step: 1, placeholder: "none" });
  const [rmax, rmaxField] = input("rate_max", "Rate limit: starts", { type: "number", min: 1, step: 1, placeholder: "none" });
  const [rper, rperField] = input("rate_per_ms", "per (ms)", { type: "number", min: 1, step: 1, placeholder: "1000" });
  const number = (el) => (el.value.trim() === "" ? null : Number(el.value));

  async function submit(event) {
    event.preventDefault();
    const name = queue.value.trim();
    const max = number(rmax);
    const body = {
      concurrency: number(conc),
      rate_limit: max === null ? null : { max, per_ms: number(rper) ?? 1000 },
    };
    try {
      await api(`/v1/queues/${encodeURIComponent(name)}`, { method: "PUT", body });
      replace(status, notice(`Limits of queue ${name} saved.`, "ok"));
    } catch (err) {
      replace(status, notice(`${name}: ${err.message}`));
    }
    await reload();
  }

  const form = h("form", { class: "queue-limits", on: { submit } },
    h("h2", {}, "Set a queue's limits"),
    queueField, h("div", { class: "row" }, concField, rmaxField, rperField),
    h("button", { type: "submit" }, "Save limits"));
  function fill(q) {
    queue.value = q.queue;
    conc.value = q.concurrency ?? "";
    rmax.value = q.rate_limit ? q.rate_limit.max : "";
    rper.value = q.rate_limit ? q.rate_limit.per_ms : "";
    conc.focus();
  }
  return { form, fill };
}
