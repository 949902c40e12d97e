// The template page: a form built from the manifest, a live preview with a frame scrubber,
// the encoder settings, and rendering with progress, cancel, playback and download.
import { get, post, request, signedUrl, upload } from "./api.js";
import { badge, field, fileButton, fmtBytes, fmtMs, h, progressBar, toast } from "./ui.js";

const CODECS = [["0", "H.264"], ["1", "H.265 / HEVC"], ["2", "AV1"]];
const RATE_CONTROLS = [["", "Default (VBR)"], ["0", "CBR"], ["1", "VBR"], ["2", "CQP"], ["3", "CRF"]];
const PROFILES = {
  0: [["", "Default"], ["66", "Baseline"], ["77", "Main"], ["100", "High"]],
  1: [["", "Default"], ["1", "Main"]],
  2: [["", "Default"], ["0", "Main"]],
};
const PRESETS = [["0", "0 · slowest, smallest"], ["1", "1"], ["2", "2"], ["3", "3 · balanced"], ["4", "4"], ["5", "5 · fastest"]];

function select(options, value = "") {
  const el = h("select", {}, ...options.map(([v, text]) => h("option", { value: v }, text)));
  el.value = value;
  return el;
}

function numberInput(attrs = {}) {
  return h("input", { type: "number", inputmode: "numeric", ...attrs });
}

// "#RRGGBB" or "#RRGGBBAA" (any case) -> "#rrggbb" for <input type=color>.
function colorOnly(value) {
  const m = /^#?([0-9a-f]{6})/i.exec(value || "");
  return m ? `#${m[1].toLowerCase()}` : "#000000";
}

