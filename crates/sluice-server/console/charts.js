// Charts as inline SVG, drawn here: no library. Every chart stands beside a table of its numbers, so the
// picture is a summary for the eye and the table is what screen readers and tests read.

import { h, s } from './dom.js';

/**
 * Bars over days. `points` are {day: 'YYYY-MM-DD', value, title}; `format` writes a value.
 * Returns a <figure> with an accessible summary.
 */
export function dailyBars(points, { format, label }) {
  // A fixed drawing size, scaled to the space it gets: text stays readable whatever the number of days.
  const width = 600;
  const height = 200;
  const top = 24;
  const bottom = 24;
  const max = Math.max(0, ...points.map((p) => p.value));
  const scale = max > 0 ? (height - top - bottom) / max : 0;
  const step = width / Math.max(points.length, 1);
  const barWidth = Math.max(2, Math.min(48, step * 0.7));
  const bars = points.map((p, i) => {
    const barHeight = p.value > 0 ? Math.max(1, p.value * scale) : 0;
    const x = i * step + (step - barWidth) / 2;
    return s('rect', {
      class: 'bar',
      x: x.toFixed(1),
      y: (height - bottom - barHeight).toFixed(1),
      width: barWidth.toFixed(1),
      height: barHeight.toFixed(1),
    }, s('title', null, `${p.day}: ${p.title ?? format(p.value)}`));
  });
  // A few day labels: first, last and every week between, so they never overlap.
  const every = Math.max(1, Math.ceil(points.length / 6));
  const ticks = points
    .map((p, i) => ({ p, i }))
    .filter(({ i }) => i % every === 0 || i === points.length - 1)
    .filter(({ i }) => i === points.length - 1 || points.length - 1 - i >= every / 2 || i === 0)
    .map(({ p, i }) => s('text', {
      class: 'tick',
      x: (i * step + step / 2).toFixed(1),
      y: height - 7,
      'text-anchor': 'middle',
    }, p.day.slice(5)));
  const peak = points.reduce((best, p) => (p.value > (best?.value ?? -1) ? p : best), null);
  const summary = points.length === 0
    ? `${label}: no days in range.`
    : `${label}, ${points[0].day} to ${points[points.length - 1].day}: highest ${format(peak.value)} on ${peak.day}.`;
  return h('figure', { class: 'chart' },
    s('svg', {
      viewBox: `0 0 ${width} ${height}`,
      role: 'img',
      'aria-label': summary,
      preserveAspectRatio: 'xMinYMid meet',
    },
    s('line', { class: 'axis', x1: 0, x2: width, y1: height - bottom + 0.5, y2: height - bottom + 0.5 }),
    s('text', { class: 'tick', x: 2, y: 14 }, `max ${format(max)}`),
    bars,
    ticks),
    h('figcaption', { class: 'visually-hidden' }, summary));
}

/** A small horizontal bar for `share` (0..1) of a row's total, shown beside its number. */
export function shareBar(share) {
  const width = 80;
  const filled = Math.max(0, Math.min(1, share || 0)) * width;
  return s('svg', { class: 'share', viewBox: `0 0 ${width} 10`, width, height: 10, 'aria-hidden': 'true', focusable: 'false' },
    s('rect', { class: 'track', x: 0, y: 0, width, height: 10, rx: 2 }),
    s('rect', { class: 'bar', x: 0, y: 0, width: filled.toFixed(1), height: 10, rx: 2 }));
}

/**
 * How much of a limit is used, as a bar and words: `used` of `limit` (null limit: unlimited).
 * `format` writes an amount. Past 80% the bar warns, at 100% it is over.
 */
export function usage(used, limit, format) {
  if (limit === null || limit === undefined) {
    return h('span', { class: 'usage' }, `${format(used)} used`, h('span', { class: 'muted' }, ' · no limit'));
  }
  const share = limit > 0 ? used / limit : (used > 0 ? 1 : 0);
  const level = share >= 1 ? 'over' : share >= 0.8 ? 'warn' : 'ok';
  const width = 120;
  return h('span', { class: `usage ${level}` },
    s('svg', { class: 'meter', viewBox: `0 0 ${width} 12`, width, height: 12, 'aria-hidden': 'true', focusable: 'false' },
      s('rect', { class: 'track', x: 0, y: 0, width, height: 12, rx: 3 }),
      s('rect', { class: `fill ${level}`, x: 0, y: 0, width: (Math.min(1, share) * width).toFixed(1), height: 12, rx: 3 })),
    ` ${format(used)} of ${format(limit)} (${Math.round(share * 100)}%)`);
}
