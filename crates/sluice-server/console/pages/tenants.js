// Tenants: the list with each one's budget used; one tenant's budget, rate, limits, keys and spend; and
// creating, limiting and revoking, through the admin API. A new key is shown once, in a dialog, as the
// API returns it, and leaves the page when the dialog closes.

import { api, ApiError, query } from '../api.js';
import { usage } from '../charts.js';
import { ask, h, fill, field, section, table } from '../dom.js';
import { isoDay, num, usd, usdInput, when } from '../format.js';
import { dailySection, periodDays, spendColumns } from './spend.js';
import { logsSection } from './request_logs.js';

/** Configured model names, for hints: every model with a key in /admin/limits. */
async function modelNames() {
  try {
    const limits = await api('/admin/limits');
    return [...new Set(limits.data.map((row) => row.model))].sort();
  } catch {
    return [];
  }
}

/** A comma-separated list from a text field: null (no restriction) when empty. */
function listOf(text) {
  const items = text.split(',').map((t) => t.trim()).filter(Boolean);
  return items.length === 0 ? null : items;
}

/** A whole number from a field: null (unlimited) when empty. */
function limitOf(text) {
  return text.trim() === '' ? null : Number(text);
}

function budgetOf(text) {
  return text.trim() === '' ? null : Number(text);
}

function limitsText(tenant) {
  const parts = [];
  if (tenant.rpm !== null) parts.push(`${num(tenant.rpm)} requests/min`);
  if (tenant.tpm !== null) parts.push(`${num(tenant.tpm)} tokens/min`);
  return parts.length === 0 ? 'none' : parts.join(', ');
}

/** The fields of a tenant's limits, filled from `tenant` when given. */
function limitFields(tenant, models) {
  const inputs = {
    rpm: h('input', { type: 'number', min: 0, step: 1, inputmode: 'numeric', value: tenant?.rpm ?? '' }),
    tpm: h('input', { type: 'number', min: 0, step: 1, inputmode: 'numeric', value: tenant?.tpm ?? '' }),
    budget: h('input', { type: 'number', min: 0, step: 'any', inputmode: 'decimal', value: usdInput(tenant?.budget_micros) }),
    period: h('select', null,
      h('option', { value: 'month', selected: tenant?.budget_period !== 'day' }, 'Month (UTC)'),
      h('option', { value: 'day', selected: tenant?.budget_period === 'day' }, 'Day (UTC)')),
    models: h('input', { type: 'text', autocomplete: 'off', value: tenant?.models?.join(', ') ?? '' }),
    prompts: h('input', { type: 'text', autocomplete: 'off', value: tenant?.prompts?.join(', ') ?? '' }),
  };
  const fields = [
    field('Requests per minute', inputs.rpm, 'Empty: no limit.'),
    field('Tokens per minute', inputs.tpm, 'Empty: no limit.'),
    field('Budget (USD)', inputs.budget, 'Spend allowed per period. Empty: no budget.'),
    field('Budget period', inputs.period),
    field('Models', inputs.models, `Comma-separated; empty: every model.${models.length ? ` Configured: ${models.join(', ')}.` : ''}`),
    field('Prompts', inputs.prompts, 'Comma-separated; empty: every prompt.'),
  ];
  const values = () => ({
    rpm: limitOf(inputs.rpm.value),
    tpm: limitOf(inputs.tpm.value),
    budget_usd: budgetOf(inputs.budget.value),
    budget_period: inputs.period.value,
    models: listOf(inputs.models.value),
    prompts: listOf(inputs.prompts.value),
  });
  return { inputs, fields, values };
}

/** Marks the field the API named as wrong, and says why. */
function showError(error, message, inputs) {
  for (const input of Object.values(inputs)) input.removeAttribute('aria-invalid');
  const fieldName = { budget_usd: 'budget', budget_period: 'period' }[error.param] ?? error.param;
  const input = inputs[fieldName];
  message.textContent = error.message;
  if (input) {
    input.setAttribute('aria-invalid', 'true');
    input.focus();
  }
}