export function templateView(main, templateId, { refreshGauges }) {
  const abort = new AbortController();
  let previewUrl = "";
  main.replaceChildren(h("p", { class: "hint" }, "Loading template…"));

  (async () => {
    let detail;
    try {
      detail = await get(`/template/${templateId}`, { signal: abort.signal });
    } catch (err) {
      if (err.name === "AbortError") return;
      main.replaceChildren(
        h("a", { class: "crumb", href: "#/templates" }, "← Templates"),
        h("div", { class: "panel" }, h("h1", {}, "This template cannot be opened"),
          h("p", {}, err.message)),
      );
      return;
    }
    build(detail);
  })();

  function build(detail) {
    const m = detail.manifest;
    const fps = m.fps[0] / m.fps[1];
    // layerId -> { prop: value } of what the person changed (defaults are left out).
    const changes = new Map();
    const change = (layerId, prop, value, isDefault) => {
      const entry = changes.get(layerId) || {};
      if (isDefault) delete entry[prop];
      else entry[prop] = value;
      if (Object.keys(entry).length) changes.set(layerId, entry);
      else changes.delete(layerId);
      schedulePreview();
    };
    const customizationMap = () => [...changes].map(([layerId, props]) => ({ layerId, ...props }));

    // ---- preview
    const img = h("img", { alt: "Preview of frame 0", id: "preview-image" });
    const busy = h("span", { class: "busy", hidden: true }, "Rendering preview…");
    const frameBox = h("div", { class: "preview-frame", style: `--aspect:${m.width} / ${m.height}` }, img, busy);
    const scrub = h("input", { type: "range", min: 0, max: Math.max(0, m.frames - 1), value: 0, step: 1, "aria-label": "Frame" });
    const frameOut = h("output", { "aria-live": "off" });
    const previewError = h("div", { class: "alert error", role: "alert", hidden: true });
    const previewButton = h("button", { type: "button", class: "secondary" }, "Preview");
    const showFrame = () => {
      frameOut.textContent = `${Number(scrub.value) + 1} / ${m.frames} · ${(Number(scrub.value) / fps).toFixed(2)} s`;
    };
    showFrame();
    scrub.addEventListener("input", () => {
      showFrame();
      schedulePreview(120);
    });
    previewButton.addEventListener("click", () => preview());

    let previewTimer = 0;
    let previewSeq = 0;
    // frameBox.dataset.state: scheduled -> busy -> idle, so tests and people can tell when
    // the image shows the current values.
    function schedulePreview(ms = 350) {
      clearTimeout(previewTimer);
      frameBox.dataset.state = "scheduled";
      previewTimer = setTimeout(preview, ms);
    }
    async function preview() {
      clearTimeout(previewTimer);
      const seq = ++previewSeq;
      const frame = Number(scrub.value);
      frameBox.dataset.state = "busy";
      busy.hidden = false;
      try {
        const res = await request("POST", `/template/${templateId}/preview`, {
          json: { frame, customizationMap: customizationMap() },
          raw: true,
          signal: abort.signal,
        });
        const blob = await res.blob();
        if (seq !== previewSeq) return;
        if (previewUrl) URL.revokeObjectURL(previewUrl);
        previewUrl = URL.createObjectURL(blob);
        img.src = previewUrl;
        img.alt = `Preview of frame ${frame}`;
        img.dataset.seq = String(seq);
        previewError.hidden = true;
      } catch (err) {
        if (err.name === "AbortError" || seq !== previewSeq) return;
        previewError.textContent = err.message;
        previewError.hidden = false;
      } finally {
        if (seq === previewSeq) {
          busy.hidden = true;
          frameBox.dataset.state = "idle";
        }
      }
    }

    // ---- customisation form
    const layerSets = [];
    for (const layer of m.layers) {
      const props = layer.customizable || [];
      if (!props.length) continue;
      const d = layer.defaults || {};
      const fields = [];
      for (const prop of props) {
        if (prop === "text") {
          const input = h("input", { type: "text", value: d.text ?? "", "aria-label": `${layer.id} text` });
          input.addEventListener("input", () => change(layer.id, "text", input.value, input.value === (d.text ?? "")));
          fields.push(field("Text", input).wrap);
        } else if (prop === "color") {
          const initial = colorOnly(d.color);
          // The picker has no alpha: keep the template's (#RRGGBBAA) on the new colour.
          const alpha = /^#[0-9a-f]{8}$/i.test(d.color || "") ? d.color.slice(7) : "";
          const input = h("input", { type: "color", value: initial, "aria-label": `${layer.id} color` });
          const code = h("code", {}, d.color || initial);
          input.addEventListener("input", () => {
            code.textContent = input.value + alpha;
            change(layer.id, "color", input.value + alpha, input.value === initial);
          });
          const id = `c-${layer.id}`.replace(/[^\w-]/g, "_");
          input.id = id;
          fields.push(h("div", { class: "field" }, h("label", { for: id }, "Colour"),
            h("div", { class: "color-field" }, input, code)));
        } else if (prop === "visible") {
          const input = h("input", { type: "checkbox", "aria-label": `${layer.id} visible` });
          input.checked = d.visible !== false;
          input.addEventListener("change", () => change(layer.id, "visible", input.checked, input.checked === (d.visible !== false)));
          fields.push(h("div", { class: "field" }, h("label", { class: "check" }, input, h("span", { "aria-hidden": "true" }, "Visible"))));
        } else if (prop === "assetId") {
          const kind = layer.assetKind || "image";
          const state = h("span", { class: "hint", "aria-live": "polite" }, `Uses the template's ${kind}`);
          const accept = kind === "video" ? "video/*,.mp4,.mov,.webm" : "image/*,.png,.jpg,.jpeg,.gif,.webp";
          const picker = fileButton(`${layer.id} ${kind}`, accept, async (file) => {
            state.textContent = `Uploading ${file.name}…`;
            try {
              const res = await upload("/asset/upload", file, {}, (f) => {
                state.textContent = `Uploading ${file.name}… ${Math.round(f * 100)}%`;
              });
              state.textContent = `Checking ${file.name}…`;
              const asset = await waitAsset(res.assetId);
              if (asset.status !== "completed") throw new Error(asset.reason || "The file was refused");
              state.replaceChildren(badge("ready"), ` ${file.name}`);
              change(layer.id, "assetId", res.assetId, false);
              refreshGauges();
            } catch (err) {
              state.textContent = err.message;
              toast(`${file.name}: ${err.message}`, true);
            }
          }, "secondary small", `Replace ${kind}…`);
          fields.push(h("div", { class: "field" }, h("label", {}, kind === "video" ? "Video" : "Image"),
            h("div", { class: "row" }, picker, state)));
        } else if (prop === "lottieText") {
          const texts = d.lottieText || {};
          const current = { ...texts };
          for (const [key, value] of Object.entries(texts)) {
            const input = h("input", { type: "text", value, "aria-label": `${layer.id} ${key} text` });
            input.addEventListener("input", () => {
              current[key] = input.value;
              const same = Object.entries(texts).every(([k, v]) => current[k] === v);
              const diff = Object.fromEntries(Object.entries(current).filter(([k, v]) => texts[k] !== v));
              change(layer.id, "lottieText", diff, same);
            });
            fields.push(field(`Text “${key}”`, input).wrap);
          }
        }
      }
      if (!fields.length) continue;
      layerSets.push(h("fieldset", { class: "layer" },
        h("legend", {}, layer.id, h("span", { class: "type" }, layer.type)), ...fields));
    }

    async function waitAsset(assetId) {
      const deadline = Date.now() + 120000;
      while (Date.now() < deadline) {
        const s = await get(`/asset/${assetId}/status`, { signal: abort.signal });
        if (s.status === "completed" || s.status === "failed") return s;
        await new Promise((r) => setTimeout(r, 500));
      }
      throw new Error("The asset is still processing; try again");
    }

    // ---- encoder settings
    const defaultBitrate = Math.round(Math.min(50e6, Math.max(5e5, m.width * m.height * fps * 0.1)) / 1000) * 1000;
    const enc = {
      codec: field("Codec", select(CODECS, "0")),
      rc: field("Rate control", select(RATE_CONTROLS)),
      bitrate: field("Bitrate (bit/s)", numberInput({ value: defaultBitrate, min: 0, step: 1000 })),
      qp: field("QP (CQP)", numberInput({ min: 0, max: 51, placeholder: "0–51" })),
      crf: field("CRF", numberInput({ min: 0, max: 51, placeholder: "0–51" })),
      preset: field("Preset", select(PRESETS, "3")),
      gop: field("GOP (frames)", numberInput({ min: 1, placeholder: `${Math.round(fps * 2)}` })),
      idr: field("IDR interval (frames)", numberInput({ min: 1, placeholder: "every GOP" })),
      profile: field("Profile", select(PROFILES[0])),
      level: field("Level", numberInput({ min: 9, placeholder: "e.g. 41 = 4.1" })),
      fpsNum: field("FPS numerator", numberInput({ min: 1, placeholder: String(m.fps[0]) })),
      fpsDenum: field("FPS denominator", numberInput({ min: 1, placeholder: String(m.fps[1]) })),
      width: field("Width", numberInput({ min: 16, step: 2, placeholder: String(m.width) })),
      height: field("Height", numberInput({ min: 16, step: 2, placeholder: String(m.height) })),
    };
    enc.codec.input.addEventListener("change", () => {
      enc.profile.input.replaceChildren(...PROFILES[enc.codec.input.value].map(([v, t]) => h("option", { value: v }, t)));
    });
    const syncRc = () => {
      enc.qp.wrap.hidden = enc.rc.input.value !== "2";
      enc.crf.wrap.hidden = enc.rc.input.value !== "3";
    };
    enc.rc.input.addEventListener("change", syncRc);
    syncRc();
    for (const f of Object.values(enc)) f.input.addEventListener("input", () => f.error(""));

    function encoderConfig() {
      const num = (f) => (f.input.value === "" ? undefined : Number(f.input.value));
      const cfg = { codec: Number(enc.codec.input.value), preset: Number(enc.preset.input.value) };
      const put = (key, value) => {
        if (value !== undefined && !Number.isNaN(value)) cfg[key] = value;
      };
      put("rc", num(enc.rc));
      put("bitrate", num(enc.bitrate));
      if (enc.rc.input.value === "2") put("qp", num(enc.qp));
      if (enc.rc.input.value === "3") put("crf", num(enc.crf));
      for (const k of ["gop", "idr", "profile", "level", "fpsNum", "fpsDenum"]) put(k, num(enc[k]));
      const w = num(enc.width);
      const hgt = num(enc.height);
      if (w !== undefined || hgt !== undefined) cfg.res = [w ?? m.width, hgt ?? m.height];
      return cfg;
    }

    // Put the API's 400 detail beside the field it names ("encoderConfig.gop ...").
    function showEncoderError(detail) {
      const match = /encoderConfig\.(\w+)(?:\s+(width|height))?/.exec(detail);
      if (!match) return false;
      let key = match[1];
      if (key === "res") key = match[2] || "width";
      if (key === "rateControl") key = "rc";
      const target = enc[key];
      if (!target) return false;
      const details = target.wrap.closest("details");
      if (details) details.open = true;
      target.error(detail);
      target.input.focus();
      return true;
    }

    // ---- audio track
    const audioSelect = h("select", { id: "audio-track" }, h("option", { value: "" }, "The template's own audio"));
    get("/audio/list", { signal: abort.signal })
      .then((list) => {
        for (const a of list) audioSelect.append(h("option", { value: a.id }, `${a.groupName} / ${a.name}`));
      })
      .catch(() => {});

    // ---- render
    const renderName = h("input", { type: "text", id: "render-name", value: `${detail.name} ${new Date().toISOString().slice(0, 10)}`, maxlength: 255 });
    const renderButton = h("button", { type: "submit" }, "Render");
    const renderError = h("div", { class: "alert error", role: "alert", hidden: true });
    const renderBox = h("section", { class: "panel render-box", hidden: true, "aria-label": "Render" });
    const form = h("form", { class: "panel", "aria-labelledby": "output-title", novalidate: true },
      h("h2", { id: "output-title" }, "Render"),
      h("div", { class: "field" }, h("label", { for: "render-name" }, "Render name"), renderName),
      h("div", { class: "field" }, h("label", { for: "audio-track" }, "Audio track"), audioSelect),
      h("details", { class: "encoder" }, h("summary", {}, "Encoder settings"),
        h("div", { class: "grid" }, ...Object.values(enc).map((f) => f.wrap))),
      renderError,
      renderButton);
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      renderError.hidden = true;
      for (const f of Object.values(enc)) f.error("");
      const body = {
        templateId,
        name: renderName.value.trim() || detail.name,
        encoderConfig: encoderConfig(),
        customizationMap: customizationMap(),
      };
      if (audioSelect.value) body.audioId = audioSelect.value;
      renderButton.disabled = true;
      try {
        const created = await post("/render", body);
        follow(created.renderId, body.name);
        refreshGauges();
      } catch (err) {
        if (!(err.status === 400 && showEncoderError(err.message))) {
          renderError.textContent = err.message;
          renderError.hidden = false;
        }
      } finally {
        renderButton.disabled = false;
      }
    });

    async function follow(renderId, name) {
      const bar = progressBar("Render progress");
      const status = h("span", {}, "Queued");
      const pct = h("span", {}, "0%");
      const cancel = h("button", { type: "button", class: "danger" }, "Cancel");
      const result = h("div", { class: "result" });
      renderBox.replaceChildren(
        h("div", { class: "panel-head" }, h("h2", {}, name), cancel),
        bar, h("div", { class: "render-status" }, status, pct), result);
      renderBox.hidden = false;
      renderBox.scrollIntoView({ behavior: "smooth", block: "nearest" });
      cancel.addEventListener("click", async () => {
        cancel.disabled = true;
        try {
          await post(`/render/${renderId}/cancel`);
        } catch (err) {
          toast(err.message, true);
        }
      });
      let job = null;
      while (!abort.signal.aborted) {
        try {
          job = await get(`/render/${renderId}/status?wait=20`, { signal: abort.signal });
        } catch (err) {
          if (err.name === "AbortError") return;
          status.textContent = err.message;
          await new Promise((r) => setTimeout(r, 2000));
          continue;
        }
        bar.value = job.progress;
        pct.textContent = `${job.progress}%`;
        status.replaceChildren(badge(job.status), ` ${job.framesDone} / ${job.framesTotal} frames`);
        if (["completed", "failed", "cancelled"].includes(job.status)) break;
      }
      if (!job || abort.signal.aborted) return;
      cancel.remove();
      refreshGauges();
      if (job.status === "completed") {
        bar.classList.add("done");
        const url = await signedUrl("render", renderId);
        const video = h("video", { src: url, controls: true, playsinline: true, preload: "metadata", "aria-label": "Rendered video" });
        result.replaceChildren(video,
          h("div", { class: "row" },
            h("a", { class: "button", href: url, download: `${name}.mp4` }, "Download"),
            h("a", { class: "button secondary", href: "#/renders" }, "All renders"),
            h("span", { class: "hint" }, `${fmtBytes(job.sizeBytes)} · rendered in ${fmtMs(job.renderTimeMilliseconds)} · ${job.encoderUsed || ""}`)));
        toast(`${name} is ready`);
      } else {
        result.replaceChildren(h("div", { class: "alert error", role: "alert" },
          job.status === "cancelled" ? "The render was cancelled." : `The render failed: ${job.reason || "no reason given"}`,
          job.failureCode ? h("code", {}, ` (${job.failureCode})`) : null));
      }
    }

    main.replaceChildren(
      h("a", { class: "crumb", href: "#/templates" }, "← Templates"),
      h("div", { class: "page-head" },
        h("div", {}, h("h1", {}, detail.name),
          h("div", { class: "meta" },
            h("span", {}, h("strong", {}, `${m.width}×${m.height}`)),
            h("span", {}, h("strong", {}, `${+fps.toFixed(3)}`), " fps"),
            h("span", {}, h("strong", {}, m.frames), " frames"),
            h("span", {}, h("strong", {}, `${m.durationSeconds.toFixed(2)} s`)),
            h("span", {}, fmtBytes(detail.sizeBytes))))),
      h("div", { class: "editor" },
        h("div", { class: "stage" },
          h("section", { class: "panel", "aria-label": "Preview" },
            frameBox,
            h("div", { class: "scrubber" }, scrub, frameOut, previewButton),
            previewError),
          renderBox),
        h("div", {},
          h("section", { class: "panel", "aria-labelledby": "custom-title" },
            h("h2", { id: "custom-title" }, "Personalise"),
            layerSets.length ? layerSets : h("p", { class: "hint" }, "This template has nothing to customise.")),
          form)),
    );
    preview();
  }

  return () => {
    abort.abort();
    if (previewUrl) URL.revokeObjectURL(previewUrl);
  };
}
