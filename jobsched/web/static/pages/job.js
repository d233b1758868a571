// One job at its own URL (#/jobs/<id>): its schedule in words and its next
// occurrences, payload, attempts, recent runs, and the actions its state allows.
import { api, jobPath, query } from "../api.js";
import { h, notice, replace, stateBadge, table } from "../dom.js";
import { duration, localTime, relative, utcTime } from "../format.js";
import { throttled } from "../live.js";

// Which action each state allows (the engine refuses the others with 409).
const ACTIONS = [
  { label: "Run now", states: ["scheduled", "retrying", "paused"], call: (id) => api(`${jobPath(id)}/run`, { method: "POST" }) },
  { label: "Pause", states: ["scheduled", "retrying"], call: (id) => api(`${jobPath(id)}/pause`, { method: "POST" }) },
  { label: "Resume", states: ["paused"], call: (id) => api(`${jobPath(id)}/resume`, { method: "POST" }) },
  { label: "Retry", states: ["dead"], call: (id) => api(`${jobPath(id)}/retry`, { method: "POST" }) },
  { label: "Cancel", states: ["scheduled", "running", "retrying", "paused"], confirm: true, call: (id) => api(jobPath(id), { method: "DELETE" }) },
];

export async function render(root, ctx) {
  const id = ctx.parts.slice(1).join("/");
  const head = h("div", { class: "job-head" });
  const actions = h("div", { class: "actions action" });
  const result = h("div", { "aria-live": "polite" });
  const facts = h("dl", { class: "facts-list" });
  const sched = h("section");
  const payload = h("pre", { class: "payload" });
  const runs = h("section");
  replace(root, h("p", {}, h("a", { href: "#/jobs" }, "← Jobs")), head, actions, result,
    h("section", {}, h("h2", {}, "Job"), facts), sched,
    h("section", {}, h("h2", {}, "Payload"), payload), runs);
  let shownSchedule = "";

  async function act(action, button) {
    if (action.confirm && button.dataset.armed !== "yes") {
      button.dataset.armed = "yes";
      button.textContent = "Confirm cancel";
      setTimeout(() => { button.dataset.armed = ""; button.textContent = action.label; }, 5000);
      return;
    }
    button.disabled = true;
    try {
      const reply = await action.call(id);
      const how = reply.type === "job_failed" ? `the run failed${reply.retry_scheduled ? "; a retry is scheduled" : ""}` : reply.type.replace("job_", "");
      replace(result, notice(`${action.label}: ${how}.`, reply.type === "job_failed" ? "error" : "ok"));
    } catch (err) {
      replace(result, notice(`${action.label}: ${err.message}`));
    }
    await load();
  }

  async function load() {
    let job;
    try {
      job = (await api(jobPath(id))).job;
    } catch (err) {
      if (!ctx.alive()) return;
      replace(head, h("h1", { class: "id" }, id));
      replace(facts, notice(err.status === 404 ? "There is no job with this id (it may have been pruned)." : err.message));
      return;
    }
    if (!ctx.alive()) return;
    replace(head, h("h1", { class: "id" }, job.job_id), stateBadge(job.state));
    replace(actions, ctx.session.read_only ? null : ACTIONS.filter((a) => a.states.includes(job.state)).map((a) => {
      const button = h("button", { type: "button", class: a.confirm ? "danger" : "" }, a.label);
      button.addEventListener("click", () => act(a, button));
      return button;
    }));
    replace(facts,
      fact("Task", job.task),
      fact("State", job.state + (job.locked_by ? ` (held by ${job.locked_by})` : "")),
      fact("Queue", h("a", { href: `#/jobs${query({ queue: job.queue })}` }, job.queue)),
      fact("Priority", `${job.priority} (of 0-9, 0 runs first)`),
      fact("Unique key", uniqueText(job)),
      fact("Due", job.due_at ? `${localTime(job.due_at)} (${relative(job.due_at)})` : "—"),
      fact("Attempts", `${job.attempts} of ${job.max_attempts} (backoff from ${duration(job.base_ms)})`),
      fact("Runs", String(job.runs) + (job.skipped ? `, ${job.skipped} occurrence(s) skipped` : "")),
      fact("Last run", job.last_run_at ? localTime(job.last_run_at) : "—"),
      fact("Last error", job.last_error || "—", "error-text"),
      fact("Timeout", job.timeout_ms ? duration(job.timeout_ms) : "none"),
      fact("Created", localTime(job.created_at)),
      fact("Updated", localTime(job.updated_at)));
    payload.textContent = JSON.stringify(job.payload, null, 2);
    replace(runs, h("h2", {}, "Recent runs"), job.recent_runs && job.recent_runs.length
      ? table(["Started", "Finished", "Outcome", "Error", "Node"], job.recent_runs.map((r) => h("tr", {},
        h("td", {}, localTime(r.started_at)), h("td", {}, localTime(r.finished_at)),
        h("td", {}, h("span", { class: `badge o-${r.outcome}` }, r.outcome)),
        h("td", { class: "error-text" }, r.error || ""), h("td", {}, r.node || ""))))
      : h("p", { class: "muted" }, "No run yet."));
    const key = JSON.stringify([job.schedule, job.due_at]);
    if (key !== shownSchedule) {
      shownSchedule = key;
      await showSchedule(job);
    }
  }

  async function showSchedule(job) {
    const s = job.schedule;
    if (s.kind === "cron") {
      const e = await api(`/v1/cron/explain${query({ expr: s.cron, tz: s.timezone, n: 10 })}`);
      replace(sched, h("h2", {}, "Schedule"), h("p", { class: "words" }, e.text),
        h("p", { class: "muted" }, `cron ${s.cron}`), occurrences(e.occurrences, s.timezone));
    } else if (s.kind === "interval") {
      const next = [];
      if (job.due_at) for (let k = 0, t = new Date(job.due_at).getTime(); k < 10; k++, t += s.interval_ms) next.push(new Date(t).toISOString());
      replace(sched, h("h2", {}, "Schedule"), h("p", { class: "words" }, `Every ${duration(s.interval_ms)}`),
        next.length ? table(["Next runs (your time)", "UTC"], next.map((t) => h("tr", {}, h("td", {}, localTime(t)), h("td", {}, utcTime(t))))) : null);
    } else {
      replace(sched, h("h2", {}, "Schedule"), h("p", { class: "words" }, job.due_at ? `Once, at ${utcTime(job.due_at)}` : "Once"));
    }
  }

  await load();
  const refresh = throttled(load, 500);
  return {
    onEvent: (body) => {
      if (body.type === "open" || body.job_id === id) refresh();
    },
  };
}

function uniqueText(job) {
  if (job.unique_key === null || job.unique_key === undefined) return "none";
  const held = job.unique_for_ms ? ` (held while not final, and ${duration(job.unique_for_ms)} from creation)` : " (held while not final)";
  return job.unique_key + held;
}

function fact(label, value, cls) {
  return [h("dt", {}, label), h("dd", { class: cls || null }, value)];
}

function occurrences(list, tz) {
  return table([`Next runs (${tz})`, "UTC offset", "UTC", ""], list.map((o) => h("tr", { class: o.change ? "dst-change" : null },
    h("td", {}, o.local), h("td", {}, `${o.offset} ${o.zone || ""}`), h("td", {}, utcTime(o.at)),
    h("td", { class: "change" }, o.change ? `⚠ ${o.change}` : ""))));
}
