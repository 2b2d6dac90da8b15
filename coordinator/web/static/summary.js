/* dubfleet web app: the job page's summary (title, key points, chapters), its editor and export.
 * A chapter or key point seeks the player; everything from the server goes in as textContent. */
(function () {
  "use strict";

  var df = window.dubfleet;
  var section = document.getElementById("summary");
  if (!section) { return; }
  var player = document.getElementById("player");
  var state = document.getElementById("summary-state");
  var view = document.getElementById("summary-view");
  var form = document.getElementById("summary-form");
  var editButton = document.getElementById("summary-edit");
  var errorBox = document.getElementById("summary-error");
  var summary = null;

  function clock(seconds) {
    var whole = Math.max(0, Math.floor(Number(seconds) || 0));
    var h = Math.floor(whole / 3600), m = Math.floor((whole % 3600) / 60), s = whole % 60;
    var mm = h ? (m < 10 ? "0" + m : String(m)) : String(m);
    return (h ? h + ":" : "") + mm + ":" + (s < 10 ? "0" + s : s);
  }

  function seekButton(seconds, text, label) {
    var button = document.createElement("button");
    button.type = "button";
    button.className = "seek link";
    button.textContent = text;
    button.setAttribute("aria-label", label);
    button.disabled = !player;
    button.addEventListener("click", function () {
      if (!player) { return; }
      player.currentTime = Math.max(0, Number(seconds) || 0);
      player.focus();
    });
    return button;
  }

  function item(seconds, text, label) {
    var li = document.createElement("li");
    li.appendChild(seekButton(seconds, clock(seconds), label + clock(seconds)));
    li.appendChild(document.createTextNode(" "));
    var span = document.createElement("span");
    span.textContent = text;
    li.appendChild(span);
    return li;
  }

  function render() {
    document.getElementById("summary-title").textContent = summary.title;
    var points = document.getElementById("summary-points");
    var chapters = document.getElementById("summary-chapters");
    points.textContent = "";
    chapters.textContent = "";
    (summary.key_points || []).forEach(function (p) {
      points.appendChild(item(p.start, p.text, "Play the key point at "));
    });
    (summary.chapters || []).forEach(function (c) {
      var li = item(c.start, c.title, "Play the chapter from ");
      li.className = "chapter";
      chapters.appendChild(li);
    });
    state.textContent = summary.method === "edited" ? "Edited by you." : "";
    view.hidden = false;
    form.hidden = true;
    if (editButton) {
      editButton.hidden = section.dataset.canEdit !== "true";
      editButton.setAttribute("aria-pressed", "false");
    }
  }

  function input(value, label, id) {
    var wrap = document.createElement("p");
    var lab = document.createElement("label");
    lab.htmlFor = id;
    lab.textContent = label;
    var field = document.createElement(label.indexOf("Key point") === 0 ? "textarea" : "input");
    if (field.tagName === "INPUT") { field.type = "text"; }
    field.id = id;
    field.maxLength = 1000;
    field.value = value;
    wrap.appendChild(lab);
    wrap.appendChild(field);
    return wrap;
  }

  function openEditor() {
    document.getElementById("summary-title-input").value = summary.title;
    var points = document.getElementById("summary-point-inputs");
    var chapters = document.getElementById("summary-chapter-inputs");
    points.textContent = "";
    chapters.textContent = "";
    (summary.key_points || []).forEach(function (p, i) {
      points.appendChild(input(p.text, "Key point " + (i + 1) + " (" + clock(p.start) + ")",
                               "summary-point-" + i));
    });
    (summary.chapters || []).forEach(function (c, i) {
      chapters.appendChild(input(c.title, "Chapter " + (i + 1) + " (" + clock(c.start) + ")",
                                 "summary-chapter-" + i));
    });
    view.hidden = true;
    form.hidden = false;
    errorBox.hidden = true;
    editButton.setAttribute("aria-pressed", "true");
    document.getElementById("summary-title-input").focus();
  }

  function edited() {
    var value = function (id) { return document.getElementById(id).value; };
    return {
      title: value("summary-title-input"),
      language: summary.language || "",
      key_points: (summary.key_points || []).map(function (p, i) {
        return { text: value("summary-point-" + i), start: p.start, end: p.end };
      }).filter(function (p) { return p.text.trim() !== ""; }),
      chapters: (summary.chapters || []).map(function (c, i) {
        return { start: c.start, end: c.end, title: value("summary-chapter-" + i) };
      })
    };
  }

  function save(event) {
    event.preventDefault();
    var button = document.getElementById("summary-save");
    button.disabled = true;
    errorBox.hidden = true;
    df.api("PUT", section.dataset.saveUrl, edited()).then(function (result) {
      button.disabled = false;
      if (!result.ok) {
        errorBox.textContent = df.errorText(result);
        errorBox.hidden = false;
        return;
      }
      summary = result.data.summary;
      render();
      state.textContent = "Saved.";
      var exportLink = document.getElementById("summary-export");
      if (exportLink) { exportLink.href = section.dataset.exportUrl; }
      if (editButton) { editButton.focus(); }
    });
  }

  if (editButton) {
    editButton.addEventListener("click", function () {
      if (form.hidden) { openEditor(); } else { render(); }
    });
  }
  document.getElementById("summary-cancel").addEventListener("click", function () {
    render();
    if (editButton) { editButton.focus(); }
  });
  form.addEventListener("submit", save);

  df.api("GET", section.dataset.summaryUrl).then(function (result) {
    if (!result.ok || !result.data || typeof result.data.title !== "string") {
      state.textContent = "The summary could not be loaded.";
      return;
    }
    summary = result.data;
    render();
  });
})();
