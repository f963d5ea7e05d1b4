// Foreman dashboard: local times and relative ages, and JSON checked before a replay is sent.
// Live parts of pages are refreshed by htmx (hx-trigger="every 2s"); this file runs again on
// what they bring in.
(function () {
  "use strict";

  function ageText(ms) {
    var seconds = Math.max(0, Math.floor(ms / 1000));
    var units = [["d", 86400], ["h", 3600], ["m", 60]];
    for (var i = 0; i < units.length; i++) {
      if (seconds >= units[i][1]) return Math.floor(seconds / units[i][1]) + units[i][0] + " ago";
    }
    return seconds + "s ago";
  }

  function localTimes(root) {
    var now = Date.now();
    root.querySelectorAll("time.ts").forEach(function (el) {
      var when = new Date(el.getAttribute("datetime"));
      if (isNaN(when)) return;
      el.textContent = when.toLocaleString();
      el.title = el.getAttribute("datetime") + " (UTC) · " + ageText(now - when.getTime());
    });
    root.querySelectorAll("time.age").forEach(function (el) {
      var when = new Date(el.getAttribute("datetime"));
      if (isNaN(when)) return;
      el.textContent = ageText(now - when.getTime());
      el.title = when.toLocaleString();
    });
  }

  function checkJson(area) {
    var message = document.getElementById(area.getAttribute("aria-describedby"));
    try {
      JSON.parse(area.value);
      area.removeAttribute("aria-invalid");
      if (message) { message.hidden = true; message.textContent = ""; }
      return true;
    } catch (err) {
      area.setAttribute("aria-invalid", "true");
      if (message) { message.hidden = false; message.textContent = "Not valid JSON: " + err.message; }
      return false;
    }
  }

  function jsonForms(root) {
    root.querySelectorAll("form[data-json-form]").forEach(function (form) {
      if (form.dataset.checked) return;
      form.dataset.checked = "1";
      var area = form.querySelector("textarea[data-json]");
      area.addEventListener("input", function () { checkJson(area); });
      form.addEventListener("submit", function (event) {
        if (!checkJson(area)) { event.preventDefault(); area.focus(); }
      });
    });
  }

  function enhance(root) {
    localTimes(root);
    jsonForms(root);
  }

  document.addEventListener("DOMContentLoaded", function () { enhance(document); });
  document.addEventListener("htmx:afterSettle", function () { enhance(document); });
  setInterval(function () { localTimes(document); }, 10000);
})();
