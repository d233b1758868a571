// Jobs: the list, filtered by state, task and queue, paged with the API's
// cursor; open a job by id; retry or cancel a selection.
import { api, jobPath, query } from "../api.js";
import { h, notice, replace, stateBadge, table } from "../dom.js";
import { relative, schedule, short } from "../format.js";
import { throttled } from "../live.js";

const STATES = ["scheduled", "running", "retrying", "paused", "completed", "dead", "cancelled"];
const PAGE = 50;
const RETRYABLE = new Set(["dead"]);
const CANCELLABLE = new Set(["scheduled", "running", "retrying", "paused"]);

export async function render(root, ctx) {
  const state = ctx.params.get("state") || "";
  const task = ctx.params.get("task") || "";
  const queue = ctx.params.get("queue") || "";
  const after = ctx.params.get("after") || "";
  const selected = new Set();
  let jobs = [];

  const stateSelect = h("select", { id: "f-state", name: "state" },
    h("option", { value: "" }, "any state"),
    STATES.map((s) => h("option", { value: s, selected: s === state }, s)));
  const taskInput = h("input", { id: "f-task", name: "task", value: task, placeholder: "any task" });
  const queueInput = h("input", { id: "f-queue", name: "queue", value: queue, placeholder: "any queue" });
  const filters = h("form", { class: "filters", on: { submit: (e) => {
    e.preventDefault();
    ctx.go(`#/jobs${query({ state: stateSelect.value, task: taskInput.value.trim(), queue: queueInput.value.trim() })}`);
  } } },
  h("label", { for: "f-state" }, "State"), stateSelect,
  h("label", { for: "f-task" }, "Task"), taskInput,
  h("label", { for: "f-queue" }, "Queue"), queueInput,
  h("button", { type: "submit" }, "Filter"));

  const idInput = h("input", { id: "f-id", name: "job_id", placeholder: "job id" });
  const found = h("div");
  const search = h("form", { class: "filters", on: { submit: async (e) => {
    e.preventDefault();
    const id = idInput.value.trim();
    if (!id) return;
    try {
      await api(jobPath(id));
      ctx.go(`#/jobs/${encodeURIComponent(id)}`);
    } catch (err) {
      replace(found, notice(err.status === 404 ? `No job with id ${id}.` : err.message));
    }
  } } }, h("label", { for: "f-id" }, "Find by id"), idInput, h("button", { type: "submit" }, "Open"));

  const result = h("div");
  const retryButton = h("button", { type: "button", class: "action", disabled: true, on: { click: () => bulk("retry") } }, "Retry selected");
  const cancelButton = h("button", { type: "button", class: "action danger", disabled: true, on: { click: () => bulk("cancel") } }, "Cancel selected");
  const bulkBar = h("div", { class: "bulk action" }, retryButton, cancelButton, h("span", { class: "muted", id: "selected-count" }, ""));
  const list = h("div");
  const pager = h("nav", { class: "pager", "aria-label": "Pages of jobs" });

  replace(root, h("h1", {}, "Jobs"), filters, search, found, bulkBar, result, list, pager);

  function updateBulk() {
    const chosen = jobs.filter((j) => selected.has(j.job_id));
    retryButton.disabled = !chosen.some((j) => RETRYABLE.has(j.state));
    cancelButton.disabled = !chosen.some((j) => CANCELLABLE.has(j.state));
    document.getElementById("selected-count").textContent = chosen.length ? `${chosen.length} selected` : "";
  }

  async function bulk(kind) {
    const chosen = jobs.filter((j) => selected.has(j.job_id) && (kind === "retry" ? RETRYABLE : CANCELLABLE).has(j.state));
    let ok = 0;
    const failed = [];
    for (const job of chosen) {
      try {
        if (kind === "retry") await api(`${jobPath(job.job_id)}/retry`, { method: "POST" });
        else await api(jobPath(job.job_id), { method: "DELETE" });
        ok += 1;
        selected.delete(job.job_id);
      } catch (err) {
        failed.push(`${job.job_id}: ${err.message}`);
      }
    }
    const verb = kind === "retry" ? "Retried" : "Cancelled";
    replace(result, notice(`${verb} ${ok} of ${chosen.length} job(s).`, failed.length ? "error" : "ok"),
      failed.length ? h("ul", {}, failed.map((f) => h("li", {}, f))) : null);
    await load();
  }

  async function load() {
    let data;
    try {
      data = await api(`/v1/jobs${query({ state, task, queue, after, limit: PAGE })}`);
    } catch (err) {
      replace(list, notice(err.message));
      return;
    }
    if (!ctx.alive()) return;
    jobs = data.jobs;
    const all = h("input", { type: "checkbox", "aria-label": "Select all on this page", on: { change: (e) => {
      for (const j of jobs) e.target.checked ? selected.add(j.job_id) : selected.delete(j.job_id);
      for (const box of list.querySelectorAll("tbody input[type=checkbox]")) box.checked = e.target.checked;
      updateBulk();
    } } });
    const rows = jobs.map((j) => h("tr", { "data-job": j.job_id },
      h("td", {}, h("input", { type: "checkbox", "aria-label": `Select ${j.job_id}`, checked: selected.has(j.job_id), on: { change: (e) => {
        e.target.checked ? selected.add(j.job_id) : selected.delete(j.job_id);
        updateBulk();
      } } })),
      h("td", { class: "id" }, h("a", { href: `#/jobs/${encodeURIComponent(j.job_id)}` }, j.job_id)),
      h("td", {}, j.task),
      h("td", {}, h("a", { href: `#/jobs${query({ queue: j.queue })}` }, j.queue)),
      h("td", { class: "num" }, String(j.priority)),
      h("td", {}, stateBadge(j.state)),
      h("td", {}, schedule(j)),
      h("td", { title: j.due_at || "" }, j.due_at ? relative(j.due_at) : "—"),
      h("td", { class: "num" }, `${j.attempts}/${j.max_attempts}`),
      h("td", { class: "error-text" }, short(j.last_error, 80))));
    replace(list, jobs.length
      ? table([all, "Job", "Task", "Queue", "Priority", "State", "Schedule", "Due", "Attempts", "Last error"], rows, { class: "jobs" })
      : h("p", { class: "muted" }, "No jobs here."));
    replace(pager,
      after ? h("a", { href: `#/jobs${query({ state, task, queue })}` }, "← First page") : null,
      data.next ? h("a", { href: `#/jobs${query({ state, task, queue, after: data.next })}`, rel: "next" }, "Next page →") : null);
    updateBulk();
  }

  await load();
  const refresh = throttled(load, 1500);
  // Run events cover runs; scheduling, pausing or cancelling elsewhere shows within 10 s.
  const timer = setInterval(refresh, 10000);
  return { onEvent: refresh, dispose: () => clearInterval(timer) };
}
