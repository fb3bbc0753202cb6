import { createRequire } from "node:module";
import { type CanFrame, type FrameSource, isoMicros } from "./frame.js";

// SocketCAN through the socketcan package: a raw channel with kernel receive
// timestamps, in CAN FD mode (classic and FD frames, 11- and 29-bit ids). This sandbox has no CAN support in its kernel, so this path is
// not exercised by the tests (opening the channel fails and `auto` falls back
// to the simulator).

interface RawMessage {
  ts_sec?: number;
  ts_usec?: number;
  id: number;
  ext?: boolean;
  rtr?: boolean;
  err?: boolean;
  data?: Buffer;
}
interface RawChannel {
  addListener(ev: "onMessage", cb: (m: RawMessage) => void): void;
  addListener(ev: "onStopped", cb: () => void): void;
  start(): void;
  stop(): void;
}

/** Open the interface now (throws when it cannot be opened). */
export function socketcanSource(iface: string): FrameSource {
  const require = createRequire(import.meta.url);
  const can = require("socketcan") as { createRawChannel(i: string, ts: boolean): RawChannel };
  const channel = can.createRawChannel(iface, true);
  let queue: CanFrame[] = [];
  let wake: (() => void) | null = null;
  let stopped = false;
  channel.addListener("onMessage", (m) => {
    if (m.rtr || m.err) return;
    const us = m.ts_sec !== undefined ? m.ts_sec * 1_000_000 + (m.ts_usec ?? 0) : Date.now() * 1000;
    const data = m.data ?? Buffer.alloc(0);
    // the package opens the socket in CAN FD mode but does not report the FD flag: a payload
    // over 8 bytes can only be CAN FD; a short FD frame decodes the same as a classic one
    queue.push({ ts: isoMicros(us), id: m.id, ext: m.ext === true, fd: data.length > 8, data, iface });
    wake?.();
  });
  channel.addListener("onStopped", () => {
    stopped = true;
    wake?.();
  });
  channel.start();
  return {
    name: `socketcan:${iface}`,
    src: "socketcan",
    pausable: false,
    close() {
      stopped = true;
      channel.stop();
      wake?.();
    },
    async *frames() {
      while (!stopped || queue.length) {
        if (queue.length === 0) {
          await new Promise<void>((r) => {
            wake = r;
          });
          wake = null;
          continue;
        }
        const chunk = queue;
        queue = [];
        yield chunk;
      }
    },
  };
}
