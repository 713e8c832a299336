// Image picker: choosing from the list moves the thumbnail highlight too. One listener for the whole page,
// however often a picker is swapped in (it was an inline script, which the Content-Security-Policy forbids).
(function () {
  "use strict";
  document.addEventListener("change", (ev) => {
    const sel = ev.target;
    const picker = sel instanceof HTMLSelectElement && sel.name === "image_id" ? sel.closest(".image-picker") : null;
    if (!picker) return;
    picker.querySelectorAll(".picker-thumbs a[href]").forEach((a) => {
      const on = new URL(a.href, location.href).searchParams.get("image_id") === sel.value;
      if (on) a.setAttribute("aria-current", "true"); else a.removeAttribute("aria-current");
    });
  });
})();
