// The official openai npm package's Realtime WebSocket client, through the relay.
//   RELAY_HTTP=http://127.0.0.1:8080/v1 RELAY_TOKEN=dev-token node index.mjs
import OpenAI from "openai";
import { OpenAIRealtimeWS } from "openai/realtime/ws";

const client = new OpenAI({
  apiKey: process.env.RELAY_TOKEN ?? "dev-token", // a relay token, not a provider key
  baseURL: process.env.RELAY_HTTP ?? "http://127.0.0.1:8080/v1",
});
const rt = new OpenAIRealtimeWS({ model: "gpt-realtime" }, client);
let text = "";
const timer = setTimeout(() => { console.error("timed out"); process.exit(2); }, 20000);

rt.on("error", (err) => { console.error("error:", err.message ?? err); process.exit(1); });
rt.on("session.created", () => {
  rt.send({ type: "session.update", session: { type: "realtime", output_modalities: ["text"] } });
  rt.send({ type: "conversation.item.create",
    item: { type: "message", role: "user", content: [{ type: "input_text", text: "Say hello." }] } });
  rt.send({ type: "response.create" });
});
rt.on("response.output_text.delta", (event) => { text += event.delta; });
rt.on("response.done", (event) => {
  clearTimeout(timer);
  console.log(JSON.stringify({ status: event.response.status, text }));
  rt.close();
});
