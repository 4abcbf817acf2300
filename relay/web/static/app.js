// The relay's voice console: plain browser JavaScript, the way a frontend app talks to the relay.
import { loadPrices, priceFor, responseUsage, transcriptionUsage } from "./usage.js";

const $ = (id) => document.getElementById(id);
const testid = (name) => document.querySelector(`[data-testid="${name}"]`);

let ws = null;
let audio = null; // AudioContext for both capture and playback
let capture = null;
let playhead = 0; // when the next response chunk starts, on the AudioContext clock
let playedMs = 0;
const lines = new Map(); // item id -> transcript <li>
let prices = null; // the relay's price list (GET /v1/relay/prices)
loadPrices().then((loaded) => (prices = loaded));
const usage = { tokens: 0, cost: 0, model: null, transcriptionModel: null };

function addUsage({ tokens, cost }) {
  usage.tokens += tokens;
  usage.cost = cost === null || usage.cost === null ? null : usage.cost + cost;
  testid("usage-tokens").textContent = String(usage.tokens);
  testid("usage-cost").textContent = usage.cost === null ? "n/a" : `$${usage.cost.toFixed(4)}`;
}

function learnModels(session) {
  if (session.model && session.type !== "transcription") usage.model = session.model;
  const transcription = session.audio && session.audio.input && session.audio.input.transcription;
  if (transcription && transcription.model) usage.transcriptionModel = transcription.model;
}

function log(direction, event, isError = false) {
  const li = document.createElement("li");
  li.className = direction + (isError ? " error" : "");
  const detail = isError ? ` — ${event.error.code}: ${event.error.message}` : "";
  li.textContent = `${direction === "client" ? "→" : "←"} ${event.type}${detail}`;
  $("log").prepend(li);
  while ($("log").children.length > 300) $("log").lastChild.remove();
}

function line(itemId, role) {
  if (!lines.has(itemId)) {
    const li = document.createElement("li");
    li.className = role;
    li.dataset.item = itemId;
    $("transcript").append(li);
    lines.set(itemId, li);
  }
  return lines.get(itemId);
}

function send(event) {
  if (!ws || ws.readyState !== WebSocket.OPEN) return;
  ws.send(JSON.stringify(event));
  if (event.type !== "input_audio_buffer.append") log("client", event);
}

function base64FromBytes(buffer) {
  const bytes = new Uint8Array(buffer);
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(binary);
}

function play(b64) {
  // Gap-free playback: each 24 kHz PCM16 chunk is scheduled right after the previous one.
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const samples = new Int16Array(bytes.buffer, 0, bytes.length >> 1);
  const buffer = audio.createBuffer(1, samples.length, 24000);
  const channel = buffer.getChannelData(0);
  for (let i = 0; i < samples.length; i++) channel[i] = samples[i] / 32768;
  const source = audio.createBufferSource();
  source.buffer = buffer;
  source.connect(audio.destination);
  playhead = Math.max(playhead, audio.currentTime + 0.02);
  source.start(playhead);
  playhead += buffer.duration;
  playedMs += Math.round(buffer.duration * 1000);
  testid("played").textContent = `${playedMs} ms`;
}

const handlers = {
  "session.created": (e) => {
    testid("session-id").textContent = e.session.id;
    testid("session-model").textContent = e.session.model;
    learnModels(e.session);
  },
  "session.updated": (e) => learnModels(e.session),
  "response.done": (e) => {
    if (e.response.usage) addUsage(responseUsage(e.response.usage, priceFor(prices, usage.model)));
  },
  "input_audio_buffer.speech_started": () => (testid("vad").textContent = "speaking"),
  "input_audio_buffer.speech_stopped": () => (testid("vad").textContent = "silent"),
  "conversation.item.added": (e) => {
    const item = e.item;
    if (item.type !== "message" || item.role === "system") return;
    const li = line(item.id, item.role);
    const text = (item.content || []).map((c) => c.text || c.transcript || "").join("");
    if (text) li.textContent = text;
  },
  "conversation.item.input_audio_transcription.delta": (e) => (line(e.item_id, "user").textContent += e.delta),
  "conversation.item.input_audio_transcription.completed": (e) => {
    line(e.item_id, "user").textContent = e.transcript;
    if (e.usage) addUsage(transcriptionUsage(e.usage, priceFor(prices, usage.transcriptionModel)));
  },
  "response.output_audio_transcript.delta": (e) => (line(e.item_id, "assistant").textContent += e.delta),
  "response.output_text.delta": (e) => (line(e.item_id, "assistant").textContent += e.delta),
  "response.output_audio.delta": (e) => play(e.delta),
};

