// The service's JSON API, with the session cookie (same origin only). A 401
// means the session ended: the app shows the sign-in form again.

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.text) || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

export async function api(path, { method = "GET", body } = {}) {
  const init = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (response.status === 401 && path !== "/v1/session") {
    window.dispatchEvent(new CustomEvent("jobsched:signin"));
  }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

export const jobPath = (id) => `/v1/jobs/${encodeURIComponent(id)}`;

export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") q.set(k, v);
  const text = q.toString();
  return text ? `?${text}` : "";
}
