// Before/after comparison with fit and 1:1 views, zoom (wheel, pinch, keys) and pan.
// Both layers hold a stage of the result's pixel size with the same transform, and the "before" image is
// stretched to that size, so the two stay aligned at every zoom; the slider only clips the top layer.
// `zoomable` is the zoom and pan alone, which the damage painter (painter.js) shares.
"use strict";

window.Viewer = (function () {
  const MAX_ZOOM = 8;
  const STEP = 1.25;

  // Stages of width x height px shown in `box`, zoomed and panned alike; `root` holds the zoom bar's buttons.
  function zoomable(root, box, stages, width, height) {
    const level = root.querySelector(".zoom-level");
    const fitButton = root.querySelector(".zoom-fit");
    const oneButton = root.querySelector(".zoom-1");
    const view = { scale: 1, x: 0, y: 0, mode: "fit" };
    box.style.aspectRatio = `${width} / ${height}`;
    for (const stage of stages) { stage.style.width = `${width}px`; stage.style.height = `${height}px`; }

    const size = () => ({ w: box.clientWidth, h: box.clientHeight });
    const fitScale = () => { const b = size(); return Math.min(b.w / width, b.h / height) || 1; };
    const oneScale = () => 1 / (window.devicePixelRatio || 1);
    const minScale = () => Math.min(fitScale(), oneScale());

    function clampOffsets() {
      const b = size();
      const w = width * view.scale, h = height * view.scale;
      view.x = w <= b.w ? (b.w - w) / 2 : Math.min(0, Math.max(b.w - w, view.x));
      view.y = h <= b.h ? (b.h - h) / 2 : Math.min(0, Math.max(b.h - h, view.y));
    }

    function apply() {
      clampOffsets();
      const transform = `translate(${view.x}px, ${view.y}px) scale(${view.scale})`;
      for (const stage of stages) stage.style.transform = transform;
      box.classList.toggle("zoomed", view.scale > fitScale() + 1e-6);
      box.dataset.zoom = view.scale.toFixed(4);
      level.textContent = I18n.t("zoom_level", { pct: Math.round(view.scale * (window.devicePixelRatio || 1) * 100) });
      fitButton.setAttribute("aria-pressed", String(view.mode === "fit"));
      if (oneButton) oneButton.setAttribute("aria-pressed", String(view.mode === "1:1"));
    }

    function zoomTo(scale, px, py, mode) {
      const b = size();
      if (px === undefined) { px = b.w / 2; py = b.h / 2; }
      // A small photo fits at several times its size already: it may still be looked at closer than that.
      const next = Math.min(Math.max(MAX_ZOOM, fitScale() * 4), Math.max(minScale(), scale));
      // Keep the photo point under (px, py) where it is.
      const ix = (px - view.x) / view.scale, iy = (py - view.y) / view.scale;
      view.x = px - ix * next;
      view.y = py - iy * next;
      view.scale = next;
      view.mode = mode || (Math.abs(next - fitScale()) < 1e-6 ? "fit" : "free");
      apply();
    }

    function fit() { view.scale = fitScale(); view.mode = "fit"; apply(); }
    function actual() { zoomTo(oneScale(), undefined, undefined, "1:1"); }
    function pan(dx, dy) { view.x += dx; view.y += dy; if (view.mode === "fit") view.mode = "free"; apply(); }
    const zoomed = () => box.classList.contains("zoomed");

    fitButton.addEventListener("click", fit);
    if (oneButton) oneButton.addEventListener("click", actual);
    root.querySelector(".zoom-in").addEventListener("click", () => zoomTo(view.scale * STEP));
    root.querySelector(".zoom-out").addEventListener("click", () => zoomTo(view.scale / STEP));
    box.addEventListener("wheel", (e) => {
      e.preventDefault();
      const r = box.getBoundingClientRect();
      const delta = e.deltaMode === 1 ? e.deltaY * 16 : e.deltaY;
      zoomTo(view.scale * Math.exp(-delta * 0.0015), e.clientX - r.left, e.clientY - r.top);
    }, { passive: false });

    // The keys both views share; `keys` adds or replaces some (the arrows differ).
    function onKeys(keys) {
      box.addEventListener("keydown", (e) => {
        const b = size();
        const all = {
          "+": () => zoomTo(view.scale * STEP), "=": () => zoomTo(view.scale * STEP),
          "-": () => zoomTo(view.scale / STEP), "_": () => zoomTo(view.scale / STEP),
          "0": fit, "1": actual,
          ArrowLeft: () => pan(b.w / 10, 0), ArrowRight: () => pan(-b.w / 10, 0),
          ArrowUp: () => pan(0, b.h / 10), ArrowDown: () => pan(0, -b.h / 10),
          ...keys,
        };
        const action = all[e.key];
        if (!action || e.ctrlKey || e.metaKey || e.altKey) return;
        e.preventDefault();
        action();
      });
    }

    // Two pointers pinch and move the view; `pinch.start` returns whether it took the pointers.
    function pinchZoom() {
      let pinch = null;
      return {
        start(pointers) {
          if (pointers.size !== 2) return false;
          const [a, b] = Array.from(pointers.values());
          pinch = { distance: Math.hypot(a.x - b.x, a.y - b.y) || 1, scale: view.scale, mid: { x: (a.x + b.x) / 2, y: (a.y + b.y) / 2 } };
          return true;
        },
        move(pointers) {
          if (!pinch || pointers.size !== 2) return false;
          const [a, b] = Array.from(pointers.values());
          const r = box.getBoundingClientRect();
          const mid = { x: (a.x + b.x) / 2, y: (a.y + b.y) / 2 };
          zoomTo(pinch.scale * (Math.hypot(a.x - b.x, a.y - b.y) / pinch.distance), mid.x - r.left, mid.y - r.top);
          if (zoomed()) pan(mid.x - pinch.mid.x, mid.y - pinch.mid.y);
          pinch.mid = mid;
          return true;
        },
        end(pointers) { if (pointers.size < 2) pinch = null; },
        get active() { return pinch !== null; },
      };
    }

    new ResizeObserver(() => { if (view.mode === "fit") fit(); else apply(); }).observe(box);
    return { view, fit, actual, zoomTo, pan, apply, zoomed, onKeys, pinchZoom };
  }

  function create(root, width, height) {
    const compare = root.querySelector(".compare");
    const slider = root.querySelector(".slider");
    const zoom = zoomable(root, compare, Array.from(root.querySelectorAll(".stage")), width, height);
    function setDivider(pct) {
      pct = Math.max(0, Math.min(100, pct));
      slider.value = String(Math.round(pct));
      compare.style.setProperty("--pos", `${pct}%`);
    }

    slider.addEventListener("input", () => setDivider(Number(slider.value)));
    zoom.onKeys({
      ArrowLeft: () => (zoom.zoomed() ? zoom.pan(compare.clientWidth / 10, 0) : setDivider(Number(slider.value) - 5)),
      ArrowRight: () => (zoom.zoomed() ? zoom.pan(-compare.clientWidth / 10, 0) : setDivider(Number(slider.value) + 5)),
    });

    // One pointer pans when zoomed in and moves the divider when not; two pointers pinch.
    const pointers = new Map();
    const pinch = zoom.pinchZoom();
    compare.addEventListener("pointerdown", (e) => {
      compare.setPointerCapture(e.pointerId);
      pointers.set(e.pointerId, { x: e.clientX, y: e.clientY });
      if (!pinch.start(pointers) && !zoom.zoomed()) {
        const r = compare.getBoundingClientRect();
        setDivider((100 * (e.clientX - r.left)) / r.width);
      }
    });
    compare.addEventListener("pointermove", (e) => {
      const last = pointers.get(e.pointerId);
      if (!last) return;
      const now = { x: e.clientX, y: e.clientY };
      pointers.set(e.pointerId, now);
      if (pinch.move(pointers)) return;
      if (zoom.zoomed()) {
        zoom.pan(now.x - last.x, now.y - last.y);
      } else {
        const r = compare.getBoundingClientRect();
        setDivider((100 * (now.x - r.left)) / r.width);
      }
    });
    const release = (e) => { pointers.delete(e.pointerId); pinch.end(pointers); };
    compare.addEventListener("pointerup", release);
    compare.addEventListener("pointercancel", release);

    setDivider(Number(slider.value));
    zoom.fit();
    return { fit: zoom.fit, actual: zoom.actual, zoomTo: zoom.zoomTo, pan: zoom.pan, view: zoom.view };
  }

  return { create, zoomable };
})();
