// logstore console: live updates (server-sent events), SVG line charts and the live tail.
// Hand-written, no build step, no dependency. It only ever sets textContent, never HTML.
(() => {
  "use strict";
  const SVG = "http://www.w3.org/2000/svg";
  const KEEP_POINTS = 120;
  const KEEP_ROWS = 1000;
  const charts = new Map();

  function el(name, attrs, text) {
    const node = document.createElementNS(SVG, name);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function short(v) {
    if (v >= 1e9) return (v / 1e9).toFixed(1) + "G";
    if (v >= 1e6) return (v / 1e6).toFixed(1) + "M";
    if (v >= 1e3) return (v / 1e3).toFixed(1) + "k";
    return String(Math.round(v * 10) / 10);
  }

  function draw(chart) {
    const { svg, points, unit } = chart;
    const W = 600, H = 160, L = 44, B = 18, T = 8;
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    const series = points.length ? points[0].length - 1 : 0;
    let max = 0;
    for (const p of points) for (let i = 1; i < p.length; i++) max = Math.max(max, p[i]);
    max = max > 0 ? max * 1.1 : 1;
    const t0 = points.length ? points[0][0] : 0;
    const t1 = points.length ? points[points.length - 1][0] : 1;
    const span = Math.max(t1 - t0, 1);
    for (let g = 0; g <= 2; g++) {
      const y = T + (H - B - T) * (g / 2);
      svg.appendChild(el("line", { x1: L, x2: W, y1: y, y2: y, class: "grid" }));
      svg.appendChild(el("text", { x: L - 4, y: y + 4, class: "axis", "text-anchor": "end" }, short(max * (1 - g / 2))));
    }
    svg.appendChild(el("text", { x: L, y: H - 4, class: "axis" }, points.length ? `last ${Math.round(span)} s` : "waiting for data"));
    svg.appendChild(el("text", { x: W - 2, y: H - 4, class: "axis", "text-anchor": "end" }, unit));
    for (let s = 0; s < series; s++) {
      const coords = points.map((p) => {
        const x = L + ((p[0] - t0) / span) * (W - L);
        const y = T + (H - B - T) * (1 - p[s + 1] / max);
        return `${x.toFixed(1)},${y.toFixed(1)}`;
      });
      svg.appendChild(el("polyline", { points: coords.join(" "), class: `line s${s}` }));
    }
  }

  for (const svg of document.querySelectorAll("svg[data-chart]")) {
    let points = [];
    try { points = JSON.parse(svg.dataset.points || "[]"); } catch (e) { points = []; }
    const chart = { svg, points, unit: svg.dataset.unit || "" };
    charts.set(svg.dataset.chart, chart);
    draw(chart);
  }

  function apply(data) {
    for (const [key, value] of Object.entries(data.values || {})) {
      for (const node of document.querySelectorAll(`[data-live="${CSS.escape(key)}"]`)) {
        if (node.textContent !== String(value)) node.textContent = value;
      }
    }
    for (const [name, added] of Object.entries(data.charts || {})) {
      const chart = charts.get(name);
      if (!chart) continue;
      for (const p of added) {
        const last = chart.points[chart.points.length - 1];
        if (!last || p[0] > last[0]) chart.points.push(p);
      }
      chart.points.splice(0, Math.max(chart.points.length - KEEP_POINTS, 0));
      draw(chart);
    }
  }

  const clock = () => {
    for (const node of document.querySelectorAll('[data-live="clock"]')) {
      node.textContent = new Date().toISOString().slice(11, 19) + " UTC";
    }
  };
  clock();

  const liveUrl = document.body.dataset.sse;
  if (liveUrl && window.EventSource) {
    const source = new EventSource(liveUrl);
    source.addEventListener("live", (e) => { apply(JSON.parse(e.data)); clock(); });
    source.addEventListener("gone", () => source.close());
    window.addEventListener("pagehide", () => source.close());
  }

  // -- live tail ---------------------------------------------------------------------------------
  const button = document.getElementById("tail");
  const table = document.getElementById("records");
  const status = document.getElementById("tail-status");
  let tail = null;

  function cell(row, text, kind) {
    const td = document.createElement("td");
    if (kind) {
      const pre = document.createElement("pre");
      pre.className = `k-${kind}`;
      pre.textContent = text;
      td.appendChild(pre);
    } else {
      td.textContent = text;
    }
    row.appendChild(td);
  }

  function addRecords(records) {
    const body = table.tBodies[0];
    const empty = body.querySelector("td.empty");
    if (empty) empty.parentNode.remove();
    for (const r of records) {
      const row = document.createElement("tr");
      row.dataset.offset = r.offset;
      row.className = "new";
      cell(row, String(r.offset));
      cell(row, r.timestamp);
      cell(row, r.key[1], r.key[0]);
      cell(row, r.value[1], r.value[0]);
      cell(row, r.headers);
      body.appendChild(row);
    }
    while (body.rows.length > KEEP_ROWS) body.deleteRow(0);
  }

  function stopTail() {
    if (tail) tail.close();
    tail = null;
    button.setAttribute("aria-pressed", "false");
    button.textContent = "Follow live tail";
    status.textContent = "";
  }

  function openTail(offset) {
    const url = new URL(button.dataset.tail, window.location.href);
    if (offset !== null) url.searchParams.set("offset", String(offset));
    tail = new EventSource(url);
    tail.addEventListener("records", (e) => addRecords(JSON.parse(e.data)));
    tail.addEventListener("position", (e) => {
      nextOffset = JSON.parse(e.data).offset;
      status.textContent = `following · next offset ${nextOffset}`;
    });
    tail.onerror = () => {  // reopen from where it got to, not from the first offset again
      tail.close();
      status.textContent = "reconnecting…";
      setTimeout(() => { if (tail) openTail(nextOffset); }, 2000);
    };
  }

  let nextOffset = null;
  if (button && table && window.EventSource) {
    button.addEventListener("click", () => {
      if (tail) { stopTail(); return; }
      button.setAttribute("aria-pressed", "true");
      button.textContent = "Stop following";
      status.textContent = "following…";
      openTail(nextOffset);
    });
    window.addEventListener("pagehide", stopTail);
  }
})();
