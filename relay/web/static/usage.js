// The session's running tokens and estimated cost, computed in the page from the usage the API
// reports, the way the relay counts it (relay/core/usage.py): cached tokens are part of each
// modality's count and are priced at that modality's cached price.
const SNAPSHOT = /-\d{4}-\d{2}-\d{2}$/; // gpt-realtime-2025-08-28 is priced as gpt-realtime

export async function loadPrices() {
  try {
    const response = await fetch("/v1/relay/prices");
    return response.ok ? await response.json() : null;
  } catch {
    return null; // tokens are still shown; the cost reads "n/a"
  }
}

export function priceFor(prices, model) {
  if (!prices || !model) return prices ? prices.default : null;
  return prices.models[model] || prices.models[model.replace(SNAPSHOT, "")] || prices.default;
}

const count = (value) => (Number.isInteger(value) && value > 0 ? value : 0);

// response.done's usage: {tokens, cost}; cost is null without a price.
export function responseUsage(usage, price) {
  // Partial shapes as the relay reads them: all input is text, cached tokens come from text first.
  const input = usage.input_token_details || { text_tokens: usage.input_tokens };
  const output = usage.output_token_details || { text_tokens: usage.output_tokens };
  const tokens = count(usage.input_tokens) + count(usage.output_tokens);
  if (!price) return { tokens, cost: null };
  let cost = 0;
  let cachedLeft = count(input.cached_tokens);
  for (const modality of ["text", "audio", "image"]) {
    const all = count(input[`${modality}_tokens`]);
    const details = input.cached_tokens_details;
    const hit = Math.min(details ? count(details[`${modality}_tokens`]) : cachedLeft, all);
    cachedLeft -= hit;
    cost += (all - hit) * (price[`input_${modality}`] || 0) + hit * (price[`cached_${modality}`] || 0);
  }
  cost += count(output.text_tokens) * price.output_text + count(output.audio_tokens) * price.output_audio;
  return { tokens, cost: cost / 1e6 };
}

// A completed transcription's usage: {type: "tokens", ...} or {type: "duration", seconds}.
export function transcriptionUsage(usage, price) {
  if (usage.type === "duration") {
    const seconds = Number(usage.seconds) > 0 ? Number(usage.seconds) : 0;
    return { tokens: 0, cost: price ? (seconds / 60) * price.per_minute : null };
  }
  const input = usage.input_token_details || {};
  const tokens = count(usage.input_tokens) + count(usage.output_tokens);
  if (!price) return { tokens, cost: null };
  const cost =
    count(input.text_tokens) * price.input_text +
    count(input.audio_tokens) * price.input_audio +
    count(usage.output_tokens) * price.output_text;
  return { tokens, cost: cost / 1e6 };
}
