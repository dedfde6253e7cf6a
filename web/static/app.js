// Photo upscaler page: uploads each chosen photo, follows its job, shows before/after and a download link.
"use strict";

(function () {
  const app = document.getElementById("app");
  const api = app.dataset.api;
  const maxBytes = Number(app.dataset.maxUploadBytes);
  const maxMb = app.dataset.maxUploadMb;
  const drop = document.getElementById("drop");
  const picker = document.getElementById("picker");
  const formatSelect = document.getElementById("format");
  const list = document.getElementById("jobs");
  const template = document.getElementById("job-template");

  const FORMAT_NAMES = { png: "PNG", jpg: "JPEG", webp: "WebP" };
  // Uploads go one at a time so the first photo starts processing as early as possible.
  const uploadQueue = [];
  let uploading = false;

  function addFiles(files) {
    for (const file of files) {
      const card = makeCard(file);
      list.prepend(card.el);
      if (file.size > maxBytes) {
        card.fail(`This file is ${(file.size / 1048576).toFixed(1)} MB; the limit is ${maxMb} MB. Choose a smaller photo.`);
        continue;
      }
      if (file.size === 0) {
        card.fail("This file is empty. Choose a photo.");
        continue;
      }
      uploadQueue.push({ file, card, format: formatSelect.value });
    }
    pumpUploads();
  }

  function pumpUploads() {
    if (uploading || uploadQueue.length === 0) return;
    const next = uploadQueue.shift();
    if (next.card.removed) { pumpUploads(); return; }
    uploading = true;
    upload(next).finally(() => { uploading = false; pumpUploads(); });
  }

  function makeCard(file) {
    const el = template.content.firstElementChild.cloneNode(true);
    const q = (sel) => el.querySelector(sel);
    const localUrl = URL.createObjectURL(file);
    const card = {
      el, file, localUrl, jobId: null, removed: false, source: null, pollTimer: null,
      status: q(".status"), bar: q(".bar"), error: q(".error"),
      setStatus(text) { this.status.textContent = text; },
      setProgress(fraction) {
        if (fraction === null) this.bar.removeAttribute("value");
        else this.bar.value = Math.max(0, Math.min(1, fraction));
      },
      fail(message) {
        el.classList.add("failed", "finished");
        this.setStatus("Could not upscale this photo");
        this.error.textContent = message;
        this.error.hidden = false;
        stopFollowing(this);
      },
    };
    const thumb = q(".thumb");
    thumb.addEventListener("error", () => thumb.classList.add("unreadable"));
    thumb.src = localUrl;
    q(".name").textContent = file.name || "photo";
    q(".name").title = file.name || "";
    card.setStatus("Waiting to upload…");
    q(".remove").addEventListener("click", () => removeCard(card));
    const slider = q(".slider");
    const compare = q(".compare");
    slider.addEventListener("input", () => compare.style.setProperty("--pos", slider.value + "%"));
    el.dataset.state = "pending";
    return card;
  }

  function upload({ file, card, format }) {
    return new Promise((resolve) => {
      const form = new FormData();
      form.append("image", file, file.name);
      if (format) form.append("format", format);
      const xhr = new XMLHttpRequest();
      card.xhr = xhr;
      xhr.open("POST", api);
      xhr.responseType = "json";
      card.el.dataset.state = "uploading";
      card.setStatus("Uploading… 0%");
      xhr.upload.addEventListener("progress", (e) => {
        if (!e.lengthComputable) return;
        const pct = Math.round((100 * e.loaded) / e.total);
        card.setStatus(`Uploading… ${pct}%`);
        card.setProgress(e.loaded / e.total);
      });
      xhr.addEventListener("load", () => {
        if (xhr.status === 401) { window.location.href = "login"; return resolve(); }
        const body = xhr.response;
        if (xhr.status === 202 && body && body.id) {
          card.jobId = body.id;
          card.el.dataset.jobId = body.id;
          if (card.removed) deleteJob(body.id);
          else { show(card, body); follow(card); }
        } else {
          card.fail(errorText(body, xhr.status));
        }
        resolve();
      });
      xhr.addEventListener("error", () => { card.fail("The upload did not reach the service. Check the connection and try again."); resolve(); });
      xhr.addEventListener("abort", () => resolve());
      xhr.send(form);
    });
  }

  function errorText(body, status) {
    const message = body && body.error && body.error.message;
    if (message) return capitalise(message) + (message.endsWith(".") ? "" : ".");
    if (status === 413) return `This file is larger than the ${maxMb} MB limit. Choose a smaller photo.`;
    return `The service answered with an error (HTTP ${status}). Try again later.`;
  }

  function capitalise(text) { return text.charAt(0).toUpperCase() + text.slice(1); }

  function follow(card) {
    if (window.EventSource) {
      const source = new EventSource(`${api}/${card.jobId}/events`);
      card.source = source;
      source.addEventListener("status", (e) => show(card, JSON.parse(e.data)));
      source.addEventListener("gone", () => { stopFollowing(card); card.fail("This job was removed."); });
      // The browser reconnects by itself after a dropped connection; fall back to polling only if it gives up.
      source.addEventListener("error", () => {
        if (source.readyState === EventSource.CLOSED && !card.el.classList.contains("finished")) poll(card);
      });
    } else {
      poll(card);
    }
  }

  function poll(card) {
    stopFollowing(card);
    const tick = async () => {
      if (card.removed) return;
      try {
        const response = await fetch(`${api}/${card.jobId}`, { headers: { Accept: "application/json" } });
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
    card.el.dataset.state = job.status;
    if (job.status === "queued") {
      const ahead = (job.queue_position || 1) - 1;
      card.setStatus(ahead === 0 ? "Next in line…" : `Waiting in line: ${ahead} photo${ahead === 1 ? "" : "s"} ahead`);
      card.setProgress(0);
    } else if (job.status === "running") {
      // Until the first tile is back the bar runs without a figure (a big tile can take a while).
      if (job.progress > 0) {
        card.setStatus(`Upscaling… ${Math.round(100 * job.progress)}%`);
        card.setProgress(job.progress);
      } else {
        card.setStatus("Upscaling…");
        card.setProgress(null);
      }
    } else if (job.status === "done") {
      stopFollowing(card);
      showResult(card, job);
    } else if (job.status === "failed") {
      stopFollowing(card);
      card.fail(capitalise(job.error ? job.error.message : "the upscaling failed") + ".");
    }
  }

  function showResult(card, job) {
    if (card.el.classList.contains("finished")) return;
    const el = card.el;
    el.classList.add("finished", "done");
    const out = job.output;
    const seconds = job.timings && job.timings.running ? ` in ${job.timings.running.toFixed(1)} s` : "";
    card.setStatus(`Done${seconds}: ${job.input.width}×${job.input.height} → ${out.width}×${out.height}`);
    card.setProgress(1);
    const compare = el.querySelector(".compare");
    compare.style.aspectRatio = `${out.width} / ${out.height}`;
    el.querySelector(".after").src = job.links.result;
    el.querySelector(".before").src = card.localUrl;
    const link = el.querySelector(".download");
    link.href = job.links.result;
    link.download = out.download_name;
    link.textContent = `Download ${FORMAT_NAMES[out.format] || out.format.toUpperCase()} (${out.width}×${out.height})`;
    el.querySelector(".result").hidden = false;
  }

  function deleteJob(jobId) {
    return fetch(`${api}/${jobId}`, { method: "DELETE" }).catch(() => {});
  }

  function removeCard(card) {
    card.removed = true;
    stopFollowing(card);
    if (card.xhr && card.xhr.readyState !== XMLHttpRequest.DONE) card.xhr.abort();
    if (card.jobId) deleteJob(card.jobId);
    URL.revokeObjectURL(card.localUrl);
    card.el.remove();
  }

  picker.addEventListener("change", () => {
    addFiles(Array.from(picker.files));
    picker.value = "";
  });

  ["dragenter", "dragover"].forEach((type) => drop.addEventListener(type, (e) => {
    e.preventDefault();
    drop.classList.add("over");
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
})();
