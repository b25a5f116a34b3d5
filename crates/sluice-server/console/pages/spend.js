// Spend: day by day over a period, and by tenant, model and key, with the usage categories. Every number
// is a row of GET /admin/spend, unchanged.

import { api, query } from '../api.js';
import { dailyBars, shareBar } from '../charts.js';
import { h, fill, field, section, table } from '../dom.js';
import { daysBetween, isoDay, num, percent, usd } from '../format.js';

const PERIODS = [
  ['month', 'This month'],
  ['today', 'Today'],
  ['7d', 'Last 7 days'],
  ['30d', 'Last 30 days'],
  ['custom', 'Custom'],
];

/** The UTC days a named period covers, ending today. */
export function periodDays(period, now = new Date()) {
  const today = isoDay(now);
  const back = (n) => {
    const d = new Date(`${today}T00:00:00Z`);
    d.setUTCDate(d.getUTCDate() - n);
    return isoDay(d);
  };
  switch (period) {
    case 'today': return { from: today, to: today };
    case '7d': return { from: back(6), to: today };
    case '30d': return { from: back(29), to: today };
    default: return { from: `${today.slice(0, 8)}01`, to: today };
  }
}

/** The columns of a spend table: the group, then the usage categories, the cost and its share. */
export function spendColumns(groupLabel, groupCell, total) {
  return [
    { label: groupLabel, cell: groupCell, key: 'group' },
    { label: 'Requests', cell: (r) => num(r.requests), num: true, key: 'requests' },
    { label: 'Input', cell: (r) => num(r.input_tokens), num: true, key: 'input_tokens' },
    { label: 'Cache read', cell: (r) => num(r.cache_read_tokens), num: true, key: 'cache_read_tokens' },
    { label: 'Cache write', cell: (r) => num(r.cache_write_tokens), num: true, key: 'cache_write_tokens' },
    { label: 'Output', cell: (r) => num(r.output_tokens), num: true, key: 'output_tokens' },
    { label: 'Reasoning', cell: (r) => num(r.reasoning_tokens), num: true, key: 'reasoning_tokens' },
    { label: 'Cost', cell: (r) => usd(r.cost_micros), num: true, key: 'cost' },
    {
      label: 'Share of cost',
      cell: (r) => {
        const share = total > 0 ? r.cost_micros / total : 0;
        return h('span', { class: 'share-cell' }, shareBar(share), ` ${percent(share)}`);
      },
      key: 'share',
    },
  ];
}

function sum(rows, field) {
  return rows.reduce((total, r) => total + (r[field] ?? 0), 0);
}

/** The day-by-day chart and its table, for `rows` grouped by day over `from..to`. */
export function dailySection(rows, from, to, title = 'Cost per day') {
  const byDay = new Map(rows.map((r) => [r.group, r]));
  const last = to < isoDay(new Date()) ? to : isoDay(new Date());
  const days = daysBetween(from, last < from ? from : last);
  const points = days.map((day) => {
    const row = byDay.get(day);
    return {
      day,
      value: row?.cost_micros ?? 0,
      title: row ? `${usd(row.cost_micros)}, ${num(row.requests)} requests` : 'no requests',
    };
  });
  const columns = [
    { label: 'Day', cell: (r) => r.group, key: 'group' },
    { label: 'Requests', cell: (r) => num(r.requests), num: true, key: 'requests' },
    { label: 'Prompt tokens', cell: (r) => num(r.prompt_tokens), num: true, key: 'prompt_tokens' },
    { label: 'Completion tokens', cell: (r) => num(r.completion_tokens), num: true, key: 'completion_tokens' },
    { label: 'Cost', cell: (r) => usd(r.cost_micros), num: true, key: 'cost' },
  ];
  return section(title,
    h('div', { class: 'chart-with-table' },
      dailyBars(points, { format: usd, label: title }),
      table({ id: 'spend-by-day', columns, rows, empty: 'No requests in this period.' })));
}

