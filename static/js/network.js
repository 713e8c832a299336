// Inside the network: only what HTMX cannot do by itself.
// 1. Pickers in forms marked data-autosubmit reload the page when they change.
// 2. A click on a feature map (#rf-clickable) becomes a unit position (y, x) for the receptive-field probe.
(function () {
  "use strict";

  document.addEventListener("change", function (event) {
    var form = event.target.closest("form[data-autosubmit]");
    if (form && event.target.tagName === "SELECT") {
      form.submit();
    }
  });

  function controlValues() {
    var values = {};
    var form = document.getElementById("network-controls");
    if (form) {
      new FormData(form).forEach(function (value, key) { values[key] = value; });
    }
    return values;
  }

  document.addEventListener("click", function (event) {
    var img = event.target.closest("#rf-clickable");
    if (!img) { return; }
    var rect = img.getBoundingClientRect();
    var rows = parseInt(img.dataset.rows, 10);
    var cols = parseInt(img.dataset.cols, 10);
    // The image shows the map stretched over the input: one block per unit.
    var x = Math.min(cols - 1, Math.max(0, Math.floor((event.clientX - rect.left) / rect.width * cols)));
    var y = Math.min(rows - 1, Math.max(0, Math.floor((event.clientY - rect.top) / rect.height * rows)));
    var values = controlValues();
    values.layer = img.dataset.layer;
    values.y = y;
    values.x = x;
    img.dataset.lastY = y;
    img.dataset.lastX = x;
    htmx.ajax("GET", img.dataset.probeUrl, { target: img.dataset.target, values: values });
  });
})();
