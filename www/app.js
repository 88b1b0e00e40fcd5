// The demo page: load a model (URL, file or drop), then chat with it.
// Text from the user and the model only ever reaches the page as text nodes.

import { wireBench } from './bench-view.js';
import { AttentionView, drawKvBars } from './explainer.js';
import { Engine, probeWebGPU } from './gqa.js';
import { setVariantsReady, wireVariants } from './variants-view.js';

const DEFAULT_MODEL = 'models/SmolLM2-135M-Instruct.Q4_1.gguf';

const $ = (id) => document.getElementById(id);

const PHASE_TEXT = {
  download: 'Downloading',
  parse: 'Reading the model',
  compile: 'Compiling the GPU shaders',
  upload: 'Copying the weights to the GPU',
};

const state = {
  engine: null,
  modelName: '',
  source: null, // what the model was loaded from: a URL or a File
  loading: null, // AbortController of the load in progress
  generating: null, // AbortController of the generation in progress
  history: [], // the chat so far: [{role, content}]
  model: null, // EngineInfo.model of the loaded model
  attention: null, // the AttentionView of the explainer
};

// Errors nobody caught still reach the user, not only the console.
window.addEventListener('unhandledrejection', (event) => showError(event.reason));
window.addEventListener('error', (event) => showError(event.error ?? event.message));

// `action`, when given, is {label, run}: a button beside the message that runs it.
function showError(error, action = null) {
  const item = document.createElement('li');
  const text = document.createElement('span');
  text.textContent = error?.message ?? String(error);
  const close = document.createElement('button');
  close.type = 'button';
  close.className = 'close';
  close.setAttribute('aria-label', 'Dismiss');
  close.textContent = '×';
  close.addEventListener('click', () => item.remove());
  item.append(text);
  if (action) {
    const button = document.createElement('button');
    button.type = 'button';
    button.className = 'action';
    button.textContent = action.label;
    button.addEventListener('click', () => {
      item.remove();
      action.run();
    });
    item.append(button);
  }
  item.append(close);
  $('errors').append(item);
  console.error(error);
}

// A lost or failing GPU leaves the engine unusable; the file is still in the
// Cache API (or the File object), so loading again on a fresh device is quick.
function offerReload(error) {
  const { source, modelName } = state;
  showError(error, source && {
    label: 'Load the model again',
    run: () => loadModel(source, modelName),
  });
}

// ---- WebGPU ----

async function showAdapter() {
  try {
    const adapter = await probeWebGPU();
    const name = adapterName(adapter);
    $('adapter').textContent = adapter.isFallbackAdapter
      ? `${name} (fallback adapter: software, slow)`
      : name;
    $('adapter').classList.toggle('warn', adapter.isFallbackAdapter);
    return true;
  } catch (e) {
    $('adapter').textContent = 'No WebGPU';
    $('adapter').classList.add('bad');
    $('no-webgpu-reason').textContent = e.message;
    $('no-webgpu').hidden = false;
    for (const id of ['load', 'model-url', 'model-file']) $(id).disabled = true;
    return false;
  }
}

// ---- loading ----

async function loadModel(source, name) {
  state.loading?.abort();
  const loading = new AbortController();
  state.loading = loading;
  await unloadModel();

  state.modelName = name;
  state.source = source;
  $('load-progress').value = 0;
  setLoading(true);
  const started = performance.now();
  let cached = false;
  try {
    const engine = await Engine.load(source, {
      signal: loading.signal,
      worker: $('use-worker').checked,
      onProgress: (p) => {
        if (p.phase === 'download') cached = Boolean(p.cached);
        showProgress(p);
      },
    });
    if (loading.signal.aborted) {
      await engine.dispose();
      return;
    }
    state.engine = engine;
    const seconds = ((performance.now() - started) / 1000).toFixed(1);
    const from = source instanceof Blob ? 'from the file' : cached ? 'from the cache' : '';
    setStatus(`${name} is ready (loaded ${from ? from + ' ' : ''}in ${seconds} s).`);
    showModelInfo(engine.info());
    await clearConversation();
  } catch (e) {
    // A load replaced by a newer one says nothing: the newer one owns the status.
    if (state.loading !== loading) return;
    setStatus(loading.signal.aborted ? 'Loading stopped.' : `Could not load ${name}.`);
    if (!loading.signal.aborted) showError(e);
    $('load-progress').value = 0;
  } finally {
    if (state.loading === loading) {
      state.loading = null;
      setLoading(false);
    }
  }
}

