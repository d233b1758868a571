// Failures: dead and retrying jobs with their last error, newest first.
import { api, jobPath } from "../api.js";
import { h, notice, replace, stateBadge, table } from "../dom.js";
import { relative } from "../format.js";
import { throttled } from "../live.js";

export async function render(root, ctx) {
  const status = h("div");
  const list = h("div");
  replace(root, h("h1", {}, "Failures"),
    h("p", { class: "muted" }, "Dead and retrying jobs, the latest failure first."), status, list);

  async function retry(id, button) {
    button.disabled = true;
    try {
      await api(`${jobPath(id)}/retry`, { method: "POST" });
      replace(status, notice(`Retried ${id}.`, "ok"));
    } catch (err) {
      replace(status, notice(`${id}: ${err.message}`));
    }
    await load();
  }

  async function load() {
    let data;
    try {
      data = await api("/v1/dashboard/failures?limit=100");
    } catch (err) {
      replace(list, notice(err.message));
      return;
    }
    if (!ctx.alive()) return;
    replace(list, data.jobs.length
      ? table(["Job", "Task", "State", "Attempts", "Last error", "Failed", ""], data.jobs.map((j) => h("tr", {},
        h("td", { class: "id" }, h("a", { href: `#/jobs/${encodeURIComponent(j.job_id)}` }, j.job_id)),
        h("td", {}, j.task), h("td", {}, stateBadge(j.state)),
        h("td", { class: "num" }, `${j.attempts}/${j.max_attempts}`),
        h("td", { class: "error-text" }, j.last_error || ""),
        h("td", { title: j.updated_at }, relative(j.updated_at)),
        h("td", { class: "action" }, j.state === "dead" && !ctx.session.read_only
          ? h("button", { type: "button", on: { click: (e) => retry(j.job_id, e.target) } }, "Retry")
          : null))))
      : h("p", { class: "muted" }, "No failing jobs."));
  }

  await load();
  const refresh = throttled(load, 1500);
  return {
    onEvent: (body) => {
      if (body.type === "open" || ["failed", "timed_out", "lost", "succeeded"].includes(body.event)) refresh();
    },
  };
}
