// The console's only way to the server: the same HTTP API any client uses, with the key the
// person pasted (kept in sessionStorage: this tab only, gone when it closes).

const KEY = "velocity.apiKey";

export class ApiError extends Error {
  constructor(status, detail, code) {
    super(detail || `HTTP ${status}`);
    this.status = status;
    this.detail = detail || `HTTP ${status}`;
    this.code = code || "";
  }
}

export const session = {
  get key() {
    return sessionStorage.getItem(KEY) || "";
  },
  set key(value) {
    if (value) sessionStorage.setItem(KEY, value);
    else sessionStorage.removeItem(KEY);
  },
};

// Relative to the page, so the console also works behind a reverse proxy's path prefix.
export function apiUrl(path) {
  return new URL(path.replace(/^\//, ""), document.baseURI).toString();
}

async function errorOf(response) {
  let detail = "";
  let code = "";
  try {
    const body = await response.json();
    detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
    code = body.code || "";
  } catch {
    detail = response.statusText;
  }
  return new ApiError(response.status, detail, code);
}

export async function request(method, path, { json, key, signal, raw } = {}) {
  const headers = { "X-API-Key": key ?? session.key };
  const init = { method, headers, signal };
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  }
  let response;
  try {
    response = await fetch(apiUrl(path), init);
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, "The server cannot be reached; is velocity serve running?", "network");
  }
  if (!response.ok) {
    const error = await errorOf(response);
    if (response.status === 401 && key === undefined) {
      window.dispatchEvent(new CustomEvent("velocity:unauthorized", { detail: error }));
    }
    throw error;
  }
  if (raw) return response;
  if (response.status === 204) return null;
  return response.json();
}

export const get = (path, opts) => request("GET", path, opts);
export const post = (path, json, opts) => request("POST", path, { ...opts, json });
export const del = (path, opts) => request("DELETE", path, opts);

// Multipart upload through XMLHttpRequest: fetch has no upload progress events.
export function upload(path, file, fields = {}, onProgress = () => {}) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    const form = new FormData();
    for (const [name, value] of Object.entries(fields)) form.append(name, value);
    form.append("file", file, file.name);
    xhr.open("POST", apiUrl(path));
    xhr.setRequestHeader("X-API-Key", session.key);
    xhr.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable) onProgress(event.loaded / event.total);
    });
    xhr.addEventListener("load", () => {
      let body = {};
      try {
        body = JSON.parse(xhr.responseText || "{}");
      } catch {
        body = { detail: xhr.statusText };
      }
      if (xhr.status >= 200 && xhr.status < 300) {
        onProgress(1);
        resolve(body);
      } else {
        reject(new ApiError(xhr.status, body.detail, body.code));
      }
    });
    xhr.addEventListener("error", () =>
      reject(new ApiError(0, "The upload was interrupted (network error)", "network")),
    );
    xhr.send(form);
  });
}

// An absolute signed link (no key needed) for a render, template or audio download.
export async function signedUrl(kind, id, ttl = 3600) {
  const body = await post(`/${kind}/${id}/signed-url?ttl=${ttl}`);
  return apiUrl(body.url);
}
