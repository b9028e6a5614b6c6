// bedside web client: plain JavaScript, no build step. Speaks signaling protocol v1
// (docs/signaling.md) to the node that served this page.
'use strict';

(() => {
  // Errors nothing caught, kept in the page with the others (`state.errors`) for whoever
  // diagnoses it (the tests print them): they stay in this tab.
  const errors = [];
  window.addEventListener('error', (e) => errors.push(String(e.message)));
  window.addEventListener('unhandledrejection', (e) => errors.push(String(e.reason)));
  const query = new URLSearchParams(location.search);
  const room = query.get('room') || '';
  // quality=low asks for a small camera picture (slow links, automated tests).
  const low = query.get('quality') === 'low';
  // The link's secrets (token, passcode, end-to-end key) travel in the fragment, which
  // browsers never send to a server or a Referer. Read once, they leave the address bar and
  // the browser's history; this tab keeps them (sessionStorage) so a reload rejoins.
  const secrets = (() => {
    const key = `bedside-link:${room}`;
    const fragment = new URLSearchParams(location.hash.slice(1));
    let kept = {};
    try { kept = JSON.parse(sessionStorage.getItem(key) || '{}'); } catch (e) { kept = {}; }
    const fresh = {
      token: fragment.get('token') || kept.token || '',
      passcode: fragment.get('passcode') || kept.passcode || '',
      e2e: fragment.get('e2e') || kept.e2e || '',
    };
    try { sessionStorage.setItem(key, JSON.stringify(fresh)); } catch (e) { /* private mode */ }
    if (location.hash) history.replaceState(null, '', location.pathname + location.search);
    return fresh;
  })();
  // A token in the query string is never used: servers, proxies and history would keep it.
  const tokenInQuery = query.has('token');
  const token = secrets.token;
  // The passcode normally comes apart from the link (a text message); a dev link carries it.
  const linkPasscode = secrets.passcode;
  // End-to-end mode: the secret the host shared with the link's fragment; it never reaches a
  // server, and the media key derived from it never leaves this browser.
  const e2eSecret = secrets.e2e;
  // Every word on the page comes from i18n.js, in the reader's language.
  const i18n = window.bedsideI18n;
  const t = i18n.t;
  // What the status line adds for a path other than plain UDP.
  const PATH_NOTES = { tcp: 'overTcp', relay: 'overRelay' };

  // What the others see of a role (a participant needs no badge).
  const roleName = (role) => (role === 'host' || role === 'observer' ? t(`role_${role}`) : '');

  const statusEl = document.getElementById('status');
  const noticeEl = document.getElementById('notice');
  const tilesEl = document.getElementById('tiles');
  const joinBtn = document.getElementById('join');
  const nameEl = document.getElementById('name');
  // The name a participant typed: shown on their tile; the node keeps it in memory only.
  const label = (id) => {
    if (id === 'self') return t('you');
    if (id === 'self-screen') return t('yourScreen');
    if (id.endsWith('-screen')) return t('screenOf', { name: label(id.slice(0, -'-screen'.length)) });
    const p = state.participants.get(id);
    return (p && p.displayName) || t('participant', { id });
  };
  const leaveBtn = document.getElementById('leave');
  const passcodeEl = document.getElementById('passcode');
  const hostEl = document.getElementById('host-controls');
  const waitingEl = document.getElementById('waiting-list');
  const lockBtn = document.getElementById('lock');
  const muteAllBtn = document.getElementById('mute-all');
  const endBtn = document.getElementById('end');
  const micBtn = document.getElementById('mic');
  const cameraBtn = document.getElementById('camera');
  const devices = window.bedsideDevices;
  const previewEl = document.getElementById('preview');
  const levelEl = document.getElementById('level');
  const cameraSelect = document.getElementById('camera-select');
  const micSelect = document.getElementById('mic-select');
  const speakerSelect = document.getElementById('speaker-select');
  const audioOnlyEl = document.getElementById('audio-only');
  const deviceHelpEl = document.getElementById('device-help');
  if (passcodeEl && linkPasscode) passcodeEl.value = linkPasscode;

  // The visit page: when the visit is, and what is happening, in words for a patient. The
  // token's claims are read here only to say when; the node checks them.
  const visitEl = document.getElementById('visit');
  const claims = (() => {
    try {
      const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
      return JSON.parse(atob(part));
    } catch (e) {
      return {};
    }
  })();
  const localTime = (secs) => new Date(secs * 1000).toLocaleString([i18n.lang], {
    weekday: 'long', day: 'numeric', month: 'long', hour: '2-digit', minute: '2-digit',
  });
  const when = () => (claims.start ? t('when', { date: localTime(claims.start) }) : '');
  const PAGES = {
    'too-early': () => [t('tooEarlyTitle'), t('tooEarlyDetail', { when: when(), opens: localTime(claims.nbf) })],
    waiting: () => [t('waitingTitle'), t('waitingDetail', { when: when() })],
    ended: () => [t('endedTitle'), t('endedDetail')],
    cancelled: () => [t('cancelledTitle'), t('cancelledDetail')],
    replaced: () => [t('replacedTitle'), t('replacedDetail')],
    elsewhere: () => [t('elsewhereTitle'), t('elsewhereDetail')],
  };
  function showPage(name) {
    state.page = name;
    if (!visitEl) return;
    const page = PAGES[name];
    visitEl.hidden = !page;
    if (!page) return;
    const [title, detail] = page();
    document.getElementById('visit-title').textContent = title;
    document.getElementById('visit-detail').textContent = detail;
  }

  // Exposed for automated browser tests and for support staff debugging a visit.
  const state = {
    participantId: null,
    role: null,
    waiting: false,
    waitingRoom: [], // hosts: [{ id, displayName }]
    locked: false,
    muted: false, // by a host: the node drops this participant's audio until they unmute
    micOn: true,
    cameraOn: true,
    endToEnd: false,
    chat: [], // { from, displayName, text, mine }
    participants: new Map(), // id -> { role, stream }
    events: [],
    errors,
    mediaConnected: false,
    mediaPath: null,
    iceServers: [],
    // The devices in use (ids), the microphone's latest level (0-1), and whether the
    // participant chose to join without a camera.
    devices: { camera: null, microphone: null, speaker: null },
    level: 0,
    audioOnly: false,
    deviceHelp: null,
    closed: false,
    reconnects: 0,
    page: null, // too-early, waiting, ended, cancelled, replaced, elsewhere: the visit page shown
    activeSpeaker: null, // the participant whose voice the others hear now
    quality: {}, // participant id -> good, fair or poor: how their video arrives here
    layout: 'grid', // or speaker: the one speaking large, the others small
    banner: null, // the notice shown while the connection is interrupted
    interruptions: 0, // times the banner came up
    iceRestarts: 0, // ICE restarts this page asked for
  };
  window.bedside = { state, stats: () => summarizeStats() };

  let ws = null;
  let pc = null;
  let local = null;
  // What carries my camera and microphone to the node: a device switch replaces their track.
  let cameraSender = null;
  let micSender = null;
  let chain = Promise.resolve();
  let chatChannel = null;
  const chatLog = document.getElementById('chat-log');
  const chatText = document.getElementById('chat-text');
  const chatSend = document.getElementById('chat-send');

  // Chat lines are text nodes only: nothing a participant types becomes markup.
  function addChat(entry) {
    state.chat.push(entry);
    if (!chatLog) return;
    const li = document.createElement('li');
    const who = document.createElement('b');
    who.textContent = entry.mine ? t('you') : (entry.displayName || t('participant', { id: entry.from }));
    li.append(who, document.createTextNode(`: ${entry.text}`));
    chatLog.append(li);
  }

  function sendChat(text) {
    if (!text || !chatChannel || chatChannel.readyState !== 'open') return false;
    chatChannel.send(text);
    addChat({ from: state.participantId, text, mine: true });
    return true;
  }
  window.bedside.chat = sendChat;

  // The status line: `render` is called again when the reader switches language.
  let status = null;
  function setStatus(render, isError) {
    status = { render, isError };
    statusEl.textContent = render();
    statusEl.className = isError ? 'error' : '';
  }
  const say = (key, vars, isError) => setStatus(() => t(key, vars), isError);

  // While the connection is interrupted, a banner says so and that nothing needs doing.
  const bannerEl = document.getElementById('banner');
  function showBanner(on) {
    if (on && !state.banner) state.interruptions += 1;
    state.banner = on ? 'interrupted' : null;
    if (!bannerEl) return;
    bannerEl.hidden = !on;
    bannerEl.textContent = on ? t('interrupted') : '';
  }

  function send(message) {
    if (ws && ws.readyState === WebSocket.OPEN) {
      ws.send(JSON.stringify(Object.assign({ v: 1 }, message)));
    }
  }

  function tile(id, label, stream, muted) {
    let el = document.querySelector(`.tile[data-participant="${id}"]`);
    if (!el) {
      el = document.createElement('div');
      el.className = 'tile';
      el.dataset.participant = id;
      const video = document.createElement('video');
      video.autoplay = true;
      video.playsInline = true;
      video.muted = !!muted;
      if (state.devices.speaker && video.setSinkId) video.setSinkId(state.devices.speaker).catch(() => {});
      const caption = document.createElement('span');
      caption.textContent = label;
      el.append(video, caption);
      // The role comes from the node (the token), never from the name typed: nobody passes
      // for the clinician by calling themselves "Dr. ...".
      const role = roleName((state.participants.get(id) || {}).role);
      if (role && id !== 'self' && !id.endsWith('-screen')) {
        const badge = document.createElement('span');
        badge.className = 'role';
        badge.textContent = role;
        el.append(badge);
      }
      if (state.role === 'host' && id.endsWith('-screen') && id !== 'self-screen') {
        const stop = document.createElement('button');
        stop.textContent = t('stopShare');
        stop.className = 'expel stop-share';
        stop.addEventListener('click', () => send({ type: 'stop-share', participantId: id.slice(0, -'-screen'.length) }));
        el.append(stop);
      } else if (state.role === 'host' && id !== 'self') {
        // Host controls on each tile; the node checks the role again.
        const mute = document.createElement('button');
        mute.textContent = t('mute');
        mute.className = 'mute';
        mute.addEventListener('click', () => send({ type: 'mute', participantId: id }));
        const expel = document.createElement('button');
        expel.textContent = t('remove');
        expel.className = 'expel';
        expel.addEventListener('click', () => send({ type: 'expel', participantId: id }));
        el.append(mute, expel);
      }
      tilesEl.append(el);
      feature();
      if (viewObserver && id !== 'self' && !id.endsWith('-screen')) viewObserver.observe(video);
    }
    if (stream) {
      const video = el.querySelector('video');
      if (video.srcObject !== stream) video.srcObject = stream;
    }
    return el;
  }

  // Each remote video is asked for no larger a picture than its tile shows (docs/signaling.md):
  // a thumbnail takes the lowest simulcast layer and leaves the bandwidth to the others.
  const views = new Map();
  const viewObserver = window.ResizeObserver ? new ResizeObserver(() => reportViews()) : null;
  function viewQuality(video) {
    const pixels = video.getBoundingClientRect().height * (window.devicePixelRatio || 1);
    // The layers are 180, 360 and 720 pixels high: a tile gets the one it shows without
    // blurring (up to about 1.2x enlarged).
    if (pixels <= 216) return 'low';
    return pixels <= 432 ? 'medium' : 'high';
  }
  function reportViews() {
    if (!state.participantId) return;
    document.querySelectorAll('.tile[data-participant^="p"]').forEach((el) => {
      const id = el.dataset.participant;
      if (id.endsWith('-screen')) return;
      const quality = viewQuality(el.querySelector('video'));
      if (views.get(id) === quality) return;
      views.set(id, quality);
      send({ type: 'view', participantId: id, quality });
    });
  }

  function removeTile(id) {
    const el = document.querySelector(`.tile[data-participant="${id}"]`);
    if (el) el.remove();
    feature();
  }

  // Grid: everyone the same size. Speaker: the one speaking (else the first other person,
  // else me) fills the row, the others line up small below.
  const layoutBtn = document.getElementById('layout');
  function setLayout(name) {
    state.layout = name;
    tilesEl.classList.toggle('speaker', name === 'speaker');
    if (layoutBtn) layoutBtn.setAttribute('aria-pressed', String(name === 'speaker'));
    feature();
  }
  function feature() {
    const tiles = [...tilesEl.querySelectorAll('.tile')];
    const wanted = state.layout === 'speaker'
      ? tiles.find((el) => el.dataset.participant === state.activeSpeaker)
        || tiles.find((el) => !el.dataset.participant.startsWith('self'))
        || tiles[0]
      : null;
    tiles.forEach((el) => el.classList.toggle('featured', el === wanted));
  }

  async function join() {
    if (tokenInQuery) {
      say('unsafeLink', null, true);
      return;
    }
    if (!room || !token) {
      say('incompleteLink', null, true);
      return;
    }
    joinBtn.disabled = true;
    // The preview may still wait for the camera (or for the patient to allow it): say so
    // rather than seem to ignore the press.
    if (!local) say('startingCamera');
    await devicesReady;
    if (!local) {
      await openDevices();
      if (!local) say('noDevices', null, true);
    }
    if (previewEl) previewEl.hidden = true;
    if (audioOnlyEl) audioOnlyEl.disabled = true;
    for (const id of ['check', 'check-result']) {
      const el = document.getElementById(id);
      if (el) el.hidden = true;
    }
    if (local) tile('self', label('self'), local, true);
    if (micBtn) micBtn.disabled = !(local && local.getAudioTracks().length);
    if (cameraBtn) cameraBtn.disabled = !(local && local.getVideoTracks().length);
    const displayName = nameEl ? nameEl.value.trim() : '';
    const passcode = passcodeEl ? passcodeEl.value.trim() : linkPasscode;
    joinMessage = { type: 'join', room, token };
    if (displayName) joinMessage.displayName = displayName;
    if (passcode) joinMessage.passcode = passcode;
    connect();
  }

  // Reconnecting: when the connection drops (the visit's media node died, or is going away),
  // the page joins again by itself with the same link and passcode; the visit's other pods
  // take the room. It gives up after a minute, or when the node refused for good.
  const RECONNECT_DELAYS_MS = [500, 1000, 2000, 4000, 8000, 8000, 8000, 8000, 8000, 8000];
  let joinMessage = null;
  let reconnects = 0;
  let leaving = false;
  let refused = false;

  function connect() {
    say(reconnects ? 'reconnecting' : 'connecting', null, reconnects > 0);
    ws = new WebSocket(`wss://${location.host}/ws`);
    ws.onopen = () => send(joinMessage);
    ws.onmessage = (event) => {
      // Handle messages strictly in order: SDP steps must not interleave.
      chain = chain.then(() => handle(JSON.parse(event.data))).catch((e) => {
        state.errors.push(String(e));
        say('failed', { error: e }, true);
      });
    };
    ws.onclose = () => {
      if (!leaving && !refused && reconnects < RECONNECT_DELAYS_MS.length) {
        showBanner(true);
        dropMedia();
        setTimeout(connect, RECONNECT_DELAYS_MS[reconnects]);
        reconnects += 1;
        state.reconnects = reconnects;
        return;
      }
      state.closed = true;
      showBanner(false);
      leaveBtn.disabled = true;
      joinBtn.disabled = false;
      if (!statusEl.classList.contains('error')) say('disconnected');
    };
  }

  // A media path that drops while signaling holds (Wi-Fi to cellular, a blip): the banner at
  // once; if ICE has not found its way back after ICE_RESTART_AFTER_MS, an ICE restart (new
  // credentials, offered over the signaling that survived), again every ICE_RETRY_MS; and if
  // restarts cannot bring it back within REJOIN_AFTER_MS, a rejoin with the same link.
  const ICE_RESTART_AFTER_MS = 3000;
  const ICE_RETRY_MS = 10000;
  const REJOIN_AFTER_MS = 45000;
  let iceTimer = null;
  let interruptedAt = 0;
  const iceUp = (conn) => ['connected', 'completed'].includes(conn.iceConnectionState);

  function watchIce() {
    if (!pc) return;
    if (iceUp(pc)) {
      clearTimeout(iceTimer);
      iceTimer = null;
      interruptedAt = 0;
      if (state.mediaConnected) showBanner(false);
      return;
    }
    const ice = pc.iceConnectionState;
    if ((ice === 'disconnected' || ice === 'failed') && !iceTimer) {
      interruptedAt = interruptedAt || Date.now();
      showBanner(true);
      const conn = pc;
      iceTimer = setTimeout(() => restartIce(conn), ice === 'failed' ? 0 : ICE_RESTART_AFTER_MS);
    }
  }

  function restartIce(conn) {
    iceTimer = null;
    if (conn !== pc || leaving || iceUp(conn)) return;
    if (Date.now() - interruptedAt > REJOIN_AFTER_MS) {
      if (ws) ws.close();
      return;
    }
    chain = chain.then(async () => {
      if (conn !== pc || conn.signalingState !== 'stable') return;
      const offer = await conn.createOffer({ iceRestart: true });
      await conn.setLocalDescription(offer);
      state.iceRestarts += 1;
      send({ type: 'offer', sdp: offer.sdp });
    }).catch((e) => state.errors.push(String(e)));
    iceTimer = setTimeout(() => restartIce(conn), ICE_RETRY_MS);
  }

  // The media of a dropped connection: the camera stays on, the others' tiles go until the
  // new connection brings them back.
  function dropMedia() {
    state.mediaConnected = false;
    clearTimeout(iceTimer);
    iceTimer = null;
    interruptedAt = 0;
    if (pc) pc.close();
    pc = null;
    chatChannel = null;
    tracks.clear();
    counted.clear();
    for (const id of state.participants.keys()) removeTile(id);
    state.participants.clear();
  }

  // End to end: a worker seals every outgoing frame and opens every incoming one.
  let e2eWorker = null;
  const scriptTransform = 'RTCRtpScriptTransform' in window;

  async function startEndToEnd() {
    const enc = new TextEncoder();
    const base = await crypto.subtle.importKey('raw', enc.encode(e2eSecret), 'HKDF', false, ['deriveBits']);
    const key = await crypto.subtle.deriveBits(
      { name: 'HKDF', hash: 'SHA-256', salt: enc.encode('bedside-e2e'), info: enc.encode(room) }, base, 256);
    e2eWorker = new Worker('/e2e-worker.js');
    e2eWorker.postMessage({ key });
  }

  function protect(senderOrReceiver, op, kind) {
    if (!e2eWorker) return;
    if (scriptTransform) {
      senderOrReceiver.transform = new RTCRtpScriptTransform(e2eWorker, { op, kind });
    } else {
      const { readable, writable } = senderOrReceiver.createEncodedStreams();
      e2eWorker.postMessage({ op, kind, readable, writable }, [readable, writable]);
    }
  }

  async function startMedia() {
    if (state.endToEnd && !e2eWorker) await startEndToEnd();
    pc = new RTCPeerConnection({ iceServers: state.iceServers, encodedInsertableStreams: !!state.endToEnd && !scriptTransform });
    pc.oniceconnectionstatechange = watchIce;
    pc.onicecandidate = (e) => send({ type: 'candidate', candidate: e.candidate ? e.candidate.candidate : '' });
    pc.ontrack = (e) => {
      protect(e.receiver, 'decrypt', e.track.kind);
      const stream = e.streams[0];
      if (!stream) return;
      const id = stream.id;
      tracks.set(e.track.id, id);
      const entry = state.participants.get(id) || { role: 'participant' };
      entry.stream = stream;
      state.participants.set(id, entry);
      tile(id, label(id), stream, false);
    };
    // The data channel carries chat (relayed by the node, never stored), and gives every
    // client, observers included, something to negotiate.
    chatChannel = pc.createDataChannel('bedside');
    chatChannel.onmessage = (e) => {
      try {
        const m = JSON.parse(e.data);
        if (m.type === 'chat') addChat({ from: m.from, displayName: m.displayName, text: m.text, mine: false });
      } catch (_) { /* not ours */ }
    };
    if (local) {
      const [audio] = local.getAudioTracks();
      const [video] = local.getVideoTracks();
      if (audio) {
        micSender = pc.addTransceiver(audio, { direction: 'sendonly', streams: [local] }).sender;
        protect(micSender, 'encrypt', 'audio');
      }
      if (video) {
        // Three simulcast layers: the node picks one per receiver from its bandwidth.
        const sent = pc.addTransceiver(video, {
          direction: 'sendonly',
          streams: [local],
          sendEncodings: [
            { rid: 'l', scaleResolutionDownBy: 4, maxBitrate: 150000 },
            { rid: 'm', scaleResolutionDownBy: 2, maxBitrate: 500000 },
            { rid: 'h', maxBitrate: 1500000 },
          ],
        });
        protect(sent.sender, 'encrypt', 'video');
        cameraSender = sent.sender;
      }
    }
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    send({ type: 'offer', sdp: offer.sdp });
  }

  async function handle(message) {
    state.events.push(message.type);
    switch (message.type) {
      case 'waiting':
        state.participantId = message.participantId;
        state.waiting = true;
        leaveBtn.disabled = false;
        say('inWaitingRoom');
        showPage('waiting');
        break;
      case 'waiting-room':
        state.waitingRoom = message.waiting;
        renderWaiting();
        break;
      case 'locked':
        state.locked = message.locked;
        if (lockBtn) lockBtn.textContent = t(message.locked ? 'unlock' : 'lock');
        break;
      case 'muted':
        state.muted = true;
        setMic(false);
        say('hostMuted');
        break;
      case 'share-stopped':
        stopSharing();
        say('shareStopped');
        break;
      case 'meeting-ending':
        say('endsIn', { minutes: Math.ceil(message.inSeconds / 60) });
        break;
      case 'joined':
        reconnects = 0;
        showPage(null);
        state.participantId = message.participantId;
        state.waiting = false;
        state.role = message.role;
        state.endToEnd = !!message.endToEnd;
        // The tenant's TURN relay, with a credential for this join only: the last resort of
        // networks that let nothing but TCP 443 out.
        state.iceServers = Array.isArray(message.iceServers) ? message.iceServers : [];
        // A new join (a reconnect): the node knows nothing of the tiles yet.
        views.clear();
        setTimeout(reportViews, 0);
        if (state.endToEnd && !e2eSecret) {
          say('needsKey', null, true);
          leave();
          return;
        }
        if (noticeEl && state.endToEnd) {
          noticeEl.dataset.i18n = 'noticeEndToEnd';
          noticeEl.textContent = t('noticeEndToEnd');
        }
        if (hostEl) hostEl.hidden = message.role !== 'host';
        for (const p of message.participants) {
          state.participants.set(p.id, { role: p.role, displayName: p.displayName });
          tile(p.id, label(p.id), null, false);
        }
        renderPeople();
        leaveBtn.disabled = false;
        say('joinedAs', { role: t(`role_${message.role}`) });
        await startMedia();
        break;
      case 'answer':
        await pc.setRemoteDescription({ type: 'answer', sdp: message.sdp });
        break;
      case 'offer': {
        await pc.setRemoteDescription({ type: 'offer', sdp: message.sdp });
        const answer = await pc.createAnswer();
        await pc.setLocalDescription(answer);
        send({ type: 'answer', sdp: answer.sdp });
        break;
      }
      case 'participant-joined':
        state.participants.set(message.participant.id, {
          role: message.participant.role,
          displayName: message.participant.displayName,
        });
        tile(message.participant.id, label(message.participant.id), null, false);
        renderPeople();
        break;
      case 'participant-left':
        state.participants.delete(message.participantId);
        removeTile(message.participantId);
        renderPeople();
        break;
      case 'track-added':
        break;
      case 'media-connected':
        state.mediaConnected = true;
        showBanner(false);
        state.mediaPath = message.path || 'udp';
        // TCP and the relay work through networks that block UDP, with more delay.
        setStatus(() => t('connected', { profile: message.srtpProfile }) +
          (PATH_NOTES[state.mediaPath] ? t(PATH_NOTES[state.mediaPath]) : ''));
        break;
      case 'error':
        state.errors.push(`${message.code}: ${message.message}`);
        setStatus(() => i18n.error(message.code, message.message), true);
        // Refused for good (expelled, denied, ended, wrong passcode...): no reconnecting.
        // "Not available" is the node saying "try again": the page does.
        if (message.fatal && message.code !== 'not-available') refused = true;
        if (message.code === 'visit-not-open-yet') showPage('too-early');
        if (message.code === 'token-expired') showPage('ended');
        if (message.code === 'visit-cancelled') showPage('cancelled');
        if (message.code === 'link-replaced') showPage('replaced');
        // Never rejoin by itself here: two windows would take the visit from each other.
        if (message.code === 'link-opened-elsewhere') showPage('elsewhere');
        break;
      case 'closing':
        setStatus(() => (i18n.lang === 'en' ? t('visitEnded', { reason: message.reason }) : t('visitEnded')), true);
        break;
      default:
        break;
    }
  }

  // Screen share: a second video track, declared to the node (`share {mid}`) before the offer
  // that carries it, so others see it as a screen and hosts can stop it.
  let screenTrack = null;
  async function shareScreen() {
    if (!pc || screenTrack) return;
    const display = await navigator.mediaDevices.getDisplayMedia({ video: true });
    [screenTrack] = display.getVideoTracks();
    screenTrack.onended = stopSharing;
    const transceiver = pc.addTransceiver(screenTrack, { direction: 'sendonly', streams: [display] });
    protect(transceiver.sender, 'encrypt', 'video');
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    send({ type: 'share', mid: transceiver.mid });
    send({ type: 'offer', sdp: offer.sdp });
    tile('self-screen', label('self-screen'), display, true);
  }

  function stopSharing() {
    if (screenTrack) screenTrack.stop();
    screenTrack = null;
    removeTile('self-screen');
  }

  // Hosts: who waits, with admit and deny.
  function renderWaiting() {
    if (!waitingEl) return;
    waitingEl.replaceChildren();
    for (const w of state.waitingRoom) {
      const li = document.createElement('li');
      li.dataset.participant = w.id;
      const name = document.createElement('span');
      name.textContent = w.displayName || t('guest', { id: w.id });
      const admit = document.createElement('button');
      admit.textContent = t('admit');
      admit.className = 'admit';
      admit.addEventListener('click', () => send({ type: 'admit', participantId: w.id }));
      const deny = document.createElement('button');
      deny.textContent = t('deny');
      deny.className = 'deny';
      deny.addEventListener('click', () => send({ type: 'deny', participantId: w.id }));
      li.append(name, admit, deny);
      waitingEl.append(li);
    }
  }

  // Hosts: who is in the visit, with their role (from the node), to mute or remove.
  function renderPeople() {
    const list = document.getElementById('people-list');
    if (!list || state.role !== 'host') return;
    list.replaceChildren();
    for (const [id, p] of state.participants) {
      if (id.endsWith('-screen')) continue;
      const li = document.createElement('li');
      li.dataset.participant = id;
      const name = document.createElement('span');
      name.textContent = `${label(id)}${roleName(p.role) ? ` (${roleName(p.role)})` : ''}`;
      li.append(name);
      if (p.role !== 'host') {
        for (const [text, type] of [[t('mute'), 'mute'], [t('remove'), 'expel']]) {
          const b = document.createElement('button');
          b.textContent = text;
          b.className = type;
          b.setAttribute('aria-label', `${text} ${label(id)}`);
          b.addEventListener('click', () => send({ type, participantId: id }));
          li.append(b);
        }
      }
      list.append(li);
    }
  }

  // Every half second, from the browser's own statistics: who speaks (the loudest remote voice
  // above a whisper, outlined; silence keeps the last speaker) and how well each person's
  // video arrives (a word on their tile: frame rate, loss since the last look, round trip).
  const tracks = new Map(); // remote track id -> participant id
  const counted = new Map(); // participant id -> { lost, received } at the last look
  function grade(id, video, rtt) {
    const before = counted.get(id) || { lost: 0, received: 0 };
    const lost = (video.packetsLost || 0) - before.lost;
    const received = (video.packetsReceived || 0) - before.received;
    counted.set(id, { lost: video.packetsLost || 0, received: video.packetsReceived || 0 });
    const loss = lost > 0 ? lost / (lost + received) : 0;
    const fps = video.framesPerSecond || 0;
    if (fps >= 10 && loss < 0.03 && rtt < 0.4) return 'good';
    if (fps >= 5 && loss < 0.1 && rtt < 1) return 'fair';
    return 'poor';
  }
  function showQuality(id, level) {
    state.quality[id] = level;
    const el = document.querySelector(`.tile[data-participant="${id}"]`);
    if (!el) return;
    let badge = el.querySelector('.quality');
    if (badge && badge.dataset.level === level) return;
    if (!badge) {
      badge = document.createElement('span');
      badge.className = 'quality';
      el.append(badge);
    }
    badge.dataset.level = level;
    badge.textContent = t(`quality_${level}`);
  }
  // A voice's level over the last half second (RMS from the energy the browser played), not
  // the level of the instant the stats are read: a voice between two syllables, or a browser
  // whose playout stuttered at that instant, is still heard as speaking.
  const played = new Map(); // remote track id -> [totalAudioEnergy, totalSamplesDuration]
  function levelSince(s) {
    const now = [s.totalAudioEnergy || 0, s.totalSamplesDuration || 0];
    const before = played.get(s.trackIdentifier);
    played.set(s.trackIdentifier, now);
    if (!before) return s.audioLevel || 0;
    const seconds = now[1] - before[1];
    return seconds > 0 ? Math.sqrt(Math.max(0, now[0] - before[0]) / seconds) : 0;
  }
  setInterval(async () => {
    if (!pc || !tracks.size) return;
    const report = await pc.getStats();
    let rtt = 0;
    report.forEach((s) => {
      if (s.type === 'candidate-pair' && s.nominated && s.currentRoundTripTime) rtt = s.currentRoundTripTime;
    });
    let loudest = null;
    let level = 0.02;
    report.forEach((s) => {
      const id = s.type === 'inbound-rtp' && tracks.get(s.trackIdentifier);
      if (!id) return;
      if (s.kind === 'audio') {
        const heard = levelSince(s);
        if (heard > level) {
          level = heard;
          loudest = id;
        }
      }
      if (s.kind === 'video' && s.packetsReceived) showQuality(id, grade(id, s, rtt));
    });
    if (loudest === null || loudest === state.activeSpeaker) return;
    state.activeSpeaker = loudest;
    document.querySelectorAll('.tile').forEach((el) => {
      el.classList.toggle('speaking', el.dataset.participant === loudest);
    });
    feature();
  }, 500);

  // Every 5 s, how the videos here arrive (height, frame rate, freezes since the last report)
  // and what this browser estimates it can send: numbers only, for the node's quality metrics
  // (docs/signaling.md#quality-reports). Nothing names anyone.
  const frozen = new Map(); // inbound-rtp id -> freezeCount at the last report
  setInterval(async () => {
    if (!pc || !state.mediaConnected) return;
    const report = await pc.getStats();
    const video = [];
    let freezes = 0;
    let sendEstimateBps;
    report.forEach((s) => {
      if (s.type === 'inbound-rtp' && s.kind === 'video' && s.frameHeight) {
        video.push({ height: Math.round(s.frameHeight), fps: Math.round(s.framesPerSecond || 0) });
        freezes += Math.max(0, (s.freezeCount || 0) - (frozen.get(s.id) || 0));
        frozen.set(s.id, s.freezeCount || 0);
      }
      if (s.type === 'candidate-pair' && s.nominated && s.availableOutgoingBitrate) {
        sendEstimateBps = Math.round(s.availableOutgoingBitrate);
      }
    });
    const message = { type: 'quality', video: video.slice(0, 16), freezes };
    if (sendEstimateBps) message.sendEstimateBps = sendEstimateBps;
    send(message);
  }, 5000);

  // My microphone and camera: their tracks are switched off, not stopped, so they come back at
  // once; the others hear silence and see black meanwhile. A participant a host muted asks the
  // node to let their audio through again.
  function setMic(on) {
    if (on && state.muted) {
      send({ type: 'unmute' });
      state.muted = false;
    }
    state.micOn = on;
    if (local) local.getAudioTracks().forEach((t) => { t.enabled = on; });
    if (micBtn) micBtn.textContent = t(on ? 'mute' : 'unmute');
  }

  function setCamera(on) {
    state.cameraOn = on;
    if (local) local.getVideoTracks().forEach((t) => { t.enabled = on; });
    if (cameraBtn) cameraBtn.textContent = t(on ? 'cameraOff' : 'cameraOn');
  }

  // The camera (unless audio only) and microphone chosen in the pickers: previewed before the
  // visit, with the microphone's level, so a patient sees and hears that they work.
  const videoSize = () => (low ? { width: 320, height: 180 } : { width: 1280, height: 720 });
  const pick = (id) => (id ? { deviceId: { exact: id } } : {});
  let stopMeter = () => {};
  let devicesReady = Promise.resolve();

  async function openDevices() {
    const audioOnly = !!(audioOnlyEl && audioOnlyEl.checked);
    state.audioOnly = audioOnly;
    try {
      local = await navigator.mediaDevices.getUserMedia({
        audio: pick(state.devices.microphone),
        video: audioOnly ? false : Object.assign(videoSize(), pick(state.devices.camera)),
      });
    } catch (e) {
      local = null;
      showDeviceHelp(devices.help(e.name));
      return;
    }
    showDeviceHelp(null);
    if (previewEl) {
      previewEl.srcObject = audioOnly ? null : local;
      previewEl.hidden = audioOnly || !!state.participantId;
    }
    watchLevel();
    await listDevices();
  }

  function showDeviceHelp(text) {
    state.deviceHelp = text;
    if (!deviceHelpEl) return;
    deviceHelpEl.hidden = !text;
    deviceHelpEl.textContent = text || '';
  }

  function watchLevel() {
    stopMeter();
    stopMeter = local ? devices.meter(local, (level) => {
      state.level = level;
      if (levelEl) levelEl.value = level;
    }) : () => {};
  }

  // The pickers, with the devices in use selected.
  async function listDevices() {
    const found = await devices.list();
    const inUse = (kind) => {
      const [track] = kind === 'audio' ? local.getAudioTracks() : local.getVideoTracks();
      return track ? track.getSettings().deviceId : null;
    };
    if (local) {
      state.devices.camera = inUse('video') || state.devices.camera;
      state.devices.microphone = inUse('audio') || state.devices.microphone;
    }
    devices.fill(cameraSelect, state.audioOnly ? [] : found.videoinput, state.devices.camera, t('camera'));
    devices.fill(micSelect, found.audioinput, state.devices.microphone, t('microphone'));
    // Choosing where sound plays needs setSinkId (not every browser has it).
    const canChooseSpeaker = 'setSinkId' in HTMLMediaElement.prototype;
    devices.fill(speakerSelect, canChooseSpeaker ? found.audiooutput : [], state.devices.speaker, t('speaker'));
  }

  // A device chosen in a picker: before the visit, the preview follows; in it, the new track
  // replaces the old one on its way to the node, without renegotiating or dropping the call.
  async function switchDevice(kind, deviceId) {
    if (!local) return;
    const video = kind === 'video';
    const constraints = video
      ? { video: Object.assign(videoSize(), pick(deviceId)) }
      : { audio: pick(deviceId) };
    let fresh;
    try {
      fresh = await navigator.mediaDevices.getUserMedia(constraints);
    } catch (e) {
      showDeviceHelp(devices.help(e.name));
      return;
    }
    const [track] = video ? fresh.getVideoTracks() : fresh.getAudioTracks();
    const [old] = video ? local.getVideoTracks() : local.getAudioTracks();
    track.enabled = video ? state.cameraOn : state.micOn;
    const sender = video ? cameraSender : micSender;
    if (sender) await sender.replaceTrack(track);
    if (old) {
      local.removeTrack(old);
      old.stop();
    }
    local.addTrack(track);
    if (video) state.devices.camera = deviceId;
    else {
      state.devices.microphone = deviceId;
      watchLevel();
    }
  }

  function setSpeaker(deviceId) {
    state.devices.speaker = deviceId;
    document.querySelectorAll('video').forEach((v) => {
      if (v.setSinkId) v.setSinkId(deviceId).catch(() => {});
    });
  }

  function leave() {
    leaving = true;
    send({ type: 'leave' });
    if (ws) ws.close();
    if (pc) pc.close();
    if (local) local.getTracks().forEach((t) => t.stop());
    stopMeter();
    for (const id of state.participants.keys()) removeTile(id);
    removeTile('self');
    state.participants.clear();
    if (micBtn) micBtn.disabled = true;
    if (cameraBtn) cameraBtn.disabled = true;
    say('left');
  }

  // What flowed, per remote participant, and the negotiated ciphers.
  async function summarizeStats() {
    if (!pc) return null;
    const report = await pc.getStats();
    // candidates and pairs: what ICE tried, for a failing test or a support call to read.
    const out = { inbound: [], outbound: [], availableOutgoingBitrate: null, transport: null, sending: {}, candidates: [], pairs: [] };
    // Which devices the node gets my media from right now.
    for (const [name, sender] of [['camera', cameraSender], ['microphone', micSender]]) {
      if (sender && sender.track) out.sending[name] = sender.track.getSettings().deviceId || null;
    }
    const byId = new Map();
    report.forEach((s) => byId.set(s.id, s));
    report.forEach((s) => {
      if (s.type === 'inbound-rtp') {
        out.inbound.push({
          kind: s.kind, mid: s.mid, framesDecoded: s.framesDecoded || 0, bytesReceived: s.bytesReceived || 0,
          totalAudioEnergy: s.totalAudioEnergy || 0,
          frameWidth: s.frameWidth || 0, framesPerSecond: s.framesPerSecond || 0, freezeCount: s.freezeCount || 0,
          nackCount: s.nackCount || 0, packetsLost: s.packetsLost || 0,
          freezeSeconds: s.totalFreezesDuration || 0,
          from: tracks.get(s.trackIdentifier) || null,
        });
      }
      if (s.type === 'outbound-rtp' && s.kind === 'video') {
        // What my encoder sends per simulcast layer, and why not more: `bandwidth` is my
        // estimate of my uplink, `cpu` my machine (the node's choice is not in these).
        out.outbound.push({
          rid: s.rid || null, frameWidth: s.frameWidth || 0, framesEncoded: s.framesEncoded || 0,
          targetBitrate: s.targetBitrate || 0, active: s.active !== false,
          qualityLimitationReason: s.qualityLimitationReason || 'none',
        });
      }
      if (s.type === 'candidate-pair' && s.nominated && s.availableOutgoingBitrate) {
        out.availableOutgoingBitrate = s.availableOutgoingBitrate;
      }
      if (s.type === 'local-candidate' || s.type === 'remote-candidate') {
        const relay = s.relayProtocol ? `/${s.relayProtocol}` : '';
        out.candidates.push(`${s.type} ${s.candidateType} ${s.protocol}${relay} ${s.address}:${s.port}`);
      }
      if (s.type === 'candidate-pair') out.pairs.push(`${s.state} ${s.localCandidateId} ${s.remoteCandidateId}`);
      if (s.type === 'transport') {
        out.transport = { srtpCipher: s.srtpCipher, dtlsCipher: s.dtlsCipher, tlsVersion: s.tlsVersion, dtlsState: s.dtlsState };
        // The path ICE chose: the node's candidate of the selected pair says udp or tcp.
        const pair = byId.get(s.selectedCandidatePairId);
        const remote = pair && byId.get(pair.remoteCandidateId);
        out.transport.protocol = remote ? remote.protocol : null;
        // Ours: `relay` with relayProtocol `tls` is TURN over TLS on 443.
        const local = pair && byId.get(pair.localCandidateId);
        out.transport.localType = local ? local.candidateType : null;
        out.transport.localPort = local ? local.port : null;
        out.transport.relayProtocol = local ? local.relayProtocol || null : null;
      }
    });
    return out;
  }

  joinBtn.addEventListener('click', join);
  // Disabled in the page until here: on a slow phone the button shows before this script has
  // run, and a press then would be lost without a word.
  joinBtn.disabled = false;
  // Before joining: which paths reach the media node, in plain words (check.js).
  const checkBtn = document.getElementById('check');
  if (!room || !token || tokenInQuery) {
    if (checkBtn) checkBtn.hidden = true;
  } else if (window.bedsideCheck) {
    window.bedsideCheck.attach(checkBtn, document.getElementById('check-result'), () => ({ room, token }));
  }
  // Too early or too late by the link's own window: say so before anyone presses Join; a
  // page left open lets its patient join when the window opens.
  const nowSecs = Date.now() / 1000;
  if (claims.nbf && nowSecs < claims.nbf) {
    showPage('too-early');
    joinBtn.disabled = true;
    const opensInMs = (claims.nbf - nowSecs) * 1000;
    // Timers cannot wait longer than ~24 days; a page open that long is reloaded anyway.
    if (opensInMs < 2 ** 31 - 1) setTimeout(() => { joinBtn.disabled = false; showPage(null); }, opensInMs);
  } else if (claims.exp && nowSecs > claims.exp) {
    showPage('ended');
    joinBtn.disabled = true;
  }
  if (chatSend) {
    chatSend.addEventListener('click', () => {
      if (sendChat(chatText.value.trim())) chatText.value = '';
    });
  }
  if (lockBtn) lockBtn.addEventListener('click', () => send({ type: 'lock', locked: !state.locked }));
  if (muteAllBtn) muteAllBtn.addEventListener('click', () => send({ type: 'mute' }));
  if (endBtn) endBtn.addEventListener('click', () => send({ type: 'end' }));
  if (micBtn) micBtn.addEventListener('click', () => setMic(!state.micOn));
  if (layoutBtn) layoutBtn.addEventListener('click', () => setLayout(state.layout === 'speaker' ? 'grid' : 'speaker'));
  if (cameraBtn) cameraBtn.addEventListener('click', () => setCamera(!state.cameraOn));
  const shareBtn = document.getElementById('share');
  if (shareBtn) {
    shareBtn.addEventListener('click', () => {
      chain = chain.then(shareScreen).catch((e) => say('shareUnavailable', { error: e.name || e }, true));
    });
  }
  // Leaving asks first: a stray tap on a phone must not end a patient's visit.
  const leaveDialog = document.getElementById('leave-confirm');
  leaveBtn.addEventListener('click', () => {
    if (leaveDialog && leaveDialog.showModal && state.participantId) leaveDialog.showModal();
    else leave();
  });
  if (leaveDialog) {
    document.getElementById('leave-yes').addEventListener('click', () => { leaveDialog.close(); leave(); });
    document.getElementById('leave-no').addEventListener('click', () => leaveDialog.close());
  }
  // Device work one step at a time: a switch never races the preview or another switch.
  const onDevices = (step) => (devicesReady = devicesReady.then(step).catch((e) => {
    state.errors.push(String(e));
  }));
  if (cameraSelect) cameraSelect.addEventListener('change', () => onDevices(() => switchDevice('video', cameraSelect.value)));
  if (micSelect) micSelect.addEventListener('change', () => onDevices(() => switchDevice('audio', micSelect.value)));
  if (speakerSelect) speakerSelect.addEventListener('change', () => setSpeaker(speakerSelect.value));
  if (audioOnlyEl) {
    audioOnlyEl.addEventListener('change', () => {
      onDevices(() => {
        if (local) local.getTracks().forEach((t) => t.stop());
        return openDevices();
      });
    });
  }
  window.bedside.switchDevice = (kind, deviceId) => onDevices(() => switchDevice(kind, deviceId));
  // The language: the browser's, switchable here; everything shown is said again in it.
  const languageEl = document.getElementById('language');
  if (languageEl) {
    for (const [code, name] of Object.entries(i18n.names)) {
      const option = document.createElement('option');
      option.value = code;
      option.textContent = name;
      option.lang = code;
      option.selected = code === i18n.lang;
      languageEl.append(option);
    }
    languageEl.addEventListener('change', () => i18n.set(languageEl.value));
  }
  function relabel() {
    if (micBtn) micBtn.textContent = t(state.micOn ? 'mute' : 'unmute');
    if (cameraBtn) cameraBtn.textContent = t(state.cameraOn ? 'cameraOff' : 'cameraOn');
    if (lockBtn) lockBtn.textContent = t(state.locked ? 'unlock' : 'lock');
    document.querySelectorAll('.tile').forEach((el) => {
      const id = el.dataset.participant;
      el.querySelector('span').textContent = label(id);
      const badge = el.querySelector('.role');
      if (badge) badge.textContent = roleName((state.participants.get(id) || {}).role);
      const quality = el.querySelector('.quality');
      if (quality) quality.textContent = t(`quality_${quality.dataset.level}`);
      for (const [css, key] of [['.mute', 'mute'], ['.stop-share', 'stopShare'], ['.expel:not(.stop-share)', 'remove']]) {
        const button = el.querySelector(`button${css}`);
        if (button) button.textContent = t(key);
      }
    });
    if (status) setStatus(status.render, status.isError);
    if (state.banner && bannerEl) bannerEl.textContent = t(state.banner);
    showPage(state.page);
    renderWaiting();
    renderPeople();
  }
  i18n.apply();
  relabel();
  i18n.onChange(relabel);
  if (tokenInQuery) {
    say('unsafeLink', null, true);
  } else if (!room || !token) {
    say('openLink', null, true);
  } else if (state.page !== 'ended') {
    // The preview: a patient checks camera and microphone before the visit, even early.
    onDevices(openDevices);
  }
})();
