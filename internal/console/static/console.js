// Tandem console: keeps the page live from /console/events (server-sent
// events). Everything shown is set with textContent: no HTML is built from
// data.
(function () {
  "use strict";
  var body = document.body;
  var page = body.getAttribute("data-page");
  if (!page) { return; }
  var live = document.getElementById("live");

  function el(tag, text, cls) {
    var e = document.createElement(tag);
    if (text !== undefined && text !== null) { e.textContent = String(text); }
    if (cls) { e.className = cls; }
    return e;
  }
  function badge(s) { return el("span", s, "status " + s); }
  function fmtAge(sec) {
    if (!sec) { return "-"; }
    if (sec < 1) { return Math.round(sec * 1000) + "ms"; }
    if (sec < 120) { return Math.round(sec) + "s"; }
    if (sec < 7200) { return Math.round(sec / 60) + "m"; }
    return Math.round(sec / 3600) + "h";
  }
  function stamp(iso) { return iso ? iso.replace("T", " ").replace(/(\.\d{3})\d*/, "$1").replace("Z", "") : ""; }
  function set(id, v) { var e = document.getElementById(id); if (e) { e.textContent = String(v); } }

  function renderStatus(s) {
    var err = document.getElementById("stream-error");
    if (s.error) { if (err) { err.textContent = s.error; err.hidden = false; } return; }
    if (err) { err.hidden = true; }
    if (page !== "dashboard") { return; }
    set("outbox-backlog", s.outbox.backlog);
    set("outbox-age", s.outbox.backlog > 0 ? fmtAge(s.outbox.oldest_age_seconds) : "-");
    set("attention-count", s.attention.length);
    var tb = document.getElementById("providers");
    (s.providers || []).forEach(function (p) {
      var row = tb.querySelector('tr[data-provider="' + CSS.escape(p.name) + '"]');
      if (!row) { return; }
      var v = { queued: p.queued, consumers: p.consumers, retrying: p.retrying, dead: p.dead,
        rate: p.synced_per_second.toFixed(1), failed_min: p.failed_last_minute,
        synced: p.users.synced || 0, pending: p.users.pending || 0, failed: p.users.failed || 0, conflict: p.users.conflict || 0 };
      Object.keys(v).forEach(function (k) {
        var c = row.querySelector('[data-k="' + k + '"]');
        if (c) { c.textContent = String(v[k]); }
      });
    });
    var at = document.getElementById("attention");
    var rows = [];
    (s.attention || []).forEach(function (a) {
      var tr = el("tr"); tr.setAttribute("data-user", a.user_id);
      var td = el("td"); var link = el("a", a.email || a.user_id); link.href = "/console/users/" + encodeURIComponent(a.user_id);
      td.appendChild(link); tr.appendChild(td);
      tr.appendChild(el("td", a.provider));
      var st = el("td"); st.appendChild(badge(a.status)); tr.appendChild(st);
      tr.appendChild(el("td", a.reason, "reason"));
      tr.appendChild(el("td", stamp(a.since)));
      rows.push(tr);
    });
    at.replaceChildren.apply(at, rows);
    var empty = document.getElementById("attention-empty");
    if (empty) { empty.hidden = rows.length > 0; }
  }

  function renderUser(u) {
    Object.keys(u.sync || {}).forEach(function (p) {
      var row = document.querySelector('tr[data-provider="' + CSS.escape(p) + '"]');
      if (!row) { return; }
      var l = u.sync[p];
      var b = document.getElementById("status-" + p);
      if (b) { b.textContent = l.status; b.className = "status " + l.status; }
      ["remote_id", "synced_version", "last_error"].forEach(function (k) {
        var c = row.querySelector('[data-k="' + k + '"]');
        if (c) { c.textContent = String(l[k] === null || l[k] === undefined ? "" : l[k]); }
      });
    });
    var tb = document.getElementById("history");
    var rows = [];
    (u.history || []).forEach(function (h) {
      var tr = el("tr");
      tr.appendChild(el("td", h.at));
      tr.appendChild(el("td", h.kind + (h.origin ? " (" + h.origin + ")" : "")));
      tr.appendChild(el("td", h.provider));
      tr.appendChild(el("td", h.version || ""));
      var o = el("td"); o.appendChild(badge(h.outcome)); tr.appendChild(o);
      tr.appendChild(el("td", (h.event_id ? h.event_id + " " : "") + h.error, "reason"));
      tr.appendChild(el("td", h.took || ""));
      rows.push(tr);
    });
    tb.replaceChildren.apply(tb, rows);
  }

  var url = "/console/events";
  if (page === "user") { url += "?user=" + encodeURIComponent(body.getAttribute("data-user")); }
  var es = new EventSource(url);
  es.onopen = function () { if (live) { live.textContent = "● live"; live.className = "live on"; } };
  es.onerror = function () {
    if (es.readyState === EventSource.CLOSED) { window.location.reload(); return; } // signed out: the sign-in page
    if (live) { live.textContent = "○ reconnecting"; live.className = "live"; }
  };
  es.addEventListener("status", function (e) { renderStatus(JSON.parse(e.data)); });
  es.addEventListener("user", function (e) { renderUser(JSON.parse(e.data)); });
  window.addEventListener("pagehide", function () { es.close(); });
})();
