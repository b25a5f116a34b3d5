// Access to the catalog: subscription requests waiting for a decision (approve or reject), every grant,
// and the audit log of admin actions. From /admin/subscriptions, /admin/grants and /admin/audit.

import { api } from '../api.js';
import { h, fill, table, section } from '../dom.js';

const when = (t) => (t ? new Date(t).toISOString().replace('T', ' ').slice(0, 19) : '—');

function decideButton(request, decision, { status, reload }) {
  const approve = decision === 'approve';
  return h('button', {
    type: 'button',
    class: approve ? null : 'danger',
    'aria-label': `${approve ? 'Approve' : 'Reject'} ${request.tenant}’s request for ${request.service}`,
    onclick: async () => {
      try {
        await api(`/admin/subscriptions/${encodeURIComponent(request.id)}/${decision}`, { method: 'POST' });
        status(`${request.service} ${approve ? 'approved' : 'rejected'} for ${request.tenant}.`);
        reload();
      } catch (err) {
        status(`Could not decide the request: ${err.message}`, 'error');
      }
    },
  }, approve ? 'Approve' : 'Reject');
}

export async function render(main, ctx) {
  const [requests, grants, audit] = await Promise.all([
    api('/admin/subscriptions'),
    api('/admin/grants'),
    api('/admin/audit?limit=100'),
  ]);
  const pending = requests.data.filter((r) => r.status === 'pending');
  const decided = requests.data.filter((r) => r.status !== 'pending').reverse();
  fill(main,
    h('h1', null, 'Access'),
    h('p', null, 'Who may call the services that need approval or a grant. An approval takes effect on every replica within a second.'),
    section('Requests waiting',
      table({
        id: 'pending-requests',
        columns: [
          { label: 'Tenant', cell: (r) => r.tenant },
          { label: 'Service', cell: (r) => h('code', null, r.service) },
          { label: 'Reason', cell: (r) => r.reason },
          { label: 'Asked', cell: (r) => when(r.created_at) },
          { label: 'Decision', cell: (r) => h('div', { class: 'actions' }, decideButton(r, 'approve', ctx), decideButton(r, 'reject', ctx)) },
        ],
        rows: pending,
        empty: 'No request is waiting.',
      })),
    section('Grants',
      table({
        id: 'grants',
        columns: [
          { label: 'Tenant', cell: (g) => g.tenant },
          { label: 'Service', cell: (g) => h('code', null, g.service) },
          { label: 'Granted', cell: (g) => when(g.granted_at) },
          { label: 'By', cell: (g) => g.granted_by },
        ],
        rows: grants.data,
        empty: 'No grants: tenants call open services only.',
      })),
    section('Decided requests',
      table({
        columns: [
          { label: 'Tenant', cell: (r) => r.tenant },
          { label: 'Service', cell: (r) => h('code', null, r.service) },
          { label: 'Decision', cell: (r) => r.status },
          { label: 'By', cell: (r) => r.decided_by ?? '—' },
          { label: 'When', cell: (r) => when(r.decided_at) },
        ],
        rows: decided,
        empty: 'None yet.',
      })),
    section('Audit log',
      table({
        id: 'audit-log',
        columns: [
          { label: 'When', cell: (e) => when(e.at) },
          { label: 'Who', cell: (e) => h('code', null, e.actor) },
          { label: 'Action', cell: (e) => e.action },
          { label: 'Target', cell: (e) => e.target },
        ],
        rows: audit.data,
        empty: 'No admin action recorded yet.',
      })));
}