// A connection lost without a close (1006) or going away (1001) is resumed: the relay kept the
// conversation and sends what was said meanwhile, once (README, "When the app's own connection
// drops"). The token arrives as the opt-in relay.session_resumable event.
const resume = { token: null, lastEventId: null, attempts: 0 };
const RESUMABLE_CLOSES = [1001, 1006];

function connect(token, model, resuming = false) {
  audio = audio || new AudioContext();
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  // Browsers cannot set headers on a WebSocket: the relay token travels as a subprotocol.
  const protocols = token ? ["realtime", `openai-insecure-api-key.${token}`] : ["realtime"];
  let query = `model=${encodeURIComponent(model)}&relay_resume=1`;
  if (resuming) {
    protocols.push(`relay-resume.${resume.token}`);
    if (resume.lastEventId) query += `&last_event_id=${encodeURIComponent(resume.lastEventId)}`;
  } else {
    Object.assign(resume, { token: null, lastEventId: null, attempts: 0 });
    Object.assign(usage, { tokens: 0, cost: 0, model: model, transcriptionModel: null });
    addUsage({ tokens: 0, cost: 0 });
  }
  ws = new WebSocket(`${scheme}://${location.host}/v1/realtime?${query}`, protocols);
  testid("connection").textContent = resuming ? "resuming" : "connecting";
  ws.onopen = () => {
    testid("connection").textContent = resuming ? "connected (resumed)" : "connected";
    $("connect").disabled = true;
    $("disconnect").disabled = false;
    $("mic").disabled = false;
    if (resuming) return; // the conversation, its configuration included, is still there
    send({ type: "session.update", session: { type: "realtime",
      audio: { input: { transcription: { model: "gpt-4o-mini-transcribe" } } } } });
  };
  ws.onmessage = (message) => {
    const event = JSON.parse(message.data);
    if (event.type === "relay.session_resumable") {
      resume.token = event.resume_token;
      resume.attempts = 0;
      return;
    }
    if (event.event_id) resume.lastEventId = event.event_id;
    if (event.type !== "response.output_audio.delta") log("server", event, event.type === "error");
    const handler = handlers[event.type];
    if (handler) handler(event);
  };
  ws.onclose = (close) => {
    if (RESUMABLE_CLOSES.includes(close.code) && resume.token && resume.attempts < 5) {
      resume.attempts += 1;
      testid("connection").textContent = `lost (${close.code}), resuming`;
      setTimeout(() => connect(token, model, true), 250 * resume.attempts);
      return;
    }
    testid("connection").textContent = `closed (${close.code}${close.reason ? ": " + close.reason : ""})`;
    $("connect").disabled = false;
    $("disconnect").disabled = true;
    $("mic").disabled = true;
  };
}

async function startMicrophone() {
  const stream = await navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1, echoCancellation: true } });
  await audio.audioWorklet.addModule("/static/capture-worklet.js");
  const source = audio.createMediaStreamSource(stream);
  capture = new AudioWorkletNode(audio, "capture");
  capture.port.onmessage = (m) => send({ type: "input_audio_buffer.append", audio: base64FromBytes(m.data) });
  source.connect(capture);
  $("mic").textContent = "Microphone on";
  $("mic").disabled = true;
}

$("connect-form").addEventListener("submit", (e) => {
  e.preventDefault();
  connect($("token").value, $("model").value);
});
$("disconnect").addEventListener("click", () => ws && ws.close(1000));
$("mic").addEventListener("click", () => startMicrophone().catch((err) => log("client", { type: `microphone: ${err}` })));
$("text-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const text = $("text").value.trim();
  if (!text) return;
  send({ type: "conversation.item.create", item: { type: "message", role: "user",
    content: [{ type: "input_text", text }] } });
  send({ type: "response.create" });
  $("text").value = "";
});
window.relayConsole = { send, get socket() { return ws; } };