async function unloadModel() {
  const engine = state.engine;
  state.engine = null;
  state.generating?.abort();
  $('model-info').hidden = true;
  $('explainer').hidden = true;
  state.model = null;
  updateButtons();
  await engine?.dispose();
}

function showProgress({ phase, loaded, total, fraction, cached }) {
  $('load-progress').value = fraction;
  let text = PHASE_TEXT[phase] ?? phase;
  if (phase === 'download' && cached) text = 'Reading the model from the cache';
  if (phase === 'download' && total > 0) {
    text += `: ${megabytes(loaded)} of ${megabytes(total)}`;
  }
  setStatus(`${text} (${Math.floor(fraction * 100)} %)`);
}

function setLoading(loading) {
  document.body.classList.toggle('is-loading', loading);
  $('load').textContent = loading ? 'Cancel' : 'Load';
  updateButtons();
}

function setStatus(text) {
  $('load-status').textContent = text;
}

function showModelInfo(info) {
  const m = info.model;
  const rows = [
    ['Model', state.modelName],
    ['Architecture', `${m.arch}, ${m.nLayer} layers, width ${m.nEmbd}`],
    ['Attention', `${m.nHead} query heads sharing ${m.nKvHead} key/value heads`
      + ` (head size ${m.headDim})`],
    ['Vocabulary', `${m.vocab.toLocaleString('en')} tokens`],
    ['Context', `${m.maxSeq.toLocaleString('en')} tokens`],
    ['GPU memory', `${megabytes(info.gpuMemory.weights)} weights, `
      + `${megabytes(info.gpuMemory.kvCache)} KV cache, `
      + `${megabytes(info.gpuMemory.total)} in ${info.gpuMemory.buffers} buffers`],
    ['Adapter', adapterName(info.adapter)
      + (info.adapter.isFallbackAdapter ? ' (fallback adapter)' : '')],
  ];
  const list = $('model-info');
  list.replaceChildren(...rows.flatMap(([term, value]) => {
    const dt = document.createElement('dt');
    dt.textContent = term;
    const dd = document.createElement('dd');
    dd.textContent = value;
    return [dt, dd];
  }));
  list.hidden = false;
  showExplainer(m);
  showContext(info);
}

// The attention explainer for a newly loaded model: its layers, an empty map.
function showExplainer(model) {
  state.model = model;
  const select = $('attention-layer');
  select.replaceChildren(...Array.from({ length: model.nLayer }, (_, l) => {
    const option = document.createElement('option');
    option.value = String(l);
    option.textContent = `${l + 1} of ${model.nLayer}`;
    return option;
  }));
  // a middle layer: the first ones mostly look at the first token
  const layer = Math.floor(model.nLayer / 2);
  select.value = String(layer);
  state.attention.layer = layer;
  state.attention.clear();
  $('explainer').hidden = false;
}

// ---- generating ----

