// Explanation pages (/explain, /occlusion, /compare).
// 1. Occlusion: a click on the input image hides one patch there and fetches the new top-k at once (HTMX cannot
//    read click coordinates, so this turns the click into an htmx request). The patch URL is never pushed.
// 2. The opacity label follows the slider while it moves (the request itself is debounced by hx-trigger).
// 3. Back/Forward: htmx restores the page as it was, but form controls keep the values of the page being left;
//    set every control of the explanation forms from the restored URL so that they match the picture.
// 4. A new request clears the field errors of the last one.
(function () {
  "use strict";
  var FORMS = ["explain-form", "compare-form", "occlusion-form"];

  function form() { return document.getElementById("occlusion-form"); }

  function value(name, fallback) {
    var f = form();
    var el = f && f.elements.namedItem(name);
    return el && el.value ? el.value : fallback;
  }

  document.addEventListener("click", function (event) {
    var img = event.target;
    if (!img || img.id !== "occlusion-image") { return; }
    var rect = img.getBoundingClientRect();
    var h = parseInt(img.dataset.inputH, 10), w = parseInt(img.dataset.inputW, 10);
    var y = Math.min(h - 1, Math.max(0, Math.floor((event.clientY - rect.top) * h / rect.height)));
    var x = Math.min(w - 1, Math.max(0, Math.floor((event.clientX - rect.left) * w / rect.width)));
    // The form always shows the window (the occlusion map's default when none was typed): the click hides the same
    // square as one window of the map.
    var win = parseInt(value("window", "0"), 10) || 1;
    win = Math.max(1, Math.min(win, h, w));
    var marker = document.getElementById("patch-marker");
    if (marker) {
      var sy = rect.height / h, sx = rect.width / w;
      var y0 = Math.min(Math.max(0, y - Math.floor(win / 2)), h - win), x0 = Math.min(Math.max(0, x - Math.floor(win / 2)), w - win);
      marker.style.top = (y0 * sy) + "px"; marker.style.left = (x0 * sx) + "px";
      marker.style.width = (win * sx) + "px"; marker.style.height = (win * sy) + "px";
      marker.hidden = false;
    }
    var params = new URLSearchParams({
      image_id: img.dataset.imageId, model: img.dataset.model, weights: img.dataset.weights,
      y: String(y), x: String(x), window: String(win), baseline: value("baseline", "zeros"),
      target: value("target", ""), k: value("k", "5"), score: value("score", "auto")
    });
    htmx.ajax("GET", "/occlusion/patch?" + params.toString(), { target: "#patch-result", swap: "innerHTML", push: "false" });
  });

  function showOpacity(slider) {
    var out = document.getElementById("explain-opacity-value");
    if (out) { out.textContent = Number(slider.value).toFixed(2); }
  }

  document.addEventListener("input", function (event) {
    if (event.target && event.target.id === "explain-opacity") { showOpacity(event.target); }
  });

  function syncFromUrl() {
    var params = new URLSearchParams(location.search);
    FORMS.forEach(function (id) {
      var f = document.getElementById(id);
      if (!f) { return; }
      Array.prototype.forEach.call(f.elements, function (el) {
        if (!el.name || el.type === "hidden" || el.type === "submit" || el.type === "button") { return; }
        var given = params.getAll(el.name);
        if (el.type === "checkbox") {
          if (el.name === "progressive") { el.checked = given.length ? given.indexOf("on") >= 0 || given.indexOf("true") >= 0 : el.defaultChecked; }
          else { el.checked = given.length ? given.indexOf(el.value) >= 0 : el.defaultChecked; }
        } else if (el.type === "radio") {
          el.checked = given.length ? given[0] === el.value : el.defaultChecked;
        } else if (el.tagName === "SELECT") {
          var wanted = given.length ? given[0] : null;
          Array.prototype.forEach.call(el.options, function (o) {
            o.selected = wanted !== null ? o.value === wanted : o.defaultSelected;
          });
        } else {
          el.value = given.length ? given[0] : el.defaultValue;
        }
      });
    });
    var slider = document.getElementById("explain-opacity");
    if (slider) { showOpacity(slider); }
  }

  document.addEventListener("htmx:historyRestore", syncFromUrl);
  window.addEventListener("pageshow", function (event) { if (event.persisted) { syncFromUrl(); } });

  document.addEventListener("htmx:beforeRequest", function (event) {
    var elt = event.detail && event.detail.elt;
    var f = elt && elt.closest ? elt.closest("form") : null;
    if (!f || FORMS.indexOf(f.id) < 0 || (elt.hasAttribute && elt.hasAttribute("hx-trigger") && elt.getAttribute("hx-trigger").indexOf("every") === 0)) { return; }
    f.querySelectorAll(".field-error").forEach(function (slot) { slot.textContent = ""; });
  });
})();
