// vlmserve page: camera, live mode, read aloud, in-browser resize, time to first word.
// Loaded once through Gradio's head=; it works on Gradio's DOM by ids (#vlm-input,
// #vlm-chat ...) and event delegation, so Gradio re-rendering an element loses nothing.
// Nothing here calls out of the machine: speech is the browser's own speechSynthesis.
(() => {
  if (window.vlmPhone) return;
  const cfg = {
    maxEdge: 1024,        // as the server would resize anyway (--image-max-edge default)
    quality: 0.85,        // JPEG quality of a resized photo or a live frame
    liveMs: window.VLM_LIVE_INTERVAL_MS || 3000,  // live mode: one look every few seconds
    stillDiff: 12,        // mean grey-level change (0-255) below which the view is "still"
  };
  const $ = (sel, root = document) => root.querySelector(sel);
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const state = {
    mark: null,           // {t, kind}: when the question left (send / shutter / frame)
    turns: 0,             // bot answers seen so far
    firstWord: new Map(), // answer index -> "1.8 s from shutter to first word"
    spoken: 0,            // characters of the current answer already spoken
    speak: false,
    live: null,           // {stream, timer, prev, busy}
    liveSent: 0,          // frames live mode has sent (read by tests and the button)
    passing: false,       // our own change event on the upload input: let Gradio have it
  };

  // ---- the language of an answer, for the voice --------------------------------------
  function langOf(text) {
    const count = (re) => (text.match(re) || []).length;
    const kana = count(/[\u3040-\u30ff]/g), hangul = count(/[\uac00-\ud7af]/g);
    const han = count(/\p{Script=Han}/gu), cyrillic = count(/\p{Script=Cyrillic}/gu);
    const latin = count(/\p{Script=Latin}/gu), arabic = count(/\p{Script=Arabic}/gu);
    if (kana > 0 && kana + han >= latin) return "ja-JP";
    if (hangul > 0 && hangul >= latin) return "ko-KR";
    if (han > 0 && han >= latin / 4) return "zh-CN";
    if (cyrillic > latin) return "ru-RU";
    if (arabic > latin) return "ar-SA";
    const own = navigator.language || "en-US";  // Latin script: the reader's own, if Latin
    return /^(zh|ja|ko|ru|ar)/i.test(own) ? "en-US" : own;
  }

  // ---- speech -----------------------------------------------------------------------
  const canSpeak = () => "speechSynthesis" in window;
  function hush() {
    if (canSpeak()) window.speechSynthesis.cancel();
    state.spoken = 0;
  }
  function speakPart(answer, done) {
    if (!state.speak || !canSpeak() || answer.length <= state.spoken) return;
    let rest = answer.slice(state.spoken);
    if (!done) {  // whole sentences only while streaming
      const cut = Math.max(...[..."。！？!?.;；\n"].map((c) => rest.lastIndexOf(c)));
      if (cut < 0) return;
      rest = rest.slice(0, cut + 1);
    }
    state.spoken += rest.length;
    if (!rest.trim()) return;
    const u = new SpeechSynthesisUtterance(rest);
    u.lang = langOf(answer);
    window.speechSynthesis.speak(u);
  }

  // ---- pictures: shrink in the browser before upload ----------------------------------
  function canvasOf(w, h) {
    const c = document.createElement("canvas");
    c.width = w; c.height = h;
    return c;
  }
  const jpeg = (canvas) => new Promise((r) => canvas.toBlob(r, "image/jpeg", cfg.quality));
  async function drawJpeg(source, sw, sh, name) {
    const scale = Math.min(1, cfg.maxEdge / Math.max(sw, sh));
    const w = Math.max(1, Math.round(sw * scale)), h = Math.max(1, Math.round(sh * scale));
    const canvas = canvasOf(w, h), ctx = canvas.getContext("2d");
    ctx.fillStyle = "#fff";  // transparency over white, as the server does
    ctx.fillRect(0, 0, w, h);
    ctx.imageSmoothingQuality = "high";
    ctx.drawImage(source, 0, 0, w, h);
    return new File([await jpeg(canvas)], name, { type: "image/jpeg" });
  }
  async function shrink(file) {
    if (!/^image\/(jpeg|png|webp|bmp)$/.test(file.type)) return file;  // GIF, HEIC: as is
    let bmp;
    try { bmp = await createImageBitmap(file, { imageOrientation: "from-image" }); }
    catch (e) { return file; }  // the server says what is wrong with it
    try {
      if (Math.max(bmp.width, bmp.height) <= cfg.maxEdge) return file;  // small: untouched
      return await drawJpeg(bmp, bmp.width, bmp.height,
                            file.name.replace(/\.[^.]*$/, "") + ".jpg");
    } finally { bmp.close(); }
  }
  const uploadInput = () => $("#vlm-input input[type=file]");
  function handToGradio(files) {
    const input = uploadInput(), dt = new DataTransfer();
    files.forEach((f) => dt.items.add(f));
    input.files = dt.files;
    state.passing = true;
    try { input.dispatchEvent(new Event("change", { bubbles: true })); }
    finally { state.passing = false; }
  }
  // Every file chosen with the box's clip button is shrunk before Gradio uploads it.
  document.addEventListener("change", async (ev) => {
    const input = ev.target;
    if (state.passing || !(input instanceof HTMLInputElement) || input.type !== "file" ||
        !input.closest("#vlm-input") || !input.files || !input.files.length) return;
    ev.stopImmediatePropagation();
    handToGradio(await Promise.all([...input.files].map(shrink)));
  }, true);

  // ---- sending ----------------------------------------------------------------------
  const busy = () => !!$("#vlm-input button.stop-button");
  const thumbs = () => document.querySelectorAll("#vlm-input .thumbnail-item").length;
  function markSent(kind) {
    const m = state.mark;
    if (kind === "send" && m && m.kind !== "send" && !m.used && performance.now() - m.t < 60000)
      return;  // our own click after a shutter or a frame: time from the shutter
    state.mark = { t: performance.now(), kind, used: false };
    hush();
  }
  async function until(test, ms = 30000) {
    const end = performance.now() + ms;
    while (!test()) {
      if (performance.now() > end) return false;
      await sleep(50);
    }
    return true;
  }
  // The caller has marked the time it was taken; ``wanted`` says it still wants it sent
  // (live mode stopped meanwhile: the frame is dropped).
  async function sendPicture(file, wanted = () => true) {
    if (!(await until(() => !busy())) || !wanted()) return false;
    const before = thumbs();
    handToGradio([file]);
    if (!(await until(() => thumbs() > before))) return false;  // uploaded
    await sleep(50);
    const send = $("#vlm-input button.submit-button");
    if (!send || !wanted()) return false;
    send.click();
    return true;
  }
  document.addEventListener("click", (ev) => {
    const t = ev.target instanceof Element ? ev.target : null;
    if (!t) return;
    if (t.closest("#vlm-input button.submit-button")) markSent("send");
    if (t.closest("#vlm-settings-btn")) toggleSheet();
    if (t.closest("#vlm-speak-btn")) toggleSpeak();
    if (t.closest("#vlm-live-btn")) (state.live ? stopLive("stopped") : startLive());
  }, true);
  document.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey && ev.target instanceof Element &&
        ev.target.closest("#vlm-input textarea")) markSent("send");
  }, true);
  document.addEventListener("change", async (ev) => {  // the camera button's shot
    const input = ev.target;
    if (!(input instanceof HTMLInputElement) || input.id !== "vlm-camera" ||
        !input.files || !input.files.length) return;
    const shot = input.files[0];
    state.mark = { t: performance.now(), kind: "shutter", used: false };
    hush();
    input.value = "";
    await sendPicture(await shrink(shot));
  });

  // ---- controls -------------------------------------------------------------------
  // Classes go on the elements themselves: Gradio scopes the page's CSS to its container.
  function toggleSheet(open) {
    const sheet = $("#vlm-settings");
    if (!sheet) return;
    const on = sheet.classList.toggle("vlm-open", open);
    const btn = $("#vlm-settings-btn");
    if (btn) btn.setAttribute("aria-expanded", String(on));
  }
  function toggleSpeak() {
    state.speak = !state.speak && canSpeak();
    const btn = $("#vlm-speak-btn");
    if (btn) btn.setAttribute("aria-pressed", String(state.speak));
    if (!state.speak) hush();
    else state.spoken = answerText(lastAnswer()).length;  // from the next words on
  }
  function note(text) {
    const el = $("#vlm-phone-note");
    if (el) el.textContent = text || "";
  }

  // ---- live mode: a look every few seconds while the view holds still ------------------
  function sample(video) {
    const c = canvasOf(32, 24), ctx = c.getContext("2d", { willReadFrequently: true });
    ctx.drawImage(video, 0, 0, 32, 24);
    const px = ctx.getImageData(0, 0, 32, 24).data, grey = new Float32Array(32 * 24);
    for (let i = 0; i < grey.length; i++)
      grey[i] = 0.299 * px[4 * i] + 0.587 * px[4 * i + 1] + 0.114 * px[4 * i + 2];
    return grey;
  }
  const change = (a, b) => a.reduce((s, v, i) => s + Math.abs(v - b[i]), 0) / a.length;
  async function startLive() {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      note("The camera needs HTTPS on a phone: see README (vlmserve cert).");
      return;
    }
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia(
        { video: { facingMode: { ideal: "environment" }, width: { ideal: 1280 } },
          audio: false });
    } catch (e) {
      note(`No camera: ${e.name || e}`);
      return;
    }
    const video = $("#vlm-live-view");
    video.srcObject = stream;
    await video.play().catch(() => {});
    state.live = { stream, prev: null, busy: false,
                   timer: setInterval(liveTick, cfg.liveMs) };
    video.classList.add("vlm-on");
    $("#vlm-live-btn").setAttribute("aria-pressed", "true");
    note("Live: hold still to ask");
  }
  function stopLive(why) {
    const live = state.live;
    if (!live) return;
    clearInterval(live.timer);
    live.stream.getTracks().forEach((t) => t.stop());
    const video = $("#vlm-live-view");
    if (video) { video.srcObject = null; video.classList.remove("vlm-on"); }
    state.live = null;
    const btn = $("#vlm-live-btn");
    if (btn) btn.setAttribute("aria-pressed", "false");
    note(why === "hidden" ? "Live stopped (page left)" : "");
  }
  async function liveTick() {
    const live = state.live, video = $("#vlm-live-view");
    if (!live || live.busy || !video || video.readyState < 2) return;
    if (document.hidden) return stopLive("hidden");
    if (busy() || (canSpeak() && state.speak && window.speechSynthesis.speaking)) return;
    const now = sample(video), prev = live.prev;
    live.prev = now;
    if (!prev || change(now, prev) > cfg.stillDiff) return;  // moving: look again later
    live.busy = true;
    try {
      const frame = await drawJpeg(video, video.videoWidth, video.videoHeight,
                                   `live-${state.liveSent + 1}.jpg`);
      state.mark = { t: performance.now(), kind: "frame", used: false };
      hush();
      const fresh = $("#vlm-new-chat");  // each look is a new question about a new frame
      if (fresh) {
        fresh.click();
        await until(() => !$("#vlm-chat .message-row"), 5000);
      }
      if (await sendPicture(frame, () => state.live === live)) state.liveSent += 1;
    } finally { live.busy = false; }
  }
  document.addEventListener("visibilitychange", () => { if (document.hidden) stopLive("hidden"); });
  window.addEventListener("pagehide", () => stopLive("hidden"));

  // ---- watching the answers: first word, read aloud ---------------------------------
  const answers = () => document.querySelectorAll("#vlm-chat .message-row.bot-row");
  const lastAnswer = () => { const a = answers(); return a.length ? a[a.length - 1] : null; };
  function answerText(row) {
    if (!row) return "";
    const copy = row.cloneNode(true);
    copy.querySelectorAll(".vlm-stats, .vlm-phase, button, img").forEach((e) => e.remove());
    const text = copy.textContent.trim();
    return text === "…" ? "" : text;
  }
  function onChange() {
    watchDock();
    const rows = answers();
    if (rows.length > state.turns) {  // a new answer has started
      state.turns = rows.length;
      state.spoken = 0;
    } else if (rows.length < state.turns) {  // new chat
      state.turns = rows.length;
      state.firstWord.clear();
    }
    const row = lastAnswer(), index = rows.length - 1;
    if (!row) return;
    const text = answerText(row), done = !!row.querySelector(".vlm-stats");
    if (text && state.mark && !state.mark.used) {
      state.mark.used = true;
      const s = ((performance.now() - state.mark.t) / 1000).toFixed(1);
      state.firstWord.set(index, `${s} s from ${state.mark.kind} to first word`);
    }
    if (text) speakPart(text, done);
    rows.forEach((r, i) => {  // keep each answer's line (Gradio may re-render a row)
      const line = state.firstWord.get(i), stats = r.querySelector(".vlm-stats");
      if (!line || !stats || stats.querySelector(".vlm-first-word")) return;
      const span = document.createElement("span");
      span.className = "vlm-first-word";
      span.textContent = ` · ${line}`;
      stats.appendChild(span);
    });
  }
  let queued = false;
  new MutationObserver(() => {
    if (queued) return;
    queued = true;
    requestAnimationFrame(() => { queued = false; onChange(); });
  }).observe(document.documentElement, { childList: true, subtree: true, characterData: true });

  // The dock's height, so the phone layout sizes the chat above it.
  function measure() {
    const dock = $("#vlm-dock"), chat = $("#vlm-chat"), root = document.documentElement.style;
    if (dock) root.setProperty("--vlm-dock-h", `${Math.ceil(dock.getBoundingClientRect().height)}px`);
    if (chat) root.setProperty("--vlm-chat-top",
                               `${Math.ceil(chat.getBoundingClientRect().top + window.scrollY)}px`);
  }
  const sizer = new ResizeObserver(measure);
  window.addEventListener("resize", measure);
  let sized = null;
  function watchDock() {
    const dock = $("#vlm-dock");
    if (dock && dock !== sized) { sized = dock; sizer.observe(dock); }
  }

  window.vlmPhone = { cfg, state, langOf, shrink, stopLive, startLive,
                      get liveSent() { return state.liveSent; } };
})();
