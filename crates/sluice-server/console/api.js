// The admin JSON API, with the admin key kept for this browser tab only (sessionStorage: gone when the tab
// closes, never sent anywhere but this gateway's /admin, never written into the page).

const STORAGE = 'sluice.adminKey';

export const session = {
  key: () => sessionStorage.getItem(STORAGE),
  signIn: (key) => sessionStorage.setItem(STORAGE, key),
  signOut: () => sessionStorage.removeItem(STORAGE),
};

/** An error answer, in the gateway's (OpenAI's) error shape. */
export class ApiError extends Error {
  constructor(status, body) {
    const error = body?.error ?? {};
    super(error.message || `The gateway answered ${status}.`);
    this.status = status;
    this.code = error.code ?? null;
    this.param = error.param ?? null;
  }
}

let onSignedOut = () => {};

/** What to do when the gateway no longer accepts the key. */
export function whenSignedOut(callback) {
  onSignedOut = callback;
}

/**
 * Calls the admin API. `key` is given only to try a key before keeping it; otherwise the session's key
 * is used, and a 401 ends the session.
 */
export async function api(path, { method = 'GET', body, key } = {}) {
  const headers = { Authorization: `Bearer ${key ?? session.key() ?? ''}` };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: 'no-store',
    credentials: 'omit',
  });
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (!response.ok) {
    const error = new ApiError(response.status, data);
    if (response.status === 401 && key === undefined) {
      session.signOut();
      onSignedOut(error);
    }
    throw error;
  }
  return data;
}

/** A query string from an object, leaving out empty values. */
export function query(params) {
  const pairs = Object.entries(params).filter(([, v]) => v !== undefined && v !== null && v !== '');
  return pairs.length === 0 ? '' : `?${new URLSearchParams(pairs)}`;
}