export async function render(main, { query: params }) {
  const period = PERIODS.some(([p]) => p === params.get('period')) ? params.get('period') : 'month';
  const defaults = periodDays(period);
  const from = period === 'custom' ? (params.get('from') || defaults.from) : defaults.from;
  const to = period === 'custom' ? (params.get('to') || defaults.to) : defaults.to;
  const tenant = params.get('tenant') || '';
  const filter = { from, to, tenant };
  const [days, tenants, models, keys, tenantList] = await Promise.all([
    api(`/admin/spend${query({ ...filter, group_by: 'day' })}`),
    api(`/admin/spend${query({ ...filter, group_by: 'tenant' })}`),
    api(`/admin/spend${query({ ...filter, group_by: 'model' })}`),
    api(`/admin/spend${query({ ...filter, group_by: 'key' })}`),
    api('/admin/tenants'),
  ]);
  // Keys are named by their tenant's key list: the chosen tenant's, or every tenant's when they are few.
  const owners = tenant ? [tenant] : tenantList.data.length <= 20 ? tenantList.data.map((t) => t.name) : [];
  const keyLists = await Promise.all(owners.map((name) => api(`/admin/tenants/${encodeURIComponent(name)}/keys`)
    .catch(() => ({ data: [] }))));
  const keyNames = new Map(keyLists.flatMap((list) => list.data)
    .map((k) => [k.id, `${k.tenant} · ${k.name ?? 'unnamed'} (${k.prefix})`]));
  const totals = {
    cost: sum(tenants.data, 'cost_micros'),
    requests: sum(tenants.data, 'requests'),
    prompt: sum(tenants.data, 'prompt_tokens'),
    completion: sum(tenants.data, 'completion_tokens'),
  };

  const periodSelect = h('select', { id: 'spend-period' },
    PERIODS.map(([value, label]) => h('option', { value, selected: value === period }, label)));
  const fromInput = h('input', { id: 'spend-from', type: 'date', value: from, required: true });
  const toInput = h('input', { id: 'spend-to', type: 'date', value: to, required: true });
  const tenantSelect = h('select', { id: 'spend-tenant' },
    h('option', { value: '' }, 'All tenants'),
    tenantList.data.map((t) => h('option', { value: t.name, selected: t.name === tenant }, t.name)),
    tenant && !tenantList.data.some((t) => t.name === tenant) ? h('option', { value: tenant, selected: true }, tenant) : null);
  periodSelect.addEventListener('change', () => {
    if (periodSelect.value === 'custom') return;
    const range = periodDays(periodSelect.value);
    fromInput.value = range.from;
    toInput.value = range.to;
  });
  for (const input of [fromInput, toInput]) {
    input.addEventListener('change', () => { periodSelect.value = 'custom'; });
  }
  const rangeError = h('p', { class: 'error', role: 'alert' });
  const form = h('form', {
    class: 'filters',
    'aria-label': 'Which spend to show',
    onsubmit: (event) => {
      event.preventDefault();
      const next = { period: periodSelect.value, tenant: tenantSelect.value };
      if (next.period === 'custom') {
        if (fromInput.value > toInput.value) {
          rangeError.textContent = 'The first day is after the last one.';
          fromInput.setAttribute('aria-invalid', 'true');
          fromInput.focus();
          return;
        }
        Object.assign(next, { from: fromInput.value, to: toInput.value });
      }
      location.hash = `#/spend${query(next)}`;
    },
  },
  field('Period', periodSelect),
  field('From (UTC)', fromInput),
  field('To (UTC)', toInput),
  field('Tenant', tenantSelect),
  h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Show')),
  rangeError);

  const scope = tenant ? `tenant ${tenant}` : 'all tenants';
  fill(main,
    h('h1', null, 'Spend'),
    h('p', { class: 'muted' }, `From ${from} to ${to} (UTC days), ${scope}. Figures are the gateway’s ledger, as GET /admin/spend returns them.`),
    form,
    h('dl', { class: 'totals', id: 'spend-totals' },
      h('div', null, h('dt', null, 'Cost'), h('dd', { id: 'total-cost' }, usd(totals.cost))),
      h('div', null, h('dt', null, 'Requests'), h('dd', { id: 'total-requests' }, num(totals.requests))),
      h('div', null, h('dt', null, 'Prompt tokens'), h('dd', { id: 'total-prompt' }, num(totals.prompt))),
      h('div', null, h('dt', null, 'Completion tokens'), h('dd', { id: 'total-completion' }, num(totals.completion)))),
    dailySection(days.data, from, to),
    section('By tenant', table({
      id: 'spend-by-tenant',
      columns: spendColumns('Tenant', (r) => (r.group === 'default'
        ? r.group
        : h('a', { href: `#/tenants/${encodeURIComponent(r.group)}` }, r.group)), totals.cost),
      rows: tenants.data,
      empty: 'No requests in this period.',
    })),
    section('By model', table({
      id: 'spend-by-model',
      columns: spendColumns('Model', (r) => r.group, totals.cost),
      rows: models.data,
      empty: 'No requests in this period.',
    })),
    section('By key', table({
      id: 'spend-by-key',
      columns: spendColumns('Key', (r) => (r.group === 'none'
        ? h('span', { title: 'Requests made with a configured key, not a virtual key' }, 'configured keys')
        : h('span', null, keyNames.get(r.group) ?? '', h('code', { class: keyNames.has(r.group) ? 'sub' : null }, r.group))), totals.cost),
      rows: keys.data,
      empty: 'No requests in this period.',
    })),
  );
}
