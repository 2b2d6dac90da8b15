/* dubfleet web app: helpers shared by the pages (no library, no build step).
 * Data from the server is only ever put into the page with textContent, never as HTML. */
(function () {
  "use strict";

  var TERMINAL = ["completed", "failed", "cancelled"];
  var tokenMeta = document.querySelector('meta[name="csrf-token"]');
  var csrf = tokenMeta ? tokenMeta.content : "";
  var pollSeconds = parseFloat(document.body.dataset.pollSeconds || "5") || 5;

  /* A call to the JSON API with the session cookie and, for changes, the CSRF header. */
  function api(method, url, body) {
    var init = { method: method, credentials: "same-origin", headers: { "Accept": "application/json" } };
    if (method !== "GET") { init.headers["X-CSRF-Token"] = csrf; }
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    return fetch(url, init).then(function (response) {
      return response.text().then(function (text) {
        var data = null;
        try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
        return { ok: response.ok, status: response.status, data: data };
      });
    }, function () {
      return { ok: false, status: 0, data: { message: "The coordinator cannot be reached." } };
    });
  }

  function errorText(result) {
    if (result.data && result.data.message) { return result.data.message; }
    return "Request failed (" + result.status + ").";
  }

  /* Seconds as "45 s", "3 min 05 s", "1 h 02 min" (like the server's `duration` filter). */
  function duration(seconds) {
    if (seconds === null || seconds === undefined || seconds < 0 || isNaN(seconds)) { return "—"; }
    var whole = Math.round(seconds);
    if (whole < 60) { return whole + " s"; }
    var minutes = Math.floor(whole / 60), secs = whole % 60;
    if (minutes < 60) { return minutes + " min " + String(secs).padStart(2, "0") + " s"; }
    return Math.floor(minutes / 60) + " h " + String(minutes % 60).padStart(2, "0") + " min";
  }

  /* Every <time datetime> in the viewer's own time zone. */
  function localTimes(root) {
    (root || document).querySelectorAll("time[datetime]").forEach(function (el) {
      var when = new Date(el.getAttribute("datetime"));
      if (!isNaN(when.getTime())) {
        el.textContent = when.toLocaleString([], { dateStyle: "medium", timeStyle: "short" });
        el.title = when.toISOString();
      }
    });
  }

  function field(root, name) { return root.querySelector('[data-field="' + name + '"]'); }

  function setText(root, name, text) {
    var el = field(root, name);
    if (el) { el.textContent = text; }
  }

  /* An event's data from a job view (GET /jobs/<id>): events carry `id` and progress 0..1,
   * views `job_id` and progress in percent. */
  function fromView(view) {
    var job = Object.assign({}, view);
    job.id = view.job_id;
    job.progress = (Number(view.progress) || 0) / 100;
    return job;
  }

  /* Show a job's state (an event's data, see fromView) in the elements of `root`. */
  function applyJob(root, job) {
    var status = job.status;
    var progress = Math.max(0, Math.min(1, Number(job.progress) || 0));
    var statusEl = field(root, "status");
    if (statusEl) {
      statusEl.textContent = status;
      statusEl.className = "badge status-" + status;
    }
    setText(root, "position", job.queue_position ? "#" + job.queue_position + " in queue" : "");
    var waiting = field(root, "waiting");
    if (waiting) {
      waiting.textContent = job.waiting_for || "";
      waiting.hidden = !job.waiting_for;
    }
    setText(root, "stage", job.stage || "—");
    var bar = field(root, "progress");
    if (bar) { bar.value = progress; }
    setText(root, "percent", Math.round(progress * 100) + " %");
    setText(root, "eta", status === "running" ? duration(job.eta_seconds) : "—");
    setText(root, "message", job.message || "");
    showActions(root, status);
    root.dataset.status = status;
  }

  function showActions(root, status) {
    root.querySelectorAll("[data-action=cancel]").forEach(function (b) {
      b.hidden = !(status === "queued" || status === "running");
    });
    root.querySelectorAll("[data-action=retry]").forEach(function (b) {
      b.hidden = !(status === "failed" || status === "cancelled");
    });
  }

  /* Cancel or retry a job through the API; `done(view)` gets the new job view. */
  function jobAction(action, jobId, done, fail) {
    var call = action === "cancel" ? api("DELETE", "/jobs/" + encodeURIComponent(jobId))
      : api("POST", "/jobs/" + encodeURIComponent(jobId) + "/retry");
    call.then(function (result) {
      if (result.ok) { done(fromView(result.data)); } else { fail(errorText(result)); }
    });
  }

  /* Follow Server-Sent Events at `url` (`onJob` per "job" message); when the stream cannot be
   * had (an error, 503 past the server's stream limit, no EventSource), call `poll` every
   * pollSeconds instead; `poll` resolves to true when there is nothing left to follow. */
  function follow(url, onJob, poll, stateEl) {
    var source = null, stopped = false, failures = 0, timer = null;
    function say(text) { if (stateEl) { stateEl.textContent = text; } }
    function tick() {
      if (stopped) { return; }
      poll().then(function (finished) {
        if (finished) { stop(); return; }
        timer = window.setTimeout(tick, pollSeconds * 1000);
      });
    }
    function startPolling() {
      if (source) { source.close(); source = null; }
      say("Updating every " + pollSeconds + " s.");
      tick();
    }
    function stop() {
      stopped = true;
      if (source) { source.close(); source = null; }
      if (timer) { window.clearTimeout(timer); }
    }
    if (!window.EventSource) { startPolling(); return { stop: stop }; }
    source = new EventSource(url);
    source.onopen = function () { failures = 0; say("Live."); };
    source.addEventListener("job", function (event) {
      var job;
      try { job = JSON.parse(event.data); } catch (e) { return; }
      failures = 0;
      onJob(job);
    });
    source.onerror = function () {
      failures += 1;
      if (stopped) { return; }
      if (!source || source.readyState === EventSource.CLOSED || failures >= 3) { startPolling(); }
    };
    return { stop: stop };
  }

  localTimes();
  window.dubfleet = {
    TERMINAL: TERMINAL, api: api, errorText: errorText, duration: duration, applyJob: applyJob,
    jobAction: jobAction, follow: follow, fromView: fromView, localTimes: localTimes, csrf: csrf, pollSeconds: pollSeconds
  };
})();
