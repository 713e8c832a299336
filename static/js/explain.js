// Occlusion page: a click on the input image hides one patch there and fetches the new top-k at once.
// (HTMX cannot read click coordinates, so this small script turns the click into an htmx request.)
(function () {
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
    var win = parseInt(value("window", "0"), 10) || Math.max(4, Math.floor(Math.min(h, w) / 7));
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
      target: value("target", ""), k: value("k", "5")
    });
    htmx.ajax("GET", "/occlusion/patch?" + params.toString(), { target: "#patch-result", swap: "innerHTML" });
  });
})();
