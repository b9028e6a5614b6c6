// bedside web client: cameras, microphones and speakers. The pre-join preview, the microphone
// level meter, the device pickers and the plain-words help when the browser refused access.
// Plain JavaScript, no build step; loaded before client.js, which drives it.
'use strict';

window.bedsideDevices = (() => {
  // What to tell a patient whose browser would not start the camera or microphone, by cause
  // and by browser: where the setting is, in the words that browser uses.
  function help(errorName) {
    const t = window.bedsideI18n.t;
    if (errorName === 'NotFoundError' || errorName === 'OverconstrainedError') return t('helpMissing');
    if (errorName === 'NotReadableError' || errorName === 'AbortError') return t('helpBusy');
    if (errorName !== 'NotAllowedError' && errorName !== 'SecurityError') return t('helpOther', { error: errorName });
    const ua = navigator.userAgent;
    if (/Firefox\//.test(ua)) return t('helpFirefox');
    if (/Edg\//.test(ua)) return t('helpEdge');
    if (/Safari\//.test(ua) && !/Chrome|Chromium/.test(ua)) return t('helpSafari');
    return t('helpChrome');
  }

  // The browser's devices by kind; names appear once the page may use the devices.
  async function list() {
    const found = { videoinput: [], audioinput: [], audiooutput: [] };
    const all = await navigator.mediaDevices.enumerateDevices();
    for (const d of all) {
      if (found[d.kind] && d.deviceId) found[d.kind].push(d);
    }
    return found;
  }

  // Fills a picker, keeping `current` selected; a picker with nothing to pick is hidden.
  function fill(select, devices, current, noun) {
    if (!select) return;
    select.replaceChildren();
    devices.forEach((d, i) => {
      const option = document.createElement('option');
      option.value = d.deviceId;
      option.textContent = d.label || `${noun} ${i + 1}`;
      option.selected = d.deviceId === current;
      select.append(option);
    });
    select.closest('label').hidden = devices.length === 0;
  }

  // The microphone's level, 0 to 1, handed to `onLevel` ten times a second until stopped.
  function meter(stream, onLevel) {
    const [track] = stream.getAudioTracks();
    const Context = window.AudioContext || window.webkitAudioContext;
    if (!track || !Context) return () => {};
    const context = new Context();
    const source = context.createMediaStreamSource(new MediaStream([track]));
    const analyser = context.createAnalyser();
    analyser.fftSize = 1024;
    source.connect(analyser);
    const samples = new Float32Array(analyser.fftSize);
    const timer = setInterval(() => {
      analyser.getFloatTimeDomainData(samples);
      let sum = 0;
      for (const s of samples) sum += s * s;
      // RMS, scaled so that speech fills most of the meter.
      onLevel(Math.min(1, Math.sqrt(sum / samples.length) * 4));
    }, 100);
    return () => {
      clearInterval(timer);
      context.close();
    };
  }

  return { help, list, fill, meter };
})();
