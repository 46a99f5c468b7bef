// The netdemo status page, kept up to date from /status.json.  Every text
// comes formatted from the server (units, human names); this script only
// puts it in place, and takes the page's new body when a row appears or goes.
(function () {
  "use strict";
  var period = 2000;

  function each(selector, f) {
    Array.prototype.forEach.call(document.querySelectorAll(selector), f);
  }
  function attr(name, value) {
    return "[" + name + '="' + CSS.escape(value) + '"]';
  }
  function set(selector, text) {
    var e = document.querySelector(selector);
    if (!e) { return false; }
    if (e.textContent !== text) { e.textContent = text; }
    return true;
  }
  function grade(cell, value) {
    cell.className = cell.className.replace(/\bgrade-\w+/, "grade-" + value);
  }

  // Put the texts of one panel row in place, and its grades.
  function fill(row, p, keys) {
    keys.forEach(function (k) {
      var cell = row.querySelector(attr("data-field", k));
      var text = typeof p[k] === "number" ? p[k].toLocaleString("en-US") : p[k];
      if (cell && cell.textContent !== text) { cell.textContent = text; }
    });
    var loss = row.querySelector(attr("data-field", "loss_text"));
    var rtt = row.querySelector(attr("data-field", "rtt_text"));
    if (loss) { grade(loss, p.loss_grade); }
    if (rtt) { grade(rtt, p.rtt_grade); }
  }

  function update(doc) {
    var missing = false;
    set("#uptime", doc.uptime_text);
    set("#requests", doc.requests_text);
    set("#updated", doc.time_text);
    document.getElementById("updated").className = "";
    doc.headline.forEach(function (f) {
      missing = !set(attr("data-headline", f.key), f.text) || missing;
      set(attr("data-detail", f.key), f.detail);
    });
    doc.history.series.forEach(function (s) {
      var path = document.querySelector(attr("data-path", s.key));
      if (path && path.getAttribute("d") !== s.path) { path.setAttribute("d", s.path); }
      set(attr("data-peak", s.key), s.peak_text);
    });
    var rows = doc.metrics.slice();
    doc.services.forEach(function (svc) {
      set(attr("data-refusals", svc.name), svc.refusals.text);
      svc.metrics.forEach(function (m) { rows.push(m); });
    });
    rows.forEach(function (m) {
      if (m.shown === false) { return; }
      if ("peer" in m.labels && m.name.indexOf("netdemo_multicast_peer_") === 0) {
        return;
      }
      missing = !set(attr("data-series", m.series), m.text) || missing;
      if (m.kind === "counter") { set(attr("data-rate", m.series), m.rate_text); }
    });
    var body = document.querySelector("[data-connections]");
    if (body) {
      var columns = ["service", "peer", "age_text", "bytes_in_text", "bytes_out_text",
                     "pending_text"];
      var rows = document.createDocumentFragment();
      doc.connections.forEach(function (c) {
        var tr = document.createElement("tr");
        columns.forEach(function (k, i) {
          var td = document.createElement("td");
          if (i > 2) { td.className = "n"; }
          td.textContent = c[k];
          tr.appendChild(td);
        });
        rows.appendChild(tr);
      });
      body.replaceChildren(rows);
    }
    var panels = doc.panels;
    var hubTopics = document.querySelector("[data-hub-topics]");
    if (panels.hub && hubTopics) {
      var topicRows = document.createDocumentFragment();
      panels.hub.topics.forEach(function (t) {
        var tr = document.createElement("tr");
        ["topic", "subscribers", "rate_text", "history_text", "last_seq_text"].forEach(
          function (k, i) {
            var td = document.createElement("td");
            if (i > 0) { td.className = "n"; }
            td.textContent = t[k];
            tr.appendChild(td);
          });
        topicRows.appendChild(tr);
      });
      hubTopics.replaceChildren(topicRows);
      set(attr("data-panel", "hub.topic_count"), String(panels.hub.topic_count));
      set(attr("data-panel", "hub.connected"), String(panels.hub.connected));
      set(attr("data-panel", "hub.present"), panels.hub.present.join(", ") || "none");
    }
    if (panels.multicast) {
      var shown = document.querySelectorAll("tr[data-peer]").length;
      if (shown !== panels.multicast.peers.length) { missing = true; }
      panels.multicast.peers.forEach(function (p) {
        var row = document.querySelector("tr" + attr("data-peer", p.peer));
        if (!row) { missing = true; return; }
        fill(row, p, ["address_text", "last_heard_text", "received", "lost",
                      "loss_text", "jitter_text", "rtt_text"]);
      });
    }
    (panels.udp_peers || []).forEach(function (p) {
      var row = document.querySelector("tr" + attr("data-udp-peer", p.peer));
      if (!row) { missing = true; return; }
      fill(row, p, ["sent_text", "lost_text", "loss_text", "rtt_text"]);
    });
    if (panels.backplane) {
      ["state", "queued_text", "gaps_text", "dropped_text"].forEach(function (k) {
        set(attr("data-panel", "backplane." + k), panels.backplane[k]);
      });
      each(attr("data-panel", "backplane.state"), function (cell) {
        cell.className = "n state-" + panels.backplane.state;
      });
    }
    if (missing) { refresh(); }
  }

  // A row appeared or went: take the page's new body from the server, in
  // place (no navigation; the event stream stays open).
  var refreshing = false;
  function refresh() {
    if (refreshing) { return; }
    refreshing = true;
    var live = document.body.getAttribute("data-live");
    fetch("./", {cache: "no-store"})
      .then(function (r) { return r.text(); })
      .then(function (text) {
        var fresh = new DOMParser().parseFromString(text, "text/html").body;
        if (live) { fresh.setAttribute("data-live", live); }
        document.body.replaceWith(fresh);
      })
      .catch(stale)
      .finally(function () { refreshing = false; });
  }

  function stale() { document.getElementById("updated").className = "stale"; }

  // Polling, where the event stream is refused or not available.
  function poll() {
    fetch("status.json", {cache: "no-store"})
      .then(function (r) { return r.json(); })
      .then(update)
      .catch(stale)
      .finally(function () { setTimeout(poll, period); });
  }

  // Server-Sent Events: one "status" event (the /status.json document)
  // every two seconds; the browser reconnects by itself after a drop.  A
  // stream the server refuses (503: too many open) closes for good: then
  // poll.
  function listen() {
    var events = new EventSource("status/events");
    events.addEventListener("status", function (e) {
      document.body.setAttribute("data-live", "events");
      update(JSON.parse(e.data));
    });
    events.onerror = function () {
      stale();
      if (events.readyState === EventSource.CLOSED) {
        document.body.setAttribute("data-live", "polling");
        setTimeout(poll, period);
      }
    };
  }

  if (window.EventSource) { listen(); } else { setTimeout(poll, period); }
})();
