// Marking damage on a photo before it is enlarged: a brush and an eraser on a canvas at the photo's own pixel
// size, shown as translucent red over it, zoomed and panned like the comparison (Viewer.zoomable); mouse, pen and
// touch through Pointer Events (one finger paints, two pinch). The marks leave as the API's `repair_mask`: a PNG
// of the photo's size, white where marked, black elsewhere.
"use strict";

window.Painter = (function () {
  const { t } = I18n;
  // A canvas pixel counts as marked from this alpha on: a stroke's soft edge is marked where it is half covered.
  const MARKED_ALPHA = 128;
  const MIN_SIZE = 2;
  const MAX_SIZE = 120;
  const TOUCH_SLOP = 6; // CSS px a finger moves before it paints

  function create(root, photoUrl, width, height) {
    const area = root.querySelector(".paint-area");
    const stage = area.querySelector(".stage");
    const photo = stage.querySelector(".paint-photo");
    const canvas = stage.querySelector(".marks");
    const sizeInput = root.querySelector(".brush-size");
    const sizeValue = root.querySelector(".brush-size-value");
    const tools = { brush: root.querySelector(".tool-brush"), eraser: root.querySelector(".tool-eraser"), move: root.querySelector(".tool-move") };
    const ctx = canvas.getContext("2d", { willReadFrequently: true });
    canvas.width = width;
    canvas.height = height;
    photo.src = photoUrl;
    const zoom = Viewer.zoomable(root, area, [stage], width, height);
    let tool = "brush";

    function choose(name) {
      tool = name;
      for (const [key, button] of Object.entries(tools)) button.setAttribute("aria-pressed", String(key === name));
      area.dataset.tool = name;
    }

    function setSize(value) {
      const size = Math.max(MIN_SIZE, Math.min(MAX_SIZE, Math.round(value)));
      sizeInput.value = String(size);
      sizeValue.textContent = t("brush_size_value", { n: size });
    }

    // The photo pixel under a pointer, through whatever zoom and pan the stage has.
    function at(e) {
      const r = canvas.getBoundingClientRect();
      return { x: ((e.clientX - r.left) / r.width) * width, y: ((e.clientY - r.top) / r.height) * height };
    }

    function stroke(from, to) {
      ctx.save();
      ctx.globalCompositeOperation = tool === "eraser" ? "destination-out" : "source-over";
      ctx.strokeStyle = ctx.fillStyle = "#ff0000";
      ctx.lineWidth = Number(sizeInput.value);
      ctx.lineCap = ctx.lineJoin = "round";
      ctx.beginPath();
      if (from) { ctx.moveTo(from.x, from.y); ctx.lineTo(to.x, to.y); ctx.stroke(); }
      else { ctx.arc(to.x, to.y, ctx.lineWidth / 2, 0, 2 * Math.PI); ctx.fill(); }
      ctx.restore();
      root.dispatchEvent(new CustomEvent("marks-changed"));
    }

    const pointers = new Map();
    const pinch = zoom.pinchZoom();
    let painting = null; // the pointer painting now and where it was last
    area.addEventListener("pointerdown", (e) => {
      if (e.pointerType === "mouse" && e.button !== 0) return;
      area.setPointerCapture(e.pointerId);
      pointers.set(e.pointerId, { x: e.clientX, y: e.clientY });
      if (pinch.start(pointers)) { painting = null; return; }
      if (pointers.size === 1 && tool !== "move") {
        e.preventDefault();
        // A finger may be the first of a pinch: its stroke begins once it has moved, or as a dot when lifted.
        const waits = e.pointerType === "touch";
        painting = { id: e.pointerId, last: at(e), from: { x: e.clientX, y: e.clientY }, waits };
        if (!waits) stroke(null, painting.last);
      }
    });
    area.addEventListener("pointermove", (e) => {
      const last = pointers.get(e.pointerId);
      if (!last) return;
      const now = { x: e.clientX, y: e.clientY };
      pointers.set(e.pointerId, now);
      if (pinch.move(pointers)) return;
      if (painting && painting.id === e.pointerId) {
        if (painting.waits && Math.hypot(now.x - painting.from.x, now.y - painting.from.y) < TOUCH_SLOP) return;
        painting.waits = false;
        const point = at(e);
        stroke(painting.last, point);
        painting.last = point;
      } else if (tool === "move") {
        zoom.pan(now.x - last.x, now.y - last.y);
      }
    });
    const release = (e) => {
      pointers.delete(e.pointerId);
      pinch.end(pointers);
      if (painting && painting.id === e.pointerId) {
        if (painting.waits && e.type === "pointerup") stroke(null, painting.last);
        painting = null;
      }
    };
    area.addEventListener("pointerup", release);
    area.addEventListener("pointercancel", release);

    for (const [name, button] of Object.entries(tools)) button.addEventListener("click", () => choose(name));
    sizeInput.min = String(MIN_SIZE);
    sizeInput.max = String(MAX_SIZE);
    sizeInput.addEventListener("input", () => setSize(Number(sizeInput.value)));
    zoom.onKeys({
      b: () => choose("brush"), e: () => choose("eraser"), m: () => choose("move"),
      "[": () => setSize(Number(sizeInput.value) / 1.25), "]": () => setSize(Number(sizeInput.value) * 1.25),
    });

    function clear() {
      ctx.clearRect(0, 0, width, height);
      root.dispatchEvent(new CustomEvent("marks-changed"));
    }

    // How many photo pixels are marked.
    function count() {
      const data = ctx.getImageData(0, 0, width, height).data;
      let marked = 0;
      for (let i = 3; i < data.length; i += 4) if (data[i] >= MARKED_ALPHA) marked += 1;
      return marked;
    }

    // The repair mask as the API takes it (white: repair, black: keep, opaque), or null with nothing marked.
    function maskBlob() {
      const source = ctx.getImageData(0, 0, width, height).data;
      const out = new ImageData(width, height);
      let marked = 0;
      for (let i = 0; i < source.length; i += 4) {
        const on = source[i + 3] >= MARKED_ALPHA;
        marked += on ? 1 : 0;
        out.data[i] = out.data[i + 1] = out.data[i + 2] = on ? 255 : 0;
        out.data[i + 3] = 255;
      }
      if (!marked) return Promise.resolve(null);
      const flat = document.createElement("canvas");
      flat.width = width;
      flat.height = height;
      flat.getContext("2d").putImageData(out, 0, 0);
      return new Promise((resolve) => flat.toBlob(resolve, "image/png"));
    }

    // Adds a proposed mask (a PNG of the photo's size, white where found) to the marks; returns the pixels it marks.
    async function addMask(blob) {
      const image = await createImageBitmap(blob);
      const scratch = document.createElement("canvas");
      scratch.width = width;
      scratch.height = height;
      const sctx = scratch.getContext("2d", { willReadFrequently: true });
      sctx.drawImage(image, 0, 0, width, height);
      const found = sctx.getImageData(0, 0, width, height);
      const marks = ctx.getImageData(0, 0, width, height);
      let added = 0;
      for (let i = 0; i < found.data.length; i += 4) {
        if (found.data[i] < 128) continue;
        added += 1;
        marks.data[i] = 255; marks.data[i + 1] = 0; marks.data[i + 2] = 0; marks.data[i + 3] = 255;
      }
      ctx.putImageData(marks, 0, 0);
      root.dispatchEvent(new CustomEvent("marks-changed"));
      return added;
    }

    choose("brush");
    setSize(Number(sizeInput.value) || 12);
    zoom.fit();
    return { clear, count, maskBlob, addMask, choose, setSize, zoom };
  }

  return { create };
})();
