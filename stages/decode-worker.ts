import { type DecodeOutput, type DecodeTask, decodePacked, movable } from "./decode.js";

// The piscina worker file (runs as dist/stages/decode-worker.js): one decode
// task per read batch; the rows buffer is moved back, not copied.
export default function decodeTask(task: DecodeTask): DecodeOutput {
  const out = decodePacked(task);
  return movable(out, out.rowsBuf);
}
