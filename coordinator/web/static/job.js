/* The job page: live progress, the player's dubbed/original toggle, the transcript (click a line
 * to seek) and corrections posted as a re-dub. */
(function () {
  "use strict";
  var df = window.dubfleet;
  var live = document.getElementById("live");
  var player = document.getElementById("player");
  var actions = document.getElementById("job-actions");
  var jobId = live.dataset.jobId;

  /* --- a search result's moment (?t=12.3): the player starts there, its line is marked --- */
  var moment = parseFloat(new URLSearchParams(window.location.search).get("t"));
  if (!(moment >= 0)) { moment = null; }
  if (player && moment !== null) {
    var toMoment = function () { player.currentTime = Math.min(moment, player.duration || moment); };
    if (player.readyState >= 1) { toMoment(); } else { player.addEventListener("loadedmetadata", toMoment, { once: true }); }
  }

  function markMoment(body, lines) {
    if (moment === null) { return; }
    var at = null;
    lines.forEach(function (line) { if (line.start <= moment + 0.01) { at = line; } });
    var tr = at && body.querySelector('tr[data-index="' + at.index + '"]');
    if (!tr) { return; }
    tr.classList.add("moment");
    tr.setAttribute("aria-current", "true");
    tr.scrollIntoView({ block: "center" });
  }

  /* --- live progress --- */
  function finished(status) { return df.TERMINAL.indexOf(status) >= 0; }

  function show(job) {
    var before = live.dataset.status;
    df.applyJob(live, job);
    df.applyJob(actions, job);
    if (finished(job.status) && !finished(before)) {
      // the player, transcript and downloads are rendered by the server: load them
      window.setTimeout(function () { window.location.reload(); }, 300);
    }
    return finished(job.status);
  }

  if (!finished(live.dataset.status)) {
    var follower = df.follow(live.dataset.eventsUrl, function (job) {
      if (show(job)) { follower.stop(); }
    }, function () {
      return df.api("GET", live.dataset.viewUrl).then(function (result) {
        return result.ok && result.data ? show(df.fromView(result.data)) : false;
      });
    }, document.getElementById("live-state"));
  }

  actions.addEventListener("click", function (event) {
    var button = event.target.closest("button[data-action]");
    if (!button) { return; }
    button.disabled = true;
    df.jobAction(button.dataset.action, jobId, function () {
      window.location.reload();
    }, function (message) {
      button.disabled = false;
      document.getElementById("live-state").textContent = message;
    });
  });

  /* --- dubbed / original --- */
  document.querySelectorAll('input[name="audio"]').forEach(function (radio) {
    radio.addEventListener("change", function () {
      if (!player || !radio.checked) { return; }
      var at = player.currentTime, playing = !player.paused;
      player.src = radio.value === "original" ? player.dataset.original : player.dataset.dubbed;
      player.addEventListener("loadedmetadata", function once() {
        player.removeEventListener("loadedmetadata", once);
        player.currentTime = Math.min(at, player.duration || at);
        if (playing) { player.play().catch(function () {}); }
      });
      player.load();
    });
  });

  /* --- transcript --- */
  var section = document.getElementById("transcript");
  if (!section) { return; }
  var table = section.querySelector("table.lines");
  var body = document.getElementById("lines");
  var stateEl = document.getElementById("transcript-state");
  var labels = JSON.parse(section.dataset.flagLabels || "{}");
  var lines = [];
  var editing = false;

  function clock(seconds) {
    var s = Math.max(0, Number(seconds) || 0);
    var minutes = Math.floor(s / 60);
    return minutes + ":" + (s - minutes * 60).toFixed(1).padStart(4, "0");
  }

  function fromReport(report) {
    var revoiced = report.revoiced || [];
    return (report.segments || []).map(function (seg) {
      var flags = (seg.flags || []).filter(function (f) { return labels[f]; }).map(function (f) {
        return f === "sped_up" && seg.speed ? labels[f] + " ×" + Number(seg.speed).toFixed(2) : labels[f];
      });
      if (revoiced.indexOf(seg.index) >= 0) { flags.unshift("re-voiced"); }
      return { index: seg.index, start: seg.onset != null ? seg.onset : seg.slot_start,
               source: seg.source_text || "", target: seg.target_text || "", flags: flags };
    });
  }

  function fromTranscript(transcript) {
    if (transcript.translation && transcript.translation.segments) {
      return transcript.translation.segments.map(function (seg) {
        return { index: seg.index, start: seg.start, source: seg.source_text || "",
                 target: seg.text || "", flags: [] };
      });
    }
    return (transcript.segments || []).map(function (seg) {
      return { index: seg.index, start: seg.start, source: seg.text || "", target: "", flags: [] };
    });
  }

  function seek(seconds) {
    if (!player) { return; }
    player.currentTime = Math.max(0, Number(seconds) || 0);
    player.focus();
  }

  function textCell(line, key, label) {
    var td = document.createElement("td");
    td.className = key;
    td.dataset.label = label;
    var span = document.createElement("span");
    span.className = "text";
    span.textContent = line[key];
    td.appendChild(span);
    return td;
  }

  function row(line) {
    var tr = document.createElement("tr");
    tr.dataset.index = line.index;
    var time = document.createElement("td");
    time.dataset.label = "Time";
    var button = document.createElement("button");
    button.type = "button";
    button.className = "seek link";
    button.textContent = clock(line.start);
    button.setAttribute("aria-label", "Play from " + clock(line.start));
    button.disabled = !player;
    button.addEventListener("click", function () { seek(line.start); });
    time.appendChild(button);
    tr.appendChild(time);
    tr.appendChild(textCell(line, "source", "Original"));
    tr.appendChild(textCell(line, "target", "Translation"));
    var notes = document.createElement("td");
    notes.dataset.label = "Notes";
    line.flags.forEach(function (flag) {
      var badge = document.createElement("span");
      badge.className = "flag";
      badge.textContent = flag;
      notes.appendChild(badge);
    });
    tr.appendChild(notes);
    tr.addEventListener("click", function (event) {
      if (!editing && !event.target.closest("button")) { seek(line.start); }
    });
    return tr;
  }

  function render(loaded) {
    lines = loaded;
    body.textContent = "";
    lines.forEach(function (line) { body.appendChild(row(line)); });
    markMoment(body, lines);
    table.hidden = lines.length === 0;
    stateEl.textContent = lines.length ? lines.length + " lines." : "No speech was found.";
  }

  function load(url) {
    return url ? df.api("GET", url).then(function (r) { return r.ok ? r.data : null; })
      : Promise.resolve(null);
  }

  load(section.dataset.reportUrl).then(function (report) {
    if (report && report.segments) { render(fromReport(report)); return; }
    return load(section.dataset.transcriptUrl).then(function (transcript) {
      if (transcript) { render(fromTranscript(transcript)); }
      else { stateEl.textContent = "The transcript could not be loaded."; }
    });
  });

  /* --- corrections --- */
  var toggle = document.getElementById("edit-toggle");
  var bar = document.getElementById("redub-bar");
  var redub = document.getElementById("redub");
  var errorEl = document.getElementById("redub-error");
  if (!toggle) { return; }

  function editors(tr) {
    return { source: tr.querySelector("td.source textarea"), target: tr.querySelector("td.target textarea") };
  }

  function changes() {
    var edits = [];
    lines.forEach(function (line) {
      var tr = body.querySelector('tr[data-index="' + line.index + '"]');
      var ed = editors(tr);
      if (!ed.source) { return; }
      var target = ed.target.value.trim(), source = ed.source.value.trim();
      var changed = target !== line.target.trim() || source !== line.source.trim();
      tr.classList.toggle("changed", changed);
      if (target !== line.target.trim() && target) { edits.push({ index: line.index, text: target }); }
      else if (source !== line.source.trim() && source) { edits.push({ index: line.index, source_text: source }); }
    });
    redub.disabled = edits.length === 0;
    document.getElementById("changed-count").textContent =
      edits.length === 1 ? "1 line changed" : edits.length + " lines changed";
    return edits;
  }

  function setEditing(on) {
    editing = on;
    toggle.setAttribute("aria-pressed", on ? "true" : "false");
    toggle.textContent = on ? "Stop correcting" : "Correct lines";
    document.getElementById("edit-hint").hidden = !on;
    bar.hidden = !on;
    lines.forEach(function (line) {
      var tr = body.querySelector('tr[data-index="' + line.index + '"]');
      ["source", "target"].forEach(function (key) {
        var td = tr.querySelector("td." + key);
        var span = td.querySelector("span.text");
        var area = td.querySelector("textarea");
        if (on && !area) {
          area = document.createElement("textarea");
          area.rows = 2;
          area.value = line[key];
          area.setAttribute("aria-label", (key === "source" ? "Original" : "Translation") + ", line at " + clock(line.start));
          area.addEventListener("input", changes);
          area.addEventListener("focus", function () { if (player) { player.pause(); } });
          td.appendChild(area);
        }
        if (span) { span.hidden = on; }
        if (area) { area.hidden = !on; }
      });
    });
    changes();
  }

  toggle.addEventListener("click", function () { setEditing(!editing); });
  document.getElementById("discard").addEventListener("click", function () {
    body.querySelectorAll("textarea").forEach(function (area) { area.remove(); });
    setEditing(false);
  });

  redub.addEventListener("click", function () {
    var edits = changes();
    if (!edits.length) { return; }
    redub.disabled = true;
    errorEl.hidden = true;
    df.api("POST", section.dataset.redubUrl, { segments: edits }).then(function (result) {
      if (result.ok && result.data && result.data.job_id) {
        window.location.assign("/app/jobs/" + encodeURIComponent(result.data.job_id));
        return;
      }
      redub.disabled = false;
      errorEl.textContent = df.errorText(result);
      errorEl.hidden = false;
    });
  });
})();
