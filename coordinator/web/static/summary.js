/* dubfleet web app: the job page's summaries (title, key points, chapters), one tab per language
 * (the source's and the translation's), each with its editor and Markdown export.
 * A chapter or key point seeks the player; everything from the server goes in as textContent. */
(function () {
  "use strict";

  var df = window.dubfleet;
  var section = document.getElementById("summary");
  if (!section) { return; }
  var player = document.getElementById("player");
  var state = document.getElementById("summary-state");
  var panel = document.getElementById("summary-panel");
  var view = document.getElementById("summary-view");
  var form = document.getElementById("summary-form");
  var editButton = document.getElementById("summary-edit");
  var exportLink = document.getElementById("summary-export");
  var errorBox = document.getElementById("summary-error");
  var tabs = Array.prototype.slice.call(section.querySelectorAll("[role=tab]"));
  var current = tabs[0];
  var loaded = {};  // language -> the summary shown (the edit once saved)
  var summary = null;

  // The two lists of a summary, shown and edited alike.
  var PARTS = [
    { key: "key_points", text: "text", list: "summary-points", inputs: "summary-point-inputs",
      id: "summary-point-", label: "Key point ", seek: "Play the key point at ", multiline: true },
    { key: "chapters", text: "title", list: "summary-chapters", inputs: "summary-chapter-inputs",
      id: "summary-chapter-", label: "Chapter ", seek: "Play the chapter from ", itemClass: "chapter" }
  ];

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

  function showList(part) {
    var list = document.getElementById(part.list);
    list.textContent = "";
    (summary[part.key] || []).forEach(function (entry) {
      var li = item(entry.start, entry[part.text], part.seek);
      if (part.itemClass) { li.className = part.itemClass; }
      list.appendChild(li);
    });
  }

  function render() {
    document.getElementById("summary-title").textContent = summary.title;
    PARTS.forEach(showList);
    state.textContent = summary.method === "edited" ? "Edited by you." : "";
    view.hidden = false;
    form.hidden = true;
    if (editButton) {
      editButton.hidden = section.dataset.canEdit !== "true";
      editButton.setAttribute("aria-pressed", "false");
    }
  }

  function input(value, label, id, multiline) {
    var wrap = document.createElement("p");
    var lab = document.createElement("label");
    lab.htmlFor = id;
    lab.textContent = label;
    var field = document.createElement(multiline ? "textarea" : "input");
    if (!multiline) { field.type = "text"; }
    field.id = id;
    field.maxLength = 1000;
    field.value = value;
    wrap.appendChild(lab);
    wrap.appendChild(field);
    return wrap;
  }

  function fillEditor(part) {
    var box = document.getElementById(part.inputs);
    box.textContent = "";
    (summary[part.key] || []).forEach(function (entry, i) {
      box.appendChild(input(entry[part.text], part.label + (i + 1) + " (" + clock(entry.start) + ")",
                            part.id + i, part.multiline));
    });
  }

  function openEditor() {
    document.getElementById("summary-title-input").value = summary.title;
    PARTS.forEach(fillEditor);
    view.hidden = true;
    form.hidden = false;
    errorBox.hidden = true;
    editButton.setAttribute("aria-pressed", "true");
    document.getElementById("summary-title-input").focus();
  }

  function edited() {
    var value = function (id) { return document.getElementById(id).value; };
    var body = { title: value("summary-title-input"), language: summary.language || "" };
    PARTS.forEach(function (part) {
      body[part.key] = (summary[part.key] || []).map(function (entry, i) {
        var copy = { start: entry.start, end: entry.end };
        copy[part.text] = value(part.id + i);
        return copy;
      });
    });
    // an emptied key point is dropped; an emptied chapter title is refused by the server
    body.key_points = body.key_points.filter(function (p) { return p.text.trim() !== ""; });
    return body;
  }

  function save(event) {
    event.preventDefault();
    var button = document.getElementById("summary-save");
    var tab = current;
    button.disabled = true;
    errorBox.hidden = true;
    df.api("PUT", tab.dataset.saveUrl, edited()).then(function (result) {
      button.disabled = false;
      if (!result.ok) {
        errorBox.textContent = df.errorText(result);
        errorBox.hidden = false;
        return;
      }
      loaded[tab.dataset.language] = result.data.summary;
      tab.dataset.mdUrl = tab.dataset.exportUrl;  // the edited Markdown from now on
      if (tab !== current) { return; }
      summary = result.data.summary;
      render();
      showExport();
      state.textContent = "Saved.";
      if (editButton) { editButton.focus(); }
    });
  }

  function showExport() {
    if (!exportLink) { return; }
    exportLink.href = current.dataset.mdUrl || "";
    exportLink.hidden = !current.dataset.mdUrl;
  }

  function show(tab) {
    var language = tab.dataset.language;
    summary = null;
    view.hidden = true;
    form.hidden = true;
    errorBox.hidden = true;
    if (editButton) { editButton.hidden = true; }
    panel.setAttribute("aria-labelledby", tab.id);
    panel.lang = language;  // read aloud in the summary's own language
    showExport();
    if (loaded[language]) {
      summary = loaded[language];
      render();
      return;
    }
    state.textContent = "Loading the summary…";
    df.api("GET", tab.dataset.summaryUrl).then(function (result) {
      if (tab !== current) { return; }  // another tab was chosen meanwhile
      if (!result.ok || !result.data || typeof result.data.title !== "string") {
        state.textContent = "The summary could not be loaded.";
        return;
      }
      loaded[language] = result.data;
      summary = result.data;
      render();
    });
  }

  function select(tab, focus) {
    tabs.forEach(function (other) {
      var chosen = other === tab;
      other.setAttribute("aria-selected", chosen ? "true" : "false");
      other.tabIndex = chosen ? 0 : -1;
    });
    if (focus) { tab.focus(); }
    if (tab === current && summary) { return; }
    current = tab;
    show(tab);
  }

  tabs.forEach(function (tab, i) {
    tab.addEventListener("click", function () { select(tab, false); });
    tab.addEventListener("keydown", function (event) {  // arrows, Home and End move between tabs
      var to = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: tabs.length - 1 }[event.key];
      if (to === undefined) { return; }
      event.preventDefault();
      select(tabs[(to + tabs.length) % tabs.length], true);
    });
  });
  if (editButton) {
    editButton.addEventListener("click", function () {
      if (!summary) { return; }
      if (form.hidden) { openEditor(); } else { render(); }
    });
  }
  document.getElementById("summary-cancel").addEventListener("click", function () {
    render();
    if (editButton) { editButton.focus(); }
  });
  form.addEventListener("submit", save);

  show(current);
})();
