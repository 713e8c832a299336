// Inside the network, receptive fields, milestones: only what HTMX cannot do by itself.
// 1. Back/Forward: the server renders the page of the URL (HTMX asks it with HX-History-Restore-Request), instead
//    of HTMX restoring a DOM snapshot whose form controls can disagree with the pictures.
// 2. A click on the receptive-field map (#rf-clickable) becomes a unit position (y, x) for the probe.
// 3. An error answer (422, 404) goes next to the field it names; the last good result stays in place.
// 4. The opacity read-out follows its slider while it moves.
// 5. A click on the map of a module that runs more than once probes the call shown (#rf-call-form).
(function () {
  "use strict";

  if (window.htmx) { window.htmx.config.historyCacheSize = 0; }

  function controlValues() {
    var values = {};
    var form = document.getElementById("network-controls");
    if (form) {
      new FormData(form).forEach(function (value, key) { values[key] = value; });
    }
    return values;
  }

  document.addEventListener("click", function (event) {
    var img = event.target instanceof Element ? event.target.closest("#rf-clickable") : null;
    if (!img || !window.htmx) { return; }
    var rect = img.getBoundingClientRect();
    var rows = parseInt(img.dataset.rows, 10);
    var cols = parseInt(img.dataset.cols, 10);
    // The image shows the map stretched over the input: one block per unit.
    var x = Math.min(cols - 1, Math.max(0, Math.floor((event.clientX - rect.left) / rect.width * cols)));
    var y = Math.min(rows - 1, Math.max(0, Math.floor((event.clientY - rect.top) / rect.height * rows)));
    var values = controlValues();
    values.layer = img.dataset.layer;
    // The call of a module that runs more than once belongs to the map that was clicked.
    var call = document.querySelector('#rf-call-form select[name="call"]');
    if (call) { values.call = call.value; }
    values.y = y;
    values.x = x;
    window.htmx.ajax("GET", img.dataset.probeUrl, { target: img.dataset.target, values: values });
  });

  document.addEventListener("input", function (event) {
    var t = event.target;
    if (t instanceof HTMLInputElement && t.id === "channel-opacity") {
      var out = document.querySelector('output[for="channel-opacity"]');
      if (out) { out.textContent = Number(t.value).toFixed(2); }
    }
  });

  function page() {
    return document.querySelector("#network-body, #rf-body, #compare");
  }

  function clearErrors() {
    document.querySelectorAll(".field-message").forEach(function (el) { el.remove(); });
    document.querySelectorAll("[aria-invalid]").forEach(function (el) {
      el.removeAttribute("aria-invalid");
      el.classList.remove("invalid");
    });
    var slot = document.getElementById("network-errors");
    if (slot) { slot.textContent = ""; }
  }

  // The control a field name (dotted, as the API spells it: "vmin", "channels.0") belongs to.
  function controlFor(field) {
    if (!field) { return null; }
    var name = field.split(".")[0];
    var sel = '[name="' + CSS.escape(name) + '"]';
    // Form controls only: the layer tree's buttons also carry name="layer", but they are not where a value is typed.
    var all = document.querySelectorAll("input" + sel + ", select" + sel + ", textarea" + sel);
    for (var i = 0; i < all.length; i++) {
      if (all[i].type !== "hidden") { return all[i]; }
    }
    return null;
  }

  document.addEventListener("htmx:beforeSwap", function (event) {
    var detail = event.detail;
    if (!detail || !detail.isError || !page()) { return; }
    var holder = document.createElement("template");
    holder.innerHTML = detail.serverResponse || "";
    var box = holder.content.querySelector(".error-box");
    if (!box) { return; }
    // Keep the last good result: the message goes beside the control, not over the pictures.
    detail.shouldSwap = false;
    clearErrors();
    var code = box.querySelector("code");
    var text = box.querySelector("p");
    var message = text ? text.textContent : "That did not work.";
    var control = controlFor(code ? code.textContent.trim() : "");
    var note = document.createElement("span");
    note.className = "field-message";
    note.setAttribute("role", "alert");
    note.textContent = message;
    if (control) {
      control.classList.add("invalid");
      control.setAttribute("aria-invalid", "true");
      (control.closest("label") || control).insertAdjacentElement("afterend", note);
    } else {
      var slot = document.getElementById("network-errors");
      if (slot) { slot.appendChild(note); }
    }
  });

  document.addEventListener("htmx:afterSwap", function (event) {
    var detail = event.detail;
    if (detail && detail.successful && page()) { clearErrors(); }
  });
})();
