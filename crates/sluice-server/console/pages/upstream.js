// Upstream keys, live: each key's requests and tokens left this minute, requests in flight, cooldown,
// the deployment's breaker, and in words why a key is out. From GET /admin/limits, every 5 seconds while
// the page is shown (with a button to pause, for people who need the page to hold still).

import { api } from '../api.js';
import { shareBar } from '../charts.js';
import { h, fill, section, table } from '../dom.js';
import { duration, num } from '../format.js';

const EVERY_MS = 5000;

/** A key's state in words, and how bad it is: ok, warn (slowed) or out (not used now). */
export function keyState(row) {
  const budget = row.budget;
  const breaker = row.breaker;
  if (!row.usable) {
    return {
      level: 'out',
      text: 'Out: the vendor refused this key',
      detail: row.probe_in_ms ? `A request will probe it again in ${duration(row.probe_in_ms)}.` : 'The next request will probe it.',
    };
  }
  if (budget.cooldown_ms) {
    return { level: 'out', text: 'Cooling down after a 429', detail: `Back in ${duration(budget.cooldown_ms)}.` };
  }
  if (breaker?.open) {
    return {
      level: 'out',
      text: 'Breaker open: the deployment is failing',
      detail: `A probe in ${duration(breaker.open.retry_in_ms)}.`,
    };
  }
  if (breaker === 'half_open') {
    return { level: 'warn', text: 'Breaker half-open', detail: 'A probe is testing the deployment.' };
  }
  if (budget.remaining_requests === 0 || budget.remaining_tokens === 0) {
    const which = budget.remaining_requests === 0 ? 'requests' : 'tokens';
    return { level: 'warn', text: 'At its limit', detail: `No ${which} left this minute; they refill continuously.` };
  }
  if (budget.max_in_flight !== null && budget.max_in_flight !== undefined && budget.in_flight >= budget.max_in_flight) {
    return { level: 'warn', text: 'At its in-flight cap', detail: `${budget.in_flight} requests in flight.` };
  }
  return { level: 'ok', text: 'Ready', detail: '' };
}

function left(remaining, limit) {
  if (limit === null || limit === undefined) return h('span', { class: 'muted' }, 'no limit');
  const share = limit > 0 ? (remaining ?? 0) / limit : 0;
  return h('span', { class: 'share-cell' }, shareBar(share), ` ${num(remaining)} of ${num(limit)}`);
}

function keysTable(rows) {
  return table({
    id: 'upstream-keys',
    caption: 'One row per key and deployment: each key has its own budget with each vendor model.',
    columns: [
      { label: 'Key', cell: (r) => h('code', null, r.key), key: 'key' },
      { label: 'Model', cell: (r) => r.model, key: 'model' },
      { label: 'Provider', cell: (r) => [r.provider, h('span', { class: 'sub' }, r.vendor_model)], key: 'provider' },
      {
        label: 'State',
        cell: (r) => {
          const state = keyState(r);
          return [h('span', { class: `badge ${state.level}` }, state.text), state.detail ? h('span', { class: 'sub' }, state.detail) : null];
        },
        key: 'state',
      },
      { label: 'Requests left', cell: (r) => left(r.budget.remaining_requests, r.budget.rpm), key: 'requests' },
      { label: 'Tokens left', cell: (r) => left(r.budget.remaining_tokens, r.budget.tpm), key: 'tokens' },
      {
        label: 'In flight',
        cell: (r) => (r.budget.max_in_flight ? `${num(r.budget.in_flight)} of ${num(r.budget.max_in_flight)}` : num(r.budget.in_flight)),
        num: true,
        key: 'in_flight',
      },
      { label: 'Completion reserve', cell: (r) => num(r.completion_estimate), num: true, key: 'estimate' },
    ],
    rows,
    empty: 'No upstream key is configured.',
  });
}

function providersTable(providers) {
  return table({
    id: 'upstream-providers',
    columns: [
      { label: 'Provider', cell: (p) => p.provider, key: 'provider' },
      {
        label: 'State',
        cell: (p) => h('span', { class: `badge ${p.enabled ? 'ok' : 'out'}` }, p.enabled ? 'Enabled' : 'Disabled: no usable key'),
        key: 'state',
      },
      {
        label: 'Keys not set',
        cell: (p) => (p.missing_env.length ? p.missing_env.map((v) => h('code', { class: 'item' }, v)) : 'none'),
        key: 'missing',
      },
      {
        label: 'Keys refused by the vendor',
        cell: (p) => (p.rejected_keys.length ? p.rejected_keys.map((v) => h('code', { class: 'item' }, v)) : 'none'),
        key: 'rejected',
      },
    ],
    rows: providers,
  });
}

export async function render(main, ctx) {
  const content = h('div');
  const updated = h('p', { class: 'muted', id: 'upstream-updated' });
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
    const limits = await api('/admin/limits');
    if (ctx.stale()) return;
    const out = limits.data.filter((r) => keyState(r).level !== 'ok').length;
    fill(content,
      h('p', { id: 'upstream-summary' }, `${limits.data.length} key budgets; ${out === 0 ? 'all ready' : `${out} slowed or out`}.`),
      section('Keys', keysTable(limits.data)),
      section('Providers', providersTable(limits.providers ?? [])));
    updated.textContent = `Updated ${new Date().toLocaleTimeString()}; every ${EVERY_MS / 1000} s while shown.`;
  }

  fill(main,
    h('h1', null, 'Upstream keys'),
    h('p', null, 'Each key’s budget with each deployment, now. Key ids only: the keys themselves never leave the gateway.'),
    h('div', { class: 'toolbar' }, pause, updated),
    content);
  await load();
  const timer = setInterval(() => {
    if (paused || document.hidden) return;
    load().catch((err) => ctx.status(`Could not update: ${err.message}`, 'error'));
  }, EVERY_MS);
  return () => clearInterval(timer);
}
