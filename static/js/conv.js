// Matrix playground: painting 0/1 cells, stepping through output cells (click, Next/Previous, Play),
// and putting a 422's messages beside the fields they name (on /conv, /filters and /cost). Everything else is HTMX.
(function () {
  "use strict";
  let playTimer = null;
  let painting = false;
  let paintValue = "1";

  function steps() {
    const el = document.getElementById("conv-steps-data");
    if (!el) return [];
    try { return JSON.parse(el.textContent || "[]"); } catch (e) { return []; }
  }

  function fmt(v) {
    if (Math.abs(v - Math.round(v)) < 1e-9) { const r = Math.round(v); return String(r === 0 ? 0 : r); }
    return String(Number(v.toPrecision(4)));
  }

  function show(index) {
    const all = steps();
    const body = document.getElementById("conv-result-body");
    if (!all.length || !body) return;
    const i = ((index % all.length) + all.length) % all.length;
    const st = all[i];
    body.dataset.index = String(i);
    document.querySelectorAll("#conv-padded td.in-window, #conv-input-grid td.in-window")
      .forEach((td) => td.classList.remove("in-window", "win-first"));
    const pad = parseInt(body.dataset.pad || "0", 10);
    st.cells.forEach(([r, c], k) => {
      const td = document.querySelector(`#conv-padded td[data-r="${r}"][data-c="${c}"]`);
      if (td) { td.classList.add("in-window"); if (k === 0) td.classList.add("win-first"); }
      // the same cell in the editable grid, when it is not padding
      const input = document.querySelector(`#conv-input-grid input[name="input.${r - pad}.${c - pad}"]`);
      if (input && input.parentElement) input.parentElement.classList.add("in-window");
    });
    document.querySelectorAll("#conv-output td.active").forEach((td) => td.classList.remove("active"));
    const out = document.querySelector(`#conv-output td[data-row="${st.row}"][data-col="${st.col}"]`);
    if (out) out.classList.add("active");
    const text = document.getElementById("conv-step-text");
    if (text) {
      const sums = st.products.map(fmt).join(" + ").replace(/\+ -/g, "− ");
      text.textContent = st.text + "\n= " + sums + " = " + fmt(st.total);
    }
    const where = document.getElementById("conv-step-where");
    if (where) where.textContent = `output row ${st.row + 1}, column ${st.col + 1}`;
    const fr = document.getElementById("conv-focus-row");
    const fc = document.getElementById("conv-focus-col");
    if (fr && fc) { fr.value = String(st.row); fc.value = String(st.col); }
  }

  function current() {
    const body = document.getElementById("conv-result-body");
    return body && body.dataset.index ? parseInt(body.dataset.index, 10) : 0;
  }

  function stopPlay() {
    if (playTimer) { clearInterval(playTimer); playTimer = null; }
    const b = document.getElementById("conv-play");
    if (b) { b.textContent = "Play"; b.setAttribute("aria-pressed", "false"); }
  }

  function init() {
    const body = document.getElementById("conv-result-body");
    if (!body) return;
    const all = steps();
    // The form's focus fields first: they hold the cell the user picked last, which a re-render asked for
    // before that click (an edited cell's blur fires as the click starts) would otherwise undo.
    const fr = document.getElementById("conv-focus-row");
    const fc = document.getElementById("conv-focus-col");
    const row = parseInt((fr && fr.value) || body.dataset.focusRow || "0", 10);
    const col = parseInt((fc && fc.value) || body.dataset.focusCol || "0", 10);
    const idx = all.findIndex((s) => s.row === row && s.col === col);
    show(idx >= 0 ? idx : 0);
  }

  document.addEventListener("click", (ev) => {
    const t = ev.target instanceof Element ? ev.target : null;
    if (!t) return;
    const cell = t.closest("#conv-output td.out-cell");
    if (cell) {
      stopPlay();
      const all = steps();
      const i = all.findIndex((s) => s.row === +cell.dataset.row && s.col === +cell.dataset.col);
      if (i >= 0) show(i);
      return;
    }
    if (t.closest("#conv-next")) { stopPlay(); show(current() + 1); }
    else if (t.closest("#conv-prev")) { stopPlay(); show(current() - 1); }
    else if (t.closest("#conv-play")) {
      const b = t.closest("#conv-play");
      if (playTimer) { stopPlay(); return; }
      b.textContent = "Pause"; b.setAttribute("aria-pressed", "true");
      playTimer = setInterval(() => show(current() + 1), 900);
    }
  });

  document.addEventListener("keydown", (ev) => {
    const t = ev.target instanceof Element ? ev.target : null;
    if (t && t.matches("#conv-output td.out-cell") && (ev.key === "Enter" || ev.key === " ")) {
      ev.preventDefault(); t.click();
    }
  });

  // Painting: with the toggle on, press on an input cell and drag; the first cell decides 1 or 0.
  function paintable(t) {
    const toggle = document.getElementById("conv-paint-toggle");
    return toggle && toggle.checked && t instanceof Element && t.matches("#conv-input-grid input.cell-input");
  }
  function paint(input) {
    if (input.value !== paintValue) { input.value = paintValue; input.classList.add("painted"); }
  }
  document.addEventListener("mousedown", (ev) => {
    if (!paintable(ev.target)) return;
    ev.preventDefault();
    painting = true;
    paintValue = ev.target.value.trim() === "1" ? "0" : "1";
    paint(ev.target);
  });
  document.addEventListener("mouseover", (ev) => { if (painting && paintable(ev.target)) paint(ev.target); });
  document.addEventListener("mouseup", () => {
    if (!painting) return;
    painting = false;
    const form = document.getElementById("conv-form");
    if (form && window.htmx) window.htmx.trigger(form, "conv-paint");
  });

  // Edits recompute the result; the size selects do not (they re-render the whole workspace themselves). The
  // filter lives here because an HTMX trigger filter (input[!...]) is compiled with eval, which the
  // Content-Security-Policy forbids; the form listens for conv-input / conv-change instead.
  function forward(kind) {
    return (ev) => {
      const t = ev.target instanceof Element ? ev.target : null;
      const form = t ? t.closest("#conv-form") : null;
      if (!form || t.classList.contains("size-select") || !window.htmx) return;
      window.htmx.trigger(form, "conv-" + kind);
    };
  }
  document.addEventListener("input", forward("input"));
  document.addEventListener("change", forward("change"));

  // A 422 from a lab form lands in the page's error box (HX-Retarget), not over the result: the last good
  // result stays. Each message names a field the way the API does (input.1.2, kernels.0.weights.0.1, stride);
  // the control with that name (or the grid with that data-field) is outlined and the message, in words, is put
  // right after it (after the whole grid for a cell: a message inside the table would break it).
  function clearMarks(form) {
    if (!form) return;
    form.querySelectorAll(".invalid").forEach((el) => { el.classList.remove("invalid"); el.removeAttribute("aria-invalid"); });
    form.querySelectorAll(".field-message").forEach((el) => el.remove());
  }

  function markFields(box) {
    const form = document.getElementById(box.dataset.form || "");
    if (!form) return;
    clearMarks(form);
    box.querySelectorAll("li[data-field]").forEach((li, i) => {
      const name = li.dataset.field;
      const sel = `[name="${CSS.escape(name)}"], [data-field="${CSS.escape(name)}"]`;
      const els = Array.from(form.querySelectorAll(sel)).filter((el) => el !== li);
      if (!els.length) return;
      li.id = li.id || `${box.id}-${i}`;
      els.forEach((el) => {
        el.classList.add("invalid");
        el.setAttribute("aria-invalid", "true");
        el.setAttribute("aria-describedby", li.id);
      });
      const first = els[0];
      const anchor = first.closest("table") || first.closest("label") || first;
      const msg = document.createElement("span");
      msg.className = "field-message";
      msg.textContent = li.textContent;
      anchor.insertAdjacentElement("afterend", msg);
    });
  }

  const RESULTS = { "conv-result": "conv-errors", "conv-workspace": "conv-errors", "filters-result": "filters-errors", "cost-result": "cost-errors" };

  document.addEventListener("htmx:afterSwap", (ev) => {
    const target = ev.detail && ev.detail.target;
    if (!target) return;
    if (target.classList.contains("field-errors-box")) { markFields(target); return; }
    const boxId = RESULTS[target.id];
    if (!boxId) return;
    const box = document.getElementById(boxId);
    if (box && target.id !== "conv-workspace") {
      // a good result: the errors are fixed
      box.innerHTML = "";
      clearMarks(document.getElementById(box.dataset.form || ""));
    } else if (box) {
      markFields(box);
    }
    if (target.id === "conv-result" || target.id === "conv-workspace") { stopPlay(); init(); }
  });
  document.addEventListener("DOMContentLoaded", init);
})();
