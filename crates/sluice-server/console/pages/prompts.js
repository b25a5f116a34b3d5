// The prompt catalog: every prompt the gateway serves at POST /v1/prompts/{name}, each version with its
// model, parameters, variables and message templates. From GET /admin/prompts.

import { api } from '../api.js';
import { h, fill, table } from '../dom.js';

function variablesTable(schema) {
  const required = new Set(schema.required ?? []);
  const rows = Object.entries(schema.properties ?? {}).map(([name, v]) => ({ name, ...v, required: required.has(name) }));
  return table({
    columns: [
      { label: 'Variable', cell: (v) => h('code', null, v.name) },
      { label: 'Type', cell: (v) => v.type },
      { label: 'Required', cell: (v) => (v.required ? 'yes' : 'no') },
      { label: 'Default', cell: (v) => (v.default === undefined ? '—' : JSON.stringify(v.default)) },
      { label: 'Allowed values', cell: (v) => (v.enum ? v.enum.join(', ') : 'any') },
      { label: 'Description', cell: (v) => v.description ?? '' },
    ],
    rows,
    empty: 'No variables.',
  });
}

function versionView(prompt, version) {
  const parameters = Object.keys(version.parameters ?? {}).length
    ? h('pre', { class: 'code' }, JSON.stringify(version.parameters, null, 2))
    : h('p', { class: 'muted' }, 'None: the model’s defaults.');
  return h('div', { class: 'version' },
    h('dl', { class: 'facts' },
      h('div', null, h('dt', null, 'Version'), h('dd', null, String(version.version), version.version === prompt.default ? ' (default: served when a caller pins none)' : '')),
      h('div', null, h('dt', null, 'Status'), h('dd', null, version.status,
        version.sunset ? `, sunset ${version.sunset.slice(0, 10)}` : '',
        version.replaced_by ? `, replaced by ${version.replaced_by.name}${version.replaced_by.version ? ` version ${version.replaced_by.version}` : ''}` : '')),
      h('div', null, h('dt', null, 'Model'), h('dd', null, version.model)),
      h('div', null, h('dt', null, 'Description'), h('dd', null, version.description || '—'))),
    h('h3', null, 'Parameters'),
    parameters,
    h('h3', null, 'Variables'),
    variablesTable(version.variables ?? {}),
    h('h3', null, 'Messages'),
    h('ol', { class: 'messages' }, version.messages.map((m) => h('li', null,
      h('span', { class: 'role' }, m.role),
      h('pre', { class: 'code' }, m.content)))));
}

function promptView(prompt) {
  const id = `prompt-${prompt.name.replace(/[^A-Za-z0-9_-]/g, '_')}`;
  const holder = h('div');
  const select = h('select', {
    id: `${id}-version`,
    onchange: () => fill(holder, versionView(prompt, prompt.versions.find((v) => String(v.version) === select.value))),
  }, prompt.versions.map((v) => h('option', { value: v.version, selected: v.version === prompt.default }, `Version ${v.version} (${v.status})`)));
  const latest = prompt.versions.find((v) => v.version === prompt.default) ?? prompt.versions[prompt.versions.length - 1];
  fill(holder, versionView(prompt, latest));
  return h('section', { class: 'card prompt', 'aria-labelledby': `${id}-title`, id },
    h('h2', { id: `${id}-title` }, h('code', null, prompt.name)),
    h('p', { class: 'muted' }, `${prompt.versions.length} version${prompt.versions.length === 1 ? '' : 's'}: ${prompt.versions.map((v) => v.version).join(', ')}. Access: ${prompt.access}. POST /v1/prompts/${prompt.name}`),
    h('div', { class: 'field inline' }, h('label', { for: select.id }, 'Show version'), select),
    holder);
}

export async function render(main) {
  const catalog = await api('/admin/prompts');
  fill(main,
    h('h1', null, 'Prompts'),
    h('p', null, 'Prompt templates published as endpoints, reloaded when their files change.'),
    catalog.data.length === 0
      ? h('p', { class: 'empty' }, 'No prompts are loaded. Add TOML files to the prompts directory ([prompts] dir).')
      : catalog.data.map(promptView));
}
