// Floodgate's web console: five views over the node's own HTTP API (docs/console.md).
// Everything it shows comes from /v1/status, /v1/cluster, /metrics, /v1/top, /v1/rules,
// /v1/config, /v1/validate and /v1/simulate; changes go through PUT /v1/config/<domain>.

import {drawLines, formatNumber, legend, PALETTE} from './chart.js';
import {diffLines} from './diff.js';
import {histogram, parsePrometheus, quantileBetween, rates, sumBy} from './prom.js';

const POLL_MS = 2000;
const HISTORY = 90;  // points kept per chart (3 minutes at 2 s)

const $ = (sel) => document.querySelector(sel);
const el = (tag, props = {}, ...children) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === 'class') e.className = v;
    else if (k === 'dataset') Object.assign(e.dataset, v);
    else e[k] = v;
  }
  for (const c of children) e.append(c instanceof Node ? c : String(c));
  return e;
};

// The admin token, asked once and kept only here (never written to the page or storage).
let adminToken = '';

async function getJson(path) {
  const r = await fetch(path, {cache: 'no-store'});
  const body = await r.json().catch(() => ({}));
  return {status: r.status, ok: r.ok, body};
}

function showBanner(text) {
  const b = $('#banner');
  b.textContent = text;
  b.hidden = !text;
}

function formatDuration(seconds) {
  const s = Math.floor(seconds);
  const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
  if (d > 0) return `${d}d ${h}h`;
  if (h > 0) return `${h}h ${m}m`;
  if (m > 0) return `${m}m ${s % 60}s`;
  return `${s}s`;
}

