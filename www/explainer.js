// The attention explainer of the demo page: for one layer, each query head's
// attention over the context as a heat strip, grouped by the KV head it shares;
// and the KV cache's bytes with grouped-query attention against MHA and MQA.
// Token texts reach the page only as canvas text and textContent: never as HTML.

// Canvas layout, in CSS pixels.
const ROW = 16; // one query head's strip
const GROUP_GAP = 12; // between KV groups
const LEFT = 104; // head and group labels
const TOP = 8;
const LABELS = 76; // token labels under the strips
const MIN_CELL = 4; // narrower than this, only the newest tokens are drawn
const LABEL_CELL = 13; // a token label per cell at this width; sparser below

/** Draws attention maps (from Engine's onAttention) into a canvas, with a hover tip. */
export class AttentionView {
  #canvas;
  #tip;
  #map = null;
  #layer = 0;
  #frame = 0;
  #geometry = null; // what the last drawing placed where, for hovering

  /**
   * @param {HTMLCanvasElement} canvas
   * @param {HTMLElement} tip an element positioned over the canvas's parent
   */
  constructor(canvas, tip) {
    this.#canvas = canvas;
    this.#tip = tip;
    canvas.addEventListener('mousemove', (event) => this.#hover(event));
    canvas.addEventListener('mouseleave', () => {
      this.#tip.hidden = true;
    });
    new ResizeObserver(() => this.#schedule()).observe(canvas);
  }

  /** The newest map; drawn at the next animation frame. */
  show(map) {
    this.#map = map;
    this.#schedule();
  }

  set layer(layer) {
    this.#layer = layer;
    this.#schedule();
  }

  get layer() {
    return this.#layer;
  }

  clear() {
    this.#map = null;
    this.#schedule();
  }

  #schedule() {
    if (this.#frame) return;
    this.#frame = requestAnimationFrame(() => {
      this.#frame = 0;
      this.#draw();
    });
  }

  #draw() {
    const canvas = this.#canvas;
    const map = this.#map;
    const panel = canvas.parentElement;
    const width = Math.max(canvas.clientWidth, 200);
    const groups = map?.nKvHead ?? 1;
    const heads = map?.nHead ?? 1;
    const height = TOP + heads * ROW + (groups - 1) * GROUP_GAP + LABELS;
    const scale = window.devicePixelRatio || 1;
    canvas.width = Math.round(width * scale);
    canvas.height = Math.round(height * scale);
    canvas.style.height = `${height}px`;
    const g = canvas.getContext('2d');
    g.setTransform(scale, 0, 0, scale, 0, 0);
    const colors = themeColors(canvas);
    g.fillStyle = colors.background;
    g.fillRect(0, 0, width, height);
    g.font = '11px system-ui, sans-serif';
    g.textBaseline = 'middle';

    if (!map || this.#layer >= map.nLayer) {
      this.#geometry = null;
      delete panel.dataset.context;
      g.fillStyle = colors.muted;
      g.fillText('Send a message: each token\'s attention appears here.', LEFT, TOP + ROW);
      return;
    }

    // the newest tokens that fit at MIN_CELL pixels a token
    const shown = Math.min(map.context, Math.floor((width - LEFT - 4) / MIN_CELL));
    const first = map.context - shown;
    const cell = (width - LEFT - 4) / shown;
    const group = map.nHead / map.nKvHead;
    const rowTop = (h) => TOP + h * ROW + Math.floor(h / group) * GROUP_GAP;
    const base = this.#layer * map.nHead * map.context;

    for (let h = 0; h < map.nHead; h += 1) {
      const row = base + h * map.context;
      const y = rowTop(h);
      for (let j = 0; j < shown; j += 1) {
        g.fillStyle = heat(colors, map.weights[row + first + j]);
        g.fillRect(LEFT + j * cell, y, Math.ceil(cell), ROW - 2);
      }
      g.fillStyle = colors.text;
      g.textAlign = 'right';
      g.fillText(`q${h}`, LEFT - 6, y + ROW / 2 - 1);
    }
    // a bracket and a name for each KV group
    for (let kv = 0; kv < map.nKvHead; kv += 1) {
      const top = rowTop(kv * group);
      const bottom = rowTop(kv * group + group - 1) + ROW - 2;
      g.fillStyle = colors.accent;
      g.fillRect(LEFT - 34, top, 2, bottom - top);
      g.textAlign = 'left';
      g.fillText(`KV ${kv}`, 4, (top + bottom) / 2);
    }

    // token labels, rotated, as many as fit
    const every = Math.max(1, Math.ceil(LABEL_CELL / cell));
    const labelTop = rowTop(map.nHead - 1) + ROW + 4;
    g.fillStyle = colors.muted;
    g.textAlign = 'right';
    for (let j = shown - 1; j >= 0; j -= every) {
      const x = LEFT + (j + 0.5) * cell;
      g.save();
      g.translate(x, labelTop);
      g.rotate(-Math.PI / 3);
      g.fillText(clip(visible(map.texts[first + j] ?? ''), 10), 0, 0);
      g.restore();
    }

    this.#geometry = { first, shown, cell, rowTop, group, map, layer: this.#layer };
    panel.dataset.context = String(map.context);
    panel.dataset.layer = String(this.#layer);
  }

