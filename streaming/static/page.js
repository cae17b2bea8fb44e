// The operator's page (streaming/page.py): refreshes the live parts, draws the score charts, posts labels, and on
// the Learning page sends its forms and swap buttons to the API, showing the API's refusals in the camera's card.
// Hand-written, no dependencies, nothing from another origin (the page's CSP forbids it).
"use strict";
(function () {
  var REFRESH_MS = {cameras: 3000, events: 5000, event: 5000};
  var CHART_MS = 2000, FRAME_MS = 2000;
  var LEARNING_MS = 2000, LEARNING_IDLE_MS = 15000;  // fast while something records or learns, else slowly
  var refreshing = null, burstUntil = 0;

  function localTimes(root) {
    root.querySelectorAll("time[datetime]").forEach(function (t) {
      var d = new Date(t.dateTime);
      if (!isNaN(d)) { t.textContent = d.toLocaleString(); t.title = t.dateTime; }
    });
  }

  // Re-render the page on the server and swap every [data-live] region whose HTML changed.
  function refreshLive() {
    if (refreshing) return refreshing;  // one at a time: a slow answer never piles up requests
    refreshing = fetch(location.href, {credentials: "same-origin", cache: "no-store"}).then(function (r) {
      if (!r.ok) throw new Error(r.status);
      return r.text();
    }).then(function (text) {
      var doc = new DOMParser().parseFromString(text, "text/html");
      doc.querySelectorAll("[data-live]").forEach(function (fresh) {
        var key = fresh.getAttribute("data-live");
        var old = document.querySelector('[data-live="' + CSS.escape(key) + '"]');
        if (old && old.innerHTML !== fresh.innerHTML) { old.innerHTML = fresh.innerHTML; localTimes(old); }
      });
      // an event that closed since the page loaded: its chart learns the end (and redraws)
      doc.querySelectorAll("canvas.chart[data-end]").forEach(function (fresh) {
        document.querySelectorAll("canvas.chart").forEach(function (c) {
          if (c.dataset.scores === fresh.dataset.scores && c.dataset.end !== fresh.dataset.end) {
            c.dataset.end = fresh.dataset.end; updateChart(c);
          }
        });
      });
    }).catch(function () {}).then(function () { refreshing = null; });
    return refreshing;
  }

  // An event's trace grows while it is open and is completed 5 s after it closed (streaming/camera_alerts.py).
  function traceMayGrow(c) { return !c.dataset.end || Date.now() / 1000 < parseFloat(c.dataset.end) + 15; }

  function fmtTime(t) { return new Date(t * 1000).toLocaleTimeString(); }

  // Score chart: scores in [0, 1], the threshold dashed, the part above it red, an event's span shaded.
  function drawChart(canvas, data) {
    var dpr = window.devicePixelRatio || 1;
    var w = canvas.clientWidth, h = canvas.clientHeight;
    canvas.width = Math.round(w * dpr); canvas.height = Math.round(h * dpr);
    var g = canvas.getContext("2d");
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, w, h);
    var pad = {l: 30, r: 6, t: 6, b: 18};
    var pts = data.points || [];
    var x0, x1;
    if (data.seconds && data.now) { x1 = data.now; x0 = x1 - data.seconds; }
    else if (pts.length) { x0 = pts[0][0]; x1 = pts[pts.length - 1][0]; }
    else { x0 = 0; x1 = 1; }
    if (x1 <= x0) x1 = x0 + 1;
    var X = function (t) { return pad.l + (t - x0) / (x1 - x0) * (w - pad.l - pad.r); };
    var Y = function (v) { return pad.t + (1 - Math.max(0, Math.min(1, v))) * (h - pad.t - pad.b); };
    var css = getComputedStyle(canvas);
    g.font = "11px sans-serif"; g.fillStyle = css.color; g.strokeStyle = "rgba(128,128,128,0.3)"; g.lineWidth = 1;
    [0, 0.5, 1].forEach(function (v) {
      g.beginPath(); g.moveTo(pad.l, Y(v)); g.lineTo(w - pad.r, Y(v)); g.stroke();
      g.fillText(v.toFixed(1), 2, Y(v) + 4);
    });
    var start = parseFloat(canvas.dataset.start), end = parseFloat(canvas.dataset.end);
    if (!isNaN(start)) {
      g.fillStyle = "rgba(220,60,40,0.12)";
      var e = isNaN(end) ? x1 : end;
      g.fillRect(X(start), pad.t, Math.max(1, X(e) - X(start)), h - pad.t - pad.b);
      g.fillStyle = css.color;
    }
    g.fillText(data.seconds ? "-" + Math.round(data.seconds / 60) + " min" : fmtTime(x0), pad.l, h - 4);
    var right = data.seconds ? "now" : fmtTime(x1);
    g.fillText(right, w - pad.r - g.measureText(right).width, h - 4);
    var line = function () {
      g.beginPath();
      pts.forEach(function (p, i) { if (i) g.lineTo(X(p[0]), Y(p[1])); else g.moveTo(X(p[0]), Y(p[1])); });
    };
    if (pts.length) {
      g.lineWidth = 1.5; g.strokeStyle = "#2a7ab8"; line(); g.stroke();
      if (data.threshold != null) {  // the same line again, red, clipped to the band above the threshold
        g.save(); g.beginPath(); g.rect(0, 0, w, Y(data.threshold)); g.clip();
        g.strokeStyle = "#d03a20"; line(); g.stroke(); g.restore();
      }
    } else {
      g.fillText("no scores yet", pad.l + 8, pad.t + 14);
    }
    if (data.threshold != null) {
      g.setLineDash([5, 4]); g.strokeStyle = "#d03a20"; g.lineWidth = 1;
      g.beginPath(); g.moveTo(pad.l, Y(data.threshold)); g.lineTo(w - pad.r, Y(data.threshold)); g.stroke();
      g.setLineDash([]); g.fillStyle = "#d03a20";
      g.fillText("threshold " + data.threshold.toFixed(3), pad.l + 4, Y(data.threshold) - 3);
    }
    // what the browser tests read: how many points are drawn and the newest time
    canvas.dataset.points = pts.length;
    canvas.dataset.last = pts.length ? pts[pts.length - 1][0] : "";
    canvas.dataset.threshold = data.threshold != null ? data.threshold : "";
  }

  function updateChart(canvas) {
    return fetch(canvas.dataset.scores, {credentials: "same-origin", cache: "no-store"}).then(function (r) {
      if (!r.ok) throw new Error(r.status);
      return r.json();
    }).then(function (data) { drawChart(canvas, data); })
      .catch(function () { drawChart(canvas, {points: []}); });
  }

  // Reload the live frame only when the previous one has arrived (a slow link never piles up requests).
  function updateFrame(img) {
    if (img.dataset.loading) return;
    var next = new Image();
    img.dataset.loading = "1";
    next.onload = function () { img.src = next.src; img.classList.remove("nodata"); delete img.dataset.loading; };
    next.onerror = function () { img.classList.add("nodata"); delete img.dataset.loading; };
    next.src = img.dataset.src + "?t=" + Date.now();
  }

  function postLabel(button) {
    var buttons = button.parentNode.querySelectorAll(".label-button");
    buttons.forEach(function (b) { b.disabled = true; });
    fetch(button.dataset.url, {
      method: "POST", credentials: "same-origin", headers: {"Content-Type": "application/json"},
      body: JSON.stringify({label: button.dataset.label})
    }).then(function (r) {
      if (!r.ok) throw new Error(r.status);
      buttons.forEach(function (b) { b.classList.toggle("chosen", b === button); });
      return refreshLive();
    }).catch(function (err) { button.title = "failed: " + err.message; })
      .then(function () { buttons.forEach(function (b) { b.disabled = false; }); });
  }

  // Learning page: a form or button calls the API; a refusal (409 busy, 422 naming the field, 507 no room) is
  // shown in its camera's card as the API words it; success refreshes the lists.
  function callApi(el, method, url, body) {
    var card = el.closest("[data-camera]"), box = card && card.querySelector(".api-error");
    var show = function (text) { if (box) { box.textContent = text; box.hidden = !text; } };
    show("");
    return fetch(url, {
      method: method, credentials: "same-origin", headers: {"Content-Type": "application/json"},
      body: JSON.stringify(body)
    }).then(function (r) {
      if (r.ok) { burstUntil = Date.now() + 6000; refreshLive(); return true; }
      return r.text().then(function (text) {
        var detail = text;
        try { detail = JSON.parse(text).detail || text; } catch (err) { /* not JSON: the text itself */ }
        show("Refused (HTTP " + r.status + "): " + (typeof detail === "string" ? detail : JSON.stringify(detail)));
        return false;
      });
    }).catch(function (err) { show("No answer from the service: " + err.message); return false; });
  }

  function formBody(form) {
    var body = {};
    Array.prototype.forEach.call(form.elements, function (f) {
      if (!f.name) return;
      if (f.type === "checkbox") body[f.name] = f.checked;
      else if (f.value !== "") body[f.name] = f.dataset.type === "number" ? Number(f.value) : f.value;
    });
    return body;
  }

  document.addEventListener("submit", function (ev) {
    var form = ev.target.closest("form.api-form");
    if (!form) return;
    ev.preventDefault();
    var button = form.querySelector("button");
    button.disabled = true;
    callApi(form, "POST", form.dataset.url, formBody(form)).then(function () { button.disabled = false; });
  });

  document.addEventListener("click", function (ev) {
    var b = ev.target.closest(".label-button");
    if (b) { ev.preventDefault(); postLabel(b); }
    var a = ev.target.closest(".api-button");
    if (a && !a.disabled) {
      ev.preventDefault();
      a.disabled = true;  // re-rendered by the refresh on success
      callApi(a, a.dataset.method, a.dataset.url, JSON.parse(a.dataset.body)).then(function (ok) {
        if (!ok) a.disabled = false;
      });
    }
  });

  document.addEventListener("DOMContentLoaded", function () {
    var page = document.body.dataset.page;
    localTimes(document);
    var charts = document.querySelectorAll("canvas.chart");
    charts.forEach(updateChart);
    var frames = document.querySelectorAll("img.frame");
    frames.forEach(updateFrame);
    if (page === "cameras") {
      setInterval(function () { charts.forEach(updateChart); }, CHART_MS);
      setInterval(function () { frames.forEach(updateFrame); }, FRAME_MS);
    }
    if (page === "event") {
      setInterval(function () { charts.forEach(function (c) { if (traceMayGrow(c)) updateChart(c); }); }, REFRESH_MS.event);
    }
    if (REFRESH_MS[page]) setInterval(refreshLive, REFRESH_MS[page]);
    if (page === "learning") {
      var last = Date.now();
      setInterval(function () {
        var now = Date.now();
        if (document.querySelector(".item.active") || now < burstUntil || now - last >= LEARNING_IDLE_MS) {
          last = now; refreshLive();
        }
      }, LEARNING_MS);
    }
    window.addEventListener("resize", function () { charts.forEach(updateChart); });
  });
})();
