// The dashboard: a hash router over pages. Every page has its own URL
// (#/jobs?state=dead, #/jobs/<id>, ...), so any view can be bookmarked.
import { api } from "./api.js";
import { h, replace } from "./dom.js";
import * as live from "./live.js";

const pages = {
  overview: () => import("./pages/overview.js"),
  jobs: () => import("./pages/jobs.js"),
  job: () => import("./pages/job.js"),
  upcoming: () => import("./pages/upcoming.js"),
  failures: () => import("./pages/failures.js"),
  queues: () => import("./pages/queues.js"),
  new: () => import("./pages/newjob.js"),
};

const main = document.getElementById("main");
let session = null;
let current = null;
let generation = 0;

export function go(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

function parseHash() {
  const raw = location.hash.replace(/^#/, "") || "/";
  const [path, q = ""] = raw.split("?");
  const parts = path.split("/").filter(Boolean).map((p) => decodeURIComponent(p));
  return { parts, params: new URLSearchParams(q) };
}

async function route() {
  const mine = ++generation;
  if (current && current.dispose) current.dispose();
  current = null;
  const { parts, params } = parseHash();
  let name = parts[0] || "overview";
  if (name === "jobs" && parts.length > 1) name = "job";
  for (const link of document.querySelectorAll("#nav a")) {
    const here = link.dataset.page === name || (name === "job" && link.dataset.page === "jobs");
    if (here) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const root = h("div", { class: "page" });
  replace(main, root);
  if (!pages[name]) {
    replace(root, h("h1", {}, "Not found"), h("p", {}, "No such page. ", h("a", { href: "#/" }, "Overview")));
    return;
  }
  const page = await pages[name]();
  if (mine !== generation) return; // the user has moved on
  try {
    current = await page.render(root, { parts, params, session, go, alive: () => mine === generation });
  } catch (err) {
    replace(root, h("p", { class: "notice error", role: "alert" }, `Could not load this page: ${err.message}`));
  }
  if (mine !== generation && current && current.dispose) current.dispose();
}

live.onEvent((body) => {
  if (current && current.onEvent) current.onEvent(body);
});

async function signIn() {
  live.stop();
  generation++;
  const { render } = await import("./pages/signin.js");
  render(main, async () => {
    await start();
  });
}

async function start() {
  session = await api("/v1/session");
  if (session.token_required && !session.signed_in) {
    await signIn();
    return;
  }
  document.body.classList.toggle("read-only", session.read_only);
  const out = document.getElementById("signout");
  out.hidden = !session.token_required;
  live.start();
  await route();
}

window.addEventListener("hashchange", () => {
  if (session && (session.signed_in || !session.token_required)) route();
});
window.addEventListener("jobsched:signin", () => {
  if (session && session.token_required) {
    session.signed_in = false;
    signIn();
  }
});
document.getElementById("signout").addEventListener("click", async () => {
  await api("/v1/session", { method: "DELETE" }).catch(() => null);
  session.signed_in = false;
  document.getElementById("signout").hidden = true;
  signIn();
});

start().catch((err) => {
  replace(main, h("p", { class: "notice error", role: "alert" }, `The service did not answer: ${err.message}`));
});
