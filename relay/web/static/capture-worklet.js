// Microphone capture: downmix, resample to 24 kHz and emit 16-bit PCM in 40 ms chunks.
class Capture extends AudioWorkletProcessor {
  constructor() {
    super();
    this.ratio = sampleRate / 24000;
    this.position = 0;
    this.out = new Int16Array(960); // 40 ms at 24 kHz
    this.filled = 0;
  }
  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (!channel) return true;
    while (this.position < channel.length) {
      const s = Math.max(-1, Math.min(1, channel[Math.floor(this.position)]));
      this.out[this.filled++] = s < 0 ? s * 0x8000 : s * 0x7fff;
      if (this.filled === this.out.length) {
        this.port.postMessage(this.out.buffer.slice(0));
        this.filled = 0;
      }
      this.position += this.ratio;
    }
    this.position -= channel.length;
    return true;
  }
}
registerProcessor("capture", Capture);
