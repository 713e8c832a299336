// Filter lab: the value under the mouse. The page embeds the /api/v1/filter request it rendered; on the first
// hover over a map we fetch that map's numbers once (format=json, index=i) and read them as the mouse moves.
(function () {
  "use strict";
  const cache = new Map();

  function requestBody(index) {
    const body = document.getElementById("filters-result-body");
    if (!body || !body.dataset.api) return null;
    const req = JSON.parse(body.dataset.api);
    req.index = index;
    req.format = "json";
    return { key: body.dataset.api + "#" + index, req };
  }

  function values(index) {
    const r = requestBody(index);
    if (!r) return Promise.resolve(null);
    if (!cache.has(r.key)) {
      cache.set(r.key, fetch("/api/v1/filter", {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(r.req),
      }).then((res) => (res.ok ? res.json() : null)).then((j) => (j && j.maps && j.maps[0] ? j.maps[0].values : null))
        .catch(() => null));
    }
    return cache.get(r.key);
  }

  function fmt(v) {
    if (v === 0) return "0";
    const a = Math.abs(v);
    return a >= 1000 || a < 0.001 ? v.toExponential(3) : String(Number(v.toPrecision(4)));
  }

  document.addEventListener("mousemove", (ev) => {
    const img = ev.target instanceof Element ? ev.target.closest("img.fmap-img") : null;
    if (!img) return;
    const index = parseInt(img.dataset.index, 10);
    const h = parseInt(img.dataset.h, 10);
    const w = parseInt(img.dataset.w, 10);
    const rect = img.getBoundingClientRect();
    const col = Math.min(w - 1, Math.max(0, Math.floor(((ev.clientX - rect.left) / rect.width) * w)));
    const row = Math.min(h - 1, Math.max(0, Math.floor(((ev.clientY - rect.top) / rect.height) * h)));
    const out = document.getElementById("fmap-hover-" + index);
    values(index).then((vals) => {
      if (!out) return;
      out.textContent = vals ? `row ${row}, col ${col}: ${fmt(vals[row][col])}` : `row ${row}, col ${col}`;
    });
  });

  // A new drawn-kernel grid (size changed): recompute with it once it is in the form.
  document.addEventListener("htmx:afterSwap", (ev) => {
    const target = ev.detail && ev.detail.target;
    const form = document.getElementById("filters-form");
    if (target && target.id === "filters-kernel-editor" && form && window.htmx) window.htmx.trigger(form, "filters-change");
  });

  // The drawn kernel is only used when "use it" is ticked: editing a cell ticks it.
  document.addEventListener("input", (ev) => {
    const t = ev.target instanceof Element ? ev.target : null;
    if (t && t.classList.contains("ck-cell")) {
      const on = document.getElementById("filters-custom-on");
      if (on && !on.checked) on.checked = true;
      const form = t.closest("#filters-form");
      if (form && window.htmx) window.htmx.trigger(form, "filters-input");
    }
  });

  // Any change recomputes, except the kernel size (it swaps in a new grid first, see htmx:afterSwap above). The
  // filter lives here because an HTMX trigger filter (change[!...]) is compiled with eval, which the
  // Content-Security-Policy forbids; the form listens for filters-change / filters-input instead.
  document.addEventListener("change", (ev) => {
    const t = ev.target instanceof Element ? ev.target : null;
    const form = t ? t.closest("#filters-form") : null;
    if (form && !t.matches("[name=ck_size]") && window.htmx) window.htmx.trigger(form, "filters-change");
  });
})();
