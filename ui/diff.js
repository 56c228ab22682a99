// A line diff (longest common subsequence), enough for a config file of a few hundred lines.

// Returns [{op: ' '|'+'|'-', line}] turning `a` into `b` (arrays of lines).
export function diffLines(a, b) {
  const n = a.length;
  const m = b.length;
  if (n * m > 4e6) {  // too big to compare line by line: show it as replaced
    return [...a.map((line) => ({op: '-', line})), ...b.map((line) => ({op: '+', line}))];
  }
  // lcs[i][j]: length of the LCS of a[i:] and b[j:]
  const lcs = Array.from({length: n + 1}, () => new Uint32Array(m + 1));
  for (let i = n - 1; i >= 0; i--) {
    for (let j = m - 1; j >= 0; j--) {
      lcs[i][j] = a[i] === b[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
    }
  }
  const out = [];
  let i = 0;
  let j = 0;
  while (i < n && j < m) {
    if (a[i] === b[j]) {
      out.push({op: ' ', line: a[i]});
      i++;
      j++;
    } else if (lcs[i + 1][j] >= lcs[i][j + 1]) {
      out.push({op: '-', line: a[i++]});
    } else {
      out.push({op: '+', line: b[j++]});
    }
  }
  while (i < n) out.push({op: '-', line: a[i++]});
  while (j < m) out.push({op: '+', line: b[j++]});
  return out;
}
