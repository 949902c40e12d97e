// The Velocity console: hash-routed views over the public API. No framework, no build step.
import { ApiError, del, get, post, request, session, signedUrl, upload } from "./api.js";
import { h, fmtBytes, fmtDate, fmtMs, badge, toast, progressBar, field, fileButton } from "./ui.js";
import { templateView } from "./template.js";

const main = document.getElementById("main");
const topbar = document.getElementById("topbar");
let cleanup = () => {};

// ---------------------------------------------------------------- sign in / out

function signInView(message) {
  topbar.hidden = true;
  const input = h("input", {
    type: "password",
    id: "api-key",
    autocomplete: "off",
    spellcheck: "false",
    placeholder: "vel_…",
    required: true,
  });
  const alert = h("div", { class: "alert error", role: "alert", hidden: !message }, message || "");
  const button = h("button", { type: "submit" }, "Sign in");
  const form = h(
    "form",
    { class: "panel", "aria-labelledby": "signin-title" },
    h("div", { class: "brand" }, h("span", { class: "logo", "aria-hidden": "true" }, "V"), "Velocity"),
    h("h1", { id: "signin-title" }, "Sign in to the console"),
    h("p", { class: "hint" }, "Paste the API key that ", h("code", {}, "velocity serve"),
      " printed (or one from ", h("code", {}, "velocity key create"), "). It is kept for this tab only."),
    alert,
    h("div", { class: "field" }, h("label", { for: "api-key" }, "API key"), input),
    button,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const key = input.value.trim();
    button.disabled = true;
    alert.hidden = true;
    try {
      const account = await get("/account", { key });
      session.key = key;
      sessionStorage.setItem("velocity.account", account.name);
      if (!location.hash || location.hash === "#/" || location.hash === "#/signin") {
        location.hash = "#/templates";
      }
      route();
    } catch (err) {
      alert.textContent =
        err.status === 401
          ? "That API key was not accepted (unknown or revoked). Check it and try again."
          : err.message;
      alert.hidden = false;
      input.setAttribute("aria-invalid", "true");
      input.focus();
    } finally {
      button.disabled = false;
    }
  });
  main.replaceChildren(h("div", { class: "signin" }, form));
  input.focus();
  return () => {};
}

document.getElementById("sign-out").addEventListener("click", () => {
  session.key = "";
  sessionStorage.removeItem("velocity.account");
  cleanup();
  cleanup = signInView("");
  const hint = main.querySelector(".alert");
  hint.className = "alert info";
  hint.textContent = "You are signed out.";
  hint.hidden = false;
});

window.addEventListener("velocity:unauthorized", () => {
  session.key = "";
  cleanup();
  cleanup = signInView("Your API key is no longer accepted; sign in again.");
});

// ---------------------------------------------------------------- gauges

export async function refreshGauges() {
  try {
    const [storage, time] = await Promise.all([
      get("/template/storage-status"),
      get("/render/render-time-budget-status"),
    ]);
    setGauge("gauge-storage", storage.usagePercentage,
      `${fmtBytes(storage.usedBytes)} of ${fmtBytes(storage.quotaMB * 1024 * 1024)}`);
    setGauge("gauge-time", time.usagePercentage,
      `${fmtMs(time.usedMilliseconds)} of ${fmtMs(time.totalMilliseconds)}`);
  } catch {
    // The gauges are a convenience: a failed refresh leaves the last values.
  }
}

function setGauge(id, percent, text) {
  const box = document.getElementById(id);
  const bar = box.querySelector("progress");
  bar.value = Math.min(100, percent);
  bar.classList.toggle("high", percent >= 85);
  bar.setAttribute("aria-valuetext", `${Math.round(percent)}%, ${text}`);
  box.querySelector(".gauge-text").textContent = text;
}

// ---------------------------------------------------------------- polling helper