async function send() {
  const prompt = $('prompt').value;
  if (!state.engine || state.generating || prompt.trim() === '') return;
  const engine = state.engine;
  const chatMode = $('mode').value === 'chat';
  $('prompt').value = '';

  removeEmptyNote();
  addMessage(chatMode ? 'user' : 'prompt', prompt);
  const answer = addMessage('assistant', '');
  answer.classList.add('streaming');

  const controller = new AbortController();
  state.generating = controller;
  updateButtons();
  let count = 0;
  const options = {
    ...samplingOptions(),
    signal: controller.signal,
    onToken: ({ text }) => {
      // append() makes a text node: model output is never parsed as HTML
      answer.append(text);
      count += 1;
      $('stat-decode').textContent = `${count} tokens…`;
      scrollToEnd();
    },
  };
  if ($('show-attention').checked) {
    options.onAttention = (map) => {
      state.attention.show(map);
      if (state.model) drawKvBars($('kv-bars'), state.model, map.context);
    };
  }

  try {
    let result;
    if (chatMode) {
      const system = $('system-prompt').value.trim();
      const messages = [...state.history, { role: 'user', content: prompt }];
      const withSystem = system && messages[0]?.role !== 'system'
        ? [{ role: 'system', content: system }, ...messages]
        : messages;
      result = await engine.chat(withSystem, options);
      // What the model said, even cut short, is what its KV cache now holds.
      state.history = [...withSystem, { role: 'assistant', content: result.text }];
    } else {
      result = await engine.generate(prompt, options);
    }
    answer.textContent = result.text;
    if (result.finishReason !== 'stop') {
      const note = document.createElement('span');
      note.className = 'finish';
      note.textContent = result.finishReason === 'abort' ? ' (stopped)' : ' (token limit)';
      answer.append(note);
    }
    showStats(result.stats);
    showContext(engine.info());
  } catch (e) {
    answer.classList.add('failed');
    if (e?.name === 'GpuError') offerReload(e);
    else showError(e);
  } finally {
    answer.classList.remove('streaming');
    if (state.generating === controller) state.generating = null;
    updateButtons();
    $('prompt').focus();
  }
}

function samplingOptions() {
  const number = (id) => Number($(id).value);
  const options = {
    temperature: number('temperature'),
    topK: number('top-k'),
    topP: number('top-p'),
    minP: number('min-p'),
    repetitionPenalty: number('repetition-penalty'),
    maxTokens: Math.max(1, Math.floor(number('max-tokens')) || 256),
  };
  const seed = $('seed').value.trim();
  // Without a seed, every answer is sampled afresh.
  options.seed = seed === '' ? Math.floor(Math.random() * 2 ** 32) : Number(seed);
  return options;
}

function addMessage(role, text) {
  const item = document.createElement('li');
  item.className = `message ${role}`;
  const who = document.createElement('span');
  who.className = 'who';
  who.textContent = { user: 'You', prompt: 'Prompt', assistant: 'Model' }[role];
  const body = document.createElement('div');
  body.className = 'text';
  body.textContent = text;
  item.append(who, body);
  $('messages').append(item);
  scrollToEnd();
  return body;
}

function removeEmptyNote() {
  $('messages').querySelector('.empty')?.remove();
}

function scrollToEnd() {
  const list = $('messages');
  list.scrollTop = list.scrollHeight;
}

async function clearConversation() {
  state.history = [];
  const note = document.createElement('li');
  note.className = 'empty';
  note.textContent = state.engine ? 'Ask the model something.' : 'Load a model first.';
  $('messages').replaceChildren(note);
  state.attention?.clear();
  if (state.engine) {
    await state.engine.reset();
    showContext(state.engine.info());
  }
}

function showStats({ prefillTokensPerS, decodeTokensPerS }) {
  $('stat-prefill').textContent = rate(prefillTokensPerS);
  $('stat-decode').textContent = rate(decodeTokensPerS);
}

function showContext(info) {
  $('stat-context').textContent = `${info.contextUsed.toLocaleString('en')} / `
    + `${info.model.maxSeq.toLocaleString('en')}`;
  drawKvBars($('kv-bars'), info.model, info.contextUsed);
}

function updateButtons() {
  const ready = state.engine !== null;
  $('send').disabled = !ready || state.generating !== null;
  $('stop').disabled = state.generating === null;
  $('new-chat').disabled = !ready;
  setVariantsReady(ready);
}

