/* The fleet page: queue counters refreshed from GET /queue/info. */
(function () {
  "use strict";
  var df = window.dubfleet;
  var counters = document.getElementById("counters");
  if (!counters) { return; }
  function refresh() {
    df.api("GET", counters.dataset.url).then(function (result) {
      if (result.ok && result.data) {
        Object.keys(result.data).forEach(function (key) {
          var el = counters.querySelector('[data-field="' + key + '"]');
          if (!el) { return; }
          var value = result.data[key];
          el.textContent = key === "throughput_per_minute" ? Number(value).toFixed(1) : value;
        });
      }
      window.setTimeout(refresh, df.pollSeconds * 2000);
    });
  }
  window.setTimeout(refresh, df.pollSeconds * 2000);
})();
