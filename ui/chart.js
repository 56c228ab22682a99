// A small line chart on a <canvas>: our own code, no library.

export const PALETTE = ['#2457c5', '#c0392b', '#1f8a4c', '#b9770e', '#7d3c98', '#138d90',
                        '#d35400', '#34495e', '#e84393', '#6ab04c'];

// Draws `series` ([{label, color, values: [number|null], dash?}]) over `xs` (labels of the x
// axis, same length as values) on `canvas`. `unit` is appended to the y axis' top label.
export function drawLines(canvas, xs, series, {unit = '', minY = 0} = {}) {
  const ctx = canvas.getContext('2d');
  const w = canvas.width;
  const h = canvas.height;
  const left = 52, right = 10, top = 10, bottom = 24;
  ctx.clearRect(0, 0, w, h);
  ctx.font = '11px system-ui, sans-serif';
  let maxY = minY;
  for (const s of series) for (const v of s.values) if (v != null && v > maxY) maxY = v;
  if (maxY <= 0) maxY = 1;
  maxY = niceCeil(maxY);
  const plotW = w - left - right;
  const plotH = h - top - bottom;
  const n = Math.max(xs.length, 2);
  const x = (i) => left + (plotW * i) / (n - 1);
  const y = (v) => top + plotH - (plotH * v) / maxY;

  ctx.strokeStyle = '#e3e6ec';
  ctx.fillStyle = '#6b7385';
  ctx.lineWidth = 1;
  for (let k = 0; k <= 4; k++) {
    const v = (maxY * k) / 4;
    const yy = Math.round(y(v)) + 0.5;
    ctx.beginPath();
    ctx.moveTo(left, yy);
    ctx.lineTo(w - right, yy);
    ctx.stroke();
    ctx.textAlign = 'right';
    ctx.fillText(formatNumber(v) + (k === 4 ? unit : ''), left - 6, yy + 4);
  }
  ctx.textAlign = 'center';
  const labelEvery = Math.max(1, Math.ceil(xs.length / 8));
  for (let i = 0; i < xs.length; i += labelEvery) ctx.fillText(String(xs[i]), x(i), h - 6);

  for (const s of series) {
    ctx.strokeStyle = s.color;
    ctx.lineWidth = s.width ?? 2;
    ctx.setLineDash(s.dash ?? []);
    ctx.beginPath();
    let pen = false;
    s.values.forEach((v, i) => {
      if (v == null) {
        pen = false;
        return;
      }
      if (pen) ctx.lineTo(x(i), y(v));
      else ctx.moveTo(x(i), y(v));
      pen = true;
    });
    ctx.stroke();
  }
  ctx.setLineDash([]);
}

function niceCeil(v) {
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

export function formatNumber(v) {
  if (v == null || Number.isNaN(v)) return '–';
  if (Math.abs(v) >= 1e6) return (v / 1e6).toFixed(1) + 'M';
  if (Math.abs(v) >= 1e4) return (v / 1e3).toFixed(1) + 'k';
  if (Number.isInteger(v)) return String(v);
  if (Math.abs(v) < 0.1) return String(Number(v.toPrecision(2)));
  return v.toFixed(Math.abs(v) < 10 ? 2 : 1);
}

// Fills `element` with one swatch per series.
export function legend(element, series) {
  element.replaceChildren(...series.map((s) => {
    const span = document.createElement('span');
    span.style.setProperty('--swatch', s.color);
    span.textContent = s.label;
    return span;
  }));
}
