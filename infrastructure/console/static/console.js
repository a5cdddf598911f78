// Live pages: the console stream says when the log moved; htmx then asks the page again and
// swaps its #live region (hx-trigger="gnlc-changed from:body"). No content travels on the stream.
(function () {
  "use strict";
  var url = document.body.getAttribute("data-stream");
  if (!url || !window.EventSource || !document.getElementById("live")) { return; }
  var source = new EventSource(url);
  source.addEventListener("changed", function () {
    document.body.dispatchEvent(new CustomEvent("gnlc-changed"));
  });
})();
