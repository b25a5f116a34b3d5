// Building the page from data without ever parsing text as HTML: every string becomes a text node or an
// attribute value, so a tenant named `<img onerror=...>` is just a name.

const SVG_NS = 'http://www.w3.org/2000/svg';

function build(element, props, children) {
  for (const [name, value] of Object.entries(props ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on') && typeof value === 'function') {
      element.addEventListener(name.slice(2), value);
    } else if (name === 'dataset') {
      Object.assign(element.dataset, value);
    } else if (name === 'value' || name === 'checked' || name === 'selected') {
      element[name] = value;
    } else {
      element.setAttribute(name, value === true ? '' : String(value));
    }
  }
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** An HTML element: h('a', {href: '#/x', class: 'c'}, 'text', otherNode). */
export function h(tag, props, ...children) {
  return build(document.createElement(tag), props, children);
}

/** An SVG element, with the same arguments. */
export function s(tag, props, ...children) {
  return build(document.createElementNS(SVG_NS, tag), props, children);
}

/** Replaces an element's children. */
export function fill(element, ...children) {
  element.replaceChildren();
  append(element, children);
  return element;
}

/** A table: columns are {label, cell: row => node|string, num?: bool}; the first column heads its row. */
export function table({ caption, columns, rows, id, empty = 'Nothing yet.' }) {
  const head = h('tr', null, columns.map((c) => h('th', { scope: 'col', class: c.num ? 'num' : null }, c.label)));
  const body = rows.length === 0
    ? [h('tr', null, h('td', { colspan: columns.length, class: 'empty' }, empty))]
    : rows.map((row) => h('tr', null, columns.map((c, i) => {
      const props = { class: c.num ? 'num' : null, 'data-col': c.key ?? null };
      return i === 0 ? h('th', { ...props, scope: 'row' }, c.cell(row)) : h('td', props, c.cell(row));
    })));
  return h('div', { class: 'table-wrap' },
    h('table', { id },
      caption ? h('caption', null, caption) : null,
      h('thead', null, head),
      h('tbody', null, body)));
}

/** A labelled form field. */
export function field(label, input, hint) {
  const id = input.id || `f-${Math.random().toString(36).slice(2, 9)}`;
  input.id = id;
  const hintNode = hint ? h('span', { class: 'hint', id: `${id}-hint` }, hint) : null;
  if (hintNode) input.setAttribute('aria-describedby', hintNode.id);
  return h('div', { class: 'field' }, h('label', { for: id }, label), input, hintNode);
}

/** A section with a heading of the given level. */
export function section(title, ...children) {
  const id = `s-${title.toLowerCase().replace(/[^a-z0-9]+/g, '-')}`;
  return h('section', { 'aria-labelledby': id }, h('h2', { id }, title), ...children);
}

/**
 * Shows the page's modal dialog with a title, a body and buttons ({label, value, kind}); resolves with
 * the value of the button pressed (Escape resolves with ''). The dialog is emptied when it closes, so
 * nothing it showed (a new key) stays in the page.
 */
export function ask({ title, body, actions }) {
  const dialog = document.getElementById('dialog');
  const opener = document.activeElement;
  return new Promise((resolve) => {
    const buttons = actions.map((a) => h('button', {
      type: 'button',
      class: a.kind ?? null,
      onclick: () => dialog.close(a.value),
    }, a.label));
    fill(dialog,
      h('h2', { id: 'dialog-title' }, title),
      h('div', { class: 'dialog-body' }, body),
      h('div', { class: 'actions' }, buttons));
    dialog.returnValue = '';
    dialog.addEventListener('close', () => {
      const value = dialog.returnValue;
      dialog.replaceChildren();
      if (opener instanceof HTMLElement && opener.isConnected) opener.focus();
      resolve(value);
    }, { once: true });
    dialog.showModal();
    const focus = dialog.querySelector('[autofocus]') ?? buttons[buttons.length - 1];
    focus?.focus();
  });
}
