// A tenant's request logs on its page: the setting (off by default, redacted or hashed, and the
// retention) and the latest logs, through `/admin/tenants/{name}/request-logs`. Texts arrive already
// redacted by the gateway; a hashed log shows only its hash and length.

import { api, ApiError } from '../api.js';
import { field, h, section, table } from '../dom.js';
import { num, when } from '../format.js';

const MODES = [
  ['off', 'Off: keep nothing'],
  ['redacted', 'Redacted: prompts and answers, secrets replaced'],
  ['hashed', 'Hashed: only a hash and the length'],
];

function text(value, sha256, bytes) {
  if (value === null) return h('span', { class: 'muted' }, `sha256 ${sha256.slice(0, 12)}…, ${num(bytes)} bytes`);
  const short = value.length > 80 ? `${value.slice(0, 80)}…` : value;
  return h('details', null, h('summary', null, short), h('pre', { class: 'log-text' }, value));
}

/** The request-log section of tenant `name`'s page. */
export async function logsSection(name, ctx) {
  const path = `/admin/tenants/${encodeURIComponent(name)}/request-logs`;
  const found = await api(`${path}?limit=20`);
  const mode = h('select', null,
    MODES.map(([value, label]) => h('option', { value, selected: found.settings.mode === value }, label)));
  const days = h('input', {
    type: 'number', min: 1, max: 3650, step: 1, inputmode: 'numeric', value: found.settings.retention_days,
  });
  const message = h('p', { class: 'error', role: 'alert' });
  const form = h('form', {
    class: 'inline-form',
    'aria-label': 'Request log settings',
    onsubmit: async (event) => {
      event.preventDefault();
      try {
        await api(path, { method: 'PUT', body: { mode: mode.value, retention_days: Number(days.value) } });
        ctx.status(`Request logs of ${name}: ${mode.value}.`);
        ctx.reload();
      } catch (err) {
        if (!(err instanceof ApiError)) throw err;
        message.textContent = err.message;
      }
    },
  },
  field('Keep', mode, 'Off unless the tenant agreed to it.'),
  field('Retention (days)', days, 'Older logs are deleted.'),
  h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Save')),
  message);
  return section('Request logs',
    form,
    table({
      id: 'tenant-request-logs',
      columns: [
        { label: 'When', cell: (l) => when(l.created_at), key: 'when' },
        { label: 'Model', cell: (l) => l.model, key: 'model' },
        { label: 'Status', cell: (l) => String(l.status), key: 'status', num: true },
        { label: 'Prompt', cell: (l) => text(l.request, l.request_sha256, l.request_bytes), key: 'request' },
        { label: 'Answer', cell: (l) => text(l.response, l.response_sha256, l.response_bytes), key: 'response' },
      ],
      rows: found.data,
      empty: found.settings.mode === 'off' ? 'Request logs are off for this tenant.' : 'No request logged yet.',
    }));
}
