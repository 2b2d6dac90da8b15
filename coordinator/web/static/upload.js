/* The upload page: files (picked or dropped) or a URL, one progress bar per upload, a link to
 * each job as soon as it is queued. */
(function () {
  "use strict";
  var df = window.dubfleet;
  var form = document.getElementById("upload-form");
  var input = document.getElementById("files");
  var drop = document.getElementById("drop");
  var chosenList = document.getElementById("chosen");
  var uploads = document.getElementById("uploads");
  var formError = document.getElementById("form-error");
  var chosen = [];
  var sending = 0;

  function showChosen() {
    chosenList.textContent = "";
    chosen.forEach(function (file) {
      var li = document.createElement("li");
      li.textContent = file.name;
      chosenList.appendChild(li);
    });
  }

  function add(files) {
    Array.prototype.forEach.call(files, function (file) { chosen.push(file); });
    showChosen();
  }

  input.addEventListener("change", function () { chosen = []; add(input.files); });
  ["dragenter", "dragover"].forEach(function (name) {
    drop.addEventListener(name, function (event) { event.preventDefault(); drop.classList.add("over"); });
  });
  ["dragleave", "drop"].forEach(function (name) {
    drop.addEventListener(name, function () { drop.classList.remove("over"); });
  });
  drop.addEventListener("drop", function (event) {
    event.preventDefault();
    if (event.dataTransfer && event.dataTransfer.files.length) { add(event.dataTransfer.files); }
  });

  function fields() {
    var options = { keep_original: document.getElementById("keep_original").checked };
    var speed = parseFloat(document.getElementById("max_speed").value);
    if (!isNaN(speed)) { options.max_speed = speed; }
    var engine = document.getElementById("translation_engine").value;
    if (engine) { options.translation_engine = engine; }
    var voice = document.getElementById("voice").value.trim();
    if (voice) { options.voice = voice; }
    var result = {
      kind: document.getElementById("kind").value,
      source_language: document.getElementById("source_language").value,
      target_language: document.getElementById("target_language").value,
      options: options
    };
    var model = document.getElementById("asr_model").value.trim();
    if (model) { result.asr_model = model; }
    return result;
  }

  /* One entry in the uploads list: name, progress bar, status line. */
  function entry(name) {
    var li = document.createElement("li");
    var title = document.createElement("strong");
    title.textContent = name;
    var bar = document.createElement("progress");
    bar.max = 1;
    bar.value = 0;
    bar.setAttribute("aria-label", "Upload of " + name);
    var status = document.createElement("span");
    status.className = "upload-status";
    status.setAttribute("role", "status");
    status.textContent = "waiting";
    li.append(title, bar, status);
    uploads.prepend(li);
    return { li: li, bar: bar, status: status };
  }

  function queued(item, reply) {
    item.bar.value = 1;
    item.status.textContent = "queued" + (reply.queue_position ? " (#" + reply.queue_position + ") " : " ");
    var link = document.createElement("a");
    link.href = "/app/jobs/" + encodeURIComponent(reply.job_id);
    link.textContent = "open job";
    link.className = "job-link";
    item.status.appendChild(link);
    item.li.classList.add("done");
  }

  function failed(item, message) {
    item.status.textContent = "failed: " + message;
    item.li.classList.add("failed");
  }

  function sendFile(file, values) {
    return new Promise(function (resolve) {
      var item = entry(file.name);
      var data = new FormData();
      data.append("kind", values.kind);
      data.append("source_language", values.source_language);
      data.append("target_language", values.target_language);
      data.append("options", JSON.stringify(values.options));
      if (values.asr_model) { data.append("asr_model", values.asr_model); }
      data.append("filename", file.name);
      data.append("file", file, file.name);
      var xhr = new XMLHttpRequest();
      xhr.open("POST", form.dataset.submitUrl);
      xhr.setRequestHeader("X-CSRF-Token", df.csrf);
      xhr.setRequestHeader("Accept", "application/json");
      xhr.upload.addEventListener("progress", function (event) {
        if (event.lengthComputable) {
          item.bar.value = event.loaded / event.total;
          item.status.textContent = "uploading " + Math.round(100 * event.loaded / event.total) + " %";
        }
      });
      xhr.addEventListener("load", function () {
        var reply = null;
        try { reply = JSON.parse(xhr.responseText); } catch (e) { reply = null; }
        if (xhr.status >= 200 && xhr.status < 300 && reply && reply.job_id) { queued(item, reply); }
        else { failed(item, (reply && reply.message) || ("error " + xhr.status)); }
        resolve();
      });
      xhr.addEventListener("error", function () { failed(item, "the connection was lost"); resolve(); });
      item.status.textContent = "uploading";
      xhr.send(data);
    });
  }

  function sendUrl(url, values) {
    var item = entry(url);
    item.status.textContent = "sending";
    var body = Object.assign({ source_url: url }, values);
    return df.api("POST", form.dataset.submitUrl, body).then(function (result) {
      if (result.ok && result.data && result.data.job_id) { queued(item, result.data); }
      else { failed(item, df.errorText(result)); }
    });
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var url = document.getElementById("source_url").value.trim();
    if (!chosen.length && !url) {
      formError.textContent = "Choose or drop at least one file, or give a video address.";
      formError.hidden = false;
      input.focus();
      return;
    }
    formError.hidden = true;
    var values = fields();
    var files = chosen.slice();
    chosen = [];
    input.value = "";
    showChosen();
    document.getElementById("source_url").value = "";
    sending += 1;
    var chain = Promise.resolve();
    files.forEach(function (file) { chain = chain.then(function () { return sendFile(file, values); }); });
    if (url) { chain = chain.then(function () { return sendUrl(url, values); }); }
    chain.then(function () { sending -= 1; });
  });

  window.addEventListener("beforeunload", function (event) {
    if (sending > 0) { event.preventDefault(); event.returnValue = ""; }
  });
})();
