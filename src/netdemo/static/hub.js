// The netdemo hub page: the hub over a WebSocket in JSON mode (/hub/ws?format=json),
// or, with ?sse=PATTERN[&sse=...], a read-only view over Server-Sent Events
// (/hub/events), which the browser resumes with Last-Event-ID after a drop.
// No external assets, no build step; served under a strict CSP (no inline code).
"use strict";
(function () {
  var params = new URLSearchParams(location.search);
  var $ = function (id) { return document.getElementById(id); };
  var list = $("messages");
  var MAX_SHOWN = 1000;
  // What arrived, for people and for tests (tests/test_browser_hub.py).
  var state = { received: [], mine: [], gaps: [], errors: 0, opened: 0, who: [], subs: ["chat"] };
  window.netdemoHub = state;

  function status(text) { $("status").textContent = text; }

  function show(kind, parts) {
    var li = document.createElement("li");
    li.className = kind;
    parts.forEach(function (part) {
      var span = document.createElement("span");
      span.className = part[0];
      span.textContent = part[1];
      li.appendChild(span);
    });
    var atEnd = list.scrollTop + list.clientHeight >= list.scrollHeight - 4;
    list.appendChild(li);
    while (list.childNodes.length > MAX_SHOWN) list.removeChild(list.firstChild);
    if (atEnd) list.scrollTop = list.scrollHeight;
  }

  function delivery(m) {
    state.received.push({ topic: m.topic, from: m.from, text: m.text, seq: m.seq });
    var parts = [];
    if (m.topic !== "chat") parts.push(["topic", "[" + m.topic + "] "]);
    parts.push(["from", "<" + m.from + "> "]);
    parts.push(["text", m.text]);
    show("msg", parts);
  }

  function renderSubs() {
    var ul = $("subs");
    ul.textContent = "";
    state.subs.forEach(function (pattern) {
      var li = document.createElement("li");
      li.textContent = pattern;
      if (!params.getAll("sse").length) {
        var b = document.createElement("button");
        b.textContent = "×";
        b.title = "unsubscribe";
        b.addEventListener("click", function () { command("unsub", pattern); });
        li.appendChild(b);
      }
      ul.appendChild(li);
    });
  }

  function renderWho(names, count) {
    state.who = names;
    var ul = $("who");
    ul.textContent = "";
    names.forEach(function (n) {
      var li = document.createElement("li");
      li.textContent = n;
      ul.appendChild(li);
    });
    $("who-count").textContent = count === undefined ? "" : "(" + count + ")";
  }

  var sse = params.getAll("sse");
  if (sse.length) {
    // Read-only: the hub's Server-Sent Events.
    state.subs = sse;
    renderSubs();
    ["send", "sub", "nick"].forEach(function (id) { $(id).hidden = true; });
    var query = sse.map(function (p) { return "sub=" + encodeURIComponent(p); }).join("&");
    var es = new EventSource("/hub/events?" + query);
    es.onopen = function () { state.opened++; status("streaming " + sse.join(", ")); };
    es.onerror = function () { state.errors++; status("reconnecting…"); };
    es.onmessage = function (e) { delivery(JSON.parse(e.data)); };
    es.addEventListener("gap", function (e) {
      var g = JSON.parse(e.data);
      state.gaps.push(g);
      show("gap", [["text", "history of " + g.topic + " now starts at " + g.first + ": lines were missed"]]);
    });
    es.addEventListener("hub", function (e) {
      var m = JSON.parse(e.data);
      if (m.ok === false) show("error", [["text", m.text]]);
    });
    return;
  }

  var ws = null;
  var retry = 1000;

  function send(obj) {
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(obj));
  }
  function command(name, arg) { send({ command: name, arg: arg || "" }); }

  function answer(m) {
    var t = m.text;
    var who = /^who (\d+): ?(.*)$/.exec(t);
    if (m.ok && who) {
      renderWho(who[2] ? who[2].replace(/ \.\.\.$/, "").split(" ") : [], +who[1]);
      return;
    }
    var sub = /^(?:already )?subscribed to (\S+)/.exec(t);
    if (m.ok && sub && state.subs.indexOf(sub[1]) < 0) { state.subs.push(sub[1]); renderSubs(); }
    var unsub = /^unsubscribed from (\S+)/.exec(t);
    if (m.ok && unsub) {
      state.subs = state.subs.filter(function (p) { return p !== unsub[1]; });
      renderSubs();
    }
    if (m.ok && t === "") return; // a /pub acknowledged
    $("answer").textContent = (m.ok ? "" : "error: ") + t;
    if (!m.ok) show("error", [["text", t]]);
  }

  function connect() {
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    ws = new WebSocket(scheme + location.host + "/hub/ws?format=json");
    ws.onopen = function () {
      state.opened++;
      retry = 1000;
      status("connected");
      var wanted = state.subs.slice();
      state.subs = ["chat"];
      wanted.forEach(function (p) { if (p !== "chat") command("sub", p); });
      renderSubs();
      command("who");
    };
    ws.onmessage = function (e) {
      var m = JSON.parse(e.data);
      if ("topic" in m) delivery(m);
      else if ("notice" in m) {
        show("notice", [["text", "* " + m.notice]]);
        if (/ (joined|left|is now|renamed)|joins|leaves/.test(m.notice)) command("who");
      } else if ("ok" in m) answer(m);
    };
    ws.onclose = function () {
      state.errors++;
      status("disconnected; trying again…");
      setTimeout(connect, retry);
      retry = Math.min(retry * 2, 30000);
    };
  }

  $("send").addEventListener("submit", function (e) {
    e.preventDefault();
    var topic = $("send-topic").value.trim() || "chat";
    var text = $("send-text").value;
    if (!text) return;
    send({ topic: topic, text: text });
    state.mine.push({ topic: topic, text: text });
    var parts = [];
    if (topic !== "chat") parts.push(["topic", "[" + topic + "] "]);
    parts.push(["from", "<me> "]);
    parts.push(["text", text]);
    show("mine", parts);
    $("send-text").value = "";
  });
  $("sub").addEventListener("submit", function (e) {
    e.preventDefault();
    var p = $("sub-pattern").value.trim();
    if (p) command("sub", p);
    $("sub-pattern").value = "";
  });
  $("nick").addEventListener("submit", function (e) {
    e.preventDefault();
    var n = $("nick-name").value.trim();
    if (n) command("nick", n);
  });
  renderSubs();
  connect();
})();
