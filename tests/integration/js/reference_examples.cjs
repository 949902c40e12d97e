// The reference's JavaScript examples (fetch and axios), as written there apart from the
// base URL and the file input, run under Node against a live Velocity.
// Usage: node reference_examples.cjs BASE_URL API_KEY ZIP_PATH   (axios from NODE_PATH)
// Prints one JSON object with what each example saw.
'use strict';
const fs = require('fs');
const axios = require('axios');

const [BASE, KEY, ZIP] = process.argv.slice(2);
const fileInput = { files: [new File([fs.readFileSync(ZIP)], 'demo.zip', { type: 'application/zip' })] };
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const out = {};

async function fetchExamples() {
  // Upload Template (Fetch)
  const formData = new FormData();
  formData.append('file', fileInput.files[0]);
  let response = await fetch(`${BASE}/template/upload`, {
    method: 'POST',
    headers: { 'X-API-Key': KEY },
    body: formData,
  });
  let data = await response.json();
  out.fetchUpload = { status: response.status, templateId: data.templateId };
  const templateId = data.templateId;

  // Template status (Fetch), polled until processed
  for (let i = 0; i < 600; i++) {
    response = await fetch(`${BASE}/template/${templateId}/status`, {
      headers: { 'X-API-Key': KEY },
    });
    data = await response.json();
    if (data.status === 'completed' || data.status === 'failed') break;
    await sleep(100);
  }
  out.fetchTemplateStatus = data.status;

  // Create Render (Fetch)
  response = await fetch(`${BASE}/render`, {
    method: 'POST',
    headers: { 'X-API-Key': KEY, 'Content-Type': 'application/json' },
    body: JSON.stringify({ templateId, name: 'DirectVideo', encoderConfig: { bitrate: 5000000 } }),
  });
  data = await response.json();
  out.fetchRender = { status: response.status, renderId: data.renderId };
  const renderId = data.renderId;

  // Render status (Fetch), polled
  for (let i = 0; i < 1200; i++) {
    response = await fetch(`${BASE}/render/${renderId}/status`, {
      headers: { 'X-API-Key': KEY },
    });
    data = await response.json();
    if (['completed', 'failed', 'cancelled'].includes(data.status)) break;
    await sleep(100);
  }
  out.fetchRenderStatus = { status: data.status, sizeBytes: data.sizeBytes };

  // Download (Fetch): response.blob()
  const blob = await fetch(`${BASE}/render/${renderId}/download`, {
    headers: { 'X-API-Key': KEY },
  }).then((r) => r.blob());
  const head = new Uint8Array(await blob.slice(4, 8).arrayBuffer());
  out.fetchDownload = { size: blob.size, type: blob.type, ftyp: String.fromCharCode(...head) };
  return { templateId, renderId };
}

async function axiosExamples(templateId, renderId) {
  // Upload Template (Axios)
  const formData = new FormData();
  formData.append('file', fileInput.files[0]);
  let response = await axios.post(`${BASE}/template/upload`, formData, {
    headers: { 'X-API-Key': KEY, 'Content-Type': 'multipart/form-data' },
  });
  out.axiosUpload = { status: response.status, templateId: response.data.templateId };

  // Create Render (Axios)
  response = await axios.post(
    `${BASE}/render`,
    { templateId, name: 'DirectVideo', encoderConfig: { bitrate: 5000000 } },
    { headers: { 'X-API-Key': KEY } },
  );
  out.axiosRender = { status: response.status, renderId: response.data.renderId };

  // Render status (Axios)
  response = await axios.get(`${BASE}/render/${renderId}/status`, {
    headers: { 'X-API-Key': KEY },
  });
  out.axiosRenderStatus = response.data.status;

  // An error as axios reports it: the {detail, code} body on error.response.data.
  try {
    await axios.post(`${BASE}/render`, { templateId, name: 'x', encoderConfig: { bitrate: 5000000 }, customisationMap: [] }, {
      headers: { 'X-API-Key': KEY },
    });
    out.axiosTypo = { status: 200 };
  } catch (error) {
    out.axiosTypo = { status: error.response.status, data: error.response.data };
  }
}

(async () => {
  const { templateId, renderId } = await fetchExamples();
  await axiosExamples(templateId, renderId);
  console.log(JSON.stringify(out));
})().catch((error) => {
  console.log(JSON.stringify({ ...out, error: String(error && (error.stack || error)) }));
  process.exit(1);
});
