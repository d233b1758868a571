// Times and durations for people. Times from the API are ISO 8601 UTC.

const pad = (n) => String(n).padStart(2, "0");

export function localTime(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export function utcTime(iso) {
  return iso ? iso.replace("T", " ").replace(/\.\d+Z$/, "Z") : "—";
}

export function relative(iso, now = Date.now()) {
  if (!iso) return "";
  const s = Math.round((new Date(iso).getTime() - now) / 1000);
  const a = Math.abs(s);
  const text = a < 60 ? `${a} s` : a < 3600 ? `${Math.round(a / 60)} min` : a < 172800 ? `${Math.round(a / 360) / 10} h` : `${Math.round(a / 86400)} d`;
  return s >= 0 ? `in ${text}` : `${text} ago`;
}

export function duration(ms) {
  if (ms === null || ms === undefined) return "—";
  if (ms < 1000) return `${ms} ms`;
  const units = [["d", 86400000], ["h", 3600000], ["min", 60000], ["s", 1000]];
  const parts = [];
  let rest = ms;
  for (const [name, size] of units) {
    if (rest >= size) {
      parts.push(`${Math.floor(rest / size)} ${name}`);
      rest %= size;
    }
  }
  return parts.slice(0, 2).join(" ");
}

export function schedule(job) {
  const s = job.schedule || {};
  if (s.kind === "cron") return `cron ${s.cron} (${s.timezone})`;
  if (s.kind === "interval") return `every ${duration(s.interval_ms)}`;
  return "once";
}

export function short(text, n = 120) {
  if (!text) return "";
  return text.length > n ? `${text.slice(0, n)}…` : text;
}
