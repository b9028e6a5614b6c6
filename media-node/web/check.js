// bedside web client: the pre-call connectivity check (docs/signaling.md#connectivity-check).
// Before joining, the page asks the media node for one throwaway connection per path (UDP,
// TCP, the clinic's relay over TLS on 443) and runs ICE over each, as a call would; then it
// says in plain words what works and, if something does not, what to ask IT to open.
'use strict';

window.bedsideCheck = (() => {
  const t = window.bedsideI18n.t;
  // Long enough for ICE over a slow network; the node keeps a check's connection for 20 s.
  const PATH_TIMEOUT_MS = 10000;

  // One signaling connection; each `probe` gets the next message back, in order.
  function open() {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(`wss://${location.host}/ws`);
      const replies = [];
      const waiting = [];
      ws.onmessage = (event) => {
        const message = JSON.parse(event.data);
        const next = waiting.shift();
        if (next) next(message); else replies.push(message);
      };
      ws.onerror = () => reject(new Error('signaling'));
      ws.onclose = () => waiting.splice(0).forEach((next) => next({ type: 'error', code: 'closed', message: 'closed' }));
      ws.onopen = () => resolve({
        ask(message) {
          ws.send(JSON.stringify(message));
          return new Promise((next) => { const ready = replies.shift(); if (ready) next(ready); else waiting.push(next); });
        },
        close() { ws.close(); },
      });
    });
  }

  // The node's answer with only the candidates of `protocol` (udp or tcp) left in it.
  function keepOnly(sdp, protocol) {
    return sdp.split('\r\n').filter((line) => {
      if (!line.startsWith('a=candidate:')) return true;
      return (line.split(' ')[2] || '').toLowerCase() === protocol;
    }).join('\r\n');
  }

  // Where the node takes media: the address and port of its UDP candidate.
  function mediaAddress(sdp) {
    const line = sdp.split('\r\n').find((l) => l.startsWith('a=candidate:') && / udp /i.test(l));
    const parts = line ? line.split(' ') : [];
    return { host: parts[4] || '', port: parts[5] || '3478' };
  }

  function relayHost(iceServers) {
    const url = (iceServers[0] && iceServers[0].urls && iceServers[0].urls[0]) || '';
    return url.replace(/^turns?:/, '').replace(/:\d+(\?.*)?$/, '');
  }

  // True once ICE connects over this connection's path, false after the timeout. Watched from
  // before the answer is applied: on a busy machine ICE can connect before that promise settles.
  function connects(pc) {
    return new Promise((resolve) => {
      let timer = null;
      const done = (ok) => { clearTimeout(timer); pc.removeEventListener('iceconnectionstatechange', look); resolve(ok); };
      const look = () => {
        const s = pc.iceConnectionState;
        if (s === 'connected' || s === 'completed') done(true);
        else if (s === 'failed' || s === 'closed') done(false);
      };
      pc.addEventListener('iceconnectionstatechange', look);
      timer = setTimeout(() => done(false), PATH_TIMEOUT_MS);
      look();
    });
  }

  // Offers a data channel over one path; resolves with the node's answer and whether ICE got
  // through. `protocol`: udp or tcp (the node's other candidates are removed); relay: only
  // through the TURN servers given.
  async function tryPath(signal, link, protocol, iceServers) {
    const relay = protocol === 'relay';
    const pc = new RTCPeerConnection(relay ? { iceServers, iceTransportPolicy: 'relay' } : {});
    try {
      pc.createDataChannel('check');
      await pc.setLocalDescription(await pc.createOffer());
      const answer = await signal.ask({ v: 1, type: 'probe', room: link.room, token: link.token, sdp: pc.localDescription.sdp });
      if (answer.type !== 'probe-answer') return { refused: answer };
      const sdp = relay ? answer.sdp : keepOnly(answer.sdp, protocol);
      const connected = connects(pc);
      await pc.setRemoteDescription({ type: 'answer', sdp });
      return { answer, ok: await connected };
    } finally {
      setTimeout(() => pc.close(), 0);
    }
  }

  // Runs the check: { udp, tcp, relay (null when the clinic runs none), host, port, relayHost }
  // or { refused } with the node's error message.
  async function run(link) {
    const signal = await open();
    try {
      const udp = await tryPath(signal, link, 'udp', []);
      if (udp.refused) return { refused: udp.refused };
      const iceServers = udp.answer.iceServers || [];
      const [tcp, relay] = await Promise.all([
        tryPath(signal, link, 'tcp', []),
        iceServers.length ? tryPath(signal, link, 'relay', iceServers) : Promise.resolve(null),
      ]);
      return {
        udp: udp.ok,
        tcp: !!(tcp && tcp.ok),
        relay: relay ? !!relay.ok : null,
        ...mediaAddress(udp.answer.sdp),
        relayHost: relayHost(iceServers),
      };
    } finally {
      signal.close();
    }
  }

  // What the result means for the person, and what to ask IT for.
  function explain(result) {
    const where = { host: result.host, port: result.port, relay: result.relayHost };
    if (result.udp) return t('checkDirect');
    if (result.tcp) return t('checkTcp', where);
    if (result.relay) return t('checkRelay', where);
    return t(result.relay === null ? 'checkNone' : 'checkNoneRelay', where);
  }

  // The button and its result line; `link()` gives the room and token.
  function attach(button, output, link) {
    if (!button || !output) return;
    button.addEventListener('click', async () => {
      button.disabled = true;
      output.dataset.paths = '';
      output.textContent = t('checking');
      try {
        const result = await run(link());
        if (result.refused) {
          output.textContent = window.bedsideI18n.error(result.refused.code, result.refused.message);
        } else {
          output.dataset.paths = ['udp', 'tcp', 'relay'].filter((p) => result[p]).join(' ');
          output.textContent = explain(result);
        }
      } catch (e) {
        output.textContent = t('checkFailed');
      } finally {
        button.disabled = false;
      }
    });
  }

  return { run, attach };
})();
