// Live updates: one EventSource on /v1/events for the whole app. The browser
// reconnects by itself (sending Last-Event-ID, so the service replays what
// was missed); when it gives up (the service answered an error, or restarted
// and refused), we open a new one with growing waits, up to 30 s. Every
// (re)connection is announced as {type: "open"}: pages reload then, since
// events may have been missed while disconnected.

const listeners = new Set();
let source = null;
let timer = null;
let waitMs = 1000;
let lastId = "";

function emit(body) {
  for (const fn of listeners) {
    try {
      fn(body);
    } catch (err) {
      console.error(err);
    }
  }
}

function status(text, on) {
  const el = document.getElementById("live");
  if (!el) return;
  el.textContent = text;
  el.classList.toggle("off", !on);
}

export function onEvent(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

export function start() {
  stop();
  const url = lastId ? `/v1/events?last_event_id=${encodeURIComponent(lastId)}` : "/v1/events";
  source = new EventSource(url);
  source.onopen = () => {
    waitMs = 1000;
    status("live", true);
    emit({ type: "open" });
  };
  source.onmessage = (message) => {
    if (message.lastEventId) lastId = message.lastEventId;
    let body;
    try {
      body = JSON.parse(message.data);
    } catch {
      return;
    }
    emit(body);
  };
  source.onerror = () => {
    status("reconnecting…", false);
    if (source && source.readyState === EventSource.CLOSED) {
      timer = setTimeout(start, waitMs);
      waitMs = Math.min(waitMs * 2, 30000);
    }
  };
}

export function stop() {
  clearTimeout(timer);
  if (source) source.close();
  source = null;
  status("offline", false);
}

// fn at most once per `ms` however often it is asked for; the last ask is
// never lost (a burst of events ends in one reload after the burst).
export function throttled(fn, ms) {
  let last = 0;
  let pending = null;
  return () => {
    if (pending) return;
    const wait = Math.max(0, last + ms - Date.now());
    pending = setTimeout(() => {
      pending = null;
      last = Date.now();
      fn();
    }, wait);
  };
}