function formatBytes(b) {
  if (b == null) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (b >= 1024 && i < units.length - 1) {
    b /= 1024;
    i++;
  }
  return `${b.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

// ---------------------------------------------------------------------------------------------
// Overview

async function refreshOverview() {
  const status = await getJson('/v1/status');
  if (!status.ok) throw new Error(`/v1/status answered ${status.status}`);
  const s = status.body;
  const store = s.store ?? s;
  $('#node-label').textContent = `${s.node_id ?? 'single node'} · v${s.version}`;
  const cap = store.cap_bytes ?? 0;
  const used = store.bytes ?? 0;
  const memory = el('div', {class: 'card', dataset: {card: 'memory'}},
                    el('div', {class: 'label'}, 'memory (state)'),
                    el('div', {class: 'value'}, formatBytes(used) + (cap ? ` of ${formatBytes(cap)}` : '')));
  if (cap) {
    const pct = Math.min(100, (100 * used) / cap);
    const bar = el('div', {class: 'bar' + (pct > 90 ? ' high' : '')}, el('div'));
    bar.firstChild.style.width = pct.toFixed(1) + '%';
    memory.append(bar);
  }
  const card = (name, label, value) =>
      el('div', {class: 'card', dataset: {card: name}}, el('div', {class: 'label'}, label),
         el('div', {class: 'value'}, value));
  $('#overview-cards').replaceChildren(
      card('node', 'node', s.node_id ?? 'single node'), card('version', 'version', s.version),
      card('uptime', 'uptime', formatDuration(s.uptime_seconds)),
      card('config', 'config version', s.config_version),
      card('domains', 'domains', s.domains ?? '–'),
      card('keys', 'keys held', formatNumber(store.keys ?? 0)), memory,
      card('state', 'state', s.draining ? 'draining' : 'serving'));

  const table = $('#members');
  const cluster = s.cluster === false ? {status: 404} : await getJson('/v1/cluster');
  if (cluster.status === 404) {
    $('#cluster-summary').textContent = 'Single node: no cluster.';
    table.hidden = true;
    return;
  }
  if (!cluster.ok) throw new Error(`/v1/cluster answered ${cluster.status}`);
  const c = cluster.body;
  const alive = c.members.filter((m) => m.alive || m.self).length;
  $('#cluster-summary').replaceChildren(
      el('span', {class: c.quorum ? 'ok' : 'bad'}, c.quorum ? 'quorum' : 'NO QUORUM'),
      ` · ${alive} of ${c.member_count} members alive · ${c.deaths} deaths, ${c.failovers} failovers` +
          (c.discovery ? ` · members from ${c.discovery.source}` : ''));
  table.hidden = false;
  table.tBodies[0].replaceChildren(...c.members.map((m) => el('tr', {dataset: {member: m.id}},
      el('td', {}, m.id + (m.self ? ' (this node)' : '')), el('td', {}, m.address ?? ''),
      el('td', {class: m.alive || m.self ? 'ok' : 'bad'}, m.alive || m.self ? 'alive' : 'dead'),
      el('td', {class: 'num'}, `${(100 * (m.ownership_share ?? 0)).toFixed(1)} %`),
      el('td', {class: 'num'}, m.replication_lag_ms != null ? `${m.replication_lag_ms} ms` : '–'),
      el('td', {class: 'num'}, m.last_contact_ms_ago != null ? `${m.last_contact_ms_ago} ms ago` : '–'),
      el('td', {class: 'num'}, formatNumber(m.forwarded ?? 0)))));
}

// ---------------------------------------------------------------------------------------------
// Live traffic: two scrapes of /metrics make a rate.

const traffic = {last: null, lastAt: 0, times: [], allowed: new Map(), refused: new Map(),
                 shed: new Map(), p50: [], p99: [], totals: new Map()};

function countersOf(samples) {
  return {
    allowed: sumBy(samples, 'ratelimit_service_rate_limit_within_limit', 'domain'),
    refused: sumBy(samples, 'ratelimit_service_rate_limit_over_limit', 'domain'),
    shed: sumBy(samples, 'floodgate_shed_checks_total', 'domain'),
    latency: histogram(samples, 'floodgate_decision_latency_seconds'),
  };
}

function pushPoint(map, domain, value, length) {
  if (!map.has(domain)) map.set(domain, new Array(length).fill(null));
  map.get(domain).push(value);
}

async function pollMetrics() {
  const r = await fetch('/metrics', {cache: 'no-store'});
  if (!r.ok) throw new Error(`/metrics answered ${r.status}`);
  const now = Date.now();
  const counters = countersOf(parsePrometheus(await r.text()));
  if (traffic.last) {
    const seconds = (now - traffic.lastAt) / 1000;
    const length = traffic.times.length;
    traffic.times.push(new Date(now).toTimeString().slice(0, 8));
    const domains = new Set([...counters.allowed.keys(), ...counters.refused.keys(),
                             ...counters.shed.keys(), ...traffic.allowed.keys()]);
    const a = rates(traffic.last.allowed, counters.allowed, seconds);
    const f = rates(traffic.last.refused, counters.refused, seconds);
    const s = rates(traffic.last.shed, counters.shed, seconds);
    for (const d of domains) {
      pushPoint(traffic.allowed, d, a.get(d) ?? 0, length);
      pushPoint(traffic.refused, d, f.get(d) ?? 0, length);
      pushPoint(traffic.shed, d, s.get(d) ?? 0, length);
      traffic.totals.set(d, {allowed: counters.allowed.get(d) ?? 0, refused: counters.refused.get(d) ?? 0});
    }
    const p50 = quantileBetween(traffic.last.latency, counters.latency, 0.5);
    const p99 = quantileBetween(traffic.last.latency, counters.latency, 0.99);
    traffic.p50.push(p50 == null ? null : p50 * 1000);
    traffic.p99.push(p99 == null ? null : p99 * 1000);
    if (traffic.times.length > HISTORY) {
      traffic.times.shift();
      traffic.p50.shift();
      traffic.p99.shift();
      for (const m of [traffic.allowed, traffic.refused, traffic.shed]) for (const v of m.values()) v.shift();
    }
  }
  traffic.last = counters;
  traffic.lastAt = now;
  document.body.dataset.points = traffic.times.length;  // for tests: how much history there is
  return counters;
}

function drawTraffic() {
  const domains = [...traffic.allowed.keys()].sort();
  const color = (d) => PALETTE[domains.indexOf(d) % PALETTE.length];
  const seriesOf = (map) => domains.map((d) => ({label: d, color: color(d), values: map.get(d)}));
  drawLines($('#chart-allowed'), traffic.times, seriesOf(traffic.allowed), {unit: '/s'});
  drawLines($('#chart-refused'), traffic.times, seriesOf(traffic.refused), {unit: '/s'});
  drawLines($('#chart-shed'), traffic.times, seriesOf(traffic.shed), {unit: '/s'});
  drawLines($('#chart-latency'), traffic.times,
            [{label: 'p50', color: PALETTE[0], values: traffic.p50},
             {label: 'p99', color: PALETTE[1], values: traffic.p99}], {unit: ' ms'});
  legend($('#traffic-legend'), [...domains.map((d) => ({label: d, color: color(d)})),
                                {label: 'latency p50', color: PALETTE[0]},
                                {label: 'latency p99', color: PALETTE[1]}]);
  const last = (map, d) => {
    const v = map.get(d);
    return v && v.length ? v[v.length - 1] : 0;
  };
  $('#traffic-now').tBodies[0].replaceChildren(...domains.map((d) => el('tr', {dataset: {domain: d}},
      el('td', {}, d), el('td', {class: 'num'}, formatNumber(last(traffic.allowed, d))),
      el('td', {class: 'num'}, formatNumber(last(traffic.refused, d))),
      el('td', {class: 'num'}, formatNumber(last(traffic.shed, d))),
      el('td', {class: 'num'}, formatNumber(traffic.totals.get(d)?.allowed ?? 0)),
      el('td', {class: 'num'}, formatNumber(traffic.totals.get(d)?.refused ?? 0)))));
}

// ---------------------------------------------------------------------------------------------
// Top limited keys

async function refreshTop() {
  const r = await getJson('/v1/top?n=20');
  if (!r.ok) throw new Error(`/v1/top answered ${r.status}: ${r.body.error ?? ''}`);
  const t = r.body;
  const missing = t.missing?.length ? ` · no answer from ${t.missing.join(', ')}` : '';
  $('#top-summary').textContent =
      `${formatNumber(t.refusals ?? 0)} refusals in the last ${t.window_seconds} s, from ` +
      `${t.nodes?.length ? t.nodes.join(', ') : 'this node'}${missing}. Counts are upper bounds: ` +
      'the true count is between refused − error and refused.';
  $('#top-keys').tBodies[0].replaceChildren(...t.keys.map((k, i) => el('tr', {dataset: {key: k.descriptor}},
      el('td', {class: 'num'}, i + 1), el('td', {}, k.domain), el('td', {}, el('code', {}, k.descriptor)),
      el('td', {class: 'num'}, formatNumber(k.refused)), el('td', {class: 'num'}, formatNumber(k.error)))));
}

// ---------------------------------------------------------------------------------------------
// Limits: every rule with its live counters, and the YAML editor.

let liveConfig = {version: 0, domains: {}};
let editing = null;  // the domain in the editor

function ruleCounters(samples) {
  const byKey = new Map();
  for (const name of ['total_hits', 'over_limit', 'within_limit', 'near_limit', 'shadow_mode']) {
    for (const [key, v] of sumBy(samples, `ratelimit_service_rate_limit_${name}`, 'key')) {
      if (!byKey.has(key)) byKey.set(key, {});
      byKey.get(key)[name] = v;
    }
  }
  return byKey;
}

function windowText(rule) {
  if (rule.unlimited) return 'unlimited';
  const p = rule.period_seconds;
  const per = p === 1 ? 'second' : p === 60 ? 'minute' : p === 3600 ? 'hour' : p === 86400 ? 'day' : `${p} s`;
  return `${rule.limit} per ${per}`;
}

async function refreshLimits() {
  const [rules, config, metrics] = await Promise.all([
    getJson('/v1/rules'), getJson('/v1/config'), fetch('/metrics', {cache: 'no-store'}).then((r) => r.text()),
  ]);
  if (!rules.ok) throw new Error(`/v1/rules answered ${rules.status}`);
  if (!config.ok) throw new Error(`/v1/config answered ${config.status}`);
  liveConfig = config.body;
  $('#config-version').textContent = `(config version ${liveConfig.version})`;
  const counters = ruleCounters(parsePrometheus(metrics));
  const sections = rules.body.domains.map((d) => {
    const rows = d.rules.map((rule) => {
      const c = counters.get(rule.stats_key) ?? {};
      const modes = [];
      modes.push(rule.algorithm);
      if (rule.burst) modes.push(`burst ${rule.burst}`);
      if (rule.shadow_mode) modes.push('shadow');
      if (rule.quota_mode) modes.push('quota');
      if (rule.consistency && rule.consistency !== 'exact') modes.push(`consistency ${rule.consistency}`);
      if (rule.failure_mode) modes.push(`on failure ${rule.failure_mode}`);
      if (rule.block_duration_seconds) modes.push(`block ${rule.block_duration_seconds} s`);
      return el('tr', {dataset: {rule: rule.stats_key}},
                el('td', {}, el('code', {}, rule.descriptor)), el('td', {}, rule.name ?? ''),
                el('td', {}, windowText(rule)),
                el('td', {}, ...modes.map((m) => el('span', {class: 'tag'}, m))),
                el('td', {class: 'num'}, formatNumber(c.total_hits ?? 0)),
                el('td', {class: 'num'}, formatNumber(c.within_limit ?? 0)),
                el('td', {class: 'num'}, formatNumber(c.over_limit ?? 0)));
    });
    const edit = el('button', {}, 'Edit YAML');
    edit.dataset.edit = d.domain;
    edit.addEventListener('click', () => openEditor(d.domain));
    return el('div', {class: 'domain', dataset: {domain: d.domain}},
              el('div', {class: 'domain-head'}, el('h3', {}, d.domain), edit),
              el('table', {class: 'grid'},
                 el('thead', {}, el('tr', {}, ...['descriptor', 'name', 'limit', 'algorithm and modes',
                                                  'hits', 'allowed', 'refused'].map((h) => el('th', {}, h)))),
                 el('tbody', {}, ...rows)));
  });
  $('#limits-domains').replaceChildren(...sections);
}

function setEditorText(text) {
  $('#editor-text').value = text;
  renderGutter(null);
}

function renderGutter(errorLine) {
  const lines = $('#editor-text').value.split('\n').length;
  const gutter = $('#editor-gutter');
  gutter.replaceChildren(...Array.from({length: lines}, (_, i) =>
      el('span', {class: i + 1 === errorLine ? 'err' : ''}, `${i + 1}\n`)));
  gutter.scrollTop = $('#editor-text').scrollTop;
}

function openEditor(domain, text) {
  editing = domain;
  $('#editor').hidden = false;
  $('#editor-domain').textContent = domain;
  setEditorText(text ?? liveConfig.domains[domain] ?? '');
  setResult('', '');
  $('#editor-difftext').hidden = true;
  $('#editor').scrollIntoView({block: 'nearest'});
}

function setResult(kind, text) {
  const r = $('#editor-result');
  r.className = 'result ' + kind;
  r.textContent = text;
}

// The line an error names: a "line" field, else "file:LINE:" or "line LINE" in its message.
function errorLine(body) {
  if (Number.isInteger(body.line)) return body.line;
  const message = typeof body.error === 'string' ? body.error : body.error?.message ?? '';
  const m = message.match(/:(\d+):/) ?? message.match(/line (\d+)/);
  return m ? Number(m[1]) : null;
}

function errorText(body) {
  return typeof body.error === 'string' ? body.error : body.error?.message ?? JSON.stringify(body);
}

async function validate() {
  const r = await fetch(`/v1/validate/${encodeURIComponent(editing)}`,
                        {method: 'POST', body: $('#editor-text').value});
  const body = await r.json().catch(() => ({}));
  if (r.ok) {
    setResult('ok', `Valid: ${body.descriptors ?? '?'} descriptors.`);
    renderGutter(null);
    return true;
  }
  const line = errorLine(body);
  setResult('bad', (line ? `Line ${line}: ` : '') + errorText(body));
  renderGutter(line);
  return false;
}

function showDiff() {
  const before = (liveConfig.domains[editing] ?? '').split('\n');
  const after = $('#editor-text').value.split('\n');
  const pre = $('#editor-difftext');
  const changes = diffLines(before, after);
  pre.replaceChildren(...changes.map((c) =>
      c.op === ' ' ? el('span', {}, `  ${c.line}\n`)
                   : el('span', {class: c.op === '+' ? 'add' : 'del'}, `${c.op} ${c.line}\n`)));
  if (!changes.some((c) => c.op !== ' ')) pre.replaceChildren('No change from what is live.');
  pre.hidden = false;
}

function askToken() {
  const dialog = $('#token-dialog');
  $('#token-input').value = '';
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener('close', () => {
      const token = dialog.returnValue === 'ok' ? $('#token-input').value : '';
      $('#token-input').value = '';  // not kept in the page
      resolve(token);
    }, {once: true});
  });
}

async function apply() {
  if (!(await validate())) return;
  for (let attempt = 0; attempt < 2; attempt++) {
    const headers = adminToken ? {Authorization: `Bearer ${adminToken}`} : {};
    const r = await fetch(`/v1/config/${encodeURIComponent(editing)}`,
                          {method: 'PUT', headers, body: $('#editor-text').value});
    const body = await r.json().catch(() => ({}));
    if (r.ok) {
      setResult('ok', `Applied: config version ${body.version} is live.`);
      await refreshLimits();
      return;
    }
    if (r.status === 401 && attempt === 0) {
      adminToken = await askToken();
      if (!adminToken) {
        setResult('bad', 'Not applied: this change needs the admin token.');
        return;
      }
      continue;
    }
    if (r.status === 401) adminToken = '';  // a wrong token: ask again next time
    const line = errorLine(body);
    setResult('bad', `Not applied (${r.status}): ` + errorText(body));
    if (line) renderGutter(line);
    return;
  }
}

// ---------------------------------------------------------------------------------------------
// Algorithms: POST /v1/simulate replays a synthetic trace through the real algorithms.

const SIM_COLORS = {fixed_window: PALETTE[1], sliding_window: PALETTE[0], token_bucket: PALETTE[2],
                    leaky_bucket: PALETTE[3]};

async function simulate(event) {
  event?.preventDefault();
  const form = new FormData($('#sim-form'));
  const request = {};
  for (const [k, v] of form) request[k] = k === 'shape' ? v : Number(v);
  const r = await fetch('/v1/simulate', {method: 'POST', body: JSON.stringify(request)});
  const body = await r.json().catch(() => ({}));
  if (!r.ok) {
    $('#sim-totals').tBodies[0].replaceChildren(el('tr', {}, el('td', {colSpan: 4, class: 'bad'}, errorText(body))));
    return;
  }
  const names = Object.keys(body.algorithms);
  const series = [{label: 'offered', color: '#b8c0cf', values: body.offered, width: 1, dash: [4, 3]},
                  ...names.map((n) => ({label: n.replace('_', ' '), color: SIM_COLORS[n] ?? '#555',
                                        values: body.algorithms[n].admitted}))];
  drawLines($('#chart-sim'), body.steps.map((t) => `${t}s`), series);
  legend($('#sim-legend'), series);
  const offered = body.offered.reduce((a, b) => a + b, 0);
  const period = Number(request.period_seconds);
  const step = body.step_seconds ?? (body.steps.length > 1 ? body.steps[1] - body.steps[0] : 1);
  $('#sim-totals').tBodies[0].replaceChildren(...names.map((n) => {
    const admitted = body.algorithms[n].admitted;
    return el('tr', {dataset: {algorithm: n}}, el('td', {}, n.replace('_', ' ')),
              el('td', {class: 'num'}, body.algorithms[n].total),
              el('td', {class: 'num'}, offered),
              el('td', {class: 'num'}, maxInWindow(admitted, Math.max(1, Math.round(period / step)))));
  }));
}

// The most admitted in any run of `width` consecutive steps: how far past the limit a window
// placed anywhere (not only on the algorithm's own boundaries) lets traffic through.
function maxInWindow(values, width) {
  let sum = 0;
  let best = 0;
  values.forEach((v, i) => {
    sum += v;
    if (i >= width) sum -= values[i - width];
    best = Math.max(best, sum);
  });
  return best;
}

// ---------------------------------------------------------------------------------------------
// Views and polling

const VIEWS = {
  overview: {refresh: refreshOverview, poll: true},
  traffic: {refresh: async () => {
    await pollMetrics();
    drawTraffic();
  }, poll: true},
  top: {refresh: refreshTop, poll: true},
  limits: {refresh: refreshLimits, poll: false},
  algorithms: {refresh: async () => {
    if (!$('#sim-totals').tBodies[0].rows.length) await simulate();
  }, poll: false},
};

let current = null;
let timer = null;

async function runRefresh(view) {
  try {
    await VIEWS[view].refresh();
    showBanner('');
    document.body.dataset.loaded = view;
  } catch (e) {
    showBanner(`Could not load the ${view} view: ${e.message}`);
  }
}

function show(view) {
  if (!VIEWS[view]) view = 'overview';
  current = view;
  for (const v of Object.keys(VIEWS)) $(`#view-${v}`).hidden = v !== view;
  for (const a of document.querySelectorAll('nav a')) a.classList.toggle('active', a.dataset.view === view);
  clearInterval(timer);
  delete document.body.dataset.loaded;
  runRefresh(view);
  if (VIEWS[view].poll) timer = setInterval(() => runRefresh(current), POLL_MS);
}

