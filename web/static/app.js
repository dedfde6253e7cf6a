// Photo upscaler page: photos wait as cards with their estimate until "Upscale", then each card follows its
// job (queue, progress, time left, result); the choices, this browser's history, "download all", clearing and
// removing with undo.
"use strict";

(function () {
  const { t, tn, duration } = I18n;
  const app = document.getElementById("app");
  const jobsUrl = app.dataset.api;
  const api = jobsUrl.replace(/\/jobs$/, "");
  const maxBytes = Number(app.dataset.maxUploadBytes);
  const maxMb = app.dataset.maxUploadMb;
  const maxPixels = Number(app.dataset.maxPixels) || Infinity;
  const drop = document.getElementById("drop");
  const picker = document.getElementById("picker");
  const health = document.getElementById("health");
  const healthOperator = document.getElementById("health-operator");
  const selects = {
    scale: document.getElementById("scale"),
    denoise: document.getElementById("denoise"),
    faces: document.getElementById("faces"),
    fidelity: document.getElementById("face-fidelity"),
    format: document.getElementById("format"),
    model: document.getElementById("model"),
  };
  const estimate = document.getElementById("estimate");
  const list = document.getElementById("jobs");
  const downloadAll = document.getElementById("download-all");
  const startAll = document.getElementById("start-all");
  const clearFinished = document.getElementById("clear-finished");
  const choiceNote = document.getElementById("choice-note");
  const toast = document.getElementById("toast");
  const template = document.getElementById("job-template");

  const UNDO_MS = 5000;
  const cards = new Set();
  const pendingDeletes = new Map(); // job id -> timer, while an undo is still offered
  let options = { models: [], denoise: [], available: true, message: null, start_seconds: 0 };
  let lastPhoto = null; // {name, megapixels} of the photo chosen last, for the time estimate
  let available = true;
  // Browsers show these types; a file of one of them that does not decode is not a photo.
  const SHOWN_TYPES = /\.(jpe?g|png|webp|gif|bmp)$/i;
  const ACCEPTED = /\.(jpe?g|png|webp|gif|bmp|tiff?)$/i;
  // Uploads go one at a time so the first photo starts processing as early as possible.
  const uploadQueue = [];
  let uploading = false;

  // ---- choices ----

  function option(value, text) {
    const el = document.createElement("option");
    el.value = value;
    el.textContent = text;
    return el;
  }

  const KINDS = ["restore", "faithful", "fast"];
  const kindField = document.getElementById("kind-field");
  const strength = document.getElementById("denoise-strength");
  const strengthValue = document.getElementById("denoise-strength-value");

  function chosenKind() {
    const checked = kindField.querySelector("input[name=kind]:checked");
    return checked ? checked.value : null;
  }

  // The service's own picks (GET /api/options `table`: kind -> scale -> model id), shown and sent as they are.
  function modelFor(kind, scale) {
    const id = ((options.table || {})[kind] || {})[String(scale)];
    return id ? options.models.find((m) => m.id === id) || null : null;
  }

  function kindScales(kind) {
    return Object.keys((options.table || {})[kind] || {}).map(Number).sort((a, b) => a - b);
  }

  // A new kind keeps the chosen scale where it serves it; otherwise the nearest it does, and the page says so.
  function fillScales(event) {
    const previous = selects.scale.value || String((options.default || {}).scale || "");
    selects.scale.replaceChildren();
    const kind = chosenKind();
    const scales = kindScales(kind);
    for (const scale of scales) selects.scale.append(option(String(scale), t("scale_option", { n: scale })));
    choiceNote.hidden = true;
    if (scales.map(String).includes(previous)) {
      selects.scale.value = previous;
    } else if (scales.length && previous) {
      const wanted = Number(previous);
      const chosen = scales.find((s) => s >= wanted) || scales[scales.length - 1];
      selects.scale.value = String(chosen);
      if (event) {
        choiceNote.textContent = t("scale_changed", { kind: t(`kind_${kind}`), from: wanted, to: chosen });
        choiceNote.hidden = false;
      }
    }
    chooseModel();
  }

  // "Automatic" is the service's own pick (`table`); the others are every model of the kind serving the scale.
  function fillModels() {
    const kind = chosenKind();
    const scale = Number(selects.scale.value);
    const previous = selects.model.value;
    const auto = modelFor(kind, scale);
    const served = options.models.filter((m) => m.kind === kind && (m.scales || [m.scale]).includes(scale));
    selects.model.replaceChildren(option("", t("model_auto", { name: auto ? auto.id : "–" })));
    for (const m of served) selects.model.append(option(m.id, m.id));
    selects.model.value = served.some((m) => m.id === previous) ? previous : "";
    document.getElementById("model-field").hidden = served.length < 2;
  }

  // "FSRCNN-small_x3" -> "FSRCNN-small": the name people find in comparisons of upscalers.
  function familyName(model) {
    return String(model.id || model.family).replace(/_x\d+$/, "");
  }

  function selectedModel() {
    const kind = chosenKind();
    const scale = Number(selects.scale.value);
    const picked = selects.model.value && options.models.find((m) => m.id === selects.model.value);
    if (picked && picked.kind === kind && (picked.scales || [picked.scale]).includes(scale)) return picked;
    return modelFor(kind, scale);
  }

  // The same figure the service estimates with: what every job spends before its first tile, then the
  // model's measured rate per megapixel.
  function secondsFor(model, megapixels) {
    const perMp = model && model.seconds_per_megapixel;
    return perMp ? (Number(options.start_seconds) || 0) + perMp * megapixels : null;
  }

  const megapixelFormat = () => new Intl.NumberFormat(I18n.lang, { maximumSignificantDigits: 2 });

  function timeFor(model) {
    return lastPhoto
      ? t("estimate_photo", { time: duration(secondsFor(model, lastPhoto.megapixels)), name: lastPhoto.name, mp: megapixelFormat().format(lastPhoto.megapixels) })
      : t("estimate_per_mp", { time: duration(model.seconds_per_megapixel) });
  }

  function updateEstimate() {
    // Each kind's time at the chosen scale (or its own nearest), so that the choice is made knowing the cost.
    for (const kind of KINDS) {
      const el = document.getElementById(`kind-${kind}-time`);
      const input = document.getElementById(`kind-${kind}`);
      const scales = kindScales(kind);
      const model = modelFor(kind, selects.scale.value) || modelFor(kind, scales[0]);
      input.disabled = !scales.length;
      el.textContent = !scales.length ? t("kind_not_installed")
        : model && model.seconds_per_megapixel ? timeFor(model) : "";
      // The family that would run: "Faithful (LapSRN)" where LapSRN is what is installed.
      const shown = kind === chosenKind() ? selectedModel() || model : model;
      document.getElementById(`kind-${kind}-family`).textContent = shown ? t("kind_family", { family: shown.family_name || familyName(shown) }) : "";
    }
    const model = selectedModel();
    estimate.textContent = model && model.seconds_per_megapixel ? timeFor(model) : "";
    showLicence(model);
    for (const card of cards) if (card.el.dataset.state === "waiting") describeWaiting(card);
  }

  // The licence of the model that would run, and whom it credits (Creative Commons asks for the author's name
  // where a model is offered); a custom checkpoint's licence is unknown.
  function showLicence(model) {
    const line = document.getElementById("model-licence");
    const licence = model && model.licence;
    line.replaceChildren();
    if (!licence) return;
    const text = licence.id === "unknown" ? t("licence_unknown")
      : licence.attribution ? t("licence_by", { licence: licence.id, who: licence.attribution }) : licence.id;
    line.append(`${model.id}: `);
    if (licence.source) {
      const link = document.createElement("a");
      link.href = licence.source;
      link.rel = "noopener noreferrer";
      link.target = "_blank";
      link.textContent = text;
      line.append(link);
    } else {
      line.append(text);
    }
    if (licence.note) line.append(` (${licence.note})`);
  }

  // The slider replaces the noise levels for a model blended with its denoise twin (realesr-general-x4v3).
  function chooseModel() {
    fillModels();
    const model = selectedModel();
    const blended = Boolean(model && model.denoise_strength);
    document.getElementById("strength-field").hidden = !blended;
    document.getElementById("denoise-field").hidden = blended || !(options.denoise || []).length;
    updateEstimate();
  }

  function applyOptions(loaded) {
    options = { ...options, ...loaded };
    const models = options.models || [];
    const defaults = options.default || {};
    if ((options.denoise || []).length) {
      for (const level of options.denoise) selects.denoise.append(option(level, t(`denoise_${level}`)));
      if (defaults.denoise) selects.denoise.value = defaults.denoise;
      document.getElementById("denoise-field").hidden = false;
    }
    if (models.length) {
      const kind = defaults.kind || models[0].kind;
      const input = document.getElementById(`kind-${kind}`);
      if (input) input.checked = true;
      kindField.hidden = false;
      document.getElementById("scale-field").hidden = false;
      fillScales();
    }
    // Offered only where the service has the GFPGAN file; its licence note goes beside the option.
    if (options.faces && options.faces.available) {
      selects.fidelity.value = String(options.faces.default_fidelity);
      showFidelity();
      document.getElementById("faces-licence").textContent = options.faces.licence || "";
      document.getElementById("faces-field").hidden = false;
    }
    if (options.available === false) setUnavailable(options.message);
  }

  function setUnavailable(message) {
    available = false;
    health.textContent = message && I18n.lang === "en" ? sentence(message) : t("unavailable");
    health.hidden = false;
    // For whoever runs the server (often the person in front of it): where the reason is, no server paths.
    if (options.fix_command) {
      const [before, after] = t("unavailable_operator_command").split("{command}");
      const command = document.createElement("code");
      command.textContent = options.fix_command;
      healthOperator.replaceChildren(before, command, after || "");
    } else {
      healthOperator.textContent = t("unavailable_operator");
    }
    healthOperator.hidden = false;
    drop.setAttribute("aria-disabled", "true");
    drop.classList.add("disabled");
    picker.disabled = true;
    updateButtons();
  }

  async function loadOptions() {
    try {
      const response = await fetch(`${api}/options`, { headers: { Accept: "application/json" } });
      if (response.ok) applyOptions(await response.json());
    } catch (err) { /* an older service without choices: upload with its defaults */ }
  }

  selects.faces.addEventListener("change", () => { selects.fidelity.disabled = !selects.faces.checked; });
  const fidelityValue = document.getElementById("face-fidelity-value");
  const showFidelity = () => { fidelityValue.textContent = I18n.number(1).format(Number(selects.fidelity.value)); };
  selects.fidelity.addEventListener("input", showFidelity);
  selects.scale.addEventListener("change", () => { choiceNote.hidden = true; chooseModel(); });
  selects.model.addEventListener("change", chooseModel);
  kindField.addEventListener("change", fillScales);
  const showStrength = () => { strengthValue.textContent = I18n.number(1).format(Number(strength.value)); };
  strength.addEventListener("input", showStrength);
  showStrength();

  function currentChoices() {
    const choices = { format: selects.format.value };
    if (!document.getElementById("scale-field").hidden) {
      choices.kind = chosenKind();
      choices.scale = selects.scale.value;
      const model = selectedModel();
      if (model) choices.model = model.id;
    }
    if (!document.getElementById("denoise-field").hidden) choices.denoise = selects.denoise.value;
    if (!document.getElementById("strength-field").hidden) choices.denoise_strength = strength.value;
    if (!document.getElementById("faces-field").hidden && selects.faces.checked) {
      choices.faces = "on";
      choices.face_fidelity = selects.fidelity.value;
    }
    return choices;
  }

  // ---- adding photos: each waits as a card until "Upscale" ----

  function addFiles(files) {
    if (!available) return;
    // New photos go at the top, above earlier ones and the history, in the order they came.
    const anchor = list.firstElementChild;
    for (const file of files) {
      const card = makeCard(file.name || "photo");
      card.file = file;
      list.insertBefore(card.el, anchor);
      if (file.size > maxBytes) { card.refuse(t("err_too_big", { size: (file.size / 1048576).toFixed(1), mb: maxMb })); continue; }
      if (file.size === 0) { card.refuse(t("err_empty")); continue; }
      if (!ACCEPTED.test(card.name) && !/^image\//.test(file.type)) { card.refuse(t("err_not_image", { name: card.name })); continue; }
      card.localUrl = URL.createObjectURL(file);
      card.el.dataset.state = "measuring";
      measure(card);
    }
    updateButtons();
  }

  function measure(card) {
    const img = new Image();
    img.onload = () => {
      if (card.removed) return;
      card.size = { width: img.naturalWidth, height: img.naturalHeight };
      const megapixels = (img.naturalWidth * img.naturalHeight) / 1e6;
      if (img.naturalWidth * img.naturalHeight > maxPixels) {
        card.refuse(t("err_too_many_pixels", { name: card.name, mp: megapixelFormat().format(megapixels), max: megapixelFormat().format(maxPixels / 1e6) }));
        return;
      }
      card.thumb.src = card.localUrl;
      lastPhoto = { name: card.name, megapixels };
      wait(card);
      updateEstimate();
    };
    img.onerror = () => {
      if (card.removed) return;
      // TIFF is read by the service but not shown by browsers: it waits without a size.
      if (SHOWN_TYPES.test(card.name) || !ACCEPTED.test(card.name)) { card.refuse(t("err_not_image", { name: card.name })); return; }
      showFileBadge(card);
      wait(card);
    };
    img.src = card.localUrl;
  }

  function wait(card) {
    card.el.dataset.state = "waiting";
    card.el.querySelector(".waiting-actions").hidden = false;
    // Marks need the photo shown at its own size: not for a TIFF, which browsers do not show.
    card.el.querySelector(".mark").hidden = !(card.size && card.localUrl);
    describeWaiting(card);
    updateButtons();
  }

  // The photo's size and, for the current choices, the model, the time and the result's size.
  function describeWaiting(card) {
    const size = card.size;
    if (!size) {
      card.setStatus(t("photo_size_unknown"));
    } else {
      const megapixels = (size.width * size.height) / 1e6;
      card.setStatus(t("photo_size", { size: `${size.width}×${size.height}`, mp: megapixelFormat().format(megapixels) }));
    }
    const model = selectedModel();
    if (!model) { card.setDetail(options.models.length ? t("no_choice") : t("ready")); return; }
    const scale = Number(selects.scale.value) || model.scale;
    const to = size ? `${size.width * scale}×${size.height * scale}` : "?";
    const seconds = size ? secondsFor(model, (size.width * size.height) / 1e6) : null;
    card.setDetail(seconds != null
      ? t("card_estimate", { scale, model: model.id, time: duration(seconds), to })
      : t("card_estimate_no_time", { scale, model: model.id, to }));
  }

  function start(card) {
    if (!available || card.el.dataset.state !== "waiting") return;
    card.el.querySelector(".waiting-actions").hidden = true;
    closePainter(card);
    card.el.dataset.state = "pending";
    card.setStatus(t("waiting_upload"));
    card.setDetail("");
    uploadQueue.push({ file: card.file, card, choices: currentChoices() });
    updateButtons();
    pumpUploads();
  }

  // A failed photo still in this browser goes again, with the choices as they are now.
  function retry(card) {
    if (card.jobId) { deleteJob(card.jobId); card.jobId = null; card.job = null; delete card.el.dataset.jobId; }
    card.el.classList.remove("failed", "finished");
    card.error.hidden = true;
    card.el.querySelector(".retry").hidden = true;
    card.bar.value = 0;
    card.shown = 0;
    card.el.dataset.state = "waiting";
    start(card);
  }

  function updateButtons() {
    let waiting = 0;
    let finished = 0;
    for (const card of cards) {
      if (card.removed) continue;
      if (card.el.dataset.state === "waiting") waiting += 1;
      if (card.el.classList.contains("finished")) finished += 1;
    }
    startAll.hidden = waiting === 0 || !available;
    startAll.textContent = t("start_all", { n: waiting });
    clearFinished.hidden = finished === 0;
  }

  startAll.addEventListener("click", () => {
    for (const el of Array.from(list.children)) {
      const card = Array.from(cards).find((c) => c.el === el);
      if (card && !card.removed) start(card);
    }
  });

  function pumpUploads() {
    if (uploading || uploadQueue.length === 0) return;
    const next = uploadQueue.shift();
    if (next.card.removed) { pumpUploads(); return; }
    uploading = true;
    upload(next).finally(() => { uploading = false; pumpUploads(); });
  }

  async function upload({ file, card, choices }) {
    let mask = null;
    try {
      mask = card.painter ? await card.painter.maskBlob() : null;
    } catch (err) {
      card.fail(t("err_marks"));
      return;
    }
    return new Promise((resolve) => {
      const form = new FormData();
      form.append("image", file, file.name);
      if (mask) form.append("repair_mask", mask, "repair-mask.png");
      for (const [name, value] of Object.entries(choices)) if (value) form.append(name, value);
      const xhr = new XMLHttpRequest();
      card.xhr = xhr;
      xhr.open("POST", jobsUrl);
      xhr.responseType = "json";
      card.el.dataset.state = "uploading";
      card.setStatus(t("uploading", { pct: 0 }));
      xhr.upload.addEventListener("progress", (e) => {
        if (!e.lengthComputable) return;
        card.setStatus(t("uploading", { pct: Math.round((100 * e.loaded) / e.total) }));
        card.bar.value = e.loaded / e.total;
      });
      xhr.addEventListener("load", () => {
        if (xhr.status === 401) { window.location.href = "login"; return resolve(); }
        const body = xhr.response;
        if (xhr.status === 202 && body && body.id) {
          // The history may have listed this job while its upload was still being answered.
          for (const other of cards) if (other !== card && other.jobId === body.id) { stopFollowing(other); forget(other); }
          card.bar.value = 0;
          card.shown = 0;
          attach(card, body);
          if (card.removed) deleteJob(body.id);
          else { show(card, body); follow(card); }
        } else {
          if (xhr.status === 503 && body && body.error && body.error.code === "unavailable") setUnavailable(body.error.message);
          card.fail(errorText(body, xhr.status));
        }
        resolve();
      });
      xhr.addEventListener("error", () => { card.fail(t("err_network")); resolve(); });
      xhr.addEventListener("abort", () => resolve());
      xhr.send(form);
    });
  }

  function sentence(text) {
    text = text.charAt(0).toUpperCase() + text.slice(1);
    return /[.!?]$/.test(text) ? text : text + ".";
  }

  function errorText(body, status) {
    const error = body && body.error;
    const known = error && I18n.errorCode(error.code, { mb: maxMb });
    if (known) return known;
    if (error && error.message) return sentence(error.message);
    if (status === 413) return I18n.errorCode("too_large", { mb: maxMb });
    return t("err_http", { status });
  }

  // ---- cards ----

  function makeCard(name) {
    const el = template.content.firstElementChild.cloneNode(true);
    const q = (sel) => el.querySelector(sel);
    const card = {
      el, name, file: null, localUrl: null, jobId: null, job: null, removed: false, source: null, pollTimer: null,
      status: q(".status"), detail: q(".detail"), bar: q(".bar"), error: q(".error"), thumb: q(".thumb"),
      shown: 0, viewer: null, size: null, painter: null,
      setStatus(text) { if (this.status.textContent !== text) this.status.textContent = text; },
      setDetail(text) { if (this.detail.textContent !== text) this.detail.textContent = text; },
      end(state, status, message) {
        el.classList.add("failed", "finished");
        el.dataset.state = state;
        this.setStatus(status);
        this.setDetail("");
        this.error.textContent = message;
        this.error.hidden = false;
        updateButtons();
      },
      fail(message) {
        stopFollowing(this);
        q(".retry").hidden = !this.file;
        this.end("failed", t("failed"), message);
      },
      // Refused before any upload: the file's name stays, with the reason, in place of a thumbnail.
      refuse(message) {
        showFileBadge(this);
        this.end("refused", t("refused"), message);
      },
    };
    card.thumb.addEventListener("error", () => { if (card.thumb.getAttribute("src")) showFileBadge(card); });
    q(".name").textContent = name;
    q(".name").title = name;
    const remove = q(".remove");
    remove.title = t("remove");
    remove.setAttribute("aria-label", t("remove_named", { name }));
    remove.addEventListener("click", () => removeCard(card));
    q(".toggle").addEventListener("click", () => toggleViewer(card));
    q(".start").addEventListener("click", () => start(card));
    q(".mark").addEventListener("click", () => togglePainter(card));
    q(".find-damage").addEventListener("click", () => findDamage(card));
    q(".clear-marks").addEventListener("click", () => { if (card.painter) card.painter.clear(); });
    q(".retry").addEventListener("click", () => retry(card));
    el.dataset.state = "pending";
    cards.add(card);
    return card;
  }

  function showFileBadge(card) {
    const badge = card.el.querySelector(".thumb-file");
    const ext = /\.([^.]{1,5})$/.exec(card.name);
    badge.textContent = ext ? ext[1] : "?";
    badge.hidden = false;
    card.thumb.classList.add("unreadable");
  }

  function attach(card, job) {
    card.jobId = job.id;
    card.el.dataset.jobId = job.id;
  }

  function follow(card) {
    if (!window.EventSource) { poll(card); return; }
    const source = new EventSource(`${jobsUrl}/${card.jobId}/events`);
    card.source = source;
    source.addEventListener("status", (e) => show(card, JSON.parse(e.data)));
    source.addEventListener("gone", () => { stopFollowing(card); card.fail(t("err_removed")); });
    // The browser reconnects by itself after a dropped connection; fall back to polling only if it gives up.
    source.addEventListener("error", () => {
      if (source.readyState === EventSource.CLOSED && !card.el.classList.contains("finished")) poll(card);
    });
  }

  function poll(card) {
    stopFollowing(card);
    const tick = async () => {
      if (card.removed) return;
      try {
        const response = await fetch(`${jobsUrl}/${card.jobId}`, { headers: { Accept: "application/json" } });
        const body = await response.json();
        if (!response.ok) { card.fail(errorText(body, response.status)); return; }
        show(card, body);
        if (body.status === "done" || body.status === "failed") return;
      } catch (err) { /* a dropped connection: try again */ }
      card.pollTimer = setTimeout(tick, 1000);
    };
    tick();
  }

  function stopFollowing(card) {
    if (card.source) { card.source.close(); card.source = null; }
    if (card.pollTimer) { clearTimeout(card.pollTimer); card.pollTimer = null; }
  }

  function show(card, job) {
    card.job = job;
    card.seenAt = performance.now();
    card.el.dataset.state = job.status;
    if (job.status === "queued") {
      const ahead = Math.max(0, (job.queue_position || 1) - 1);
      card.setStatus(ahead === 0 ? t("queue_next") : tn("queue_ahead", ahead));
      card.setDetail(job.estimate_seconds ? t("time_expected", { time: duration(job.estimate_seconds) }) : "");
      animate();
    } else if (job.status === "waiting_for_node") {
      card.setStatus(t("waiting_for_node"));
      card.setDetail("");
      animate();
    } else if (job.status === "running") {
      card.setStatus(job.progress > 0 ? t("upscaling", { pct: Math.round(100 * job.progress) }) : t("starting"));
      if (!(job.tiles && job.tiles.done > 0)) {
        // Nothing has run yet: an open-ended bar and the whole expected time, never a countdown.
        card.bar.removeAttribute("value");
        card.setDetail(job.estimate_seconds ? t("time_expected", { time: duration(job.estimate_seconds) }) : "");
      }
      animate();
    } else if (job.status === "done") {
      stopFollowing(card);
      showResult(card, job);
    } else if (job.status === "failed") {
      stopFollowing(card);
      const error = job.error || {};
      card.fail(I18n.errorCode(error.code, { mb: maxMb }) || (error.message ? sentence(error.message) : t("err_generic")));
    }
    updateDownloadAll();
  }

  // ---- progress between updates ----

  // Seconds the job has been running, on the server's clock where the two clocks agree.
  function elapsed(card) {
    const job = card.job;
    const local = (performance.now() - card.seenAt) / 1000;
    if (!job.started_at) return local;
    const server = Date.now() / 1000 - job.started_at;
    return server >= 0 && server < 86400 ? server : local;
  }

  // Where the bar should be now and how long is left, from the tiles done and the time they took; null
  // before the first tile, since start-up (loading the model) says nothing about the tiles' pace.
  function forecast(card) {
    const job = card.job;
    const tiles = job.tiles || {};
    if (!(tiles.total && tiles.done > 0)) return null;
    const spent = elapsed(card);
    const total = (spent - (performance.now() - card.seenAt) / 1000) / tiles.done * tiles.total;
    const ceiling = Math.min(1, (tiles.done + 1) / tiles.total);
    // Past the projection the job is still finishing (writing the file): say so instead of "1 s left".
    return { fraction: Math.min(ceiling * 0.98, spent / total), left: total - spent >= 1.5 ? total - spent : 0 };
  }

  let animating = false;
  function animate() {
    if (animating) return;
    animating = true;
    requestAnimationFrame(step);
  }

  function step() {
    let active = 0;
    for (const card of cards) {
      if (!card.job || card.job.status !== "running" || card.removed) continue;
      active += 1;
      const ahead = forecast(card);
      if (!ahead) continue;
      const target = Math.max(ahead.fraction, card.job.progress || 0);
      card.shown = Math.max(card.shown, card.shown + (target - card.shown) * 0.08);
      card.bar.value = card.shown;
      card.setDetail(ahead.left ? t("time_left", { time: duration(ahead.left) }) : t("finishing"));
    }
    if (active) requestAnimationFrame(step);
    else animating = false;
  }

  // ---- marking damage ----

  function togglePainter(card) {
    const painterEl = card.el.querySelector(".painter");
    if (!painterEl.hidden) { closePainter(card); return; }
    painterEl.hidden = false;
    card.el.querySelector(".mark").setAttribute("aria-expanded", "true");
    card.el.classList.add("painting");
    if (!card.painter) {
      card.painter = Painter.create(painterEl, card.localUrl, card.size.width, card.size.height);
      let pending = null;
      // Counting reads every pixel: once the strokes pause, not on each.
      painterEl.addEventListener("marks-changed", () => {
        clearTimeout(pending);
        pending = setTimeout(() => describeMarks(card), 250);
      });
    }
    painterEl.querySelector(".paint-area").focus();
  }

  function closePainter(card) {
    const painterEl = card.el.querySelector(".painter");
    if (painterEl.hidden) return;
    painterEl.hidden = true;
    card.el.querySelector(".mark").setAttribute("aria-expanded", "false");
    card.el.classList.remove("painting");
    if (card.painter) describeMarks(card);
  }

  function describeMarks(card) {
    const marked = card.painter ? card.painter.count() : 0;
    card.el.dataset.marked = String(marked);
    card.el.querySelector(".marked-note").textContent = marked ? t("marked_note") : "";
  }

  // The worker proposes a mask (POST /api/damage); it joins the marks, to be erased or added to before "Upscale".
  async function findDamage(card) {
    const painterEl = card.el.querySelector(".painter");
    const button = painterEl.querySelector(".find-damage");
    const status = painterEl.querySelector(".paint-status");
    button.disabled = true;
    status.textContent = t("finding_damage");
    try {
      const form = new FormData();
      form.append("image", card.file, card.file.name);
      const response = await fetch(`${api}/damage`, { method: "POST", body: form });
      if (response.status === 401) { window.location.href = "login"; return; }
      if (!response.ok) {
        let body = null;
        try { body = await response.json(); } catch (err) { /* not JSON: the status says enough */ }
        status.textContent = errorText(body, response.status);
        return;
      }
      const found = await card.painter.addMask(await response.blob());
      status.textContent = found ? t("damage_found") : t("damage_none");
    } catch (err) {
      status.textContent = t("err_network");
    } finally {
      button.disabled = false;
    }
  }

  // ---- results ----

  function findModel(job) {
    const id = job.model && typeof job.model === "object" ? job.model.id : job.model;
    return options.models.find((m) => m.id === id) || (typeof job.model === "object" ? job.model : null);
  }

  function showResult(card, job) {
    if (card.el.classList.contains("finished")) return;
    const el = card.el;
    el.classList.add("finished", "done");
    const out = job.output;
    const sizes = { from: `${job.input.width}×${job.input.height}`, to: `${out.width}×${out.height}` };
    const running = job.timings && job.timings.running;
    card.setStatus(running ? t("done", { seconds: I18n.number(1).format(running), ...sizes }) : t("done_short", sizes));
    const model = findModel(job);
    const parts = [];
    if (job.scale || model) {
      // The model's id says enough unless the worker did more than run it (a x4 model reduced to 3x).
      const plain = !job.ran || !job.ran.includes(",");
      parts.push(t(plain && (model || job.model) ? "ran_with_model" : "ran_with", {
        scale: job.scale || model.scale,
        model: (model && model.id) || job.model || "",
        // What ran, in the worker's words ("RealESRGAN Compact x4, reduced to 3x"), else the model's family.
        quality: job.ran || (model ? familyName(model) : ""),
        denoise: job.denoise_strength != null ? t("denoise_strength_value", { n: I18n.number(1).format(job.denoise_strength) }) : t(`denoise_${job.denoise || "off"}`),
      }).replace(" ·  ·", " ·"));
    }
    if (job.faces && job.faces.mode === "on") parts.push(` · ${t("faces_restored", { n: job.faces.restored || 0 })}`);
    card.setDetail(parts.join(""));
    card.bar.value = 1;
    if (!card.localUrl) card.thumb.src = job.links.result;
    const link = el.querySelector(".download");
    link.href = job.links.result;
    link.download = out.download_name;
    const format = out.format || (out.download_name || "").split(".").pop();
    link.textContent = t("download", { format: (options.format_labels || {})[format] || String(format).toUpperCase(), size: sizes.to });
    el.querySelector(".toggle").textContent = t("compare_open");
    el.querySelector(".result").hidden = false;
    updateButtons();
    // One photo just enlarged opens straight away; a batch, or the history after a reload, stays compact.
    if (list.children.length === 1 && !el.classList.contains("from-history")) toggleViewer(card);
  }

  function toggleViewer(card) {
    const el = card.el;
    const viewerEl = el.querySelector(".viewer");
    const toggle = el.querySelector(".toggle");
    const open = viewerEl.hidden;
    viewerEl.hidden = !open;
    toggle.setAttribute("aria-expanded", String(open));
    toggle.textContent = t(open ? "compare_close" : "compare_open");
    el.classList.toggle("open", open);
    if (open && !card.viewer) {
      const out = card.job.output;
      el.querySelector(".after").src = card.job.links.result;
      if (card.localUrl) {
        el.querySelector(".before").src = card.localUrl;
      } else {
        el.classList.add("no-before");
        el.querySelector(".before-missing").hidden = false;
        el.querySelector(".compare").style.setProperty("--pos", "0%");
      }
      card.viewer = Viewer.create(viewerEl, out.width, out.height);
    }
  }

  function updateDownloadAll() {
    let done = 0;
    for (const card of cards) if (!card.removed && card.job && card.job.status === "done") done += 1;
    downloadAll.hidden = done === 0;
    downloadAll.textContent = t("download_all", { n: done });
  }

  // ---- removing ----

  function deleteJob(jobId, keepalive) {
    return fetch(`${jobsUrl}/${jobId}`, { method: "DELETE", keepalive: Boolean(keepalive) }).catch(() => {});
  }

  function focusAfter(el) {
    let next = el.nextElementSibling;
    while (next && next.hidden) next = next.nextElementSibling;
    (next || drop).focus();
  }

  function removeCard(card) {
    const hasResult = card.job && card.job.status === "done";
    focusAfter(card.el);
    card.removed = true;
    stopFollowing(card);
    if (card.xhr && card.xhr.readyState !== XMLHttpRequest.DONE) card.xhr.abort();
    if (!hasResult) {
      if (card.jobId) deleteJob(card.jobId);
      forget(card);
      return;
    }
    // A finished result is deleted only after a few seconds, while the person can still undo.
    hideWithUndo([card], t("removed", { name: card.name }), () => card.el.querySelector(".remove").focus());
  }

  // Hides the cards at once and deletes their jobs after UNDO_MS, unless the toast's Undo is pressed first.
  function hideWithUndo(gone, text, afterUndo) {
    for (const card of gone) { card.removed = true; card.el.hidden = true; stopFollowing(card); }
    updateDownloadAll();
    updateButtons();
    const note = document.createElement("p");
    note.className = "toast-item";
    note.append(document.createTextNode(text + " "));
    const undo = document.createElement("button");
    undo.type = "button";
    undo.className = "link undo";
    undo.textContent = t("undo");
    note.append(undo);
    toast.append(note);
    const ids = gone.map((c) => c.jobId).filter(Boolean);
    const timer = setTimeout(() => {
      for (const id of ids) pendingDeletes.delete(id);
      note.remove();
      for (const card of gone) { if (card.jobId) deleteJob(card.jobId); forget(card); }
    }, UNDO_MS);
    for (const id of ids) pendingDeletes.set(id, timer);
    undo.addEventListener("click", () => {
      clearTimeout(timer);
      for (const id of ids) pendingDeletes.delete(id);
      note.remove();
      for (const card of gone) { card.removed = false; card.el.hidden = false; }
      updateDownloadAll();
      updateButtons();
      if (afterUndo) afterUndo();
    });
  }

  function forget(card) {
    if (card.localUrl) URL.revokeObjectURL(card.localUrl);
    cards.delete(card);
    card.el.remove();
    updateDownloadAll();
    updateButtons();
  }

  // Every finished card (done, failed or refused) at once, with one undo.
  clearFinished.addEventListener("click", () => {
    const gone = Array.from(cards).filter((c) => !c.removed && c.el.classList.contains("finished"));
    if (!gone.length) return;
    drop.focus();
    hideWithUndo(gone, tn("cleared", gone.length));
  });

  // Leaving the page does not cancel a removal the person asked for.
  window.addEventListener("pagehide", () => {
    for (const [jobId, timer] of pendingDeletes) { clearTimeout(timer); deleteJob(jobId, true); }
    pendingDeletes.clear();
  });

  // ---- history ----

  async function loadHistory() {
    let jobs;
    try {
      const response = await fetch(jobsUrl, { headers: { Accept: "application/json" } });
      if (!response.ok) return;
      jobs = (await response.json()).jobs || [];
    } catch (err) { return; }
    for (const job of jobs) {
      if (document.querySelector(`li.job[data-job-id="${job.id}"]`)) continue;
      const card = makeCard((job.input && job.input.name) || "photo");
      attach(card, job);
      card.el.classList.add("from-history");
      list.append(card.el);
      show(card, job);
      if (job.status === "queued" || job.status === "waiting_for_node" || job.status === "running") follow(card);
    }
  }

  // ---- the drop zone ----

  picker.addEventListener("change", () => {
    addFiles(Array.from(picker.files));
    picker.value = "";
  });
  drop.addEventListener("click", (e) => { if (e.target !== picker && available) picker.click(); });
  // As on a native button: Enter acts on keydown, Space on keyup (its keydown would scroll the page).
  drop.addEventListener("keydown", (e) => {
    if (e.key !== "Enter" && e.key !== " ") return;
    e.preventDefault();
    if (e.key === "Enter" && available) picker.click();
  });
  drop.addEventListener("keyup", (e) => {
    if (e.key === " " && available) { e.preventDefault(); picker.click(); }
  });
  ["dragenter", "dragover"].forEach((type) => drop.addEventListener(type, (e) => {
    e.preventDefault();
    if (available) drop.classList.add("over");
  }));
  ["dragleave", "drop"].forEach((type) => drop.addEventListener(type, (e) => {
    e.preventDefault();
    drop.classList.remove("over");
  }));
  drop.addEventListener("drop", (e) => {
    const files = Array.from(e.dataTransfer.files || []);
    if (files.length) addFiles(files);
  });
  // A photo dropped beside the zone should not make the browser navigate away from the page.
  window.addEventListener("dragover", (e) => e.preventDefault());
  window.addEventListener("drop", (e) => e.preventDefault());

  app.dataset.ready = "loading";
  loadOptions().then(loadHistory).finally(() => { app.dataset.ready = "yes"; });
})();
