import { createRequire } from "node:module";
import { type CanFrame, type FrameSource, isoMicros, type OutgoingFrame } from "./frame.js";

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

/** The send side of the package's raw channel: bytes written, or -1 (the socket refused it). */
export interface SendChannel {
  send(m: { id: number; ext: boolean; data: Buffer }): number;
  sendFD(m: { id: number; ext: boolean; data: Buffer }): number;
}

/**
 * Write one frame on a channel opened with non-blocking sends: a full transmit
 * queue (the bus is off or saturated) or a closed socket is an error naming
 * the interface, never a wait that would stall the scanner's event loop.
 */
export function sendFrame(channel: SendChannel, iface: string, f: OutgoingFrame): void {
  if (!f.fd && f.data.length > 8) throw new Error(`${iface}: a classic CAN frame carries at most 8 bytes`);
  const m = { id: f.id, ext: f.ext === true, data: Buffer.from(f.data) };
  const n = f.fd ? channel.sendFD(m) : channel.send(m);
  if (n < 0)
    throw new Error(`${iface}: the kernel refused the frame 0x${f.id.toString(16)} (transmit queue full or bus off)`);
}

/** Open the interface now (throws when it cannot be opened). */
export function socketcanSource(iface: string): FrameSource {
  const require = createRequire(import.meta.url);
  const can = require("socketcan") as {
    createRawChannelWithOptions(
      i: string,
      o: { timestamps: boolean; non_block_send: boolean },
    ): RawChannel & SendChannel;
  };
  // non-blocking sends: a full transmit queue fails the send instead of blocking the event loop
  const channel = can.createRawChannelWithOptions(iface, { timestamps: true, non_block_send: true });
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
    async transmit(f) {
      if (stopped) throw new Error(`${iface}: the channel is closed`);
      sendFrame(channel, iface, f);
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