async function list(main, { status }) {
  const today = isoDay(new Date());
  const month = periodDays('month');
  let tenants;
  try {
    tenants = await api('/admin/tenants');
  } catch (err) {
    if (err instanceof ApiError && err.code === 'store_disabled') {
      fill(main, h('h1', null, 'Tenants'), h('p', null, err.message));
      return;
    }
    throw err;
  }
  const [monthSpend, daySpend, models] = await Promise.all([
    api(`/admin/spend${query({ group_by: 'tenant', from: month.from, to: month.to })}`),
    api(`/admin/spend${query({ group_by: 'tenant', from: today, to: today })}`),
    modelNames(),
  ]);
  const spent = (tenant) => {
    const rows = tenant.budget_period === 'day' ? daySpend.data : monthSpend.data;
    return rows.find((r) => r.group === tenant.name)?.cost_micros ?? 0;
  };
  const name = h('input', { type: 'text', required: true, maxlength: 128, autocomplete: 'off' });
  const limits = limitFields(null, models);
  const message = h('p', { class: 'error', role: 'alert' });
  const form = h('form', {
    class: 'card',
    'aria-labelledby': 's-new-tenant',
    onsubmit: async (event) => {
      event.preventDefault();
      const body = { name: name.value.trim(), ...limits.values() };
      for (const key of Object.keys(body)) if (body[key] === null) delete body[key];
      try {
        await api('/admin/tenants', { method: 'POST', body });
        status(`Tenant ${body.name} created.`);
        location.hash = `#/tenants/${encodeURIComponent(body.name)}`;
      } catch (err) {
        if (!(err instanceof ApiError)) throw err;
        showError(err, message, { name, ...limits.inputs });
      }
    },
  },
  h('h2', { id: 's-new-tenant' }, 'New tenant'),
  h('div', { class: 'grid' }, field('Name', name, 'Unique; the ledger records spend under it.'), limits.fields),
  message,
  h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Create tenant')));

  fill(main,
    h('h1', null, 'Tenants'),
    section('All tenants', table({
      id: 'tenants',
      columns: [
        { label: 'Tenant', cell: (t) => h('a', { href: `#/tenants/${encodeURIComponent(t.name)}` }, t.name), key: 'name' },
        { label: 'Rate limits', cell: limitsText, key: 'limits' },
        { label: 'Budget used this period', cell: (t) => usage(spent(t), t.budget_micros, usd), key: 'budget' },
        { label: 'Period', cell: (t) => t.budget_period, key: 'period' },
        { label: 'Models', cell: (t) => t.models?.join(', ') ?? 'all', key: 'models' },
        { label: 'Created', cell: (t) => when(t.created_at), key: 'created' },
      ],
      rows: tenants.data,
      empty: 'No tenants yet: create one below.',
    })),
    form);
}

function keyActions(key, { status, reload }) {
  if (key.state !== 'active') return '';
  return h('button', {
    type: 'button',
    class: 'danger small',
    'aria-label': `Revoke key ${key.name ?? key.prefix}`,
    onclick: async () => {
      const choice = await ask({
        title: 'Revoke this key?',
        body: h('p', null, 'Calls with ', h('strong', null, key.name ?? key.prefix), ` (${key.prefix}) are refused from now on. This cannot be undone.`),
        actions: [
          { label: 'Cancel', value: 'cancel', kind: 'quiet' },
          { label: 'Revoke key', value: 'revoke', kind: 'danger' },
        ],
      });
      if (choice !== 'revoke') return;
      try {
        await api(`/admin/keys/${encodeURIComponent(key.id)}`, { method: 'DELETE' });
        status(`Key ${key.name ?? key.prefix} revoked.`);
        reload();
      } catch (err) {
        status(`Could not revoke the key: ${err.message}`, 'error');
      }
    },
  }, 'Revoke');
}

async function showNewKey(created) {
  const value = h('input', {
    id: 'new-key-value',
    type: 'text',
    readonly: true,
    value: created.key,
    class: 'secret',
    spellcheck: 'false',
    autocomplete: 'off',
    'aria-describedby': 'new-key-note',
  });
  const copied = h('span', { class: 'muted', role: 'status' });
  const copy = h('button', {
    type: 'button',
    onclick: async () => {
      try {
        await navigator.clipboard.writeText(value.value);
        copied.textContent = 'Copied.';
      } catch {
        value.select();
        copied.textContent = 'Selected: press Ctrl+C (or ⌘C) to copy.';
      }
    },
  }, 'Copy');
  await ask({
    title: 'Key created',
    body: [
      h('p', { id: 'new-key-note' }, 'Copy the key now: it is shown this once, and the gateway keeps only its hash.'),
      field(`Key ${created.name ?? ''} for ${created.tenant}`, value),
      h('p', null, copy, ' ', copied),
    ],
    actions: [{ label: 'Done', value: 'done' }],
  });
}

async function detail(main, name, ctx) {
  const [info, models] = await Promise.all([
    api(`/admin/tenants/${encodeURIComponent(name)}`),
    modelNames(),
  ]);
  const { tenant, budget, rate, keys } = info;
  const from = budget.period_start.slice(0, 10);
  const to = isoDay(new Date());
  const [days, byModel, logs] = await Promise.all([
    api(`/admin/spend${query({ tenant: name, from, to, group_by: 'day' })}`),
    api(`/admin/spend${query({ tenant: name, from, to, group_by: 'model' })}`),
    logsSection(name, ctx),
  ]);

  const limits = limitFields(tenant, models);
  const limitsMessage = h('p', { class: 'error', role: 'alert' });
  const limitsForm = h('form', {
    class: 'card',
    'aria-labelledby': 's-limits',
    onsubmit: async (event) => {
      event.preventDefault();
      const values = limits.values();
      const current = {
        rpm: tenant.rpm,
        tpm: tenant.tpm,
        budget_usd: tenant.budget_micros === null ? null : Number(usdInput(tenant.budget_micros)),
        budget_period: tenant.budget_period,
        models: tenant.models,
        prompts: tenant.prompts,
      };
      // Only what changed is sent, so a change made meanwhile by someone else to another limit stays.
      const change = Object.fromEntries(Object.entries(values)
        .filter(([key, value]) => JSON.stringify(value) !== JSON.stringify(current[key])));
      if (Object.keys(change).length === 0) {
        ctx.status('Nothing to change.');
        return;
      }
      try {
        await api(`/admin/tenants/${encodeURIComponent(name)}`, { method: 'PATCH', body: change });
        ctx.status(`Limits of ${name} saved.`);
        ctx.reload();
      } catch (err) {
        if (!(err instanceof ApiError)) throw err;
        showError(err, limitsMessage, limits.inputs);
      }
    },
  },
  h('h2', { id: 's-limits' }, 'Limits'),
  h('div', { class: 'grid' }, limits.fields),
  limitsMessage,
  h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Save limits')));

  const keyName = h('input', { type: 'text', maxlength: 128, autocomplete: 'off' });
  const expires = h('input', { type: 'datetime-local' });
  const keyMessage = h('p', { class: 'error', role: 'alert' });
  const keyForm = h('form', {
    class: 'inline-form',
    'aria-label': 'New key',
    onsubmit: async (event) => {
      event.preventDefault();
      const body = {};
      if (keyName.value.trim()) body.name = keyName.value.trim();
      if (expires.value) body.expires_at = new Date(expires.value).toISOString();
      try {
        const created = await api(`/admin/tenants/${encodeURIComponent(name)}/keys`, { method: 'POST', body });
        keyName.value = '';
        expires.value = '';
        await showNewKey(created);
        ctx.status(`Key ${created.name ?? created.prefix} created.`);
        ctx.reload();
      } catch (err) {
        if (!(err instanceof ApiError)) throw err;
        keyMessage.textContent = err.message;
      }
    },
  },
  field('Key name', keyName, 'Optional label, such as the service that uses it.'),
  field('Expires', expires, 'Optional, in your local time.'),
  h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Create key')),
  keyMessage);

  const rateText = rate
    ? [
      rate.rpm !== null ? h('li', null, `${num(rate.remaining_requests)} of ${num(rate.rpm)} requests left this minute`) : null,
      rate.tpm !== null ? h('li', null, `${num(rate.remaining_tokens)} of ${num(rate.tpm)} tokens left this minute`) : null,
    ]
    : h('li', null, 'No rate limit.');

  fill(main,
    h('p', { class: 'crumbs' }, h('a', { href: '#/tenants' }, 'Tenants'), ' / '),
    h('h1', null, tenant.name),
    h('div', { class: 'cards' },
      h('section', { class: 'card', 'aria-labelledby': 's-budget' },
        h('h2', { id: 's-budget' }, 'Budget this period'),
        h('p', { id: 'tenant-budget' }, usage(budget.spent_micros, budget.budget_micros, usd)),
        h('p', { class: 'muted' }, `Per ${budget.period} (UTC), since ${when(budget.period_start)}; resets ${when(budget.resets_at)}.`)),
      h('section', { class: 'card', 'aria-labelledby': 's-rate' },
        h('h2', { id: 's-rate' }, 'Rate now'),
        h('ul', { class: 'plain' }, rateText),
        h('p', { class: 'muted' }, `Models: ${tenant.models?.join(', ') ?? 'all'}. Prompts: ${tenant.prompts?.join(', ') ?? 'all'}.`))),
    section('Keys',
      table({
        id: 'tenant-keys',
        columns: [
          { label: 'Name', cell: (k) => k.name ?? '—', key: 'name' },
          { label: 'Key', cell: (k) => h('code', null, k.prefix), key: 'prefix' },
          { label: 'Id', cell: (k) => h('code', null, k.id), key: 'id' },
          { label: 'Created', cell: (k) => when(k.created_at), key: 'created' },
          { label: 'Expires', cell: (k) => (k.expires_at ? when(k.expires_at) : 'never'), key: 'expires' },
          { label: 'State', cell: (k) => h('span', { class: `badge ${k.state}` }, k.state), key: 'state' },
          { label: 'Action', cell: (k) => keyActions(k, ctx), key: 'action' },
        ],
        rows: keys,
        empty: 'No keys yet.',
      }),
      keyForm),
    limitsForm,
    dailySection(days.data, from, to, 'Spend this period, per day'),
    section('Spend this period, by model', table({
      id: 'tenant-spend-by-model',
      columns: spendColumns('Model', (r) => r.group, byModel.data.reduce((t, r) => t + r.cost_micros, 0)),
      rows: byModel.data,
      empty: 'No requests this period.',
    }),
    h('p', null, h('a', { href: `#/spend${query({ tenant: name })}` }, `All of ${name}’s spend`))),
    logs);
}

export async function render(main, ctx) {
  if (ctx.params.length > 0) return detail(main, ctx.params[0], ctx);
  return list(main, ctx);
}
