// Numbers, money and times as the console writes them. Money is exact: integer micro-dollars from the
// API, written in dollars with every significant digit (at least two decimals), never a float's rounding.

const grouping = new Intl.NumberFormat('en-US');

/** An integer with thousands separators: 12,345. */
export function num(n) {
  return n === null || n === undefined ? '—' : grouping.format(n);
}

/** Micro-dollars as dollars: 12500000 -> $12.50, 1234 -> $0.001234, -1 -> -$0.000001. */
export function usd(micros) {
  if (micros === null || micros === undefined) return '—';
  const value = BigInt(micros);
  const negative = value < 0n;
  const abs = negative ? -value : value;
  const whole = abs / 1000000n;
  let fraction = (abs % 1000000n).toString().padStart(6, '0').replace(/0+$/, '');
  if (fraction.length < 2) fraction = fraction.padEnd(2, '0');
  return `${negative ? '-' : ''}$${grouping.format(whole)}.${fraction}`;
}

/** Micro-dollars as a plain decimal for a form field: 12500000 -> 12.5. */
export function usdInput(micros) {
  if (micros === null || micros === undefined) return '';
  return usd(micros).replace('$', '').replaceAll(',', '').replace(/\.?0+$/, '');
}

/** A share as a percentage: 0.1234 -> 12.3%. */
export function percent(share) {
  return `${(share * 100).toFixed(share < 0.1 && share > 0 ? 1 : 0)}%`;
}

/** A timestamp as UTC, to the second: 2026-03-01 14:03:22 UTC. */
export function when(iso) {
  if (!iso) return '—';
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return iso;
  return `${date.toISOString().slice(0, 19).replace('T', ' ')} UTC`;
}

/** Milliseconds as a short duration: 850 ms, 12 s, 3 min 5 s. */
export function duration(ms) {
  if (ms === null || ms === undefined) return '—';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const seconds = Math.ceil(ms / 1000);
  if (seconds < 60) return `${seconds} s`;
  const minutes = Math.floor(seconds / 60);
  return seconds % 60 === 0 ? `${minutes} min` : `${minutes} min ${seconds % 60} s`;
}

/** A UTC day, `YYYY-MM-DD`, from a Date. */
export function isoDay(date) {
  return date.toISOString().slice(0, 10);
}

/** The days from `from` to `to`, inclusive, as `YYYY-MM-DD`. */
export function daysBetween(from, to) {
  const days = [];
  const cursor = new Date(`${from}T00:00:00Z`);
  const end = new Date(`${to}T00:00:00Z`);
  while (cursor <= end && days.length < 400) {
    days.push(isoDay(cursor));
    cursor.setUTCDate(cursor.getUTCDate() + 1);
  }
  return days;
}