// Calls fn now and then again while the view lives, after `ms` or after the number of
// milliseconds fn returns (a slower pace when nothing is changing); returns the stop function.
function every(ms, fn) {
  let stopped = false;
  let timer = 0;
  const tick = async () => {
    if (stopped) return;
    let next = ms;
    try {
      const wanted = await fn();
      if (typeof wanted === "number") next = wanted;
    } catch (err) {
      if (err.status !== 401) toast(err.message, true);
    } finally {
      if (!stopped) timer = setTimeout(tick, next);
    }
  };
  tick();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

// ---------------------------------------------------------------- templates

function templatesView() {
  const bar = progressBar("Upload progress");
  const uploadStatus = h("div", { class: "hint", "aria-live": "polite" });
  const progressBox = h("div", { class: "upload-progress", hidden: true }, uploadStatus, bar);
  const picker = fileButton("Upload template", ".zip,application/zip", async (file) => {
    await uploadTemplate(file);
  });
  const zone = h(
    "div",
    { class: "dropzone" },
    picker,
    h("div", { class: "hint" }, "A ZIP with ", h("code", {}, "data.json"),
      " at its root and the media it names. Drop it here or choose a file."),
  );
  zone.addEventListener("dragover", (e) => {
    e.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    const file = e.dataTransfer.files[0];
    if (file) uploadTemplate(file);
  });

  async function uploadTemplate(file) {
    progressBox.hidden = false;
    bar.value = 0;
    bar.classList.remove("done");
    uploadStatus.textContent = `Uploading ${file.name} (${fmtBytes(file.size)})…`;
    try {
      const res = await upload("/template/upload", file, {}, (f) => {
        bar.value = Math.round(f * 100);
      });
      bar.classList.add("done");
      uploadStatus.textContent = `${file.name} uploaded; processing…`;
      toast(`${file.name} uploaded`);
      pending.add(res.templateId);
      await refresh();
      refreshGauges();
    } catch (err) {
      uploadStatus.textContent = "";
      progressBox.hidden = true;
      toast(`Upload failed: ${err.message}`, true);
    }
  }

  const tbody = h("tbody");
  const table = h(
    "table",
    { class: "responsive", "aria-label": "Templates" },
    h("thead", {}, h("tr", {}, h("th", {}, "Name"), h("th", {}, "Status"), h("th", {}, "Details"),
      h("th", {}, "Added"), h("th", {}, h("span", { class: "visually-hidden" }, "Actions")))),
    tbody,
  );
  const pending = new Set();

  async function refresh() {
    const [active, ready, failed] = await Promise.all([
      get("/template/active"),
      get("/template/all"),
      get("/template/history?status=failed&take=20"),
    ]);
    const rows = [];
    for (const job of active) {
      rows.push(h("tr", { "data-template-id": job.templateId, "data-status": "processing" },
        h("td", { class: "name-cell" }, job.templateName),
        h("td", {}, badge("processing")),
        h("td", { class: "hint" }, `Stage: ${job.stage}`),
        h("td", { class: "hint" }, fmtDate(job.createdAt)),
        h("td", { class: "actions" })));
    }
    for (const t of ready) {
      const open = h("a", { href: `#/template/${t.id}`, "aria-label": `Open ${t.name}` }, t.name);
      rows.push(h("tr", { "data-template-id": t.id, "data-status": "ready" },
        h("td", { class: "name-cell" }, open),
        h("td", {}, badge("ready")),
        h("td", { class: "hint" }, fmtBytes(t.sizeBytes)),
        h("td", { class: "hint" }, fmtDate(t.createdAt)),
        h("td", { class: "actions" },
          h("a", { class: "button small", href: `#/template/${t.id}` }, "Open"),
          deleteButton(`Delete ${t.name}`, `/template/${t.id}`, refresh))));
    }
    for (const job of failed) {
      rows.push(h("tr", { "data-template-id": job.templateId, "data-status": "failed" },
        h("td", { class: "name-cell" }, job.templateName),
        h("td", {}, badge("failed")),
        h("td", {}, h("div", { class: "reason" }, job.reason || "Processing failed"),
          job.code ? h("code", { class: "hint" }, job.code) : null),
        h("td", { class: "hint" }, fmtDate(job.createdAt)),
        h("td", { class: "actions" },
          deleteButton(`Delete ${job.templateName}`, `/template/${job.templateId}`, refresh))));
    }
    if (!rows.length) {
      rows.push(h("tr", {}, h("td", { colspan: 5, class: "empty" },
        "No templates yet. Upload a ZIP to get started.")));
    }
    tbody.replaceChildren(...rows);
    for (const id of [...pending]) {
      if (!active.some((j) => j.templateId === id)) {
        pending.delete(id);
        const t = ready.find((r) => r.id === id);
        const f = failed.find((r) => r.templateId === id);
        if (t) toast(`${t.name} is ready`);
        if (f) toast(`${f.templateName} failed: ${f.reason}`, true);
        if (!pending.size) progressBox.hidden = true;
        refreshGauges();
      }
    }
    return active.length || pending.size ? 1500 : 10000;
  }

  main.replaceChildren(
    h("div", { class: "page-head" },
      h("div", {}, h("h1", {}, "Templates"),
        h("p", {}, "Upload a template, personalise it, preview a frame and render."))),
    h("section", { class: "panel", "aria-labelledby": "upload-title" },
      h("div", { class: "panel-head" }, h("h2", { id: "upload-title" }, "Add a template")),
      zone, progressBox),
    h("section", { class: "panel", "aria-labelledby": "list-title" },
      h("div", { class: "panel-head" }, h("h2", { id: "list-title" }, "Your templates")),
      table),
  );
  return every(2000, refresh);
}

export function deleteButton(label, path, after) {
  const button = h("button", { type: "button", class: "danger small", "aria-label": label }, "Delete");
  button.addEventListener("click", async () => {
    if (!confirm(`${label}? This cannot be undone.`)) return;
    button.disabled = true;
    try {
      await del(path);
      toast("Deleted");
      refreshGauges();
      await after();
    } catch (err) {
      toast(err.message, true);
      button.disabled = false;
    }
  });
  return button;
}

// ---------------------------------------------------------------- renders

function rendersView() {
  const player = h("section", { class: "panel result", hidden: true, "aria-label": "Player" });
  const activeBody = h("tbody");
  const historyBody = h("tbody");
  const filter = h("select", { id: "history-filter" },
    h("option", { value: "" }, "All finished"),
    h("option", { value: "completed" }, "Completed"),
    h("option", { value: "failed" }, "Failed"),
    h("option", { value: "cancelled" }, "Cancelled"));
  filter.addEventListener("change", () => refreshHistory());

  async function play(r) {
    try {
      const url = await signedUrl("render", r.renderId);
      player.replaceChildren(
        h("div", { class: "panel-head" }, h("h2", {}, r.name),
          h("button", { type: "button", class: "ghost small", onclick: () => { player.hidden = true; player.replaceChildren(); } }, "Close")),
        h("video", { src: url, controls: true, autoplay: true, playsinline: true, "aria-label": `Video ${r.name}` }),
        h("div", { class: "row" }, h("a", { class: "button secondary", href: url, download: "" }, "Download")),
      );
      player.hidden = false;
      player.scrollIntoView({ behavior: "smooth" });
    } catch (err) {
      toast(err.message, true);
    }
  }

  async function download(r) {
    try {
      location.href = await signedUrl("render", r.renderId, 300);
    } catch (err) {
      toast(err.message, true);
    }
  }

  async function refreshActive() {
    const active = await get("/render/active");
    activeBody.replaceChildren(
      ...(active.length
        ? active.map((r) => {
            const bar = progressBar(`Progress of ${r.name}`);
            bar.value = r.progress;
            const cancel = h("button", { type: "button", class: "danger small", "aria-label": `Cancel ${r.name}` }, "Cancel");
            cancel.addEventListener("click", async () => {
              cancel.disabled = true;
              try {
                await post(`/render/${r.renderId}/cancel`);
                toast(`Cancelling ${r.name}`);
                refreshActive();
              } catch (err) {
                toast(err.message, true);
              }
            });
            return h("tr", {},
              h("td", { class: "name-cell" }, r.name),
              h("td", {}, badge(r.status)),
              h("td", { class: "hint" }, r.templateName || r.templateInstanceName || ""),
              h("td", { style: "min-width:140px" }, bar, h("div", { class: "hint" }, `${r.progress}% · ${r.framesDone}/${r.framesTotal} frames`)),
              h("td", { class: "actions" }, r.status === "cancelling" ? null : cancel));
          })
        : [h("tr", {}, h("td", { colspan: 5, class: "empty" }, "Nothing rendering right now."))]),
    );
  }

  async function refreshHistory() {
    const q = filter.value ? `?status=${filter.value}` : "";
    const rows = await get(`/render/history${q}`);
    historyBody.replaceChildren(
      ...(rows.length
        ? rows.map((r) => h("tr", {},
            h("td", { class: "name-cell" }, r.name,
              r.reason ? h("div", { class: "reason" }, r.reason) : null),
            h("td", {}, badge(r.status)),
            h("td", { class: "hint" }, r.templateName || r.templateInstanceName || ""),
            h("td", { class: "hint" }, fmtDate(r.completedAt || r.createdAt)),
            h("td", { class: "hint" }, r.renderTimeMilliseconds != null ? fmtMs(r.renderTimeMilliseconds) : "–",
              r.sizeBytes ? ` · ${fmtBytes(r.sizeBytes)}` : ""),
            h("td", { class: "actions" },
              r.status === "completed"
                ? [h("button", { type: "button", class: "secondary small", "aria-label": `Play ${r.name}`, onclick: () => play(r) }, "Play"),
                   h("button", { type: "button", class: "secondary small", "aria-label": `Download ${r.name}`, onclick: () => download(r) }, "Download")]
                : null,
              deleteButton(`Delete ${r.name}`, `/render/${r.renderId}`, refreshHistory))))
        : [h("tr", {}, h("td", { colspan: 6, class: "empty" }, "No finished renders match."))]),
    );
  }

  main.replaceChildren(
    h("div", { class: "page-head" }, h("div", {}, h("h1", {}, "Renders"),
      h("p", {}, "Renders in progress and everything finished, with their videos."))),
    player,
    h("section", { class: "panel", "aria-labelledby": "active-title" },
      h("div", { class: "panel-head" }, h("h2", { id: "active-title" }, "In progress")),
      h("table", { class: "responsive", "aria-label": "Active renders" },
        h("thead", {}, h("tr", {}, h("th", {}, "Name"), h("th", {}, "Status"), h("th", {}, "Template"),
          h("th", {}, "Progress"), h("th", {}, h("span", { class: "visually-hidden" }, "Actions")))),
        activeBody)),
    h("section", { class: "panel", "aria-labelledby": "history-title" },
      h("div", { class: "panel-head" }, h("h2", { id: "history-title" }, "History"),
        h("div", { class: "row" }, h("label", { for: "history-filter", class: "visually-hidden" }, "Status filter"), filter)),
      h("table", { class: "responsive", "aria-label": "Render history" },
        h("thead", {}, h("tr", {}, h("th", {}, "Name"), h("th", {}, "Status"), h("th", {}, "Template"),
          h("th", {}, "Finished"), h("th", {}, "Time · size"), h("th", {}, h("span", { class: "visually-hidden" }, "Actions")))),
        historyBody)),
  );
  const stopActive = every(2000, refreshActive);
  const stopHistory = every(10000, refreshHistory);
  return () => {
    stopActive();
    stopHistory();
  };
}

// ---------------------------------------------------------------- audio

function audioView() {
  const name = h("input", { type: "text", id: "group-name", maxlength: 255, required: true, placeholder: "e.g. Background music" });
  const form = h("form", { class: "row" },
    h("div", { class: "field" }, h("label", { for: "group-name" }, "Group name"), name),
    h("div", { class: "field", style: "flex:0 0 auto" }, h("button", { type: "submit" }, "Create group")));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      await post("/audio-asset-group", { name: name.value.trim() });
      name.value = "";
      toast("Group created");
      await refresh();
    } catch (err) {
      toast(err.message, true);
    }
  });
  const groupsBox = h("div");

  // Players outlive the list: a refresh (another upload still processing) rebuilds the rows,
  // and moves an opened player into its new row instead of dropping it mid-play.
  const players = new Map();

  async function playButton(a) {
    const slot = h("span");
    if (players.has(a.id)) {
      slot.append(players.get(a.id));
      return slot;
    }
    const button = h("button", { type: "button", class: "secondary small", "aria-label": `Play ${a.name}` }, "Play");
    button.addEventListener("click", async () => {
      try {
        const url = await signedUrl("audio", a.id);
        const player = h("audio", { src: url, controls: true, autoplay: true, "aria-label": `Audio ${a.name}` });
        players.set(a.id, player);
        slot.replaceChildren(player);
        if (!slot.isConnected) await refresh(); // the list was rebuilt while the link came
      } catch (err) {
        toast(err.message, true);
      }
    });
    slot.append(button);
    return slot;
  }

  async function refresh() {
    const [groups, active] = await Promise.all([get("/audio-asset-group"), get("/audio/active")]);
    const details = await Promise.all(groups.map((g) => get(`/audio-asset-group/${g.id}`)));
    const sections = [];
    let busy = active.length;
    for (const g of details) {
      const bar = progressBar(`Upload progress for ${g.name}`);
      const barBox = h("div", { class: "upload-progress", hidden: true }, bar);
      const picker = fileButton(`Upload audio to ${g.name}`, ".mp3,.wav,.aac,.m4a,audio/*", async (file) => {
        barBox.hidden = false;
        try {
          await upload(`/audio-asset-group/${g.id}/audio`, file, {}, (f) => { bar.value = Math.round(f * 100); });
          toast(`${file.name} uploaded; processing…`);
          refreshGauges();
          kick();
        } catch (err) {
          barBox.hidden = true;
          toast(`Upload failed: ${err.message}`, true);
        }
      }, "secondary small");
      const processing = active.filter((j) => j.audioGroupId === g.id);
      const rows = [];
      for (const j of processing) {
        rows.push(h("tr", {}, h("td", { class: "name-cell" }, j.audioName), h("td", {}, badge("processing")),
          h("td", {}), h("td", { class: "actions" })));
      }
      for (const a of g.audios) {
        rows.push(h("tr", {},
          h("td", { class: "name-cell" }, a.name),
          h("td", {}, badge(a.status === "completed" ? "ready" : a.status)),
          h("td", { class: "hint" }, `${a.originalFormat.toUpperCase()} · ${a.durationSeconds ? a.durationSeconds.toFixed(1) + " s" : "–"} · ${fmtBytes(a.sizeBytes)}`),
          h("td", { class: "actions" },
            a.status === "completed" ? await playButton(a) : null,
            deleteButton(`Delete ${a.name}`, `/audio/${a.id}`, refresh))));
        if (a.status !== "completed" && a.status !== "failed") busy += 1;
      }
      if (!rows.length) rows.push(h("tr", {}, h("td", { colspan: 4, class: "empty" }, "No audio in this group yet.")));
      sections.push(h("div", { class: "group" },
        h("div", { class: "panel-head" }, h("h3", {}, g.name),
          h("div", { class: "row" }, picker, deleteButton(`Delete group ${g.name}`, `/audio-asset-group/${g.id}`, refresh))),
        barBox,
        h("table", { class: "responsive", "aria-label": `Audio in ${g.name}` }, h("tbody", {}, ...rows))));
    }
    if (!sections.length) sections.push(h("p", { class: "empty" }, "No audio groups yet."));
    groupsBox.replaceChildren(...sections);
    return busy;
  }

  main.replaceChildren(
    h("div", { class: "page-head" }, h("div", {}, h("h1", {}, "Audio"),
      h("p", {}, "Music and voice-overs, grouped, to mix into renders."))),
    h("section", { class: "panel", "aria-labelledby": "new-group" },
      h("h2", { id: "new-group" }, "New group"), form),
    h("section", { class: "panel", "aria-labelledby": "groups-title" },
      h("h2", { id: "groups-title" }, "Groups"), groupsBox),
  );
  // Refresh while something is processing; a static list otherwise (the players stay put).
  let stopped = false;
  let timer = 0;
  const loop = async () => {
    clearTimeout(timer);
    let busy = 0;
    try {
      busy = await refresh();
    } catch (err) {
      toast(err.message, true);
    }
    if (!stopped && busy) timer = setTimeout(loop, 1000);
  };
  function kick() {
    loop();
  }
  loop();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

// ---------------------------------------------------------------- router

function route() {
  cleanup();
  cleanup = () => {};
  if (!session.key) {
    cleanup = signInView("");
    return;
  }
  topbar.hidden = false;
  const [, section, id] = (location.hash || "#/templates").replace(/^#/, "").split("/");
  for (const a of document.querySelectorAll("[data-nav]")) {
    const current = a.dataset.nav === section || (section === "template" && a.dataset.nav === "templates");
    if (current) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  const views = {
    templates: templatesView,
    template: () => templateView(main, id, { refreshGauges, deleteButton }),
    renders: rendersView,
    audio: audioView,
  };
  const view = views[section] || templatesView;
  cleanup = view() || (() => {});
  main.focus({ preventScroll: true });
  refreshGauges();
}

window.addEventListener("hashchange", route);
route();

export { ApiError, request };
