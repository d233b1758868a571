// Charts drawn here as SVG: no library, nothing fetched. The bars stretch to
// any width (a phone's too); the labels are HTML beside them, so they keep
// their size when the bars stretch.
import { h, svg } from "./dom.js";

const pad2 = (n) => String(n).padStart(2, "0");
const hhmm = (t) => {
  const d = new Date(t);
  return `${pad2(d.getHours())}:${pad2(d.getMinutes())}`;
};

function frame(label, max, bars, ticks) {
  return h("figure", { class: "chart", role: "img", "aria-label": label },
    h("div", { class: "chart-y" }, h("span", {}, String(max)), h("span", {}, "0")),
    bars,
    h("div", { class: "chart-x" }, ticks.map((t) => h("span", {}, t))));
}

function bar(x, w, value, max, cls, title) {
  const height = (100 * value) / max;
  return svg("rect", { x, y: 100 - height, width: w, height, class: cls }, svg("title", {}, title));
}

// Runs and failures per minute: one bar per minute, failures drawn over runs.
export function runsChart(points) {
  const max = Math.max(1, ...points.map((p) => p.runs));
  const bars = svg("svg", { viewBox: `0 0 ${points.length} 100`, preserveAspectRatio: "none", class: "bars" });
  points.forEach((p, i) => {
    const title = `${hhmm(p.minute)}: ${p.runs} run(s), ${p.failures} failure(s)`;
    if (p.runs) bars.append(bar(i + 0.1, 0.8, p.runs, max, "bar-runs", title));
    if (p.failures) bars.append(bar(i + 0.1, 0.8, p.failures, max, "bar-failures", title));
  });
  const ticks = points.length ? [0, 15, 30, 45].map((i) => hhmm(points[Math.min(i, points.length - 1)].minute)).concat("now") : [];
  return frame("Runs and failures per minute over the last hour", max, bars, ticks);
}

// Upcoming runs over the window: how many fall in each hour.
export function timeline(runs, fromIso, untilIso) {
  const from = new Date(fromIso).getTime(), until = new Date(untilIso).getTime();
  const hours = Math.max(1, Math.ceil((until - from) / 3600000));
  const counts = new Array(hours).fill(0);
  for (const r of runs) {
    const i = Math.floor((new Date(r.at).getTime() - from) / 3600000);
    counts[Math.min(Math.max(i, 0), hours - 1)] += 1;
  }
  const max = Math.max(1, ...counts);
  const bars = svg("svg", { viewBox: `0 0 ${hours} 100`, preserveAspectRatio: "none", class: "bars" });
  counts.forEach((n, i) => {
    if (n) bars.append(bar(i + 0.1, 0.8, n, max, "bar-runs", `${hhmm(from + i * 3600000)}: ${n} run(s)`));
  });
  const ticks = [0, 0.25, 0.5, 0.75, 1].map((f) => hhmm(from + f * (until - from)));
  return frame("Runs due per hour", max, bars, ticks);
}
