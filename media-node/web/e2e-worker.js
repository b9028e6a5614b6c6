// bedside end-to-end media encryption, in a worker: every encoded frame is sealed with
// AES-GCM-256 under a key derived from a secret the host shares out of band, so the media node
// forwards frames it cannot read. Frame layout (SFrame-style):
//   clear header | ciphertext + 16-byte tag | 12-byte IV
// The header stays readable so the node can still tell keyframes (VP8: 10 bytes on a keyframe,
// 3 otherwise; audio: 1 byte); it is authenticated as additional data.
'use strict';

let key = null;

function clearBytes(frame, kind) {
  if (kind === 'audio') return 1;
  return frame.type === 'key' ? 10 : 3;
}

async function encrypt(frame, controller, kind) {
  if (!key) return; // never send a frame in the clear
  const data = new Uint8Array(frame.data);
  const n = Math.min(clearBytes(frame, kind), data.length);
  const iv = crypto.getRandomValues(new Uint8Array(12));
  const sealed = new Uint8Array(await crypto.subtle.encrypt(
    { name: 'AES-GCM', iv, additionalData: data.subarray(0, n) }, key, data.subarray(n)));
  const out = new Uint8Array(n + sealed.length + 12);
  out.set(data.subarray(0, n));
  out.set(sealed, n);
  out.set(iv, n + sealed.length);
  frame.data = out.buffer;
  controller.enqueue(frame);
}

async function decrypt(frame, controller, kind) {
  if (!key) return;
  const data = new Uint8Array(frame.data);
  const n = clearBytes(frame, kind);
  if (data.length < n + 16 + 12) return; // not ours: drop, never play unauthenticated media
  const iv = data.subarray(data.length - 12);
  try {
    const plain = new Uint8Array(await crypto.subtle.decrypt(
      { name: 'AES-GCM', iv, additionalData: data.subarray(0, n) }, key,
      data.subarray(n, data.length - 12)));
    const out = new Uint8Array(n + plain.length);
    out.set(data.subarray(0, n));
    out.set(plain, n);
    frame.data = out.buffer;
    controller.enqueue(frame);
  } catch (_) {
    // Another key, or tampered with on the way: dropped.
  }
}

function pipe(readable, writable, op, kind) {
  const step = op === 'encrypt' ? encrypt : decrypt;
  readable
    .pipeThrough(new TransformStream({ transform: (frame, controller) => step(frame, controller, kind) }))
    .pipeTo(writable);
}

// RTCRtpScriptTransform (the standard API).
self.onrtctransform = (event) => {
  const { op, kind } = event.transformer.options;
  pipe(event.transformer.readable, event.transformer.writable, op, kind);
};

// The key, and Chromium's older createEncodedStreams() streams, arrive as messages.
self.onmessage = async (event) => {
  const m = event.data;
  if (m.key) {
    key = await crypto.subtle.importKey('raw', m.key, 'AES-GCM', false, ['encrypt', 'decrypt']);
  }
  if (m.readable && m.writable) pipe(m.readable, m.writable, m.op, m.kind);
};
