/* The job page's Webhook box: the job's callback_url deliveries (GET /jobs/<id>/deliveries).
 * Hidden when the job has none; refreshed while a delivery is pending (the page reloads itself
 * when the job ends, which loads the first delivery).
 * Everything from the server goes into the page with textContent. */
(function () {
  "use strict";

  var df = window.dubfleet;
  var box = document.getElementById("webhook");
  if (!box || !df) { return; }
  var rows = document.getElementById("webhook-rows");
  var state = document.getElementById("webhook-state");

  function cell(text) {
    var td = document.createElement("td");
    td.textContent = text === null || text === undefined || text === "" ? "—" : String(text);
    return td;
  }

  function when(epoch) {
    return epoch ? new Date(epoch * 1000).toLocaleString() : "";
  }

  function row(d) {
    var tr = document.createElement("tr");
    var status = d.status + (d.signed === false ? " (unsigned)" : "");
    [d.event, status, d.attempts, d.last_http_status, d.last_error,
     when(d.delivered_at || d.updated_at)].forEach(function (value) { tr.appendChild(cell(value)); });
    tr.className = "delivery-" + d.status;
    return tr;
  }

  function show(deliveries) {
    rows.replaceChildren.apply(rows, deliveries.map(row));
    box.hidden = deliveries.length === 0;
    var pending = deliveries.filter(function (d) { return d.status === "pending"; });
    state.textContent = pending.length ? "Delivering… (retried with backoff on failure)" : "";
    return pending.length > 0;
  }

  function load() {
    df.api("GET", box.dataset.deliveriesUrl).then(function (result) {
      if (result.ok && result.data && show(result.data.deliveries || [])) {
        window.setTimeout(load, df.pollSeconds * 1000);
      }
    });
  }

  load();
})();
