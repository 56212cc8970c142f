// gatewayd console: live updates over Server-Sent Events. The server
// renders and escapes every fragment; this script only swaps it in. With
// scripts off, the page refreshes itself (a <noscript> meta refresh).
"use strict";
(function () {
  var main = document.getElementById("main");
  var live = document.getElementById("live");
  if (!main || !window.EventSource) {
    return;
  }
  var updates = 0;
  var es = new EventSource("console/events");
  es.addEventListener("main", function (e) {
    main.innerHTML = e.data;
    updates++;
    document.body.setAttribute("data-updates", String(updates));
    if (live) {
      live.textContent = "live";
      live.className = "live";
    }
  });
  es.onerror = function () {
    if (live) {
      live.textContent = "reconnecting";
      live.className = "stale";
    }
  };
})();
