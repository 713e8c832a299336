// Computed presentation (cell colours, bar widths, grid positions, colour-bar gradients) without style="":
// the Content-Security-Policy forbids inline style attributes (no 'unsafe-inline'), but a script from this
// server may set element.style. Templates write data-style="property: value; ..." and this applies it, on the
// first load and to everything HTMX swaps in. Only the properties below are applied, and never a url(): an
// injected attribute could not load anything or restyle the page beyond colours and sizes.
(function () {
  "use strict";
  const ALLOWED = new Set([
    "background", "background-color", "color", "width", "height",
    "grid-row", "grid-column", "grid-template-columns",
  ]);

  function applyOne(el) {
    const spec = el.getAttribute("data-style") || "";
    spec.split(";").forEach((declaration) => {
      const colon = declaration.indexOf(":");
      if (colon < 0) return;
      const name = declaration.slice(0, colon).trim().toLowerCase();
      const value = declaration.slice(colon + 1).trim();
      if (ALLOWED.has(name) && value && !/url\s*\(/i.test(value)) el.style.setProperty(name, value);
    });
  }

  function apply(root) {
    if (!(root instanceof Element || root instanceof Document)) return;
    if (root instanceof Element && root.hasAttribute("data-style")) applyOne(root);
    root.querySelectorAll("[data-style]").forEach(applyOne);
  }

  document.addEventListener("DOMContentLoaded", () => apply(document));
  // htmx:load fires on every element HTMX adds (swaps, out-of-band swaps, history restores).
  document.addEventListener("htmx:load", (ev) => apply(ev.target));
})();
