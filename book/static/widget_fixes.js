// Loaded before widgets_js/embed.js (ipywidgets' html-manager), and only on pages that show widgets
// (_config.yml: sphinx.config.nb_ipywidgets_js). It makes two things of the book's theme agree with
// the widgets; tests/test_browser.py checks the result.
(function () {
  "use strict";

  // 1. The theme's Font Awesome JS (pydata-sphinx-theme's _static/scripts/fontawesome.js) watches the
  //    page and replaces every <i class="fa ..."> that appears with an <svg>. The Play widget switches its
  //    icon with `button.getElementsByTagName("i")[0].className = ...`, which then throws on every change
  //    of its value, and that exception stops the jslinks that share the slider's change event: the
  //    slider would move but not the picture. So once the page has loaded (the theme's own icons are
  //    converted by then) and before the widgets render (this listener is registered before embed.js
  //    registers its own), Font Awesome stops watching; the widgets keep their <i> and draw them with
  //    the Font Awesome 5 webfont that html-manager bundles (vendored in widgets_js/).
  window.addEventListener("load", function () {
    if (window.FontAwesome && typeof window.FontAwesome.noAuto === "function") {
      window.FontAwesome.noAuto();
    }
  });

  // 2. The widgets typeset their descriptions with the MathJax 2 API (MathJax.Hub.Queue) whenever
  //    window.MathJax exists; Sphinx loads MathJax 3, which has no Hub (and offline, window.MathJax is
  //    only Sphinx's configuration object). Give them a Hub that typesets with MathJax 3 when it is there.
  //    MathJax (deferred) has replaced window.MathJax by DOMContentLoaded; the widgets render on "load".
  document.addEventListener("DOMContentLoaded", function () {
    var mj = window.MathJax;
    if (mj && !mj.Hub) {
      mj.Hub = {
        Queue: function (job) {
          var element = Array.isArray(job) ? job[2] : undefined;
          if (element && typeof mj.typesetPromise === "function") {
            mj.typesetPromise([element]).catch(function () {});
          }
        },
      };
    }
  });
})();