// ---- helpers ----

// Browsers reveal different parts of an adapter's identity; use the most telling.
function adapterName(adapter) {
  return adapter.name || adapter.description
    || [adapter.vendor, adapter.architecture].filter(Boolean).join(' ')
    || 'an unnamed GPU';
}

function megabytes(bytes) {
  return `${(bytes / 1e6).toFixed(bytes < 1e7 ? 1 : 0)} MB`;
}

function rate(perSecond) {
  if (!Number.isFinite(perSecond) || perSecond <= 0) return '–';
  return perSecond >= 10 ? perSecond.toFixed(0) : perSecond.toFixed(1);
}

function modelNameOf(url) {
  try {
    const last = new URL(url, document.baseURI).pathname.split('/').pop();
    return decodeURIComponent(last) || url;
  } catch {
    return url;
  }
}

function isGguf(file) {
  return file && file.name.toLowerCase().endsWith('.gguf');
}

// ---- wiring ----

function wire() {
  state.attention = new AttentionView($('attention-canvas'), $('attention-tip'));
  $('attention-layer').addEventListener('change', () => {
    state.attention.layer = Number($('attention-layer').value);
  });
  $('url-form').addEventListener('submit', (event) => {
    event.preventDefault();
    if (state.loading) {
      state.loading.abort();
      return;
    }
    const url = $('model-url').value.trim();
    if (url) loadModel(url, modelNameOf(url));
  });

  $('model-file').addEventListener('change', () => {
    const file = $('model-file').files[0];
    if (file) loadModel(file, file.name);
    $('model-file').value = '';
  });

  $('prompt-form').addEventListener('submit', (event) => {
    event.preventDefault();
    send();
  });
  $('prompt').addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      send();
    }
  });
  $('stop').addEventListener('click', () => state.generating?.abort());
  $('new-chat').addEventListener('click', () => {
    state.generating?.abort();
    clearConversation();
  });

  for (const input of document.querySelectorAll('#sampling input[type=range]')) {
    const output = document.querySelector(`output[for="${input.id}"]`);
    const show = () => (output.textContent = input.value);
    input.addEventListener('input', show);
    show();
  }

  // Drag and drop anywhere on the page. dragenter/leave fire for every child
  // element, so a counter tells when the pointer really leaves.
  let depth = 0;
  const overlay = $('drop-overlay');
  const hasFiles = (event) => event.dataTransfer?.types.includes('Files');
  document.addEventListener('dragenter', (event) => {
    if (!hasFiles(event)) return;
    depth += 1;
    overlay.hidden = false;
  });
  document.addEventListener('dragleave', () => {
    depth = Math.max(0, depth - 1);
    if (depth === 0) overlay.hidden = true;
  });
  document.addEventListener('dragover', (event) => {
    if (hasFiles(event)) event.preventDefault();
  });
  document.addEventListener('drop', (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    depth = 0;
    overlay.hidden = true;
    const file = [...event.dataTransfer.files].find(isGguf);
    if (!file) {
      showError(new Error('drop a .gguf model file'));
      return;
    }
    if (!$('model-file').disabled) loadModel(file, file.name);
  });
}

// The loaded engine, for the console and for tests: `gqaDemo.engine.info()`.
window.gqaDemo = {
  get engine() {
    return state.engine;
  },
};

async function main() {
  const fromQuery = new URLSearchParams(location.search).get('model');
  $('model-url').value = fromQuery ?? DEFAULT_MODEL;
  wire();
  updateButtons();
  document.body.dataset.webgpu = String(await showAdapter());
  wireBench({ modelUrl: () => $('model-url').value.trim(), showError });
  wireVariants({ modelSource: () => (state.engine ? state.source : null), showError });
  // Tests and scripts wait for this before they drive the page.
  document.body.dataset.ready = 'true';
}

main();
