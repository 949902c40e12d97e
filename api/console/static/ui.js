// Small DOM helpers shared by the views.

// h("div", {class: "x", onclick: fn}, child, "text", [more]) -> element
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === false || value === null || value === undefined) continue;
    if (name.startsWith("on") && typeof value === "function") {
      el.addEventListener(name.slice(2), value);
    } else if (name === "value") {
      el.value = value;
    } else if (value === true) {
      el.setAttribute(name, "");
    } else {
      el.setAttribute(name, String(value));
    }
  }
  const add = (child) => {
    if (child === null || child === undefined || child === false) return;
    if (Array.isArray(child)) child.forEach(add);
    else el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  };
  children.forEach(add);
  return el;
}

export function fmtBytes(n) {
  if (n == null) return "–";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return `${v >= 10 || i === 0 ? Math.round(v) : v.toFixed(1)} ${units[i]}`;
}

export function fmtMs(ms) {
  if (ms == null) return "–";
  if (ms < 1000) return `${ms} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${Math.round(s % 60)} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

export function fmtDate(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return d.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

export function badge(status) {
  return h("span", { class: `badge ${status}` }, status);
}

export function progressBar(label) {
  return h("progress", { max: 100, value: 0, "aria-label": label });
}

export function toast(message, error = false) {
  const box = document.getElementById("toasts");
  const el = h("div", { class: `toast${error ? " error" : ""}` }, message);
  box.append(el);
  setTimeout(() => el.remove(), error ? 8000 : 4000);
}

// A button-looking label around a file input; the input carries the accessible name.
export function fileButton(label, accept, onFile, cls = "", text = label) {
  const input = h("input", { type: "file", accept, "aria-label": label });
  input.addEventListener("change", () => {
    const file = input.files[0];
    if (file) onFile(file);
    input.value = "";
  });
  return h("label", { class: `button file-button ${cls}` }, h("span", { "aria-hidden": "true" }, text), input);
}

// A labelled form control with an error slot: { wrap, input, error(msg) }.
export function field(label, input, hint) {
  const id = input.id || `f-${Math.random().toString(36).slice(2, 9)}`;
  input.id = id;
  const err = h("div", { class: "field-error", id: `${id}-error`, role: "alert", hidden: true });
  const wrap = h("div", { class: "field" }, h("label", { for: id }, label), input,
    hint ? h("div", { class: "hint" }, hint) : null, err);
  return {
    wrap,
    input,
    error(message) {
      err.textContent = message || "";
      err.hidden = !message;
      if (message) {
        input.setAttribute("aria-invalid", "true");
        input.setAttribute("aria-describedby", err.id);
      } else {
        input.removeAttribute("aria-invalid");
        input.removeAttribute("aria-describedby");
      }
    },
  };
}
