// edgelm chat page: talks to /v1/chat/completions with stream: true.
// No dependencies; the conversation and settings live in localStorage.
'use strict';

const STORE_KEY = 'edgelm.chat.v1';
const SETTINGS = ['system', 'temperature', 'top_p', 'top_k', 'min_p', 'max_tokens', 'seed', 'api_key'];

const $ = (id) => document.getElementById(id);
const state = { messages: [], settings: {}, controller: null };

function load() {
  try {
    const saved = JSON.parse(localStorage.getItem(STORE_KEY) || '{}');
    state.messages = Array.isArray(saved.messages) ? saved.messages : [];
    state.settings = saved.settings || {};
  } catch {
    state.messages = [];
  }
  for (const name of SETTINGS) {
    if (state.settings[name] !== undefined) $(name).value = state.settings[name];
  }
}

function save() {
  for (const name of SETTINGS) state.settings[name] = $(name).value;
  localStorage.setItem(STORE_KEY, JSON.stringify({ messages: state.messages, settings: state.settings }));
}

function addBubble(role, text) {
  const div = document.createElement('div');
  div.className = `message ${role}`;
  const label = document.createElement('span');
  label.className = 'role';
  label.textContent = role;
  const body = document.createElement('span');
  body.className = 'content';
  body.textContent = text;  // never innerHTML: model output is untrusted
  div.append(label, body);
  $('messages').append(div);
  $('messages').scrollTop = $('messages').scrollHeight;
  return body;
}

function render() {
  $('messages').replaceChildren();
  for (const m of state.messages) addBubble(m.role, m.content);
}

function headers() {
  const h = { 'Content-Type': 'application/json' };
  const key = $('api_key').value.trim();
  if (key) h.Authorization = `Bearer ${key}`;
  return h;
}

function numberSetting(name) {
  const value = $(name).value.trim();
  return value === '' ? undefined : Number(value);
}

function setBusy(busy) {
  $('send').disabled = busy;
  $('stop').disabled = !busy;
}

async function send(text) {
  state.messages.push({ role: 'user', content: text });
  addBubble('user', text);
  const reply = { role: 'assistant', content: '' };
  state.messages.push(reply);
  const bubble = addBubble('assistant', '');
  save();

  const messages = [];
  const system = $('system').value.trim();
  if (system) messages.push({ role: 'system', content: system });
  for (const m of state.messages.slice(0, -1)) messages.push({ role: m.role, content: m.content });

  const body = { messages, stream: true, stream_options: { include_usage: true } };
  for (const name of ['temperature', 'top_p', 'top_k', 'min_p', 'max_tokens', 'seed']) {
    const value = numberSetting(name);
    if (value !== undefined && !Number.isNaN(value)) body[name] = value;
  }

  state.controller = new AbortController();
  setBusy(true);
  $('status').textContent = 'generating…';
  const started = performance.now();
  let firstTokenAt = 0;
  let usage = null;
  let finish = '';
  try {
    const response = await fetch('/v1/chat/completions', {
      method: 'POST', headers: headers(), body: JSON.stringify(body), signal: state.controller.signal,
    });
    if (!response.ok) {
      let message = `HTTP ${response.status}`;
      try { message = (await response.json()).error.message; } catch { /* not JSON */ }
      throw new Error(message);
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = '';
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const event = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        for (const line of event.split('\n')) {
          if (!line.startsWith('data: ')) continue;
          const data = line.slice(6);
          if (data === '[DONE]') continue;
          const chunk = JSON.parse(data);
          if (chunk.error) throw new Error(chunk.error.message);
          if (chunk.usage) usage = chunk.usage;
          const choice = chunk.choices && chunk.choices[0];
          if (!choice) continue;
          if (choice.finish_reason) finish = choice.finish_reason;
          const piece = choice.delta && choice.delta.content;
          if (piece) {
            if (!firstTokenAt) firstTokenAt = performance.now();
            reply.content += piece;
            bubble.textContent = reply.content;
            $('messages').scrollTop = $('messages').scrollHeight;
          }
        }
      }
    }
    const seconds = (performance.now() - started) / 1000;
    let status = `done (${finish || 'stop'}) in ${seconds.toFixed(2)} s`;
    if (usage) status += `, ${usage.completion_tokens} tokens, ${(usage.completion_tokens / seconds).toFixed(1)} tok/s`;
    if (firstTokenAt) status += `, first token after ${((firstTokenAt - started) / 1000).toFixed(2)} s`;
    $('status').textContent = status;
  } catch (error) {
    if (error.name === 'AbortError') {
      $('status').textContent = 'stopped';
    } else {
      $('status').textContent = '';
      bubble.parentElement.classList.add('error');
      bubble.textContent = reply.content + (reply.content ? '\n' : '') + `[error: ${error.message}]`;
      if (!reply.content) state.messages.splice(-2, 2);  // keep only what the model said
    }
  } finally {
    state.controller = null;
    setBusy(false);
    save();
  }
}

async function showModel() {
  try {
    const response = await fetch('/v1/models', { headers: headers() });
    const json = await response.json();
    $('model-name').textContent = response.ok ? json.data[0].id : json.error.message;
  } catch (error) {
    $('model-name').textContent = `server unreachable: ${error.message}`;
  }
}

function init() {
  load();
  render();
  $('composer').addEventListener('submit', (event) => {
    event.preventDefault();
    const text = $('prompt').value.trim();
    if (!text || state.controller) return;
    $('prompt').value = '';
    send(text);
  });
  $('prompt').addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && !event.shiftKey) {
      event.preventDefault();
      $('composer').requestSubmit();
    }
  });
  $('stop').addEventListener('click', () => state.controller && state.controller.abort());
  $('clear').addEventListener('click', () => {
    if (state.controller) state.controller.abort();
    state.messages = [];
    save();
    render();
    $('status').textContent = '';
  });
  $('toggle-settings').addEventListener('click', () => {
    const panel = $('settings');
    panel.hidden = !panel.hidden;
    $('toggle-settings').setAttribute('aria-expanded', String(!panel.hidden));
  });
  for (const name of SETTINGS) $(name).addEventListener('change', () => { save(); if (name === 'api_key') showModel(); });
  showModel();
}

init();
