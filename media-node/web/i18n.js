// bedside web client: every word a patient or clinician reads, in English and Spanish. The
// language follows the browser's, can be switched on the page, and is remembered on this device.
// Loaded first; client.js and devices.js ask it for their text.
'use strict';

window.bedsideI18n = (() => {
  const STRINGS = {
    en: {
      language: 'Language',
      namePlaceholder: 'Your name (shown to the others)',
      nameLabel: 'Your name, shown to the others in the visit',
      passcodePlaceholder: 'Meeting passcode',
      passcodeLabel: 'Meeting passcode, sent to you by the clinic',
      join: 'Join visit',
      mute: 'Mute',
      unmute: 'Unmute',
      cameraOff: 'Camera off',
      cameraOn: 'Camera on',
      share: 'Share screen',
      stopShare: 'Stop share',
      leave: 'Leave',
      stay: 'Stay',
      leaveQuestion: 'Leave the visit? You can come back with the same link while the visit is open.',
      notice: 'This visit is encrypted (AES-256) on its way between your browser and the clinic\'s media server. Nothing is recorded.',
      noticeEndToEnd: 'This visit is encrypted end to end: only the people in it can see and hear it, not even the clinic\'s media server. Nothing is recorded.',
      lock: 'Lock meeting',
      unlock: 'Unlock meeting',
      muteAll: 'Mute everyone',
      end: 'End meeting for all',
      waitingRoom: 'Waiting room',
      inTheVisit: 'In the visit',
      admit: 'Admit',
      deny: 'Deny',
      remove: 'Remove',
      chatPlaceholder: 'Message everyone (not saved anywhere)',
      chatLabel: 'Chat message',
      send: 'Send',
      devices: 'Your camera and microphone',
      preview: 'Your camera, as the others will see you',
      people: 'The people in the visit',
      level: 'Microphone level',
      camera: 'Camera',
      microphone: 'Microphone',
      speaker: 'Speaker',
      audioOnly: 'Join with audio only (no camera)',
      you: 'You',
      yourScreen: 'Your screen',
      screenOf: '{name}\'s screen',
      participant: 'Participant {id}',
      guest: 'Guest {id}',
      role_host: 'Host',
      role_observer: 'Observer',
      role_participant: 'participant',
      quality_good: 'Good connection',
      quality_fair: 'Fair connection',
      quality_poor: 'Poor connection',
      notConnected: 'Not connected',
      unsafeLink: 'This link carries its token where it is not safe (after "?"); ask the clinic for a new link.',
      incompleteLink: 'This link is incomplete: it needs a room and a token. Ask the clinic for a new link.',
      openLink: 'Open the visit link the clinic sent you (it names a room and carries a token).',
      startingCamera: 'Starting camera…',
      noDevices: 'Camera and microphone unavailable; joining without them.',
      connecting: 'Connecting…',
      reconnecting: 'Connection lost; reconnecting…',
      interrupted: 'Your connection was interrupted. Reconnecting… you do not need to do anything.',
      checkConnection: 'Check my connection',
      checking: 'Checking your connection… this takes a few seconds.',
      checkDirect: 'Your network lets video through directly. You are ready for the visit.',
      checkTcp: 'Your network blocks UDP: the visit will run over TCP and may be less smooth. For the best picture, ask your IT team to allow UDP port {port} to {host}.',
      checkRelay: 'Your network lets out only secure web traffic (TCP port 443): the visit will run through the clinic\'s relay. For a better picture, ask your IT team to allow UDP and TCP port {port} to {host}.',
      checkNone: 'Video cannot get through your network. Ask your IT team to allow UDP and TCP port {port} to {host}, or try another network (a phone\'s mobile data).',
      checkNoneRelay: 'Video cannot get through your network. Ask your IT team to allow UDP and TCP port {port} to {host}, or at least TCP port 443 to {relay}; or try another network (a phone\'s mobile data).',
      checkFailed: 'The check could not run: the clinic\'s server did not answer. Check that you are online and try again.',
      pageTitle: '{name} · video visit',
      speakerView: 'Speaker view',
      gridView: 'Grid view',
      disconnected: 'Disconnected',
      failed: 'Error: {error}',
      inWaitingRoom: 'You are in the waiting room. The clinician will let you in shortly.',
      hostMuted: 'The host muted you. Press Unmute to speak again.',
      shareStopped: 'The host stopped your screen share.',
      endsIn: 'This meeting ends in {minutes} minute(s).',
      needsKey: 'This visit is encrypted end to end: open the full link the clinic sent (it carries the key).',
      joinedAs: 'Joined as {role}; setting up encrypted media…',
      connected: 'Connected · encrypted ({profile})',
      overTcp: ' · over TCP (this network blocks UDP)',
      overRelay: ' · through the clinic\'s relay (this network allows only web traffic)',
      visitEnded: 'The visit ended: {reason}',
      left: 'You left the visit',
      shareUnavailable: 'Screen share unavailable: {error}',
      when: 'Your visit is on {date}. ',
      tooEarlyTitle: 'This visit has not opened yet',
      tooEarlyDetail: '{when}This link opens at {opens}; keep this page open and join then.',
      waitingTitle: 'Your clinician will let you in',
      waitingDetail: '{when}You are in the waiting room. Please stay on this page.',
      endedTitle: 'This visit has ended',
      endedDetail: 'This link no longer works. If you still need to be seen, please contact the clinic for a new link.',
      cancelledTitle: 'This visit was cancelled',
      cancelledDetail: 'The clinic cancelled this visit, so this link no longer works. If you still need to be seen, please contact the clinic.',
      replacedTitle: 'This link was replaced',
      replacedDetail: 'The clinic sent you a newer link for this visit. Please open that one; this link no longer works.',
      elsewhereTitle: 'This visit is open somewhere else',
      elsewhereDetail: 'Your link was opened in another window or on another device, and your visit goes on there. To use this one instead, reload this page; the other one will then leave the visit.',
      helpMissing: 'No camera or microphone was found. Plug one in and reload this page, or join with audio only.',
      helpBusy: 'Another program or browser tab is using your camera or microphone. Close it, then reload this page.',
      helpOther: 'Your camera or microphone could not be started ({error}). Reload this page to try again.',
      helpFirefox: 'Firefox blocked your camera and microphone. Click the camera icon at the left of the address bar, remove the block, and reload this page.',
      helpEdge: 'Edge blocked your camera and microphone. Click the lock icon at the left of the address bar, set Camera and Microphone to Allow, and reload this page.',
      helpSafari: 'Safari blocked your camera and microphone. Open Safari > Settings for This Website, set Camera and Microphone to Allow, and reload this page. On an iPhone: Settings > Safari > Camera and Microphone.',
      helpChrome: 'Your browser blocked your camera and microphone. Click the icon at the left of the address bar (a lock or a camera), allow Camera and Microphone, and reload this page.',
    },
    es: {
      language: 'Idioma',
      namePlaceholder: 'Su nombre (lo verán los demás)',
      nameLabel: 'Su nombre, que verán los demás en la consulta',
      passcodePlaceholder: 'Código de la consulta',
      passcodeLabel: 'Código de la consulta que le envió la clínica',
      join: 'Entrar a la consulta',
      mute: 'Silenciar',
      unmute: 'Activar micrófono',
      cameraOff: 'Apagar cámara',
      cameraOn: 'Encender cámara',
      share: 'Compartir pantalla',
      stopShare: 'Dejar de compartir',
      leave: 'Salir',
      stay: 'Quedarme',
      leaveQuestion: '¿Salir de la consulta? Puede volver con el mismo enlace mientras la consulta esté abierta.',
      notice: 'Esta consulta va cifrada (AES-256) entre su navegador y el servidor de la clínica. No se graba nada.',
      noticeEndToEnd: 'Esta consulta va cifrada de extremo a extremo: solo quienes participan pueden verla y oírla, ni siquiera el servidor de la clínica. No se graba nada.',
      lock: 'Cerrar la consulta',
      unlock: 'Abrir la consulta',
      muteAll: 'Silenciar a todos',
      end: 'Terminar la consulta para todos',
      waitingRoom: 'Sala de espera',
      inTheVisit: 'En la consulta',
      admit: 'Dejar entrar',
      deny: 'Rechazar',
      remove: 'Sacar',
      chatPlaceholder: 'Mensaje para todos (no se guarda en ningún sitio)',
      chatLabel: 'Mensaje del chat',
      send: 'Enviar',
      devices: 'Su cámara y su micrófono',
      preview: 'Su cámara, tal como le verán los demás',
      people: 'Las personas en la consulta',
      level: 'Nivel del micrófono',
      camera: 'Cámara',
      microphone: 'Micrófono',
      speaker: 'Altavoz',
      audioOnly: 'Entrar solo con audio (sin cámara)',
      you: 'Usted',
      yourScreen: 'Su pantalla',
      screenOf: 'Pantalla de {name}',
      participant: 'Participante {id}',
      guest: 'Invitado {id}',
      role_host: 'Anfitrión',
      role_observer: 'Observador',
      role_participant: 'participante',
      quality_good: 'Buena conexión',
      quality_fair: 'Conexión regular',
      quality_poor: 'Mala conexión',
      notConnected: 'Sin conexión',
      unsafeLink: 'Este enlace lleva su código de acceso donde no es seguro (después de "?"); pida a la clínica un enlace nuevo.',
      incompleteLink: 'Este enlace está incompleto: le falta la sala o el código de acceso. Pida a la clínica un enlace nuevo.',
      openLink: 'Abra el enlace de la consulta que le envió la clínica.',
      startingCamera: 'Encendiendo la cámara…',
      noDevices: 'No hay cámara ni micrófono disponibles; entrará sin ellos.',
      connecting: 'Conectando…',
      reconnecting: 'Se perdió la conexión; volviendo a conectar…',
      interrupted: 'Se interrumpió su conexión. Volviendo a conectar… no tiene que hacer nada.',
      checkConnection: 'Comprobar mi conexión',
      checking: 'Comprobando su conexión… tarda unos segundos.',
      checkDirect: 'Su red deja pasar el video directamente. Está listo para la consulta.',
      checkTcp: 'Su red bloquea UDP: la consulta irá por TCP y puede verse menos fluida. Para la mejor imagen, pida a su equipo de informática que permita el puerto UDP {port} hacia {host}.',
      checkRelay: 'Su red solo deja salir tráfico web seguro (puerto TCP 443): la consulta irá a través del relé de la clínica. Para una imagen mejor, pida a su equipo de informática que permita los puertos UDP y TCP {port} hacia {host}.',
      checkNone: 'El video no puede atravesar su red. Pida a su equipo de informática que permita los puertos UDP y TCP {port} hacia {host}, o pruebe otra red (los datos móviles de un teléfono).',
      checkNoneRelay: 'El video no puede atravesar su red. Pida a su equipo de informática que permita los puertos UDP y TCP {port} hacia {host}, o al menos el puerto TCP 443 hacia {relay}; o pruebe otra red (los datos móviles de un teléfono).',
      checkFailed: 'No se pudo hacer la comprobación: el servidor de la clínica no respondió. Compruebe que tiene conexión e inténtelo de nuevo.',
      pageTitle: '{name} · consulta por video',
      speakerView: 'Vista de orador',
      gridView: 'Vista de cuadrícula',
      disconnected: 'Desconectado',
      failed: 'Error: {error}',
      inWaitingRoom: 'Está en la sala de espera. Su profesional de salud le dará paso en breve.',
      hostMuted: 'El anfitrión le silenció. Pulse «Activar micrófono» para volver a hablar.',
      shareStopped: 'El anfitrión detuvo su pantalla compartida.',
      endsIn: 'Esta consulta termina en {minutes} minuto(s).',
      needsKey: 'Esta consulta va cifrada de extremo a extremo: abra el enlace completo que le envió la clínica (lleva la clave).',
      joinedAs: 'Ha entrado como {role}; preparando el audio y el vídeo cifrados…',
      connected: 'Conectado · cifrado ({profile})',
      overTcp: ' · por TCP (esta red bloquea UDP)',
      overRelay: ' · a través del relé de la clínica (esta red solo permite tráfico web)',
      visitEnded: 'La consulta terminó.',
      left: 'Ha salido de la consulta',
      shareUnavailable: 'No se puede compartir la pantalla: {error}',
      when: 'Su consulta es el {date}. ',
      tooEarlyTitle: 'Esta consulta aún no ha empezado',
      tooEarlyDetail: '{when}Este enlace se abre el {opens}; deje esta página abierta y entre entonces.',
      waitingTitle: 'Su profesional de salud le dará paso',
      waitingDetail: '{when}Está en la sala de espera. Por favor, no cierre esta página.',
      endedTitle: 'Esta consulta ha terminado',
      endedDetail: 'Este enlace ya no funciona. Si todavía necesita atención, pida a la clínica un enlace nuevo.',
      cancelledTitle: 'Esta consulta se canceló',
      cancelledDetail: 'La clínica canceló esta consulta y este enlace ya no funciona. Si todavía necesita atención, póngase en contacto con la clínica.',
      replacedTitle: 'Este enlace fue sustituido',
      replacedDetail: 'La clínica le envió un enlace más reciente para esta consulta. Abra ese; este ya no funciona.',
      elsewhereTitle: 'Esta consulta está abierta en otro sitio',
      elsewhereDetail: 'Su enlace se abrió en otra ventana o en otro dispositivo, y la consulta sigue allí. Para usar este, vuelva a cargar esta página; el otro saldrá de la consulta.',
      helpMissing: 'No se encontró cámara ni micrófono. Conecte uno y vuelva a cargar esta página, o entre solo con audio.',
      helpBusy: 'Otro programa u otra pestaña está usando su cámara o su micrófono. Ciérrelo y vuelva a cargar esta página.',
      helpOther: 'No se pudo encender la cámara o el micrófono ({error}). Vuelva a cargar esta página para intentarlo de nuevo.',
      helpFirefox: 'Firefox bloqueó su cámara y su micrófono. Pulse el icono de la cámara a la izquierda de la barra de direcciones, quite el bloqueo y vuelva a cargar esta página.',
      helpEdge: 'Edge bloqueó su cámara y su micrófono. Pulse el candado a la izquierda de la barra de direcciones, elija Permitir para Cámara y Micrófono y vuelva a cargar esta página.',
      helpSafari: 'Safari bloqueó su cámara y su micrófono. Abra Safari > Ajustes para este sitio web, elija Permitir para Cámara y Micrófono y vuelva a cargar esta página. En un iPhone: Ajustes > Safari > Cámara y Micrófono.',
      helpChrome: 'Su navegador bloqueó su cámara y su micrófono. Pulse el icono a la izquierda de la barra de direcciones (un candado o una cámara), permita Cámara y Micrófono y vuelva a cargar esta página.',
    },
  };

  // What the node says when it refuses or removes someone, for readers of a language other
  // than the node's English (which names the cause more precisely).
  const ERRORS = {
    es: {
      'token-refused': 'Este enlace no es válido para esta consulta. Pida a la clínica un enlace nuevo.',
      'token-expired': 'Este enlace ya no funciona: la consulta terminó.',
      'visit-not-open-yet': 'Esta consulta aún no ha empezado.',
      'visit-cancelled': 'La clínica canceló esta consulta.',
      'link-replaced': 'La clínica le envió un enlace más reciente; abra ese.',
      'link-opened-elsewhere': 'Su enlace se abrió en otra ventana o dispositivo.',
      'room-full': 'La consulta está completa.',
      'meeting-locked': 'El anfitrión cerró la consulta; no puede entrar nadie más.',
      expelled: 'El anfitrión le sacó de la consulta.',
      denied: 'El anfitrión no le dejó entrar.',
      'meeting-ended': 'El anfitrión terminó la consulta.',
      'idle-timeout': 'Se desconectó por inactividad.',
      'passcode-refused': 'El código de la consulta no es correcto. Revise el mensaje de la clínica.',
      'passcode-cool-down': 'Demasiados códigos incorrectos desde esta red; espere unos minutos y vuelva a intentarlo.',
      'too-many-attempts': 'Demasiados intentos desde esta red; espere un minuto y vuelva a intentarlo.',
      'not-available': 'La consulta no está disponible ahora mismo; volviendo a intentarlo…',
      'media-encryption-refused': 'Su navegador no admite el cifrado que exige la clínica. Use una versión reciente de Chrome, Edge, Firefox o Safari.',
      'chat-refused': 'El mensaje no se pudo enviar.',
    },
  };

  const NAMES = { en: 'English', es: 'Español' };
  const listeners = [];
  const pick = (tag) => (tag || '').toLowerCase().slice(0, 2);
  let lang = (() => {
    let saved = null;
    try { saved = localStorage.getItem('bedside-language'); } catch (e) { /* private mode */ }
    if (saved && STRINGS[saved]) return saved;
    const wanted = (navigator.languages || [navigator.language]).map(pick).find((l) => STRINGS[l]);
    return wanted || 'en';
  })();

  // The text of `key` with {name} placeholders filled in.
  function t(key, vars) {
    const text = STRINGS[lang][key] ?? STRINGS.en[key] ?? key;
    return text.replace(/\{(\w+)\}/g, (_, name) => (vars && vars[name] !== undefined ? String(vars[name]) : ''));
  }

  // The node's message for a refusal, in the page's language.
  function error(code, english) {
    return (ERRORS[lang] && ERRORS[lang][code]) || english;
  }

  // The page's fixed text: data-i18n (text), data-i18n-placeholder, data-i18n-label (aria-label).
  function apply() {
    document.documentElement.lang = lang;
    // The tab's title too: the clinic's name (the page's heading) in the reader's language.
    const heading = document.querySelector('h1');
    if (heading) document.title = t('pageTitle', { name: heading.textContent });
    document.querySelectorAll('[data-i18n]').forEach((el) => { el.textContent = t(el.dataset.i18n); });
    document.querySelectorAll('[data-i18n-placeholder]').forEach((el) => { el.placeholder = t(el.dataset.i18nPlaceholder); });
    document.querySelectorAll('[data-i18n-label]').forEach((el) => { el.setAttribute('aria-label', t(el.dataset.i18nLabel)); });
  }

  function set(next) {
    if (!STRINGS[next] || next === lang) return;
    lang = next;
    try { localStorage.setItem('bedside-language', next); } catch (e) { /* private mode */ }
    apply();
    listeners.forEach((f) => f());
  }

  return {
    get lang() { return lang; },
    names: NAMES,
    t,
    error,
    apply,
    set,
    onChange: (f) => listeners.push(f),
  };
})();
