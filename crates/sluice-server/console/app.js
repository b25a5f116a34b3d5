// The console's shell: signing in, the page list, and routing by the part of the URL after `#`
// (`#/tenants/acme?x=1`), so the gateway serves one page and the browser's back button works.

import { api, ApiError, session, whenSignedOut } from './api.js';
import { h, fill, field } from './dom.js';

/**
 * The pages, in menu order. A page is a module whose `render(main, ctx)` fills `main` and may return a
 * function to call when the page is left (to stop timers). `ctx` holds `params` (the address's parts
 * after the page's), `query` (its URLSearchParams), `status(message, kind)` to announce something,
 * `reload()` to draw the page again and `stale()`, true once the user has moved on. Adding one: a module
 * under pages/, a line here, and a line in the gateway's list of files (sluice-server/src/console.rs).
 */
const PAGES = [
  { path: 'spend', title: 'Spend', load: () => import('./pages/spend.js') },
  { path: 'tenants', title: 'Tenants', load: () => import('./pages/tenants.js') },
  { path: 'upstream', title: 'Upstream keys', load: () => import('./pages/upstream.js') },
  { path: 'failures', title: 'Errors', load: () => import('./pages/failures.js') },
  { path: 'prompts', title: 'Prompts', load: () => import('./pages/prompts.js') },
  { path: 'access', title: 'Access', load: () => import('./pages/access.js') },
];

const main = document.getElementById('main');
const nav = document.getElementById('nav');
const statusRegion = document.getElementById('status');
const signOutButton = document.getElementById('sign-out');
let leave = null;
let rendering = 0;

/** Says something to everyone, screen readers included, for a few seconds. */
function status(message, kind = 'info') {
  statusRegion.className = `status ${kind}`;
  statusRegion.textContent = message;
  clearTimeout(status.timer);
  status.timer = setTimeout(() => {
    statusRegion.textContent = '';
    statusRegion.className = 'status';
  }, kind === 'error' ? 10000 : 5000);
}

function parseRoute() {
  const hash = location.hash.startsWith('#/') ? location.hash.slice(2) : '';
  const [path, search = ''] = hash.split('?');
  const [page = 'spend', ...params] = path.split('/').filter(Boolean).map(decodeURIComponent);
  return { page, params, query: new URLSearchParams(search) };
}

function buildNav(current) {
  fill(nav, h('ul', null, PAGES.map((p) => h('li', null,
    h('a', { href: `#/${p.path}`, 'aria-current': p.path === current ? 'page' : null }, p.title)))));
}

function signInForm(message) {
  nav.hidden = true;
  signOutButton.hidden = true;
  const input = h('input', {
    id: 'admin-key',
    type: 'password',
    autocomplete: 'off',
    required: true,
    spellcheck: 'false',
  });
  const error = h('p', { class: 'error', id: 'sign-in-error', role: 'alert' }, message ?? '');
  const button = h('button', { type: 'submit' }, 'Sign in');
  const form = h('form', {
    class: 'card narrow',
    'aria-labelledby': 'sign-in-title',
    onsubmit: async (event) => {
      event.preventDefault();
      const key = input.value.trim();
      if (!key) return;
      button.disabled = true;
      error.textContent = '';
      try {
        // Any admin endpoint tells whether the key is the admin key.
        await api('/admin/limits', { key });
        session.signIn(key);
        input.value = '';
        route();
      } catch (err) {
        input.value = '';
        error.textContent = err instanceof ApiError && (err.status === 401 || err.status === 403)
          ? 'That is not the admin key.'
          : `Could not sign in: ${err.message}`;
        input.focus();
      } finally {
        button.disabled = false;
      }
    },
  },
  h('h1', { id: 'sign-in-title' }, 'Sign in'),
  h('p', null, 'The console reads and changes the gateway through its admin API. The key is kept in this tab only, until you sign out or close it.'),
  field('Admin key', input, 'The value of [auth] admin_key in the gateway’s configuration.'),
  error,
  h('div', { class: 'actions' }, button));
  fill(main, form);
  document.title = 'Sign in · Sluice console';
  input.focus();
}

async function route() {
  const ticket = ++rendering;
  if (leave) {
    try { leave(); } catch { /* a page that fails to clean up must not block the next one */ }
    leave = null;
  }
  if (!session.key()) {
    signInForm();
    return;
  }
  const { page, params, query } = parseRoute();
  const entry = PAGES.find((p) => p.path === page);
  nav.hidden = false;
  signOutButton.hidden = false;
  buildNav(entry?.path);
  if (!entry) {
    fill(main, h('h1', null, 'Not found'), h('p', null, 'No page has this address. ', h('a', { href: '#/spend' }, 'Go to spend.')));
    return;
  }
  document.title = `${entry.title} · Sluice console`;
  fill(main, h('p', { class: 'muted' }, 'Loading…'));
  try {
    const module = await entry.load();
    if (ticket !== rendering) return;
    const cleanup = await module.render(main, { params, query, status, reload: route, stale: () => ticket !== rendering });
    if (ticket !== rendering) {
      if (typeof cleanup === 'function') cleanup();
      return;
    }
    leave = typeof cleanup === 'function' ? cleanup : null;
  } catch (err) {
    if (ticket !== rendering || !session.key()) return;
    fill(main, h('h1', null, entry.title), h('p', { class: 'error', role: 'alert' }, `Could not load this page: ${err.message}`));
  }
  if (ticket !== rendering) return;
  // Move focus to the page's heading, so keyboard and screen-reader users start at the new content.
  const heading = main.querySelector('h1');
  if (heading) {
    heading.tabIndex = -1;
    heading.focus({ preventScroll: true });
  }
  // Which rendering is on screen, for anyone (tests included) waiting for a page to be drawn.
  main.dataset.route = location.hash;
  main.dataset.rendered = String(ticket);
  performance.mark(`sluice:drawn:${entry.path}`);
}

document.querySelector('.skip')?.addEventListener('click', (event) => {
  event.preventDefault();
  main.focus();
});
whenSignedOut(() => signInForm('The gateway no longer accepts the key; sign in again.'));
signOutButton.addEventListener('click', () => {
  session.signOut();
  status('Signed out.');
  signInForm();
});
window.addEventListener('hashchange', () => {
  // The skip link's `#main` is not a route.
  if (location.hash === '#main') return;
  route();
});
route();
