/* The jobs list: rows follow /jobs/events live (polling GET /jobs/<id> as a fallback). */
(function () {
  "use strict";
  var df = window.dubfleet;
  var table = document.getElementById("jobs");
  var stateEl = document.getElementById("live-state");
  var newJobs = document.getElementById("new-jobs");
  if (!table) { return; }

  function rows() {
    var found = {};
    table.querySelectorAll("tr[data-job-id]").forEach(function (row) { found[row.dataset.jobId] = row; });
    return found;
  }

  function onJob(job) {
    var id = job.id || job.job_id;
    var row = rows()[id];
    if (row) { df.applyJob(row, job); }
    else if (df.TERMINAL.indexOf(job.status) < 0 && newJobs) { newJobs.hidden = false; }
  }

  /* One pass over the rows still moving; resolves true when none is left. */
  function poll() {
    var open = Object.values(rows()).filter(function (row) {
      return df.TERMINAL.indexOf(row.dataset.status) < 0;
    });
    return open.reduce(function (chain, row) {
      return chain.then(function () {
        return df.api("GET", "/jobs/" + encodeURIComponent(row.dataset.jobId)).then(function (result) {
          if (result.ok && result.data) { df.applyJob(row, df.fromView(result.data)); }
        });
      });
    }, Promise.resolve()).then(function () { return false; });
  }

  table.addEventListener("click", function (event) {
    var button = event.target.closest("button[data-action]");
    if (!button) { return; }
    var row = button.closest("tr[data-job-id]");
    button.disabled = true;
    df.jobAction(button.dataset.action, row.dataset.jobId, function (view) {
      button.disabled = false;
      df.applyJob(row, view);
      stateEl.textContent = "Job " + (view.input_name || view.id) + " is now " + view.status + ".";
    }, function (message) {
      button.disabled = false;
      stateEl.textContent = message;
    });
  });

  df.follow("/jobs/events", onJob, poll, stateEl);
})();
