// locklab's dashboard: polls /api/dashboard every second and redraws the
// counters, the failures chart, the lock holder, the verdict and the
// settings. Plain DOM; every value goes in as text, never as markup.
(function () {
  "use strict";
  var WINDOW_S = 120;            // the chart's time span
  var COLORS = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000"];
  var history = [];              // [{t: ms, failed: {name: total}}]
  var paused = false;
  var busy = false;
  var lastSettings = "";
  var SVG = "http://www.w3.org/2000/svg";

  function $(id) { return document.getElementById(id); }
  function el(tag, text, attrs) {
    var e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    for (var k in (attrs || {})) e.setAttribute(k, attrs[k]);
    return e;
  }
  function svg(tag, attrs, text) {
    var e = document.createElementNS(SVG, tag);
    for (var k in attrs) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = String(text);
    return e;
  }
  function clear(e) { while (e.firstChild) e.removeChild(e.firstChild); }
  function num(n) { return el("td", n, { "class": "num" }); }

  function classesOf(d) {
    var seen = {};
    d.processes.forEach(function (p) {
      Object.keys(p.failed).forEach(function (c) { if (p.failed[c] > 0) seen[c] = true; });
    });
    return Object.keys(seen).sort();
  }

  function drawPeers(d) {
    var box = $("peers");
    clear(box);
    if (!d.peers_configured) {
      var p = el("p", null, { "class": "note" });
      p.append("No peers are configured (", el("code", "LAB_STATS_URLS"), " or ", el("code", "--stats-url"),
        " is unset): only this process is shown.");
      box.appendChild(p);
    }
    if (d.unreachable.length) {
      var div = el("div", null, { "class": "note" });
      div.appendChild(el("p", "Unreachable peers (their counters are missing below):"));
      var ul = el("ul");
      d.unreachable.forEach(function (u) {
        var li = el("li");
        li.append(el("code", u.url), ": unreachable (" + u.error + ")");
        ul.appendChild(li);
      });
      div.appendChild(ul);
      box.appendChild(div);
    }
  }

  function drawCounters(d) {
    var classes = classesOf(d);
    var table = $("counters");
    var head = el("tr");
    ["process", "ops", "ok", "gave up", "retried", "rolled back"].forEach(function (h) {
      head.appendChild(el("th", h, { scope: "col" }));
    });
    classes.forEach(function (c) { head.appendChild(el("th", "failed: " + c, { scope: "col" })); });
    head.appendChild(el("th", "failed (all classes)", { scope: "col" }));
    var thead = table.tHead; clear(thead); thead.appendChild(head);
    var tbody = table.tBodies[0]; clear(tbody);
    d.processes.forEach(function (p) {
      var tr = el("tr");
      tr.appendChild(el("th", p.name + (p.this ? " (this process)" : "") + (p.draining ? " — draining" : ""), { scope: "row" }));
      // data-counter="PROCESS.FIELD": the browser tests read the counters by it.
      var counted = function (field, n) {
        var cell = num(n);
        cell.setAttribute("data-counter", p.name + "." + field);
        tr.appendChild(cell);
      };
      [["ops", p.ops], ["ok", p.ok], ["gave_up", p.gave_up], ["retried", p.retried],
       ["rolled_back", p.rolled_back]].forEach(function (f) { counted(f[0], f[1]); });
      classes.forEach(function (c) { counted("failed." + c, p.failed[c] || 0); });
      counted("failed_total", p.failed_total);
      tbody.appendChild(tr);
    });
  }

  // Failed attempts per second between consecutive samples; a counter that
  // went down (a restarted process) counts as 0 for that step.
  function series(name) {
    var pts = [];
    for (var i = 1; i < history.length; i++) {
      var a = history[i - 1], b = history[i];
      if (!(name in a.failed) || !(name in b.failed)) continue;
      var dt = (b.t - a.t) / 1000;
      if (dt <= 0) continue;
      pts.push({ t: b.t, v: Math.max(0, b.failed[name] - a.failed[name]) / dt });
    }
    return pts;
  }

  function niceMax(v) {
    if (v <= 1) return 1;
    var p = Math.pow(10, Math.floor(Math.log10(v)));
    var m = [1, 2, 5, 10].find(function (k) { return k * p >= v; });
    return m * p;
  }

  function drawChart(d) {
    var chart = $("chart"), legend = $("legend");
    var W = 720, H = 260, L = 64, R = 16, T = 16, B = 44;
    var now = d.at_ms;
    var names = d.processes.map(function (p) { return p.name; });
    var all = names.map(series);
    var max = niceMax(Math.max.apply(null, [0].concat(all.map(function (s) {
      return Math.max.apply(null, [0].concat(s.map(function (p) { return p.v; })));
    }))));
    var x = function (t) { return L + (W - L - R) * (1 - (now - t) / 1000 / WINDOW_S); };
    var y = function (v) { return T + (H - T - B) * (1 - v / max); };
    var title = $("chart-title"), desc = $("chart-desc");
    // Keep the title and desc; redraw the rest.
    Array.prototype.slice.call(chart.childNodes).forEach(function (n) {
      if (n !== title && n !== desc) chart.removeChild(n);
    });
    var g = svg("g", { "font-size": "12", fill: "#1b1b1b" });
    for (var i = 0; i <= 4; i++) {
      var v = max * i / 4, yy = y(v);
      g.appendChild(svg("line", { x1: L, x2: W - R, y1: yy, y2: yy, stroke: "#d0d0d0" }));
      g.appendChild(svg("text", { x: L - 6, y: yy + 4, "text-anchor": "end" }, +v.toFixed(2)));
    }
    for (var s = 0; s <= WINDOW_S; s += 30) {
      var xx = L + (W - L - R) * (1 - s / WINDOW_S);
      g.appendChild(svg("line", { x1: xx, x2: xx, y1: H - B, y2: H - B + 5, stroke: "#1b1b1b" }));
      g.appendChild(svg("text", { x: xx, y: H - B + 18, "text-anchor": "middle" }, s === 0 ? "now" : "-" + s + " s"));
    }
    g.appendChild(svg("line", { x1: L, x2: W - R, y1: H - B, y2: H - B, stroke: "#1b1b1b" }));
    g.appendChild(svg("line", { x1: L, x2: L, y1: T, y2: H - B, stroke: "#1b1b1b" }));
    g.appendChild(svg("text", { x: (L + W - R) / 2, y: H - 6, "text-anchor": "middle" }, "time (seconds before now)"));
    g.appendChild(svg("text", { x: 14, y: (T + H - B) / 2, "text-anchor": "middle",
      transform: "rotate(-90 14 " + (T + H - B) / 2 + ")" }, "failed attempts / s"));
    chart.appendChild(g);
    clear(legend);
    var last = [];
    all.forEach(function (pts, i) {
      var color = COLORS[i % COLORS.length];
      if (pts.length > 0) {
        chart.appendChild(svg("polyline", {
          fill: "none", stroke: color, "stroke-width": 2,
          "stroke-dasharray": i >= COLORS.length ? "4 3" : "none",
          points: pts.map(function (p) { return x(p.t).toFixed(1) + "," + y(p.v).toFixed(1); }).join(" ")
        }));
      }
      var li = el("li");
      li.appendChild(el("span", null, { "class": "swatch", style: "background:" + color, "aria-hidden": "true" }));
      var v = pts.length ? pts[pts.length - 1].v : 0;
      li.append(names[i] + ": " + v.toFixed(1) + " /s now");
      legend.appendChild(li);
      last.push(names[i] + " " + v.toFixed(1) + " failed attempts per second");
    });
    desc.textContent = history.length < 2 ? "Waiting for a second sample." : "Latest: " + last.join("; ") + ".";
  }

  function drawLock(d) {
    var box = $("lock");
    clear(box);
    var lock = d.lock;
    if (lock.applies) {
      if (!lock.holders.length) {
        box.appendChild(el("p", "Nobody holds the write lock at this instant."));
      } else {
        var t = el("table"), head = el("tr");
        ["PID", "process", "mode", "command"].forEach(function (h) { head.appendChild(el("th", h, { scope: "col" })); });
        var thead = el("thead"); thead.appendChild(head); t.appendChild(thead);
        var tb = el("tbody");
        lock.holders.forEach(function (h) {
          var tr = el("tr");
          tr.appendChild(num(h.pid));
          tr.appendChild(el("td", h.process));
          tr.appendChild(el("td", h.mode));
          var td = el("td"); td.appendChild(el("code", h.command)); tr.appendChild(td);
          tb.appendChild(tr);
        });
        t.appendChild(tb);
        box.appendChild(t);
      }
    }
    box.appendChild(el("p", lock.note, { "class": "muted" }));
    lock.warnings.forEach(function (w) { box.appendChild(el("p", w, { "class": "note" })); });
  }

  function drawVerdict(d) {
    var box = $("verdict");
    clear(box);
    if (d.verdict) {
      var p = el("p", "From the newest report: ");
      p.appendChild(el("a", d.verdict.run, { href: "/runs" }));
      p.append(".");
      box.appendChild(p);
      if (!d.verdict.lines.length) {
        box.appendChild(el("p", "It has no verdict lines.", { "class": "muted" }));
      } else {
        var ul = el("ul", null, { "class": "verdict" });
        d.verdict.lines.forEach(function (l) { ul.appendChild(el("li", l)); });
        box.appendChild(ul);
      }
    } else if (d.runs_dir_set) {
      box.appendChild(el("p", "No report.json in the runs directory yet: record one with locklab run --out DIR."));
    } else {
      var q = el("p", "No runs directory is set (LAB_RUNS_DIR): see ");
      q.appendChild(el("a", "Runs", { href: "/runs" }));
      q.append(" for how to get runs.");
      box.appendChild(q);
    }
  }

  function drawSettings(d) {
    var key = JSON.stringify(d.processes.map(function (p) { return [p.name, p.settings]; }));
    if (key === lastSettings) return;   // keep open <details> open
    lastSettings = key;
    var box = $("settings");
    clear(box);
    d.processes.forEach(function (p) {
      var det = el("details");
      det.appendChild(el("summary", p.name));
      var t = el("table"), thead = el("thead"), head = el("tr");
      head.appendChild(el("th", "setting", { scope: "col" }));
      head.appendChild(el("th", "value", { scope: "col" }));
      thead.appendChild(head); t.appendChild(thead);
      var tb = el("tbody");
      p.settings.forEach(function (kv) {
        var tr = el("tr");
        tr.appendChild(el("td", kv[0]));
        tr.appendChild(el("td", kv[1]));
        tb.appendChild(tr);
      });
      t.appendChild(tb);
      det.appendChild(t);
      box.appendChild(det);
    });
  }

  function tick() {
    if (paused || busy) return;
    busy = true;
    fetch("/api/dashboard", { cache: "no-store" })
      .then(function (r) {
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.json();
      })
      .then(function (d) {
        var failed = {};
        d.processes.forEach(function (p) { failed[p.name] = p.failed_total; });
        history.push({ t: d.at_ms, failed: failed });
        while (history.length && d.at_ms - history[0].t > (WINDOW_S + 2) * 1000) history.shift();
        drawPeers(d);
        drawCounters(d);
        drawChart(d);
        drawLock(d);
        drawVerdict(d);
        drawSettings(d);
        $("status").textContent = "Live: updated " + new Date(d.at_ms).toLocaleTimeString() + ".";
      })
      .catch(function (e) {
        $("status").textContent = "Not updated: webui did not answer (" + e.message + "); retrying.";
      })
      .finally(function () { busy = false; });
  }

  $("pause").addEventListener("click", function () {
    paused = !paused;
    this.setAttribute("aria-pressed", paused ? "true" : "false");
    this.textContent = paused ? "Resume updates" : "Pause updates";
    if (!paused) tick();
  });
  tick();
  setInterval(tick, 1000);
})();
