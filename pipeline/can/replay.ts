import { createReadStream } from "node:fs";
import { createInterface } from "node:readline";
import { ConfigError } from "../runtime/errors.js";
import { type CanFrame, type FrameSource, isoMicros, toHex } from "./frame.js";
import { FD_LENGTHS } from "./model.js";

// Replay of `candump -l` logs: lines "(1700000000.123456) can0 101#0A1B2C3D".
// An id of 3 hex digits is an 11-bit id, one of 8 digits a 29-bit id (as
// candump writes them: 0A0 and 000000A0 are different frames). Classic frames
// carry 0–8 data bytes; CAN FD frames are "123##<flags><data>" (one hex digit
// of flags, then up to 64 bytes of a CAN FD payload size). Remote frames
// ("123#R") carry no data and are skipped. Anything else is a bad line: a bad
// line (a log cut by a power loss, a corrupt byte) costs only itself; it is
// reported to `onSkip` with the file and line, and the replay goes on. The
// logged time becomes the receive time. Speed 0 = as fast as possible, 1 = the
// log's own pace.

export class ReplayError extends ConfigError {
  override name = "ReplayError";
}

const MAX_US = Date.UTC(10_000, 0, 1) * 1000;
const LINE = /^\((\d{1,12})\.(\d{1,9})\)\s+(\S+)\s+([0-9A-Fa-f]{3}|[0-9A-Fa-f]{8})#(R\d?|#[0-9A-Fa-f]+|[0-9A-Fa-f]*)$/;

/** Parse one log line; null for blank lines and remote frames. Throws ReplayError with file:line. */
export function parseCandumpLine(line: string, lineNo: number, file: string): CanFrame | null {
  const text = line.trim();
  if (text === "") return null;
  const m = LINE.exec(text);
  if (!m) throw new ReplayError(`${file}:${lineNo}: not a candump -l line: ${JSON.stringify(text.slice(0, 80))}`);
  const [, sec, frac, iface, idHex, dataHex] = m as unknown as [string, string, string, string, string, string];
  if (dataHex.startsWith("R")) return null;
  const fd = dataHex.startsWith("#");
  // CAN FD: "#" then one hex digit of flags (BRS, ESI), then the payload
  const payload = fd ? dataHex.slice(2) : dataHex;
  if (
    payload.length % 2 !== 0 ||
    (fd ? !(FD_LENGTHS as readonly number[]).includes(payload.length / 2) : payload.length > 16)
  )
    throw new ReplayError(
      fd
        ? `${file}:${lineNo}: CAN FD data must be a CAN FD payload size (${FD_LENGTHS.join(", ")} bytes) of hex, got "${payload}"`
        : `${file}:${lineNo}: data must be 0-8 bytes of hex, got "${dataHex}"`,
    );
  const id = Number.parseInt(idHex, 16);
  const ext = idHex.length === 8;
  if (ext && id > 0x1fffffff) throw new ReplayError(`${file}:${lineNo}: ${idHex} is not a 29-bit id`);
  if (!ext && id > 0x7ff) throw new ReplayError(`${file}:${lineNo}: ${idHex} is not an 11-bit id`);
  const us = Number(sec) * 1_000_000 + Number(frac.padEnd(6, "0").slice(0, 6));
  // past 9999-12-31 an ISO 8601 time needs a 6-digit year, which the raw stream's format does not have
  if (us >= MAX_US) throw new ReplayError(`${file}:${lineNo}: time (${sec}.${frac}) is past the year 9999`);
  return { ts: isoMicros(us), id, ext, fd, data: Buffer.from(payload, "hex"), iface };
}

/** One log line for a frame, in `candump -l` format (the writer the round-trip test uses). */
export function formatCandumpLine(f: CanFrame): string {
  const ms = Date.parse(`${f.ts.slice(0, 23)}Z`);
  const us = Number(f.ts.slice(23, 26));
  const sec = Math.floor(ms / 1000);
  const frac = String((ms - sec * 1000) * 1000 + us).padStart(6, "0");
  const id = f.id
    .toString(16)
    .toUpperCase()
    .padStart(f.ext ? 8 : 3, "0");
  return `(${sec}.${frac}) ${f.iface} ${id}#${f.fd ? "#0" : ""}${toHex(f.data)}`;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** `onSkip` is called for every bad line (a ReplayError naming file:line); the line is left out. */
export function replaySource(file: string, speed: number, onSkip: (err: ReplayError) => void): FrameSource {
  let closed = false;
  return {
    name: `replay:${file}`,
    src: "replay",
    pausable: true,
    close() {
      closed = true;
    },
    async *frames() {
      const rl = createInterface({ input: createReadStream(file), crlfDelay: Number.POSITIVE_INFINITY });
      let lineNo = 0;
      let first: number | null = null;
      const t0 = Date.now();
      let chunk: CanFrame[] = [];
      try {
        for await (const line of rl) {
          if (closed) break;
          lineNo++;
          let f: CanFrame | null;
          try {
            f = parseCandumpLine(line, lineNo, file);
          } catch (err) {
            if (!(err instanceof ReplayError)) throw err;
            onSkip(err);
            continue;
          }
          if (!f) continue;
          if (speed > 0) {
            const at = Date.parse(`${f.ts.slice(0, 23)}Z`);
            first ??= at;
            const wait = t0 + (at - first) / speed - Date.now();
            if (wait > 1) {
              if (chunk.length) yield chunk;
              chunk = [];
              await sleep(wait);
            }
          }
          chunk.push(f);
          if (chunk.length >= 1000) {
            yield chunk;
            chunk = [];
          }
        }
        if (chunk.length && !closed) yield chunk;
      } finally {
        rl.close();
      }
    },
  };
}