  #hover(event) {
    const geo = this.#geometry;
    if (!geo) return;
    const rect = this.#canvas.getBoundingClientRect();
    const x = event.clientX - rect.left;
    const y = event.clientY - rect.top;
    const j = Math.floor((x - LEFT) / geo.cell);
    let head = -1;
    for (let h = 0; h < geo.map.nHead; h += 1) {
      if (y >= geo.rowTop(h) && y < geo.rowTop(h) + ROW - 2) head = h;
    }
    if (head < 0 || j < 0 || j >= geo.shown) {
      this.#tip.hidden = true;
      return;
    }
    const { map, layer } = geo;
    const position = geo.first + j;
    const weight = map.weights[(layer * map.nHead + head) * map.context + position];
    const text = visible(map.texts[position] ?? '');
    this.#tip.textContent = `"${text}" (position ${position}): ${weight.toFixed(4)}`
      + ` · layer ${layer + 1}, query head ${head}, KV head ${Math.floor(head / geo.group)}`;
    this.#tip.hidden = false;
    const left = Math.min(x + 12, rect.width - this.#tip.offsetWidth - 4);
    this.#tip.style.left = `${Math.max(0, left)}px`;
    this.#tip.style.top = `${y + 14}px`;
  }
}

/**
 * The KV cache's bytes per token for `kvHeads` heads: K and V, every layer, f32 as the
 * engine stores them.
 */
export function kvBytesPerToken(model, kvHeads) {
  return 2 * model.nLayer * kvHeads * model.headDim * 4;
}

/**
 * Fills `container` with bars: the KV cache of `model` (EngineInfo.model) at `context`
 * tokens and at its whole context, as loaded (GQA), with a KV head per query head
 * (MHA) and with one for all (MQA). Each row's title gives its formula.
 */
export function drawKvBars(container, model, context) {
  const variants = [
    ['MHA', model.nHead, 'one KV head per query head'],
    ['GQA', model.nKvHead, 'as loaded'],
    ['MQA', 1, 'one KV head for all'],
  ];
  const most = kvBytesPerToken(model, model.nHead) * model.maxSeq;
  const rows = variants.map(([name, kv, what]) => {
    const perToken = kvBytesPerToken(model, kv);
    const row = document.createElement('div');
    row.className = `kv-row${kv === model.nKvHead ? ' current' : ''}`;
    row.dataset.variant = name;
    row.title = `2 (K and V) × ${model.nLayer} layers × ${kv} KV head${kv > 1 ? 's' : ''}`
      + ` × ${model.headDim} values × 4 bytes (f32) = ${perToken.toLocaleString('en')}`
      + ` bytes a token\n× ${context.toLocaleString('en')} tokens now = `
      + `${bytes(perToken * context)}\n× ${model.maxSeq.toLocaleString('en')} tokens`
      + ` (the whole context) = ${bytes(perToken * model.maxSeq)}`;
    const name_ = document.createElement('span');
    name_.className = 'kv-name';
    name_.textContent = `${name} (${kv} KV head${kv > 1 ? 's' : ''}, ${what})`;
    const track = document.createElement('div');
    track.className = 'kv-track';
    const whole = document.createElement('div');
    whole.className = 'kv-whole';
    whole.style.width = `${(100 * perToken * model.maxSeq) / most}%`;
    const used = document.createElement('div');
    used.className = 'kv-used';
    // a sliver stays visible for a short context
    used.style.width = `${Math.max((100 * perToken * context) / most, context > 0 ? 0.3 : 0)}%`;
    track.append(whole, used);
    const value = document.createElement('span');
    value.className = 'kv-value';
    value.textContent = `${bytes(perToken * context)} now · ${bytes(perToken * model.maxSeq)}`
      + ` at ${model.maxSeq.toLocaleString('en')} tokens`;
    row.append(name_, track, value);
    return row;
  });
  container.replaceChildren(...rows);
}

/** Bytes in decimal units, as the page shows them. */
export function bytes(n) {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)} GB`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)} MB`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)} kB`;
  return `${n} B`;
}

// Whitespace and control characters made visible in a label.
function visible(text) {
  return text.replace(/ /g, '·').replace(/\n/g, '↵').replace(/\t/g, '⇥')
    .replace(/[\u0000-\u001f]/g, '�');
}

function clip(text, most) {
  const chars = [...text];
  return chars.length > most ? `${chars.slice(0, most - 1).join('')}…` : text;
}

function themeColors(element) {
  const style = getComputedStyle(element);
  const read = (name, fallback) => style.getPropertyValue(name).trim() || fallback;
  return {
    background: read('--panel', '#ffffff'),
    text: read('--text', '#1c1f24'),
    muted: read('--muted', '#5d6673'),
    accent: read('--accent', '#3557d6'),
    low: parseColor(read('--heat-low', '#eef1f8')),
    high: parseColor(read('--heat-high', '#b3261e')),
  };
}

// A weight's colour: from --heat-low to --heat-high, on a square-root scale so that
// the small weights spread over a long context still show.
function heat(colors, weight) {
  const t = Math.sqrt(Math.min(Math.max(weight, 0), 1));
  const mix = (a, b) => Math.round(a + (b - a) * t);
  const [r, g, b] = colors.low.map((low, i) => mix(low, colors.high[i]));
  return `rgb(${r}, ${g}, ${b})`;
}

function parseColor(hex) {
  const match = /^#([0-9a-f]{2})([0-9a-f]{2})([0-9a-f]{2})$/i.exec(hex);
  return match ? match.slice(1).map((h) => parseInt(h, 16)) : [128, 128, 128];
}
