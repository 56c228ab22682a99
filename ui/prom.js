// Reading the node's /metrics (Prometheus text format 0.0.4) and turning two scrapes into rates.

// Returns [{name, labels: {..}, value}] for every sample line; comments and blank lines skipped.
export function parsePrometheus(text) {
  const samples = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    let i = 0;
    while (i < line.length && line[i] !== '{' && line[i] !== ' ') i++;
    const name = line.slice(0, i);
    const labels = {};
    if (line[i] === '{') {
      i++;
      while (i < line.length && line[i] !== '}') {
        const eq = line.indexOf('=', i);
        if (eq < 0) break;
        const key = line.slice(i, eq).trim();
        i = eq + 2;  // past ="
        let value = '';
        while (i < line.length && line[i] !== '"') {
          if (line[i] === '\\' && i + 1 < line.length) {
            const next = line[i + 1];
            value += next === 'n' ? '\n' : next;
            i += 2;
          } else {
            value += line[i++];
          }
        }
        labels[key] = value;
        i++;  // past the closing quote
        if (line[i] === ',') i++;
      }
      i++;  // past }
    }
    const rest = line.slice(i).trim().split(/\s+/);
    const value = Number(rest[0]);
    if (name !== '' && !Number.isNaN(value)) samples.push({name, labels, value});
  }
  return samples;
}

// Sums the samples of `name` by the value of label `by` ('' sums everything under '').
export function sumBy(samples, name, by) {
  const out = new Map();
  for (const s of samples) {
    if (s.name !== name) continue;
    const key = by ? (s.labels[by] ?? '') : '';
    out.set(key, (out.get(key) ?? 0) + s.value);
  }
  return out;
}

// Per-second rate of each key between two maps of counters taken `seconds` apart. A counter
// that went down (a restart) counts from zero.
export function rates(before, after, seconds) {
  const out = new Map();
  for (const [key, value] of after) {
    const old = before.get(key) ?? 0;
    const delta = value >= old ? value - old : value;
    out.set(key, seconds > 0 ? delta / seconds : 0);
  }
  return out;
}

// The cumulative buckets of histogram `name` summed over its other labels: [[le, count], ...]
// sorted by le (Infinity last).
export function histogram(samples, name) {
  const byLe = new Map();
  for (const s of samples) {
    if (s.name !== name + '_bucket') continue;
    const le = s.labels.le === '+Inf' ? Infinity : Number(s.labels.le);
    byLe.set(le, (byLe.get(le) ?? 0) + s.value);
  }
  return [...byLe.entries()].sort((a, b) => a[0] - b[0]);
}

// The q-quantile of the observations between two scrapes of one histogram, interpolated
// linearly inside its bucket (as Prometheus' histogram_quantile); null with no observations.
export function quantileBetween(before, after, q) {
  const prev = new Map(before);
  const buckets = after.map(([le, count]) => [le, Math.max(0, count - (prev.get(le) ?? 0))]);
  if (buckets.length === 0) return null;
  const total = buckets[buckets.length - 1][1];
  if (total <= 0) return null;
  const rank = q * total;
  let lowerLe = 0;
  let lowerCount = 0;
  for (const [le, count] of buckets) {
    if (count >= rank) {
      if (le === Infinity) return lowerLe;
      const inBucket = count - lowerCount;
      return inBucket <= 0 ? le : lowerLe + (le - lowerLe) * ((rank - lowerCount) / inBucket);
    }
    lowerLe = le;
    lowerCount = count;
  }
  return lowerLe;
}
