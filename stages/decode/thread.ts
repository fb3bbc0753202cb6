import { Piscina } from "piscina";
import { type DecodeOutput, type DecodeTask, decodePacked } from "./signals.js";

// The piscina worker file (runs as dist/stages/decode/thread.js): one decode
// task per read batch; the result buffer is moved back, not copied.

/** Wrap a value so piscina transfers `buffer` instead of cloning it (both directions). */
export function movable<T extends object>(value: T, buffer: ArrayBuffer): T {
  const wrapped = { [Piscina.transferableSymbol]: buffer, [Piscina.valueSymbol]: value };
  return Piscina.move(wrapped as unknown as Parameters<typeof Piscina.move>[0]) as unknown as T;
}

export default function decodeTask(task: DecodeTask): DecodeOutput {
  const out = decodePacked(task);
  return movable(out, out.buf);
}
