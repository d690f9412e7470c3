// A real tus client (tus-js-client under node) for tests/integration/test_tus.py.
// usage: node tus_upload.js ENDPOINT TOKEN FILE METADATA_JSON [UPLOAD_URL]
// With TUS_FREEZE_AT=<bytes> in the environment the client freezes (stops sending, like a
// hung process) once that many bytes went out, so the test can kill it mid-upload.
// TUS_CHUNK_SIZE=<bytes> sends PATCHes of at most that size (default: one PATCH); the
// client reports progress only every 100 ms, so on loopback a single PATCH would be over
// before the first report.
// Prints one line per event, flushed at once so the test can act on them:
//   url <upload url>    as soon as the server created (or resumed) the upload
//   progress <bytes>    bytes handed to the socket so far
//   done <upload url>   the server acknowledged the last byte
//   retry <message>     a request failed without an answer (connection error): retried
//   refused <status>    a request got an error answer: not retried, "error" follows
//   error <message>     the upload failed (exit status 1)
'use strict';
const fs = require('fs');
const tus = require('tus-js-client');

const [endpoint, token, file, metaJson, resumeUrl] = process.argv.slice(2);
const size = fs.statSync(file).size;
const freezeAt = Number(process.env.TUS_FREEZE_AT || 0);
let lastReported = 0;
const upload = new tus.Upload(fs.createReadStream(file), {
  endpoint,
  uploadUrl: resumeUrl || null,
  uploadSize: size,
  chunkSize: Number(process.env.TUS_CHUNK_SIZE || 0) || Infinity,
  metadata: JSON.parse(metaJson),
  headers: { Authorization: 'Bearer ' + token },
  // Retry only what a broken connection gives (no HTTP answer at all). Any answer that is
  // an error (a 5xx, a 423 because another PATCH still holds the upload, a 409) ends the
  // upload with "error": the test waits until the server released the upload before it
  // resumes, so such an answer is a server bug, never something to retry away.
  retryDelays: [100, 300, 1000, 2000, 3000],
  onShouldRetry(err) {
    const status = err.originalResponse ? err.originalResponse.getStatus() : 0;
    process.stdout.write((status ? 'refused ' + status : 'retry ' + String(err).replace(/\n/g, ' ')) + '\n');
    return status === 0;
  },
  storeFingerprintForResuming: false,
  onUploadUrlAvailable() { process.stdout.write('url ' + upload.url + '\n'); },
  onProgress(sent) {
    if (sent - lastReported >= (1 << 20) || sent === size) {
      lastReported = sent;
      process.stdout.write('progress ' + sent + '\n');
    }
    if (freezeAt && sent >= freezeAt) {
      process.stdout.write('frozen ' + sent + '\n'); // stdout to a pipe is synchronous on Linux
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0); // blocks until killed
    }
  },
  onSuccess() { process.stdout.write('done ' + upload.url + '\n'); },
  onError(err) { process.stdout.write('error ' + String(err).replace(/\n/g, ' ') + '\n'); process.exitCode = 1; },
});
upload.start();
