// New job: one-time, cron or interval. A cron expression is explained in
// words, with its next occurrences, as it is typed (GET /v1/cron/explain).
import { api, query } from "../api.js";
import { h, notice, replace, table } from "../dom.js";
import { utcTime } from "../format.js";

const ZONE = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";

function field(id, label, input, hint) {
  input.id = id;
  return h("div", { class: "field" }, h("label", { for: id }, label), input, hint ? h("small", { class: "muted" }, hint) : null);
}

export async function render(root, ctx) {
  if (ctx.session.read_only) {
    replace(root, h("h1", {}, "New job"), notice("This dashboard is read-only (--read-only-ui).", "warn"));
    return {};
  }
  const kind = (value, label, checked) => h("label", { class: "radio" },
    h("input", { type: "radio", name: "kind", value, checked, on: { change: show } }), label);
  const task = h("input", { name: "task", required: true, autocomplete: "off" });
  const payload = h("textarea", { name: "payload", rows: 4, spellcheck: "false" });
  payload.value = "{}";
  const delay = h("input", { name: "delay", type: "number", min: 0, step: "any", value: 0 });
  const runAt = h("input", { name: "run_at", type: "datetime-local", step: 1 });
  const cron = h("input", { name: "cron", autocomplete: "off", placeholder: "0 9 * * MON-FRI", spellcheck: "false" });
  const tz = h("input", { name: "timezone", value: ZONE, autocomplete: "off" });
  const every = h("input", { name: "every", type: "number", min: 1, step: "any", value: 60 });
  const maxAttempts = h("input", { name: "max_attempts", type: "number", min: 1, value: 3 });
  const baseMs = h("input", { name: "base_ms", type: "number", min: 0, value: 1000 });
  const timeout = h("input", { name: "timeout_ms", type: "number", min: 1, placeholder: "none" });
  const jobId = h("input", { name: "job_id", autocomplete: "off", placeholder: "generated" });
  const queue = h("input", { name: "queue", autocomplete: "off", placeholder: "default" });
  const priority = h("input", { name: "priority", type: "number", min: 0, max: 9, step: 1, value: 0 });
  const explanation = h("div", { class: "explain", "aria-live": "polite" });
  const once = h("fieldset", { class: "when" }, h("legend", {}, "When"),
    field("n-delay", "Delay (seconds)", delay), field("n-run-at", "Or run at (your time)", runAt));
  const cronBox = h("fieldset", { class: "when" }, h("legend", {}, "Cron"),
    field("n-cron", "Cron expression", cron, "minute hour day-of-month month day-of-week (or 6 fields, seconds first)"),
    field("n-tz", "Time zone", tz), explanation);
  const intervalBox = h("fieldset", { class: "when" }, h("legend", {}, "Interval"), field("n-every", "Every (seconds)", every));
  const message = h("div", { "aria-live": "polite" });
  const form = h("form", { class: "new-job", on: { submit } },
    h("fieldset", { class: "kinds" }, h("legend", {}, "Kind"),
      kind("once", "One-time", true), kind("cron", "Cron", false), kind("interval", "Interval", false)),
    field("n-task", "Task", task),
    h("div", { class: "row" },
      field("n-queue", "Queue", queue, "where it waits: its limits and pause apply"),
      field("n-priority", "Priority", priority, "0-9, 0 runs first")),
    field("n-payload", "Payload (JSON)", payload),
    once, cronBox, intervalBox,
    h("fieldset", {}, h("legend", {}, "Retries and limits"),
      field("n-max", "Max attempts", maxAttempts), field("n-base", "Backoff base (ms)", baseMs),
      field("n-timeout", "Timeout (ms)", timeout), field("n-id", "Job id", jobId)),
    h("button", { type: "submit" }, "Schedule"), message);
  replace(root, h("h1", {}, "New job"), form);

  function chosen() {
    return form.querySelector("input[name=kind]:checked").value;
  }
  function show() {
    const k = chosen();
    once.hidden = k !== "once";
    cronBox.hidden = k !== "cron";
    intervalBox.hidden = k !== "interval";
    cron.required = k === "cron";
  }
  show();

  let pending = null;
  let asked = 0;
  async function explain() {
    const mine = ++asked;
    const expr = cron.value.trim();
    if (!expr) {
      replace(explanation);
      return;
    }
    let e;
    try {
      e = await api(`/v1/cron/explain${query({ expr, tz: tz.value.trim() || "UTC", n: 5 })}`);
    } catch (err) {
      e = { valid: false, error: err.message };
    }
    if (mine !== asked) return; // a later keystroke asked again
    replace(explanation, e.valid
      ? [h("p", { class: "words" }, e.text),
        table(["Next runs", "UTC offset", "UTC"], e.occurrences.map((o) => h("tr", { class: o.change ? "dst-change" : null },
          h("td", {}, o.local), h("td", {}, `${o.offset}${o.change ? ` ⚠ ${o.change}` : ""}`), h("td", {}, utcTime(o.at)))))]
      : notice(e.error, "error"));
  }
  const soon = () => {
    clearTimeout(pending);
    pending = setTimeout(explain, 200);
  };
  cron.addEventListener("input", soon);
  tz.addEventListener("input", soon);

  async function submit(event) {
    event.preventDefault();
    let body;
    try {
      body = { task: task.value.trim(), payload: JSON.parse(payload.value || "{}") };
    } catch (err) {
      replace(message, notice(`Payload: not valid JSON (${err.message})`));
      return;
    }
    const k = chosen();
    if (k === "cron") Object.assign(body, { cron: cron.value.trim(), timezone: tz.value.trim() || "UTC" });
    else if (k === "interval") body.interval_ms = Math.round(Number(every.value) * 1000);
    else if (runAt.value) body.run_at = new Date(runAt.value).toISOString();
    else body.delay_ms = Math.round(Number(delay.value || 0) * 1000);
    if (maxAttempts.value) body.max_attempts = Number(maxAttempts.value);
    if (baseMs.value) body.base_ms = Number(baseMs.value);
    if (timeout.value) body.timeout_ms = Number(timeout.value);
    if (jobId.value.trim()) body.job_id = jobId.value.trim();
    if (queue.value.trim()) body.queue = queue.value.trim();
    if (priority.value !== "") body.priority = Number(priority.value);
    try {
      const reply = await api("/v1/jobs", { method: "POST", body });
      ctx.go(`#/jobs/${encodeURIComponent(reply.job_id)}`);
    } catch (err) {
      replace(message, notice(err.message));
    }
  }
  return {};
}
