// Errors and 429s by model and provider: the router's counters since start, the last failures the
// gateway kept (upstream calls and error answers) grouped, and the latest ones one by one. From
// GET /admin/failures, every 5 seconds while shown, with a button to pause.

import { api } from '../api.js';
import { shareBar } from '../charts.js';
import { h, fill, section, table } from '../dom.js';
import { num, percent, when } from '../format.js';

const EVERY_MS = 5000;
const LATEST = 50;
const RATE_LIMITED = new Set(['rate_limited', 'quota_exhausted']);

/** The kept failures, grouped by model and provider. */
export function groupFailures(failures) {
  const groups = new Map();
  for (const f of failures) {
    const provider = f.provider ?? '—';
    const key = `${f.model}\u0000${provider}`;
    const group = groups.get(key) ?? {
      model: f.model, provider, upstream: 0, upstream429: 0, answers: 0, answers429: 0, answers5xx: 0, last: f.at,
    };
    if (f.stage === 'upstream') {
      group.upstream += 1;
      if (RATE_LIMITED.has(f.kind)) group.upstream429 += 1;
    } else {
      group.answers += 1;
      if (f.status === 429) group.answers429 += 1;
      if (f.status >= 500) group.answers5xx += 1;
    }
    if (f.at > group.last) group.last = f.at;
    groups.set(key, group);
  }
  return [...groups.values()].sort((a, b) => (a.last < b.last ? 1 : -1));
}

function countersTable(deployments) {
  return table({
    id: 'failure-counters',
    columns: [
      { label: 'Model', cell: (d) => d.model, key: 'model' },
      { label: 'Provider', cell: (d) => [d.provider, h('span', { class: 'sub' }, d.vendor_model)], key: 'provider' },
      { label: 'Calls', cell: (d) => num(d.attempts), num: true, key: 'attempts' },
      { label: 'Vendor 429s', cell: (d) => num(d.upstream_rate_limited), num: true, key: 'upstream_rate_limited' },
      {
        label: 'Share 429',
        cell: (d) => {
          const share = d.attempts > 0 ? d.upstream_rate_limited / d.attempts : 0;
          return h('span', { class: 'share-cell' }, shareBar(share), ` ${percent(share)}`);
        },
        key: 'share',
      },
      { label: 'Failed over', cell: (d) => num(d.failovers), num: true, key: 'failovers' },
    ],
    rows: deployments,
    empty: 'No deployment is configured.',
  });
}

function modelsTable(models) {
  return table({
    id: 'failure-models',
    columns: [
      { label: 'Model', cell: (m) => m.model, key: 'model' },
      { label: 'Waited for capacity', cell: (m) => num(m.queue_waits), num: true, key: 'queue_waits' },
      { label: 'Refused with 429 (no key had capacity)', cell: (m) => num(m.rejections), num: true, key: 'rejections' },
    ],
    rows: models,
  });
}

function groupsTable(groups) {
  return table({
    id: 'failure-groups',
    columns: [
      { label: 'Model', cell: (g) => g.model, key: 'model' },
      { label: 'Provider', cell: (g) => g.provider, key: 'provider' },
      { label: 'Failed calls', cell: (g) => num(g.upstream), num: true, key: 'upstream' },
      { label: 'of which 429', cell: (g) => num(g.upstream429), num: true, key: 'upstream429' },
      { label: 'Error answers', cell: (g) => num(g.answers), num: true, key: 'answers' },
      { label: 'of which 429', cell: (g) => num(g.answers429), num: true, key: 'answers429' },
      { label: 'of which 5xx', cell: (g) => num(g.answers5xx), num: true, key: 'answers5xx' },
      { label: 'Last', cell: (g) => when(g.last), key: 'last' },
    ],
    rows: groups,
    empty: 'No failures kept: nothing has failed since the gateway started, or not lately.',
  });
}

function latestTable(failures) {
  return table({
    id: 'failure-latest',
    columns: [
      { label: 'When', cell: (f) => when(f.at), key: 'at' },
      { label: 'Where', cell: (f) => (f.stage === 'upstream' ? 'Upstream call' : 'Answer'), key: 'stage' },
      { label: 'What', cell: (f) => h('code', null, f.kind), key: 'kind' },
      { label: 'Status', cell: (f) => (f.status ? String(f.status) : '—'), num: true, key: 'status' },
      { label: 'Model', cell: (f) => f.model, key: 'model' },
      { label: 'Provider', cell: (f) => f.provider ?? '—', key: 'provider' },
      { label: 'Key', cell: (f) => (f.upstream_key ? h('code', null, f.upstream_key) : '—'), key: 'key' },
      { label: 'Tenant', cell: (f) => f.tenant, key: 'tenant' },
    ],
    rows: failures.slice(0, LATEST),
    empty: 'Nothing has failed lately.',
  });
}

export async function render(main, ctx) {
  const content = h('div');
  const updated = h('p', { class: 'muted' });
  let paused = false;
  const pause = h('button', {
    type: 'button',
    class: 'quiet',
    'aria-pressed': 'false',
    onclick: () => {
      paused = !paused;
      pause.setAttribute('aria-pressed', String(paused));
      pause.textContent = paused ? 'Resume updates' : 'Pause updates';
    },
  }, 'Pause updates');

  async function load() {
    const report = await api('/admin/failures');
    if (ctx.stale()) return;
    fill(content,
      section('Recent failures by model and provider',
        h('p', { class: 'muted' }, `The last ${num(report.data.length)} failures kept (at most ${num(report.capacity)}; ${num(report.recorded)} since start). A failed call may have been failed over and the request served.`),
        groupsTable(groupFailures(report.data))),
      section('Latest failures', latestTable(report.data)),
      section('Since start, by deployment', countersTable(report.deployments)),
      section('Since start, by model', modelsTable(report.models)));
    updated.textContent = `Updated ${new Date().toLocaleTimeString()}; every ${EVERY_MS / 1000} s while shown.`;
  }

  fill(main,
    h('h1', null, 'Errors and 429s'),
    h('div', { class: 'toolbar' }, pause, updated),
    content);
  await load();
  const timer = setInterval(() => {
    if (paused || document.hidden) return;
    load().catch((err) => ctx.status(`Could not update: ${err.message}`, 'error'));
  }, EVERY_MS);
  return () => clearInterval(timer);
}