function init() {
  window.addEventListener('hashchange', () => show(location.hash.slice(1)));
  $('#editor-text').addEventListener('scroll', () => {
    $('#editor-gutter').scrollTop = $('#editor-text').scrollTop;
  });
  $('#editor-text').addEventListener('input', () => renderGutter(null));
  $('#editor-validate').addEventListener('click', validate);
  $('#editor-diff').addEventListener('click', showDiff);
  $('#editor-apply').addEventListener('click', apply);
  $('#editor-close').addEventListener('click', () => {
    $('#editor').hidden = true;
    editing = null;
  });
  $('#forget-token').addEventListener('click', () => {
    adminToken = '';
    setResult('', 'The page no longer holds a token.');
  });
  $('#new-domain').addEventListener('click', () => {
    const name = $('#new-domain-name').value.trim();
    if (!name) return;
    openEditor(name, liveConfig.domains[name] ??
        `domain: ${name}\ndescriptors:\n  - key: user\n    rate_limit: {unit: minute, requests_per_unit: 100}\n`);
  });
  $('#sim-form').addEventListener('submit', simulate);
  // The traffic charts need a history: keep scraping in the background whatever the view.
  setInterval(() => {
    if (current !== 'traffic') pollMetrics().catch(() => {});
  }, POLL_MS);
  pollMetrics().catch(() => {});
  show(location.hash.slice(1) || 'overview');
}

init();
