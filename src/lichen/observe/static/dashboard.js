// Lichen dashboard: polls the Prometheus query API and the dashboard overview,
// draws hand-written SVG line charts. No dependencies, no CDN.
"use strict";

(function () {
  const params = new URLSearchParams(location.search);
  const hash = new URLSearchParams(location.hash.replace(/^#/, ""));
  if (hash.get("token")) {
    sessionStorage.setItem("lichen-token", hash.get("token"));
    history.replaceState(null, "", location.pathname + location.search);
  }
  const token = sessionStorage.getItem("lichen-token");
  const windowS = Number(params.get("window") || 900);
  const COLORS = ["#3b7d4f", "#1f6fb2", "#c2185b", "#e09100", "#6a1b9a", "#00838f", "#5d4037", "#7cb342"];
  const SVG = "http://www.w3.org/2000/svg";
  let config = null;
  let refreshS = 5;

  async function getJSON(url) {
    const headers = token ? { Authorization: "Bearer " + token } : {};
    const response = await fetch(url, { headers, cache: "no-store" });
    if (!response.ok) {
      let detail = response.statusText;
      try { const body = await response.json(); detail = body.error || body.detail || detail; } catch (e) { /* not JSON */ }
      const error = new Error(url.split("?")[0] + ": HTTP " + response.status + " " + detail);
      error.status = response.status;
      throw error;
    }
    return response.json();
  }

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function fmt(value, unit) {
    if (value === null || value === undefined || !isFinite(value)) return "–";
    const abs = Math.abs(value);
    if (unit === "percentunit") return (value * 100).toFixed(abs < 0.01 ? 2 : 1) + "%";
    if (unit === "s") return abs < 1 ? (value * 1000).toFixed(abs < 0.01 ? 1 : 0) + " ms" : value.toFixed(2) + " s";
    const text = abs >= 1000 ? (value / 1000).toFixed(1) + "k" : abs >= 10 ? value.toFixed(0) : abs >= 1 ? value.toFixed(1) : abs >= 0.01 || abs === 0 ? value.toFixed(2) : value.toPrecision(2);
    return unit === "reqps" ? text + "/s" : unit === "watt" ? text + " W" : unit === "joule" ? text + " J" : text;
  }

  function since(epochS) {
    const s = Math.max(0, Date.now() / 1000 - epochS);
    if (s < 90) return Math.round(s) + "s ago";
    if (s < 5400) return Math.round(s / 60) + "m ago";
    return (s / 3600).toFixed(1) + "h ago";
  }

  function legendOf(format, metric) {
    return format.replace(/\{\{\s*(\w+)\s*\}\}/g, (_, name) => metric[name] || "").trim() || JSON.stringify(metric);
  }

  // ------------------------------------------------------------------ charts

  function buildCharts() {
    const root = document.getElementById("charts");
    root.textContent = "";
    for (const panel of config.panels) {
      const card = el("div", { class: "chart", id: "chart-" + panel.id, "data-panel": panel.id, "data-series": "0", "data-points": "0" });
      card.appendChild(el("h2", {}, panel.title));
      card.appendChild(svg("svg", { viewBox: "0 0 600 180", role: "img", "aria-label": panel.title }));
      card.appendChild(el("div", { class: "legend" }));
      root.appendChild(card);
    }
  }

  function drawChart(panel, series, start, end, lastStep) {
    const card = document.getElementById("chart-" + panel.id);
    const plot = card.querySelector("svg");
    const legend = card.querySelector(".legend");
    plot.textContent = "";
    legend.textContent = "";
    const left = 78, right = 592, top = 10, bottom = 150;
    let lo = Infinity, hi = -Infinity, points = 0;
    for (const s of series) for (const [, v] of s.values) if (isFinite(v)) { lo = Math.min(lo, v); hi = Math.max(hi, v); points++; }
    card.setAttribute("data-series", String(series.length));
    card.setAttribute("data-points", String(points));
    plot.appendChild(svg("line", { class: "axis", x1: left, y1: bottom, x2: right, y2: bottom }));
    if (!points) {
      plot.appendChild(svg("text", { class: "nodata", x: 300, y: 90, "text-anchor": "middle" }, "no data"));
      return;
    }
    lo = Math.min(lo, 0);
    if (hi <= lo) hi = lo + 1;
    const x = (t) => left + ((t - start) / Math.max(1, end - start)) * (right - left);
    const y = (v) => bottom - ((v - lo) / (hi - lo)) * (bottom - top);
    for (const frac of [0, 0.5, 1]) {
      const v = lo + (hi - lo) * frac;
      plot.appendChild(svg("line", { class: "axis", x1: left, y1: y(v), x2: right, y2: y(v), "stroke-dasharray": "2 4" }));
      plot.appendChild(svg("text", { class: "tick", x: left - 6, y: y(v) + 5, "text-anchor": "end" }, fmt(v, panel.unit)));
    }
    const clock = (t) => new Date(t * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    plot.appendChild(svg("text", { class: "tick", x: left, y: 174 }, clock(start)));
    plot.appendChild(svg("text", { class: "tick", x: right, y: 174, "text-anchor": "end" }, clock(end)));
    series.forEach((s, i) => {
      const color = COLORS[i % COLORS.length];
      let path = "", pen = false;
      for (const [t, v] of s.values) {
        if (!isFinite(v)) { pen = false; continue; }
        path += (pen ? "L" : "M") + x(t).toFixed(1) + " " + y(v).toFixed(1) + " ";
        pen = true;
      }
      const line = svg("path", { d: path, fill: "none", stroke: color, "stroke-width": "1.6", "data-legend": s.name });
      line.appendChild(svg("title", {}, s.name));
      plot.appendChild(line);
      // a legend shows the current value only: a series whose last point is not at the
      // latest step (a replica state that no longer exists) shows "–", not its last value
      const point = s.values.length ? s.values[s.values.length - 1] : null;
      const current = point && point[0] >= lastStep - 1e-6 ? point[1] : null;
      const item = el("span", { "data-legend": s.name, "data-current": current === null ? "" : String(current) },
                      s.name + " " + fmt(current, panel.unit));
      item.prepend(el("i", { style: "background:" + color }));
      legend.appendChild(item);
    });
  }

  async function refreshCharts() {
    const end = Date.now() / 1000;
    const start = end - windowS;
    const step = Math.max(1, Math.round(windowS / 180));
    const base = config.query_base || "";
    await Promise.all(config.panels.map(async (panel) => {
      const series = [];
      for (const q of panel.queries) {
        const url = base + "/api/v1/query_range?" + new URLSearchParams({ query: q.expr, start: start.toFixed(3), end: end.toFixed(3), step: String(step) });
        const body = await getJSON(url);
        for (const r of body.data.result || []) {
          series.push({ name: legendOf(q.legend, r.metric), values: r.values.map(([t, v]) => [Number(t), Number(v)]) });
        }
      }
      // the last step Prometheus evaluates: start + k * step, not after end
      drawChart(panel, series, start, end, start + Math.floor((end - start) / step + 1e-9) * step);
    }));
  }

  // ---------------------------------------------------------------- overview

  function fillTable(id, rows, cells) {
    const body = document.querySelector("#" + id + " tbody");
    body.textContent = "";
    for (const row of rows) {
      const tr = el("tr");
      for (const cell of cells(row, tr)) {
        const td = el("td");
        if (cell instanceof Node) td.appendChild(cell); else td.textContent = cell === null || cell === undefined ? "" : String(cell);
        tr.appendChild(td);
      }
      body.appendChild(tr);
    }
  }

  function stateTag(state) { return el("span", { class: "state " + state }, state); }

  function bar(fraction, color) {
    const outer = el("span", { class: "bar" });
    const inner = el("span", { style: "width:" + Math.round(Math.max(0, Math.min(1, fraction)) * 100) + "%;background:" + color });
    outer.appendChild(inner);
    return outer;
  }

  // risk bands (lichen.control.headroom): 1 firing, >= risk_warning pending or headroom <= 0.2, null no data
  let riskWarning = 0.72;
  function riskColor(r) {
    if (r === null || r === undefined) return "var(--muted)";
    return r >= 1 ? "var(--firing)" : r >= riskWarning ? "var(--pending)" : "var(--ok)";
  }
  function riskBand(r) { return r === null || r === undefined ? "nodata" : r >= 1 ? "firing" : r >= riskWarning ? "warning" : "ok"; }
  function riskText(r) { return r === null || r === undefined ? "no data" : Number(r).toFixed(2); }

  function headroomText(h) {
    if (h.headroom === null) return "no data";
    const text = h.headroom < -1e6 ? "breached" : h.headroom.toFixed(2);
    if (h.state === "pending") return text + " · pending " + Math.round(h.pending_s) + "s of " + Math.round(h.for_s) + "s";
    return h.state === "firing" ? text + " · firing" : text;
  }

  function renderOverview(o) {
    document.getElementById("app-name").textContent = o.app;
    document.title = "Lichen · " + o.app;
    if (typeof o.risk_warning === "number") riskWarning = o.risk_warning;
    fillTable("alerts", o.alerts, (a, tr) => {
      tr.className = "alert alert-" + a.state;
      tr.setAttribute("data-state", a.state);
      tr.setAttribute("data-alertname", a.alertname);
      return [stateTag(a.state), a.alertname, a.labels.service || "", a.labels.severity || "", since(a.activeAt),
              (a.annotations && (a.annotations.summary || a.annotations.description)) || ""];
    });
    document.getElementById("alerts-empty").hidden = o.alerts.length > 0;
    fillTable("services", o.services, (s, tr) => {
      tr.setAttribute("data-service", s.name);
      const risk = el("span", { class: "risk", "data-risk-band": riskBand(s.risk) }, "");
      risk.appendChild(bar(s.risk || 0, riskColor(s.risk)));
      risk.appendChild(document.createTextNode(" " + riskText(s.risk)));
      return [s.name, s.revision || "", (s.ready ?? "–") + " / " + (s.desired ?? "–"), s.rollout_text || "", risk];
    });
    fillTable("replicas", o.replicas, (r, tr) => {
      tr.setAttribute("data-replica", r.id);
      return [r.id, r.service, r.revision || "", stateTag(r.state || "unknown"), r.restarts ?? ""];
    });
    fillTable("headroom", o.headroom.slice(0, 40), (h, tr) => {
      tr.setAttribute("data-alertname", h.alert);
      tr.setAttribute("data-service", h.service);
      const cell = el("span", { class: "risk", "data-risk-band": riskBand(h.risk) });
      cell.appendChild(bar(h.headroom === null ? 0 : h.headroom, riskColor(h.risk)));
      cell.appendChild(document.createTextNode(" " + headroomText(h)));
      const values = h.thresholds.map((t) => fmt(t.value, "") + " " + t.op + " " + fmt(t.threshold, "")).join(", ");
      return [h.alert, h.service, cell, values];
    });
    fillTable("events", o.events.slice().reverse(), (e) => [
      new Date(e.at * 1000).toLocaleTimeString(), e.service || "", e.replica || "", e.kind || "", e.reason || "", e.message || "",
    ]);
    const badges = document.getElementById("risk-badges");
    badges.textContent = "";
    for (const [service, r] of Object.entries(o.risk || {})) {
      const b = el("span", { class: "badge risk", "data-risk-band": riskBand(r), style: "background:" + riskColor(r),
                              title: "risk score" }, (service || "–") + " " + riskText(r));
      badges.appendChild(b);
    }
  }

  async function refreshOverview() {
    renderOverview(await getJSON("api/overview"));
  }

  // SLOs (lichen.observe.slo_reports): the same report as 'lichen slo --json', every 30 s at most
  let sloFetchedMs = 0;
  function pct(value) { return value === null || value === undefined ? "–" : (value * 100).toFixed(3).replace(/\.?0+$/, "") + "%"; }
  function burn(value) { return value === null || value === undefined ? "–" : value.toFixed(2) + "x"; }
  function renderSlos(report) {
    document.getElementById("slo-window").textContent = report.window ? "over " + report.window : "";
    document.getElementById("slos-empty").hidden = report.slos.length > 0;
    fillTable("slos", report.slos, (s, tr) => {
      tr.setAttribute("data-service", s.service);
      tr.setAttribute("data-slo", s.slo);
      tr.setAttribute("data-state", s.state);
      const left = el("span", { class: "budget" });
      left.appendChild(bar(s.budget_left, s.budget_left <= 0 ? "var(--firing)" : s.budget_left < 0.25 ? "var(--pending)" : "var(--ok)"));
      left.appendChild(document.createTextNode(" " + (s.state === "no traffic" ? "no traffic" : pct(s.budget_left))));
      const state = el("span", { class: "state slo-" + s.state.replace(" ", "-") }, s.state + (s.burning.length ? " " + s.burning.join(", ") : ""));
      return [s.service, s.slo, s.objective_text, pct(s.attainment), left,
              burn(s.burn_rates["5m"]), burn(s.burn_rates["1h"]), burn(s.burn_rates["6h"]), state];
    });
  }
  async function refreshSlos() {
    if (Date.now() - sloFetchedMs < 30000) return;
    renderSlos(await getJSON("api/slo"));
    sloFetchedMs = Date.now();
  }

  async function tick() {
    const errors = [];
    await Promise.all([refreshCharts().catch((e) => errors.push(e)), refreshOverview().catch((e) => errors.push(e)),
                     refreshSlos().catch((e) => errors.push(e))]);
    const box = document.getElementById("error");
    box.hidden = errors.length === 0;
    box.textContent = errors.map((e) => e.message).join("; ");
    document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
    document.body.setAttribute("data-refreshes", String(Number(document.body.getAttribute("data-refreshes") || 0) + 1));
    setTimeout(tick, refreshS * 1000);
  }

  function askForToken(wrong) {
    const form = document.getElementById("token-form");
    form.hidden = false;
    document.getElementById("token-wrong").hidden = !wrong;
    document.getElementById("error").hidden = true;
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const value = document.getElementById("token-input").value.trim();
      if (!value) return;
      sessionStorage.setItem("lichen-token", value);
      location.reload();
    });
  }

  async function start() {
    try {
      config = await getJSON("api/config");
    } catch (e) {
      if (e.status === 401) {  // opened without its token (or with a wrong one): ask for it
        askForToken(Boolean(token));
        return;
      }
      const box = document.getElementById("error");
      box.hidden = false;
      box.textContent = e.message;
      setTimeout(start, 5000);
      return;
    }
    refreshS = Number(params.get("refresh") || config.refresh_s || 5);
    buildCharts();
    tick();
  }

  start();
})();
