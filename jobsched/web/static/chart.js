// Charts drawn as SVG here: no library, nothing fetched.
import { svg } from "./dom.js";

const pad2 = (n) => String(n).padStart(2, "0");
const hhmm = (iso) => {
  const d = new Date(iso);
  return `${pad2(d.getHours())}:${pad2(d.getMinutes())}`;
};

// Runs and failures per minute: one bar per minute, failures drawn over runs.
export function runsChart(points) {
  const W = 960, H = 170, left = 34, bottom = 22, top = 8;
  const plotW = W - left - 4, plotH = H - bottom - top;
  const max = Math.max(1, ...points.map((p) => p.runs));
  const step = plotW / Math.max(points.length, 1);
  const y = (v) => top + plotH - (v / max) * plotH;
  const root = svg("svg", {
    viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img",
    "aria-label": "Runs and failures per minute over the last hour",
  });
  root.append(svg("line", { x1: left, y1: top + plotH, x2: W - 4, y2: top + plotH, class: "axis" }));
  for (const v of [0, max]) {
    root.append(svg("text", { x: left - 4, y: y(v) + 4, class: "tick", "text-anchor": "end" }, String(v)));
  }
  points.forEach((p, i) => {
    const x = left + i * step + 0.5;
    const w = Math.max(step - 1, 1);
    const title = `${hhmm(p.minute)}: ${p.runs} run(s), ${p.failures} failure(s)`;
    if (p.runs) {
      root.append(svg("rect", { x, y: y(p.runs), width: w, height: y(0) - y(p.runs), class: "bar-runs" },
        svg("title", {}, title)));
    }
    if (p.failures) {
      root.append(svg("rect", { x, y: y(p.failures), width: w, height: y(0) - y(p.failures), class: "bar-failures" },
        svg("title", {}, title)));
    }
    if (i % 15 === 0 && i < points.length - 6) {
      root.append(svg("text", { x, y: H - 6, class: "tick" }, hhmm(p.minute)));
    }
  });
  return root;
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
  const W = 960, H = 110, bottom = 20;
  const max = Math.max(1, ...counts);
  const step = W / hours;
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-label": "Runs due per hour" });
  counts.forEach((n, i) => {
    const h = ((H - bottom - 4) * n) / max;
    const start = new Date(from + i * 3600000);
    const title = `${pad2(start.getHours())}:00: ${n} run(s)`;
    root.append(svg("rect", { x: i * step + 1, y: H - bottom - h, width: Math.max(step - 2, 1), height: h, class: "bar-runs" },
      svg("title", {}, title)));
    if (i % Math.max(1, Math.round(hours / 8)) === 0 && i < hours - 1) {
      root.append(svg("text", { x: i * step + 1, y: H - 5, class: "tick" }, `${pad2(start.getHours())}:00`));
    }
  });
  return root;
}
