// Sign-in: the token buys a session cookie (HttpOnly: this page never sees it).
import { api } from "../api.js";
import { h, replace } from "../dom.js";

export function render(main, onSignedIn) {
  const message = h("p", { class: "notice error", role: "alert", hidden: true });
  const input = h("input", { id: "token", name: "token", type: "password", autocomplete: "current-password", required: true });
  const button = h("button", { type: "submit" }, "Sign in");
  const form = h("form", { class: "signin", on: { submit } },
    h("h1", {}, "Sign in"),
    h("p", { class: "muted" }, "This service needs its token."),
    h("label", { for: "token" }, "Token"),
    input,
    button,
    message);
  async function submit(event) {
    event.preventDefault();
    button.disabled = true;
    message.hidden = true;
    try {
      await api("/v1/session", { method: "POST", body: { token: input.value } });
      input.value = "";
      await onSignedIn();
    } catch (err) {
      message.textContent = err.status === 401 ? "Wrong token." : err.message;
      message.hidden = false;
    } finally {
      button.disabled = false;
    }
  }
  for (const link of document.querySelectorAll("#nav a")) link.removeAttribute("aria-current");
  replace(main, form);
  input.focus();
}
